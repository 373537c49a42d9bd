package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/idempotency"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/migrate"
	"github.com/vextrus/dtx/pkg/saga"
)

// settings are the service's flags.
type settings struct {
	databaseURL   string
	kafkaBrokers  string
	dtxSchema     string
	billingSchema string
	httpAddr      string
	topicPrefix   string
	groupPrefix   string
	migrate       bool
	drainTimeout  time.Duration
}

// topics are the Kafka topics the service uses, prefixed with
// --topic-prefix. They are those of sagas/billing-invoice.yaml and the
// orchestrator's default event topic.
type topics struct {
	events     string // billing.events: the saga's trigger
	credit     string // billing.credit.commands
	invoicing  string // billing.invoicing.commands
	sagaEvents string // dtx.saga.events: the saga lifecycle
}

func (s settings) topics() topics {
	p := s.topicPrefix
	return topics{
		events:     p + "billing.events",
		credit:     p + "billing.credit.commands",
		invoicing:  p + "billing.invoicing.commands",
		sagaEvents: p + saga.DefaultEventTopic,
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses the command line and runs the service until ctx ends: 0 after
// a clean stop, 1 on failure, 2 for settings that cannot be used.
func run(ctx context.Context, args []string, env func(string) (string, bool), stderr io.Writer) int {
	var s settings
	fs := flag.NewFlagSet("billing", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.databaseURL, "database-url", "postgres://dtx:dtx@127.0.0.1:5432/dtx?sslmode=disable", "PostgreSQL connection string (also DTX_DATABASE_URL)")
	fs.StringVar(&s.kafkaBrokers, "kafka-brokers", "127.0.0.1:9092", "Kafka seed brokers, comma-separated (also DTX_KAFKA_BROKERS)")
	fs.StringVar(&s.dtxSchema, "schema", migrate.DefaultSchema, "PostgreSQL schema of dtx's tables: outbox, idempotency keys, saga barrier (also DTX_SCHEMA)")
	fs.StringVar(&s.billingSchema, "billing-schema", "billing", "PostgreSQL schema of the service's own tables")
	fs.StringVar(&s.httpAddr, "http-addr", ":8090", "address of the HTTP API; port 0 picks a free one, which the log reports")
	fs.StringVar(&s.topicPrefix, "topic-prefix", "", "prefix of every topic: the saga definitions' and the orchestrator's --event-topic must carry it too")
	fs.StringVar(&s.groupPrefix, "group-prefix", "billing", "prefix of the service's Kafka consumer groups")
	fs.BoolVar(&s.migrate, "migrate", false, "apply dtx's pending migrations to --schema at start (pkg/migrate, under an advisory lock)")
	fs.DurationVar(&s.drainTimeout, "drain-timeout", 30*time.Second, "how long a stop may take to finish the work in flight")
	if err := parse(fs, args, env); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "billing: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	if err := serve(ctx, s, log); err != nil {
		log.Error("billing: failed", "err", err)
		return 1
	}
	log.Info("billing: stopped")
	return 0
}

// parse reads args, then fills each flag not on the command line from
// BILLING_<NAME>, or for the settings dtx's binaries share from DTX_<NAME>.
func parse(fs *flag.FlagSet, args []string, env func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		name := strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		keys := []string{"BILLING_" + name}
		switch f.Name {
		case "database-url", "kafka-brokers", "schema", "migrate":
			keys = append(keys, "DTX_"+name)
		}
		for _, k := range keys {
			if v, ok := env(k); ok && v != "" {
				if err := fs.Set(f.Name, v); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", k, err))
				}
				return
			}
		}
	})
	return errors.Join(errs...)
}

