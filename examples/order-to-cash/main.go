package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/vextrus/dtx/internal/service"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/telemetry"
	"github.com/vextrus/dtx/schemas"
)

const usage = `example-o2c runs the Order-to-Cash example (sagas/order-to-cash.yaml).

Usage:
  example-o2c participants [--only inventory,accounting,delivery,sales] [--slow 0s] [--admin-addr :8090] ...
  example-o2c place --orders N [--decline-every K] [--fail-delivery-every M] [--sold-out-every L] [--per-tx T] [--run ID]
  example-o2c report [--wait 60s] [--run ID]
  example-o2c sales-api [--addr 127.0.0.1:8095] [--topic sales.events]
  example-o2c shop [--api http://127.0.0.1:8095] [--orders 8] [--wait 60s]

Each reads DTX_DATABASE_URL, DTX_SCHEMA (default dtx) and DTX_EXAMPLE_SCHEMA
(default example_o2c); participants also DTX_KAFKA_BROKERS. Run a subcommand
with --help for its flags.
`

// topicPartitions is how many partitions `participants` gives the saga's
// topics it creates.
const topicPartitions = 3

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "participants":
		return service.Run(ctx, participantsApp(), args[1:], os.LookupEnv, stdout, stderr)
	case "place":
		return oneShot(ctx, "place", args[1:], stdout, stderr, placeCommand)
	case "report":
		return oneShot(ctx, "report", args[1:], stdout, stderr, reportCommand)
	case "sales-api":
		return oneShot(ctx, "sales-api", args[1:], stdout, stderr, salesAPICommand)
	case "shop":
		return oneShot(ctx, "shop", args[1:], stdout, stderr, shopCommand)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "example-o2c: unknown subcommand %q\n\n%s", args[0], usage)
	return 2
}

// participantsApp runs the four services as one dtx process: shared
// settings, admin endpoints and drain on SIGTERM.
func participantsApp() service.App {
	var (
		only          string
		slow          time.Duration
		exampleSchema string
		session       time.Duration
	)
	return service.App{
		Name: "example-o2c",
		Summary: `example-o2c participants runs the Order-to-Cash example's services (inventory, accounting,
delivery, sales), each a saga participant consuming its commands from Kafka and replying
through the outbox of the dtx schema. It creates the saga's topics and its own tables
if they do not exist.`,
		DefaultAdminAddr: ":8090",
		FlagsFunc: func(s *service.Settings) {
			fs := s.FlagSet()
			fs.StringVar(&only, "only", strings.Join(allServices(), ","), "comma-separated services to run")
			fs.DurationVar(&slow, "slow", 0, "wait this long before handling each command (fault tests)")
			fs.StringVar(&exampleSchema, "example-schema", DefaultExampleSchema, "PostgreSQL schema of the services' own tables")
			fs.DurationVar(&session, "session-timeout", 45*time.Second, "Kafka consumer group session timeout (6s..5m)")
		},
		ValidateFunc: func() error {
			var errs []error
			for _, s := range splitList(only) {
				if !slices.Contains(allServices(), s) {
					errs = append(errs, fmt.Errorf("only (DTX_ONLY): %q is not one of %s", s, strings.Join(allServices(), ",")))
				}
			}
			if session < 6*time.Second || session > 5*time.Minute {
				errs = append(errs, fmt.Errorf("session-timeout (DTX_SESSION_TIMEOUT): %s is outside 6s..5m", session))
			}
			if slow < 0 {
				errs = append(errs, fmt.Errorf("slow (DTX_SLOW): %s is negative", slow))
			}
			if _, err := newStore(exampleSchema); err != nil {
				errs = append(errs, fmt.Errorf("example-schema (DTX_EXAMPLE_SCHEMA): %w", err))
			}
			return errors.Join(errs...)
		},
		RunFunc: func(ctx context.Context, env *service.Env) error {
			reg := env.Schemas
			// The shared --topic-prefix (DTX_TOPIC_PREFIX) prefixes the example's
			// own topics too: its saga definition must carry the same prefix.
			topics := DefaultTopics().WithPrefix(env.Config.TopicPrefix)
			if err := createTopics(ctx, kadm.NewClient(env.Kafka), topics.All()); err != nil {
				return err
			}
			return RunServices(ctx, ServicesConfig{
				Pool: env.Pool, Schema: env.Config.Schema, ExampleSchema: exampleSchema,
				Brokers: env.Config.KafkaBrokers, Topics: topics, Only: splitList(only), Slow: slow,
				Schemas: reg, Logger: env.Logger, Registerer: env.Registry, SessionTimeout: session,
			})
		},
	}
}

