package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/internal/service"
	"github.com/vextrus/dtx/pkg/migrate"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// connectTimeout bounds the connection to PostgreSQL when the connection
// string sets no connect_timeout.
const connectTimeout = 10 * time.Second

// errUsage marks a command line that could not be used; what was wrong has
// been printed already.
var errUsage = errors.New("usage")

// lookupEnvFunc looks up one environment variable, as os.LookupEnv does.
type lookupEnvFunc func(key string) (string, bool)

// command is a node of the command tree: a group of subcommands, or a leaf
// that runs.
type command struct {
	name    string
	summary string
	sub     []*command
	// run parses args (the command line after the command's name) and runs
	// the command. Nil for groups.
	run func(ctx context.Context, io *cmdIO, args []string) error
}

// cmdIO is what a running command talks to.
type cmdIO struct {
	stdout, stderr io.Writer
	env            lookupEnvFunc
	path           string // "dtxctl migrate up", for messages
}

// commands returns the command tree. A new command (saga timeline, retry,
// ...) is one more entry here and a file with its run function.
func commands() *command {
	return &command{
		name:    "dtxctl",
		summary: "dtxctl operates a dtx installation.",
		sub: []*command{
			{
				name:    "migrate",
				summary: "Apply, roll back and inspect the database migrations.",
				sub: []*command{
					{name: "up", summary: "Apply every pending migration, creating the schema if needed.", run: runMigrateUp},
					{name: "down", summary: "Roll back the last migration, the last N (--steps N) or all of them (--all).", run: runMigrateDown},
					{name: "status", summary: "Show the schema's version and which migrations are applied or pending.", run: runMigrateStatus},
				},
			},
			sagaCommands(),
			topicsCommands(),
			dlqCommands(),
			outboxCommands(),
		},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the exit status.
func run(ctx context.Context, args []string, env lookupEnvFunc, stdout, stderr io.Writer) int {
	cmd, path, rest := commands(), "dtxctl", args
	for cmd.run == nil {
		if len(rest) == 0 {
			printGroupHelp(stderr, cmd, path)
			return exitUsage
		}
		switch rest[0] {
		case "-h", "-help", "--help", "help":
			printGroupHelp(stdout, cmd, path)
			return exitOK
		}
		next := findSub(cmd, rest[0])
		if next == nil {
			fmt.Fprintf(stderr, "%s: unknown command %q\n\n", path, rest[0])
			printGroupHelp(stderr, cmd, path)
			return exitUsage
		}
		cmd, path, rest = next, path+" "+next.name, rest[1:]
	}

	err := cmd.run(ctx, &cmdIO{stdout: stdout, stderr: stderr, env: env, path: path}, rest)
	var (
		exited  exitError
		invalid settingsError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		return exitUsage
	case errors.As(err, &invalid):
		printSettingsError(stderr, path, invalid.err)
		return exitUsage
	case errors.As(err, &exited):
		return exited.code
	default:
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return exitFailure
	}
}

func findSub(cmd *command, name string) *command {
	for _, s := range cmd.sub {
		if s.name == name {
			return s
		}
	}
	return nil
}

func printGroupHelp(w io.Writer, cmd *command, path string) {
	fmt.Fprintf(w, "%s\n\nUsage: %s COMMAND [flags]\n\nCommands:\n", cmd.summary, path)
	for _, s := range cmd.sub {
		fmt.Fprintf(w, "  %-8s %s\n", s.name, s.summary)
	}
	fmt.Fprintf(w, "\nRun \"%s COMMAND --help\" for the flags of one command.\n\n"+
		"Settings shared by the commands that use the database (a flag wins over its variable):\n"+
		"  --database-url  env DTX_DATABASE_URL, default %s\n"+
		"  --schema        env DTX_SCHEMA, default %s\n\n%s\n",
		path, service.RedactURL(defaultDatabaseURL), migrate.DefaultSchema, securedConnectionsHelp)
}

// setting is a flag that its environment variable sets when the flag is not
// on the command line.
type setting struct {
	name   string // flag name
	env    string // environment variable; "" for a flag without one
	secret bool   // redact passwords when shown
}

// flags is a command's flag set with the environment variables of its
// settings: flag, then environment, then default.
type flags struct {
	fs       *flag.FlagSet
	settings []setting
	usage    string // the arguments part of the usage line
	summary  string
}

func newFlags(cio *cmdIO, summary, usage string) *flags {
	f := &flags{fs: flag.NewFlagSet(cio.path, flag.ContinueOnError), usage: usage, summary: summary}
	f.fs.SetOutput(cio.stderr)
	f.fs.Usage = func() { f.printHelp(cio.stderr, cio.path) }
	return f
}

// env declares that the environment variable env sets flag name.
func (f *flags) env(name, env string, secret bool) {
	f.settings = append(f.settings, setting{name: name, env: env, secret: secret})
}

// parse parses args, then fills every setting not given on the command line
// from its environment variable. --help prints to stdout and returns
// flag.ErrHelp; other mistakes print the help to stderr and return errUsage.
func (f *flags) parse(cio *cmdIO, args []string) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			f.printHelp(cio.stdout, cio.path)
			return flag.ErrHelp
		}
	}
	if err := f.fs.Parse(args); err != nil {
		return errUsage // The flag package has printed the problem and the help.
	}
	if f.fs.NArg() > 0 {
		fmt.Fprintf(cio.stderr, "%s: unexpected arguments: %s\n", cio.path, strings.Join(f.fs.Args(), " "))
		return errUsage
	}
	given := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	var errs []error
	for _, s := range f.settings {
		if given[s.name] || s.env == "" {
			continue
		}
		v, ok := cio.env(s.env)
		if !ok {
			continue
		}
		if err := f.fs.Set(s.name, v); err != nil {
			shown := v
			if s.secret {
				shown = service.RedactURL(v)
			}
			errs = append(errs, fmt.Errorf("%s: invalid value %q: %w", s.env, shown, err))
		}
	}
	return errors.Join(errs...)
}

