package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/migrate"
	"github.com/vextrus/dtx/pkg/telemetry"
)

// Exit codes of a dtx binary.
const (
	// ExitOK: stopped by SIGTERM/SIGINT and drained within the drain timeout.
	ExitOK = 0
	// ExitFailure: a component failed, or draining overran the drain timeout.
	ExitFailure = 1
	// ExitUsage: invalid configuration or command line.
	ExitUsage = 2
)

// App describes one dtx binary to Main.
type App struct {
	// Name is the binary's name, as in logs, metrics and --help.
	Name string

	// Summary heads --help: what the binary does.
	Summary string

	// DefaultAdminAddr is the admin server's default address, distinct per
	// binary so all of them can run on one host.
	DefaultAdminAddr string

	// FlagsFunc, if set, declares the binary's own settings on s.
	FlagsFunc func(s *Settings)

	// ValidateFunc, if set, checks the binary's own settings after parsing;
	// its error should name the offending setting.
	ValidateFunc func() error

	// ContractsFunc, if set, checks the binary's own settings against the
	// merged schemas (built-in and --schemas) before the process starts:
	// an error stops it with ExitUsage, as invalid configuration does.
	ContractsFunc func(schemas *messaging.SchemaRegistry) error

	// ReadyChecksFunc, if set, names the readiness checks the work loop
	// adds with Env.AddReadyCheck once it knows what to check (e.g.
	// TopicsCheck, after loading its configuration). It is called after
	// ValidateFunc. Until the work loop adds each, the process is not ready.
	ReadyChecksFunc func() []string

	// RunFunc is the binary's work loop. It runs once PostgreSQL is reachable
	// and migrations (when enabled) are applied, and must return once ctx is
	// cancelled (drain), having finished or abandoned its work in flight. A
	// non-nil error other than ctx's stops the process with ExitFailure.
	RunFunc func(ctx context.Context, env *Env) error

	// migrateFunc, if set, replaces migrate.UpPool at start-up (tests).
	migrateFunc func(ctx context.Context, pool *pgxpool.Pool, cfg migrate.Config) error
}

// Env is what a binary's work loop gets from the process.
type Env struct {
	Config   Config
	Logger   *slog.Logger
	Pool     *pgxpool.Pool
	Kafka    *kgo.Client
	Registry *prometheus.Registry
	// Admin is the admin server's mux: a work loop may add its own routes
	// beside /healthz, /readyz and /metrics. They are served without a
	// credential to whoever reaches the admin address (probes, Prometheus):
	// an API that reads business data or changes state needs a listener
	// and credentials of its own, as the orchestrator's operator API has.
	Admin *http.ServeMux
	// Ready is closed when the process reports ready for the first time.
	Ready <-chan struct{}
	// Schemas holds dtx's built-in schemas merged with those of --schemas,
	// loaded before the process started: validate with it, and pass it to
	// middleware.StackConfig.Schemas.
	Schemas *messaging.SchemaRegistry

	readiness *readiness
}

// Main runs app as a process: it reads os.Args and the environment, handles
// SIGTERM and SIGINT, and exits with the code of Run.
func Main(app App) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := Run(ctx, app, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Run runs app until ctx is cancelled (the shutdown signal), then drains it
// within the drain timeout. It returns the process exit code.
func Run(ctx context.Context, app App, args []string, env LookupEnvFunc, stdout, stderr io.Writer) int {
	var cfg Config
	s := NewSettings(app.Name, app.Summary, stdout)
	registerShared(s, &cfg, app.DefaultAdminAddr)
	if app.FlagsFunc != nil {
		app.FlagsFunc(s)
	}
	if err := s.Parse(args, env); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stderr, "%s: invalid configuration: %v\n", app.Name, err)
		return ExitUsage
	}
	err := cfg.validate()
	err = errors.Join(err, telemetry.CheckEnv())
	if app.ValidateFunc != nil {
		err = errors.Join(err, app.ValidateFunc())
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: invalid configuration:\n%v\n", app.Name, err)
		return ExitUsage
	}
	// Contracts are configuration: a bad one stops the process before it
	// takes any work.
	schemaReg, err := loadSchemas(cfg.SchemaDirs)
	if err == nil && app.ContractsFunc != nil {
		err = app.ContractsFunc(schemaReg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: invalid configuration:\n%v\n", app.Name, err)
		return ExitUsage
	}

	logger := newLogger(cfg, stderr).With("binary", app.Name, "instance", cfg.InstanceID)
	p := &process{app: app, cfg: cfg, log: logger, schemas: schemaReg}
	if err := p.run(ctx); err != nil {
		logger.Error("stopped with an error", "err", err)
		return ExitFailure
	}
	logger.Info("stopped cleanly")
	return ExitOK
}

type process struct {
	app      App
	cfg      Config
	log      *slog.Logger
	schemas  *messaging.SchemaRegistry
	draining atomic.Bool
}

