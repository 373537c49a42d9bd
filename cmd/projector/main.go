package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vextrus/dtx/internal/service"
	"github.com/vextrus/dtx/internal/txlog"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
	"github.com/vextrus/dtx/pkg/projection"
)

const summary = `projector builds read models from dtx events: it reads the event store's global log in
PostgreSQL in gap-safe commit order and updates each read model with its checkpoint in
the same transaction, so each event takes effect once, across crashes and restarts.

It runs the built-in stream_summaries projection (table stream_summaries: per stream its
type, version, last event and event count) over every event type, or only those given by
--event-types. --rebuild rebuilds stream_summaries from
the first event into a shadow table and swaps it in while the live projection goes on.

Consuming events from Kafka as the live source is not built yet: the projector reads the
event store, live and when rebuilding.`

// settings are the projector's own flags.
type settings struct {
	batchSize    int
	pollInterval time.Duration
	eventTypes   string
	rebuild      bool
}

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
}

// types returns the event types of --event-types.
func (st *settings) types() []string {
	var types []string
	for t := range strings.SplitSeq(st.eventTypes, ",") {
		if t = strings.TrimSpace(t); t != "" {
			types = append(types, t)
		}
	}
	return types
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
		Registerer:   env.Registry,
		Logger:       env.Logger,
	})
	if err != nil {
		return err
	}
	p := projection.StreamSummaries(env.Config.Schema, types...)
	env.Logger.InfoContext(ctx, "projector: running", "projection", p.Name(), "event_types", types,
		"batch_size", st.batchSize, "poll_interval", st.pollInterval.String())

	var wg sync.WaitGroup
	defer wg.Wait()
	if st.rebuild {
		wg.Go(func() { rebuild(ctx, env, runner, p) })
	}
	if err := runner.Run(ctx, p); err != nil {
		return err
	}
	env.Logger.InfoContext(ctx, "projector: stopped", "projection", p.Name())
	return nil
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
	})
}