// createTopics creates the topics that do not exist yet, so that the relay
// can publish the first command or event to each of them.
func createTopics(ctx context.Context, adm *kadm.Client, topics []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := adm.CreateTopics(ctx, topicPartitions, -1, nil, topics...)
	if err != nil {
		return fmt.Errorf("create the saga's topics: %w", err)
	}
	for _, t := range res.Sorted() {
		if t.Err != nil && !errors.Is(t.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", t.Topic, t.Err)
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// common are the settings place and report share.
type common struct {
	databaseURL, schema, exampleSchema string
}

func (c *common) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.databaseURL, "database-url", env("DTX_DATABASE_URL", "postgres://dtx:dtx@127.0.0.1:5432/dtx?sslmode=disable"),
		"PostgreSQL connection string (DTX_DATABASE_URL)")
	fs.StringVar(&c.schema, "schema", env("DTX_SCHEMA", "dtx"), "schema of dtx's tables (DTX_SCHEMA)")
	fs.StringVar(&c.exampleSchema, "example-schema", env("DTX_EXAMPLE_SCHEMA", DefaultExampleSchema),
		"schema of the example services' tables (DTX_EXAMPLE_SCHEMA)")
}

// oneShot parses the flags of a subcommand that runs once and runs it with a
// pool and the example's store.
func oneShot(ctx context.Context, name string, args []string, stdout, stderr io.Writer,
	cmd func(ctx context.Context, fs *flag.FlagSet, args []string, c *common, out io.Writer) error) int {
	fs := flag.NewFlagSet("example-o2c "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.flags(fs)
	err := cmd(ctx, fs, args, &c, stdout) // a pointer: the flags are parsed into c by cmd
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "example-o2c %s: %v\n", name, err)
		return 1
	}
	return 0
}

// connect opens the pool and the store once the flags are parsed.
func (c common) connect(ctx context.Context) (*pgxpool.Pool, store, error) {
	st, err := newStore(c.exampleSchema)
	if err != nil {
		return nil, store{}, err
	}
	pool, err := pgxpool.New(ctx, c.databaseURL)
	if err != nil {
		return nil, store{}, fmt.Errorf("database-url %s: %w", service.RedactURL(c.databaseURL), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, store{}, fmt.Errorf("database %s: %w", service.RedactURL(c.databaseURL), err)
	}
	return pool, st, nil
}

func placeCommand(ctx context.Context, fs *flag.FlagSet, args []string, c *common, out io.Writer) error {
	p := PlaceParams{Progress: out}
	fs.IntVar(&p.Orders, "orders", 200, "orders to place")
	fs.IntVar(&p.PerTx, "per-tx", 10, "orders per transaction")
	fs.IntVar(&p.DeclineEvery, "decline-every", 0, "every k-th order's payment is declined (0: none)")
	fs.IntVar(&p.FailDeliveryEvery, "fail-delivery-every", 0, "every k-th order ships to Antarctica, where no carrier goes (0: none)")
	fs.IntVar(&p.SoldOutEvery, "sold-out-every", 0, "every k-th order has a sold-out line (0: none)")
	fs.StringVar(&p.Run, "run", "r"+strconv.FormatInt(time.Now().UnixMilli(), 36), "run id, part of every order id")
	fs.StringVar(&p.Topic, "topic", DefaultTopics().SalesEvents, "topic of the sales.order.placed events")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := p.validate(); err != nil {
		return err
	}
	// Traces follow the standard OTEL_* variables (none unless set).
	shutdownTracing, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "example-o2c-place"})
	if err != nil {
		return err
	}
	defer func() {
		flush, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer done()
		_ = shutdownTracing(flush)
	}()
	pool, st, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := st.setup(ctx, pool); err != nil {
		return err
	}
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	if err != nil {
		return err
	}
	ob, err := outbox.New(outbox.Config{Schema: c.schema, Registry: reg})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "run %s: placing %d orders, %d per transaction; sales.order.placed to %s through the outbox\n",
		p.Run, p.Orders, p.PerTx, p.Topic)
	counts, err := Place(ctx, pool, ob, st, p)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "run %s: placed %d orders: ok %d, sold-out %d, declined %d, undeliverable %d\n", p.Run, p.Orders,
		counts[ScenarioOK], counts[ScenarioSoldOut], counts[ScenarioDeclined], counts[ScenarioUndeliverable])
	return nil
}

func reportCommand(ctx context.Context, fs *flag.FlagSet, args []string, c *common, out io.Writer) error {
	var (
		wait time.Duration
		p    ReportParams
	)
	fs.DurationVar(&wait, "wait", 60*time.Second, "how long to wait for every saga of the run to end")
	fs.StringVar(&p.Run, "run", "", "run to report on (default: the latest run placed)")
	fs.BoolVar(&p.CheckOutcomes, "check-outcomes", true, "require each order's outcome to be its scenario's")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pool, st, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	p.Schema = c.schema
	if p.Run == "" {
		if err := pool.QueryRow(ctx, st.sql(`SELECT run_id FROM {s}.orders ORDER BY placed_at DESC LIMIT 1`)).Scan(&p.Run); err != nil {
			return fmt.Errorf("find the latest run (place orders first): %w", err)
		}
	}
	began := time.Now()
	r, err := WaitTerminal(ctx, pool, st, p, wait, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "after %.1fs: %s\n\n", time.Since(began).Seconds(), r.statusLine())
	r.Print(out)
	if len(r.Problems) > 0 {
		return fmt.Errorf("%w: %d problems (first: %s)", ErrInvariants, len(r.Problems), r.Problems[0])
	}
	return nil
}
