package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/internal/service"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

func sagaCommands() *command {
	return &command{
		name:    "saga",
		summary: "List and inspect sagas, and retry, abort or compensate one.",
		sub: []*command{
			{name: "list", summary: "List sagas, most recently updated first (--status, --definition, --limit).", run: runSagaList},
			{name: "show", summary: "Show one saga: its state, what it waits for, and its timeline.", run: runSagaShow},
			{name: "retry", summary: "Re-send a saga's current command now, or resume the compensation of a parked saga.", run: operation(orchestrator.OpRetry)},
			{name: "abort", summary: "Stop a saga as failed, without compensating.", run: operation(orchestrator.OpAbort)},
			{name: "compensate", summary: "Compensate a running saga now, or resume the compensation of a parked one.", run: operation(orchestrator.OpCompensate)},
		},
	}
}

// sagaID takes the saga id from the front of args (before the flags).
func sagaID(cio *cmdIO, args []string) (string, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		for _, a := range args {
			if a == "-h" || a == "-help" || a == "--help" {
				return "", args, nil
			}
		}
		fmt.Fprintf(cio.stderr, "%s: the saga id is missing: %s <saga-id> [flags]\n", cio.path, cio.path)
		return "", nil, errUsage
	}
	return args[0], args[1:], nil
}

func runSagaList(ctx context.Context, cio *cmdIO, args []string) error {
	var (
		db         dbSettings
		status     string
		definition string
		limit      int
		asJSON     bool
	)
	f := newFlags(cio, "List sagas, most recently updated first. It changes nothing.", "[flags]")
	f.fs.StringVar(&status, "status", "", "keep sagas in this `STATUS` (running, compensating, completed, compensated, failed)")
	f.fs.StringVar(&definition, "definition", "", "keep sagas of this definition `NAME`")
	f.fs.IntVar(&limit, "limit", 50, "show at most `N` sagas (1..1000)")
	f.fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	db.register(f)
	if err := f.parse(cio, args); err != nil {
		return err
	}
	if status != "" && !saga.Status(status).Valid() {
		fmt.Fprintf(cio.stderr, "%s: --status %q is not a saga status\n", cio.path, status)
		return errUsage
	}
	if limit < 1 || limit > 1000 {
		fmt.Fprintf(cio.stderr, "%s: --limit %d is outside 1..1000\n", cio.path, limit)
		return errUsage
	}
	return db.withConn(ctx, func(conn *pgx.Conn) error {
		list, err := orchestrator.List(ctx, conn, db.schema, orchestrator.ListParams{
			Status: saga.Status(status), Definition: definition, Limit: limit,
		})
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(cio.stdout, list)
		}
		w := tabwriter.NewWriter(cio.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tDEFINITION\tSTATUS\tSTEP\tATTEMPT\tUPDATED\tREASON")
		for _, s := range list {
			fmt.Fprintf(w, "%s\t%s@%d\t%s\t%s\t%d\t%s\t%s\n", s.ID, s.Definition, s.DefinitionVersion, s.Status,
				dash(s.Step), s.Attempt, s.UpdatedAt.UTC().Format(time.RFC3339), s.Reason)
		}
		return w.Flush()
	})
}

func runSagaShow(ctx context.Context, cio *cmdIO, args []string) error {
	id, args, err := sagaID(cio, args)
	if err != nil {
		return err
	}
	var (
		db          dbSettings
		definitions string
		asJSON      bool
	)
	f := newFlags(cio, "Show one saga: its status, what it waits for now, its data and its timeline\n"+
		"(each step's attempts, with time, outcome and error). It changes nothing.", "<saga-id> [flags]")
	f.fs.StringVar(&definitions, "definitions", "", "`DIR` of saga definitions, to name the step a saga waits for (optional)")
	f.env("definitions", "DTX_DEFINITIONS", false)
	f.fs.BoolVar(&asJSON, "json", false, "print JSON instead of text")
	db.register(f)
	if err := f.parse(cio, args); err != nil {
		return err
	}
	var reg *saga.Registry
	if definitions != "" {
		if reg, err = loadDefinitions(definitions); err != nil {
			return err
		}
	}
	return db.withConn(ctx, func(conn *pgx.Conn) error {
		d, err := orchestrator.Show(ctx, conn, db.schema, reg, id)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(cio.stdout, d)
		}
		printDetail(cio.stdout, d)
		return nil
	})
}