// serve runs the HTTP API, the participants and the downstream consumers
// until ctx ends, then drains.
func serve(ctx context.Context, s settings, log *slog.Logger) error {
	brokers := splitComma(s.kafkaBrokers)
	if len(brokers) == 0 {
		return errors.New("--kafka-brokers names no broker")
	}
	if err := migrate.ValidateSchemaName(s.billingSchema); err != nil {
		return fmt.Errorf("--billing-schema: %w", err)
	}
	pool, err := pgxpool.New(ctx, s.databaseURL)
	if err != nil {
		return fmt.Errorf("--database-url: %w", err)
	}
	defer pool.Close()

	// dtx's tables, then the service's own.
	if s.migrate {
		if err := migrate.UpPool(ctx, pool, migrate.Config{Schema: s.dtxSchema, Logger: log}); err != nil {
			return err
		}
	}
	st := newStore(s.billingSchema)
	if err := st.setup(ctx, pool); err != nil {
		return err
	}

	// One registry validates what the service writes (the outbox) and
	// reads (the middleware): its own contracts beside dtx's schemas.
	schemas, err := schemaRegistry()
	if err != nil {
		return err
	}
	ob, err := outbox.New(outbox.Config{Schema: s.dtxSchema, Registry: schemas})
	if err != nil {
		return err
	}
	keys, err := idempotency.NewStore(pool, idempotency.Config{Schema: s.dtxSchema, Logger: log})
	if err != nil {
		return err
	}
	mw, err := keys.Middleware(idempotency.MiddlewareConfig{Scope: "billing-api", RequireKey: true})
	if err != nil {
		return err
	}
	t := s.topics()
	a := &api{st: st, pool: pool, outbox: ob, schemas: schemas, eventsTopic: t.events, log: log}

	// The router: the participants on their command topics, the lifecycle
	// handler on the saga event topic, all behind dtx's middleware.
	wlog := watermill.NewSlogLogger(log)
	client := kafka.ClientConfig{Brokers: brokers, ClientID: "billing", Logger: wlog}
	dlq, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: client})
	if err != nil {
		return err
	}
	defer func() { _ = dlq.Close() }()
	mws, err := middleware.Standard(middleware.StackConfig{DeadLetterPublisher: dlq, Schemas: schemas})
	if err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: s.drainTimeout}, wlog)
	if err != nil {
		return err
	}
	router.AddMiddleware(mws...)
	credit, invoicing, err := newParticipants(pool, s.dtxSchema, ob, st, log)
	if err != nil {
		return err
	}
	for _, h := range []struct {
		name, topic string
		handle      message.NoPublishHandlerFunc
	}{
		{"credit", t.credit, credit.Handle},
		{"invoicing", t.invoicing, invoicing.Handle},
		{"saga-events", t.sagaEvents, lifecycleHandler(pool, st, log)},
	} {
		sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{ClientConfig: client, ConsumerGroup: s.groupPrefix + "-" + h.name})
		if err != nil {
			return err
		}
		defer func() { _ = sub.Close() }()
		router.AddConsumerHandler("billing-"+h.name, h.topic, sub, h.handle)
	}

	ln, err := net.Listen("tcp", s.httpAddr)
	if err != nil {
		return fmt.Errorf("--http-addr: %w", err)
	}
	srv := &http.Server{Handler: a.routes(mw), ReadHeaderTimeout: 10 * time.Second}

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	})
	wg.Go(func() {
		if err := messaging.RunRouter(runCtx, router); err != nil && runCtx.Err() == nil {
			errc <- fmt.Errorf("router: %w", err)
		}
	})
	wg.Go(func() {
		if err := consumeWithFranz(runCtx, brokers, s.groupPrefix+"-saga-audit", t.sagaEvents, pool, st, log); err != nil {
			errc <- err
		}
	})
	log.Info("billing: running", "http_addr", ln.Addr().String(), "schema", s.dtxSchema, "billing_schema", s.billingSchema,
		"trigger_topic", t.events, "command_topics", []string{t.credit, t.invoicing}, "event_topic", t.sagaEvents)

	var failure error
	select {
	case <-ctx.Done():
	case failure = <-errc:
	}
	cancel()
	drainCtx, drained := context.WithTimeout(context.WithoutCancel(ctx), s.drainTimeout)
	defer drained()
	if err := srv.Shutdown(drainCtx); err != nil && failure == nil {
		failure = fmt.Errorf("http: drain: %w", err)
	}
	wg.Wait()
	return failure
}

func splitComma(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
