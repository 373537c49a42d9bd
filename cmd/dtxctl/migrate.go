package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/pkg/migrate"
)

func runMigrateUp(ctx context.Context, cio *cmdIO, args []string) error {
	var db dbSettings
	f := newFlags(cio, "Apply every pending migration to the schema, creating it if needed. Replicas\n"+
		"and other dtxctl runs may migrate at the same time: an advisory lock makes\neach migration apply once.", "[flags]")
	db.register(f)
	if err := f.parse(cio, args); err != nil {
		return err
	}
	return db.withConn(ctx, func(conn *pgx.Conn) error {
		cfg := migrate.Config{Schema: db.schema, Logger: logger(cio.stderr)}
		if err := migrate.Up(ctx, conn, cfg); err != nil {
			return err
		}
		return printVersion(ctx, cio.stdout, conn, cfg)
	})
}

func runMigrateDown(ctx context.Context, cio *cmdIO, args []string) error {
	var (
		db    dbSettings
		steps int
		all   bool
	)
	f := newFlags(cio, "Roll back migrations, newest first, through their down sections. Without\n"+
		"flags it rolls back the last one. The schema and its version table stay.", "[--steps N | --all] [flags]")
	f.fs.IntVar(&steps, "steps", 1, "roll back the last `N` migrations (at least 1)")
	f.fs.BoolVar(&all, "all", false, "roll back every migration: drops all of dtx's tables and their data")
	db.register(f)
	if err := f.parse(cio, args); err != nil {
		return err
	}
	stepsGiven := false
	f.fs.Visit(func(fl *flag.Flag) { stepsGiven = stepsGiven || fl.Name == "steps" })
	switch {
	case all && stepsGiven:
		fmt.Fprintf(cio.stderr, "%s: --steps and --all exclude each other\n", cio.path)
		return errUsage
	case steps < 1:
		fmt.Fprintf(cio.stderr, "%s: --steps is %d, must be at least 1\n", cio.path, steps)
		return errUsage
	}
	return db.withConn(ctx, func(conn *pgx.Conn) error {
		cfg := migrate.Config{Schema: db.schema, Logger: logger(cio.stderr)}
		var err error
		if all {
			err = migrate.To(ctx, conn, cfg, 0)
		} else {
			err = migrate.Down(ctx, conn, cfg, steps)
		}
		if err != nil {
			return err
		}
		return printVersion(ctx, cio.stdout, conn, cfg)
	})
}

func runMigrateStatus(ctx context.Context, cio *cmdIO, args []string) error {
	var db dbSettings
	f := newFlags(cio, "Show the schema's version and which migrations are applied or pending.\n"+
		"It changes nothing.", "[flags]")
	db.register(f)
	if err := f.parse(cio, args); err != nil {
		return err
	}
	return db.withConn(ctx, func(conn *pgx.Conn) error {
		r, err := migrate.Status(ctx, conn, migrate.Config{Schema: db.schema})
		if err != nil && !errors.Is(err, migrate.ErrUnknownVersion) {
			return err
		}
		fmt.Fprintf(cio.stdout, "schema   %s\nversion  %d of %d\n", r.Schema, r.Current, r.Latest)
		for _, name := range r.Applied {
			fmt.Fprintf(cio.stdout, "applied  %s\n", name)
		}
		for _, name := range r.Pending {
			fmt.Fprintf(cio.stdout, "pending  %s\n", name)
		}
		return err
	})
}

// printVersion prints the schema's version after a change.
func printVersion(ctx context.Context, w io.Writer, conn *pgx.Conn, cfg migrate.Config) error {
	r, err := migrate.Status(ctx, conn, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "schema %s is at version %d of %d\n", r.Schema, r.Current, r.Latest)
	return nil
}