func printDetail(out io.Writer, d orchestrator.Detail) {
	fmt.Fprintf(out, "saga        %s\n", d.ID)
	fmt.Fprintf(out, "definition  %s@%d\n", d.Definition, d.DefinitionVersion)
	fmt.Fprintf(out, "status      %s\n", d.Status)
	if d.Reason != "" {
		fmt.Fprintf(out, "reason      %s\n", d.Reason)
	}
	fmt.Fprintf(out, "correlation %s\n", d.CorrelationID)
	fmt.Fprintf(out, "started     %s\n", d.StartedAt.UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(out, "updated     %s (revision %d)\n", d.UpdatedAt.UTC().Format(time.RFC3339Nano), d.Revision)
	fmt.Fprintf(out, "waiting for %s\n", d.Waiting)
	if data, err := json.Marshal(d.State.Data); err == nil {
		fmt.Fprintf(out, "data        %s\n", data)
	}
	fmt.Fprintln(out, "\ntimeline:")
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tSTEP\tPHASE\tATTEMPT\tOUTCOME\tREPLY\tDETAIL")
	for _, e := range d.Timeline {
		attempt := "-"
		if e.Attempt > 0 {
			attempt = fmt.Sprint(e.Attempt)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.At.UTC().Format("15:04:05.000"), dash(e.Step), dash(e.Phase),
			attempt, e.Outcome, dash(e.ReplyType), e.Detail)
	}
	_ = w.Flush()
}

// operation returns the run function of retry, abort or compensate.
func operation(op orchestrator.Operation) func(ctx context.Context, cio *cmdIO, args []string) error {
	return func(ctx context.Context, cio *cmdIO, args []string) error {
		id, args, err := sagaID(cio, args)
		if err != nil {
			return err
		}
		var (
			db          dbSettings
			definitions string
			reason      string
		)
		f := newFlags(cio, fmt.Sprintf("Apply %q to one saga, in one transaction through the orchestrator's own\n"+
			"transition path (the saga is locked, commands go through the outbox, the\n"+
			"timeline records it). It needs the saga's definition version.", op), "<saga-id> [flags]")
		f.fs.StringVar(&definitions, "definitions", "", "`DIR` of saga definitions (required): the orchestrator's")
		f.env("definitions", "DTX_DEFINITIONS", false)
		f.fs.StringVar(&reason, "reason", "", "why, for the timeline (default \"by operator\")")
		db.register(f)
		if err := f.parse(cio, args); err != nil {
			return err
		}
		if definitions == "" {
			fmt.Fprintf(cio.stderr, "%s: --definitions (DTX_DEFINITIONS) is required\n", cio.path)
			return errUsage
		}
		reg, err := loadDefinitions(definitions)
		if err != nil {
			return err
		}
		if err := db.validate(); err != nil {
			return err
		}
		pool, err := pgxpool.New(ctx, db.databaseURL)
		if err != nil {
			return fmt.Errorf("connect to PostgreSQL at %s: %w", service.RedactURL(db.databaseURL), err)
		}
		defer pool.Close()
		o, err := orchestrator.New(pool, orchestrator.Config{Schema: db.schema, Definitions: reg, Logger: logger(cio.stderr)})
		if err != nil {
			return err
		}
		st, err := o.Operate(ctx, id, op, reason)
		if err != nil {
			return err
		}
		fmt.Fprintf(cio.stdout, "saga %s: %s, now %s", id, op, st.Status)
		if st.Reason != "" {
			fmt.Fprintf(cio.stdout, " (%s)", st.Reason)
		}
		fmt.Fprintln(cio.stdout)
		return nil
	}
}

func loadDefinitions(dir string) (*saga.Registry, error) {
	defs, err := saga.LoadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("--definitions (DTX_DEFINITIONS): %w", err)
	}
	reg, err := saga.NewRegistry(defs...)
	if err != nil {
		return nil, fmt.Errorf("--definitions (DTX_DEFINITIONS): %w", err)
	}
	return reg, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