func (f *flags) printHelp(w io.Writer, path string) {
	fmt.Fprintf(w, "%s\n\nUsage: %s %s\n\nFlags (a flag on the command line wins over its environment variable):\n", f.summary, path, f.usage)
	byName := map[string]setting{}
	for _, s := range f.settings {
		byName[s.name] = s
	}
	f.fs.VisitAll(func(fl *flag.Flag) {
		s := byName[fl.Name]
		arg, usage := flag.UnquoteUsage(fl)
		def := fl.DefValue
		if s.secret {
			def = service.RedactURL(def)
		}
		if def == "" {
			def = `""`
		}
		env := "no environment variable"
		if s.env != "" {
			env = "env " + s.env
		}
		fmt.Fprintf(w, "  %s\n      %s\n      (%s, default %s)\n", strings.TrimSpace("--"+fl.Name+" "+arg), usage, env, def)
	})
	if f.fs.Lookup("kafka-sasl-password-file") != nil || f.fs.Lookup("database-password-file") != nil {
		fmt.Fprintf(w, "\n%s\n", securedConnectionsHelp)
	}
}

// dbSettings are the settings of every command that talks to PostgreSQL.
type dbSettings struct {
	databaseURL string
	schema      string
	// sec holds --database-url-file and --database-password-file.
	sec service.Security
}

const defaultDatabaseURL = "postgres://dtx:dtx@127.0.0.1:5432/dtx?sslmode=disable"

func (d *dbSettings) register(f *flags) {
	f.fs.StringVar(&d.databaseURL, "database-url", defaultDatabaseURL, "PostgreSQL connection string (`URL` or key=value)")
	f.env("database-url", "DTX_DATABASE_URL", true)
	f.fs.StringVar(&d.schema, "schema", migrate.DefaultSchema, "`NAME` of the PostgreSQL schema that holds dtx's tables")
	f.env("schema", "DTX_SCHEMA", false)
	for _, name := range d.sec.RegisterDatabaseFlags(f.fs) {
		f.env(name, service.EnvName(name), false)
	}
}

// validate checks the settings before connecting, reading the files they
// name; --database-url-file replaces the connection string. Its error is a
// settingsError: exit status 2.
func (d *dbSettings) validate() error {
	var errs []error
	u, err := d.sec.ResolveDatabaseURL(d.databaseURL)
	d.databaseURL = u
	if err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(d.databaseURL) == "" {
		errs = append(errs, errors.New("--database-url (DTX_DATABASE_URL) is empty"))
	}
	if err := migrate.ValidateSchemaName(d.schema); err != nil {
		errs = append(errs, fmt.Errorf("--schema (DTX_SCHEMA): %w", err))
	}
	if len(errs) > 0 {
		return settingsError{errors.Join(errs...)}
	}
	return nil
}

// urlSetting names where the connection string came from.
func (d *dbSettings) urlSetting() string {
	if d.sec.DatabaseURLFile != "" {
		return "--database-url-file (DTX_DATABASE_URL_FILE)"
	}
	return "--database-url (DTX_DATABASE_URL)"
}

// connect opens a connection to the database. Its errors never contain the
// password: pgx redacts it from what it reports, and the URL is redacted.
func (d *dbSettings) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(d.databaseURL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.urlSetting(), err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	if err := d.sec.SetDatabasePassword(cfg); err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", service.RedactURL(d.databaseURL), err)
	}
	return conn, nil
}

// pool opens a pool on the database whose connections read the password of
// --database-password-file anew. Like connect, its errors never contain the
// password.
func (d *dbSettings) pool(ctx context.Context) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(d.databaseURL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.urlSetting(), err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	d.sec.ApplyDatabasePassword(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", service.RedactURL(d.databaseURL), err)
	}
	return pool, nil
}

// withConn connects, calls fn and closes the connection.
func (d *dbSettings) withConn(ctx context.Context, fn func(conn *pgx.Conn) error) (err error) {
	if err := d.validate(); err != nil {
		return err
	}
	conn, err := d.connect(ctx)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if cerr := conn.Close(closeCtx); cerr != nil && err == nil {
			err = fmt.Errorf("close the connection: %w", cerr)
		}
	}()
	err = fn(conn)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return fmt.Errorf("%w: are dtx's tables in schema %q? Run dtxctl migrate up, or name their schema with --schema (DTX_SCHEMA)", err, d.schema)
	}
	return err
}

// logger writes progress lines to stderr, without timestamps: a terminal or
// a CI log adds its own.
func logger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}
