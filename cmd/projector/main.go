package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/vextrus/dtx/internal/service"
	"github.com/vextrus/dtx/internal/txlog"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/projection"
	"github.com/vextrus/dtx/pkg/topic"
)

const summary = `projector builds read models from dtx events: it reads the event store's global log in
PostgreSQL in gap-safe commit order and updates each read model with its checkpoint in
the same transaction, so each event takes effect once, across crashes and restarts.

It runs the built-in stream_summaries projection (table stream_summaries: per stream its
type, version, last event and event count) over every event type, or only those given by
--event-types. --rebuild rebuilds stream_summaries from
the first event into a shadow table and swaps it in while the live projection goes on.

--source=log (the default) reads the event store's global log, live. --source=kafka
first catches up from the log, then goes on live from the Kafka --topics the outbox relay
publishes the events to, as member of the consumer group --group (replicas share its
partitions); records that are not events go to <topic>.dlq, each logged as a warning and
counted by dtx_dead_letters_total. With --schemas DIR (repeatable), the records are also
validated against dtx's built-in schemas and those of DIR, and a record whose type has no
schema or whose payload breaks it goes to <topic>.dlq too; without --schemas they are only
decoded. --topic-prefix starts the default --group. Both sources keep each
stream's last applied version with the read model, so nothing is applied twice, whichever
source delivers an event first, and a stream's events missing from Kafka are read from
the store.

A transaction left open anywhere in the cluster holds back every event committed after
it began; the projector waits for it, never skips, and says so: the gauge
dtx_txlog_horizon_held_seconds, a warning naming the blocking pid and database after
--horizon-warn-after, and /readyz after --horizon-not-ready-after (see ` + txlog.HorizonRunbook + `).`

// settings are the projector's own flags.
type settings struct {
	batchSize    int
	pollInterval time.Duration
	eventTypes   string
	rebuild      bool
	source       string
	topics       string
	group        string
	swapTimeout  time.Duration
	// horizon configures the watch of the events log's horizon
	// (txlog.HorizonWatch).
	horizon service.HorizonSettings
}

// Sources of --source.
const (
	sourceLog   = "log"
	sourceKafka = "kafka"
)

func (st *settings) flags(s *service.Settings) {
	fs := s.FlagSet()
	fs.IntVar(&st.batchSize, "batch-size", projection.DefaultBatchSize,
		fmt.Sprintf("most events applied in one transaction, live and when rebuilding (1..%d)", txlog.MaxBatchSize))
	fs.DurationVar(&st.pollInterval, "poll-interval", txlog.DefaultPollInterval,
		fmt.Sprintf("longest wait for new events without a notification (%s..%s)", txlog.MinInterval, txlog.MaxInterval))
	fs.StringVar(&st.eventTypes, "event-types", "",
		"comma-separated event types stream_summaries counts; events of other types are skipped (empty: every type)")
	fs.BoolVar(&st.rebuild, "rebuild", false,
		"at start, rebuild stream_summaries from the first event into a shadow table and swap it in, while the live projection runs")
	fs.StringVar(&st.source, "source", sourceLog,
		"live source of the events: log (the event store's global log) or kafka (catch up from the log, then consume --topics)")
	fs.StringVar(&st.topics, "topics", "",
		"with --source=kafka: comma-separated topics the outbox relay publishes the events to, e.g. order.events (required then)")
	fs.StringVar(&st.group, "group", "",
		"with --source=kafka: the Kafka consumer group; replicas with the same group share the partitions (empty: --topic-prefix then "+defaultGroup+")")
	fs.DurationVar(&st.swapTimeout, "swap-timeout", projection.DefaultSwapTimeout,
		"with --rebuild: longest the swap of the rebuilt table may take (it waits for the live projection's lock); on timeout the swap is rolled back, the rebuild fails and the next --rebuild resumes it (100ms..1h)")
	st.horizon.Register(fs, "events")
}

// defaultGroup is the consumer group after --topic-prefix when --group is
// empty.
const defaultGroup = "dtx.projector." + projection.StreamSummariesName

// topicList returns the topics of --topics.
func (st *settings) topicList() []string { return splitList(st.topics) }

// types returns the event types of --event-types.
func (st *settings) types() []string { return splitList(st.eventTypes) }

// splitList returns the non-empty items of a comma-separated list.
func splitList(s string) []string {
	var items []string
	for t := range strings.SplitSeq(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			items = append(items, t)
		}
	}
	return items
}

// validate checks each setting alone, so that the error names its flag.
func (st *settings) validate() error {
	var errs []error
	if st.batchSize < 1 || st.batchSize > txlog.MaxBatchSize {
		errs = append(errs, fmt.Errorf("batch-size (%s): %d is outside 1..%d", service.EnvName("batch-size"), st.batchSize, txlog.MaxBatchSize))
	}
	if st.pollInterval < txlog.MinInterval || st.pollInterval > txlog.MaxInterval {
		errs = append(errs, fmt.Errorf("poll-interval (%s): %s is outside %s..%s", service.EnvName("poll-interval"), st.pollInterval, txlog.MinInterval, txlog.MaxInterval))
	}
	for _, t := range st.types() {
		if len(t) > 255 {
			errs = append(errs, fmt.Errorf("event-types (%s): a type of %d bytes, want at most 255", service.EnvName("event-types"), len(t)))
		}
	}
	if st.swapTimeout < 100*time.Millisecond || st.swapTimeout > time.Hour {
		errs = append(errs, fmt.Errorf("swap-timeout (%s): %s is outside 100ms..1h", service.EnvName("swap-timeout"), st.swapTimeout))
	}
	if err := st.horizon.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch st.source {
	case sourceLog:
	case sourceKafka:
		if len(st.topicList()) == 0 {
			errs = append(errs, fmt.Errorf("topics (%s): required with --source=kafka", service.EnvName("topics")))
		}
	default:
		errs = append(errs, fmt.Errorf("source (%s): %q is neither %s nor %s", service.EnvName("source"), st.source, sourceLog, sourceKafka))
	}
	return errors.Join(errs...)
}