func (p *process) run(sigCtx context.Context) error {
	cfg := p.cfg
	p.log.Info("starting", "version", version(), "schema", cfg.Schema,
		"database", RedactURL(cfg.DatabaseURL), "kafka_brokers", cfg.KafkaBrokers,
		"schema_dirs", cfg.SchemaDirs, "schemas", len(p.schemas.Keys()), "topic_prefix", cfg.TopicPrefix)
	p.log.Info("connection security", cfg.securityLogAttrs()...)
	cfg.warnInsecure(p.log)

	// Traces, from the OTEL_* environment; flushed once the work loop has
	// drained, within what is left of the drain timeout (at least
	// minTraceFlush).
	shutdownTracing, err := telemetry.Setup(context.Background(), telemetry.Config{
		ServiceName: "dtx-" + p.app.Name, ServiceVersion: version(), Logger: p.log,
	})
	if err != nil {
		return err
	}
	flushBy, flushed := time.Time{}, false // flushBy is set when draining starts
	flushTraces := func() {
		if flushed {
			return
		}
		flushed = true
		deadline := time.Now().Add(minTraceFlush)
		if flushBy.After(deadline) {
			deadline = flushBy
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		if err := shutdownTracing(ctx); err != nil {
			p.log.Warn("telemetry: flushing the last spans failed", "err", err)
		}
	}
	defer flushTraces() // on every path; only the first call flushes

	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		// pgx errors may echo the connection string: do not wrap them.
		return fmt.Errorf("database-url (DTX_DATABASE_URL) %s: cannot be parsed", RedactURL(cfg.DatabaseURL))
	}
	poolCfg.ConnConfig.RuntimeParams["application_name"] = "dtx-" + p.app.Name
	cfg.applyDatabaseSecrets(poolCfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), poolCfg)
	if err != nil {
		return fmt.Errorf("postgres pool: %w", err)
	}
	// A work loop that overran the drain may still hold connections, and
	// Close waits for them: bound the wait so the process still exits.
	defer closeWithin(pool.Close, 5*time.Second, p.log)

	kafka, err := kgo.NewClient(append(cfg.KafkaOpts(),
		kgo.SeedBrokers(cfg.KafkaBrokers...),
		kgo.ClientID("dtx-"+p.app.Name),
		kgo.DialTimeout(cfg.ReadyTimeout),
	)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer kafka.Close()

	registry := newRegistry(p.app.Name, cfg.InstanceID)
	ready := make(chan struct{})
	admin, err := startAdmin(cfg.AdminAddr, p.log, registry, &p.draining, cfg.ReadyTimeout, ready, []check{
		{name: "postgres", fn: pool.Ping},
		{name: "kafka", fn: kafka.Ping},
	}, p.pendingChecks())
	if err != nil {
		return err
	}

	// The work loop's context outlives the signal: it is cancelled when
	// draining starts, and the drain is bounded by DrainTimeout.
	workCtx, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	done := make(chan error, 1)
	go func() {
		done <- p.work(workCtx, &Env{Config: cfg, Logger: p.log, Pool: pool, Kafka: kafka, Registry: registry, Admin: admin.mux, Ready: ready, readiness: admin.rd, Schemas: p.schemas})
	}()

	var workErr error
	select {
	case workErr = <-done:
		if workErr == nil {
			workErr = errors.New("work loop returned before shutdown was requested")
		}
		p.draining.Store(true)
	case <-sigCtx.Done():
		p.draining.Store(true)
		p.log.Info("draining", "drain_timeout", cfg.DrainTimeout.String())
		flushBy = time.Now().Add(cfg.DrainTimeout)
		cancelWork()
		timer := time.NewTimer(cfg.DrainTimeout)
		select {
		case workErr = <-done:
			timer.Stop()
		case <-timer.C:
			workErr = fmt.Errorf("drain did not finish within %s", cfg.DrainTimeout)
		}
		if errors.Is(workErr, context.Canceled) {
			workErr = nil
		}
	}
	flushTraces()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(workErr, admin.shutdown(shutdownCtx))
}

// minTraceFlush is the least time the last spans get to be exported, even
// when the drain used all of its timeout.
const minTraceFlush = time.Second

// pendingChecks returns the checks that keep the process not ready at
// first, with their reasons: the start-up, done once migrations (when
// enabled) are applied and the work loop started, and the checks the work
// loop will add.
func (p *process) pendingChecks() map[string]string {
	pending := map[string]string{startupCheck: "the work loop is starting"}
	if p.cfg.Migrate {
		pending[startupCheck] = "applying migrations"
	}
	if p.app.ReadyChecksFunc != nil {
		for _, name := range p.app.ReadyChecksFunc() {
			pending[name] = notCheckedYet
		}
	}
	return pending
}

// work applies migrations, waiting for PostgreSQL if needed, then runs the
// binary's work loop. Until the work loop starts, /readyz reports the
// start-up step under startupCheck.
func (p *process) work(ctx context.Context, env *Env) error {
	if p.cfg.Migrate {
		status := func(reason string) { env.readiness.setPending(startupCheck, reason) }
		up := migrate.UpPool
		if p.app.migrateFunc != nil {
			up = p.app.migrateFunc
		}
		if err := migrateWithRetry(ctx, p.log, env.Pool, p.cfg.Schema, up, status); err != nil {
			return err
		}
	}
	env.readiness.clearPending(startupCheck)
	return p.app.RunFunc(ctx, env)
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel) // validated
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// Idle is the work loop of a binary that only serves its admin endpoints: it
// logs what the binary is waiting for and returns when ctx is cancelled.
func Idle(what string) func(ctx context.Context, env *Env) error {
	return func(ctx context.Context, env *Env) error {
		env.Logger.Info("work loop not enabled in this build", "pending", what)
		<-ctx.Done()
		return nil
	}
}

// closeWithin runs closeFn, giving up waiting after limit.
func closeWithin(closeFn func(), limit time.Duration, log *slog.Logger) {
	closed := make(chan struct{})
	go func() {
		closeFn()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(limit):
		log.Warn("resources still in use after the drain; exiting without waiting for them", "waited", limit.String())
	}
}