// run is the binary's work loop: the stream_summaries projection until ctx
// ends, and its rebuild once at start with --rebuild.
func (st *settings) run(ctx context.Context, env *service.Env) error {
	types := st.types()
	store, err := postgres.New(env.Pool, postgres.Config{Schema: env.Config.Schema})
	if err != nil {
		return err
	}
	runner, err := projection.New(store, env.Pool, projection.Config{
		BatchSize:    st.batchSize,
		PollInterval: st.pollInterval,
		SwapTimeout:  st.swapTimeout,
		Registerer:   env.Registry,
		Logger:       env.Logger,
	})
	if err != nil {
		return err
	}
	p := projection.StreamSummaries(env.Config.Schema, types...)
	// A transaction left open anywhere in the cluster holds back every
	// event committed after it began, from the projection and from the
	// relay that publishes them: the watch says so.
	horizon, err := st.horizon.Watch(ctx, env, txlog.HorizonLog{Schema: env.Config.Schema, Log: postgres.LogName})
	if err != nil {
		return err
	}
	defer horizon.Stop()
	if st.group == "" {
		st.group = env.Config.TopicPrefix + defaultGroup
	}
	if st.source == sourceKafka {
		// Until every topic it consumes (and their dead-letter topics)
		// exists, the projector is not ready and does not start.
		var names []string
		for _, t := range st.topicList() {
			names = append(names, t, topic.DeadLetter(t))
		}
		if err := env.RequireTopics(ctx, names); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		// Catch up from the log first: Kafka may no longer hold the oldest
		// events, and reading the log is faster.
		env.Logger.InfoContext(ctx, "projector: catching up from the log", "projection", p.Name())
		if err := runner.CatchUp(ctx, p); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	env.Logger.InfoContext(ctx, "projector: running", "projection", p.Name(), "event_types", types,
		"batch_size", st.batchSize, "poll_interval", st.pollInterval.String(), "source", st.source,
		"topics", st.topicList(), "group", st.group)

	var wg sync.WaitGroup
	defer wg.Wait()
	if st.rebuild {
		wg.Go(func() { rebuild(ctx, env, runner, p) })
	}
	if st.source == sourceKafka {
		err = st.runKafka(ctx, env, runner, p)
	} else {
		err = runner.Run(ctx, p)
	}
	if err != nil {
		return err
	}
	env.Logger.InfoContext(ctx, "projector: stopped", "projection", p.Name())
	return nil
}

// runKafka runs p live from Kafka until ctx ends.
func (st *settings) runKafka(ctx context.Context, env *service.Env, runner *projection.Runner, p projection.Projection) error {
	logger := watermill.NewSlogLogger(env.Logger)
	client := kafka.ClientConfig{Brokers: env.Config.KafkaBrokers, ClientID: "dtx-projector", Logger: logger, Opts: env.Config.KafkaOpts()}
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{ClientConfig: client, ConsumerGroup: st.group})
	if err != nil {
		return err
	}
	defer func() { _ = sub.Close() }()
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: client})
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	params := projection.KafkaParams{
		Subscriber:          sub,
		DeadLetterPublisher: pub,
		Topics:              st.topicList(),
		Retry:               middleware.RetryConfig{Logger: env.Logger},
		DeadLetter:          middleware.DeadLetterConfig{Logger: env.Logger, Registerer: env.Registry},
	}
	if len(env.Config.SchemaDirs) > 0 {
		// Without the service's own schemas, every event type would be
		// unknown: validate only when they are given.
		params.Schemas = env.Schemas
	}
	return runner.RunKafka(ctx, params, p)
}

// rebuild rebuilds p while the live projection runs, and logs how it ended:
// a rebuild that fails or is cancelled is resumed by the next one.
func rebuild(ctx context.Context, env *service.Env, runner *projection.Runner, p projection.RebuildableProjection) {
	start := time.Now()
	env.Logger.InfoContext(ctx, "projector: rebuild started", "projection", p.Name())
	err := runner.Rebuild(ctx, p)
	switch {
	case err == nil:
		env.Logger.InfoContext(ctx, "projector: rebuild done", "projection", p.Name(), "duration", time.Since(start).String())
	case ctx.Err() != nil:
		env.Logger.InfoContext(ctx, "projector: rebuild interrupted; the next rebuild resumes it", "projection", p.Name(), "err", err)
	default:
		env.Logger.ErrorContext(ctx, "projector: rebuild failed; the live projection goes on", "projection", p.Name(), "err", err)
	}
}

func main() {
	var st settings
	service.Main(service.App{
		Name:             "projector",
		Summary:          summary,
		DefaultAdminAddr: ":8083",
		FlagsFunc:        st.flags,
		ValidateFunc:     st.validate,
		RunFunc:          st.run,
		ReadyChecksFunc: func() []string {
			if st.source == sourceKafka {
				return []string{txlog.HorizonCheck, service.TopicsCheck}
			}
			return []string{txlog.HorizonCheck}
		},
	})
}
