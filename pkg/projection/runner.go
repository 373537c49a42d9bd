package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vextrus/dtx/internal/txlog"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
)

// Defaults and limits of Config.
const (
	// DefaultBatchSize is Config.BatchSize when 0.
	DefaultBatchSize = 100
	// DefaultMetricsTimeout is Config.MetricsTimeout when 0.
	DefaultMetricsTimeout = 5 * time.Second
	// MaxNameLen is the longest Projection.Name accepted, in bytes: the
	// rest of a reader name's 255 bytes is kept for rebuild readers.
	MaxNameLen = 200
	// ShadowSuffix is appended to a table's name to name its shadow during
	// Rebuild.
	ShadowSuffix = "_rebuild"
)

// Config configures a Runner.
type Config struct {
	// BatchSize is the most events applied in one transaction, live and
	// during Rebuild. Defaults to DefaultBatchSize (100); between 1 and
	// 10000.
	BatchSize int

	// PollInterval is the longest a live projection waits for new events
	// without a notification. Defaults to 1s (the event store's default);
	// between 10ms and 1 minute.
	PollInterval time.Duration

	// Registerer receives the Runner's metrics (see the package
	// documentation). Defaults to nil: metrics are kept but not
	// registered. Register one Runner per registry.
	Registerer prometheus.Registerer

	// MetricsTimeout bounds the query a scrape runs for
	// dtx_projection_events_behind. Defaults to DefaultMetricsTimeout
	// (5s); between 10ms and 1 minute.
	MetricsTimeout time.Duration

	// Logger logs failed batches (which are retried). Defaults to
	// slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.PollInterval == 0 {
		c.PollInterval = txlog.DefaultPollInterval
	}
	if c.MetricsTimeout == 0 {
		c.MetricsTimeout = DefaultMetricsTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.BatchSize < 1 || c.BatchSize > txlog.MaxBatchSize {
		errs = append(errs, fmt.Errorf("projection: BatchSize: %d is outside 1..%d", c.BatchSize, txlog.MaxBatchSize))
	}
	if c.PollInterval < txlog.MinInterval || c.PollInterval > txlog.MaxInterval {
		errs = append(errs, fmt.Errorf("projection: PollInterval: %s is outside %s..%s", c.PollInterval, txlog.MinInterval, txlog.MaxInterval))
	}
	if c.MetricsTimeout < 10*time.Millisecond || c.MetricsTimeout > time.Minute {
		errs = append(errs, fmt.Errorf("projection: MetricsTimeout: %s is outside 10ms..1m", c.MetricsTimeout))
	}
	return errors.Join(errs...)
}

// Runner runs projections over an event store's global log and rebuilds
// them. It is safe for concurrent use.
type Runner struct {
	store *postgres.Store
	pool  *pgxpool.Pool
	cfg   Config
	m     *metrics
}

// New returns a Runner of the events of store, whose read models live in
// the database of pool. It checks cfg, failing with an error naming every
// invalid field, and registers the metrics on cfg.Registerer.
func New(store *postgres.Store, pool *pgxpool.Pool, cfg Config) (*Runner, error) {
	if store == nil || pool == nil {
		return nil, errors.New("projection: New: store and pool are required")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := newMetrics(pool, store.Config().Schema, cfg.MetricsTimeout, cfg.Logger)
	if cfg.Registerer != nil {
		if err := m.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("projection: register metrics: %w", err)
		}
	}
	return &Runner{store: store, pool: pool, cfg: cfg, m: m}, nil
}

// Run runs every projection until ctx ends, each in its own goroutine
// through the event store's Subscribe under its own reader name, and
// returns nil then. Failed batches are logged and retried with a backoff,
// so an event whose Apply always fails holds its projection back (and
// only it). Run fails at once for an invalid projection (nil, a bad or
// repeated name, no handled type) and ends early, stopping the others,
// when a projection's subscription cannot go on (its checkpoint lies beyond
// the database's transaction ids).
func (r *Runner) Run(ctx context.Context, projections ...Projection) error {
	if err := validateProjections(projections); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, p := range projections {
		r.m.track(p.Name())
		wg.Go(func() {
			if err := r.run(ctx, p); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				cancel()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// errAlreadyApplied reports a batch whose first event is at or before the
// projection's checkpoint: another replica applied it first. The batch is
// rolled back and the subscription restarted from the checkpoint.
var errAlreadyApplied = errors.New("projection: the batch was applied by another replica")

// run runs one projection until ctx ends.
func (r *Runner) run(ctx context.Context, p Projection) error {
	name := p.Name()
	cp, err := txlog.NewReader[struct{}](txlog.Config{Schema: r.store.Config().Schema, Log: postgres.LogName, Reader: name}, nil)
	if err != nil {
		return fmt.Errorf("projection %q: %w", name, err)
	}
	// The guard locks the checkpoint row: it must exist.
	for {
		_, err := cp.Register(ctx, r.pool)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		r.cfg.Logger.WarnContext(ctx, "projection: register the checkpoint; retrying", "projection", name, "err", err)
		if !sleep(ctx, r.cfg.PollInterval) {
			return nil
		}
	}
	handled := handledSet(p)
	logger := r.cfg.Logger
	for {
		err := r.store.Subscribe(ctx, postgres.SubscribeParams{
			Reader:       name,
			Handler:      r.handler(name, handled, p.Apply),
			BatchSize:    r.cfg.BatchSize,
			PollInterval: r.cfg.PollInterval,
			Logger:       logger,
			ErrorFunc: func(ctx context.Context, err error, attempt int) error {
				if errors.Is(err, errAlreadyApplied) {
					return err
				}
				logger.WarnContext(ctx, "projection: batch failed; retrying", "projection", name, "attempt", attempt, "err", err)
				return nil
			},
		})
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errAlreadyApplied):
			continue
		case err != nil:
			return fmt.Errorf("projection %q: %w", name, err)
		}
	}
}

// handler applies the events of handled types and skips the others,
// counting both. At the first event of each batch it locks the checkpoint
// and checks that the event lies after it.
//
// Subscribe's own guard only refuses a batch whose end is not past the
// checkpoint: a replica that read a longer batch than the one another
// replica just committed would apply the overlap again. Locking the
// checkpoint before any effect also orders replicas' batches, so they do
// not deadlock on the read model's rows.
func (r *Runner) handler(name string, handled typeSet, apply ApplyFunc) postgres.HandlerFunc {
	applied := r.m.applied.WithLabelValues(name)
	lag := r.m.lag.WithLabelValues(name)
	lock := lockCheckpointQuery(r.store.Config().Schema)
	var batch pgx.Tx
	return func(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
		if tx != batch {
			var cp eventstore.Position
			if err := tx.QueryRow(ctx, lock, postgres.LogName, name).Scan(&cp.TxID, &cp.Pos); err != nil {
				return fmt.Errorf("lock the checkpoint: %w", err)
			}
			if ev.Position.Compare(cp) <= 0 {
				return errAlreadyApplied
			}
			batch = tx
		}
		if handled.has(ev.Type) {
			if err := apply(ctx, tx, ev); err != nil {
				return err
			}
			applied.Inc()
		} else {
			r.m.skipped.WithLabelValues(name, ev.Type).Inc()
		}
		lag.Set(time.Since(ev.RecordedAt).Seconds())
		return nil
	}
}

// lockCheckpointQuery returns a reader's checkpoint, locked until the end of
// the transaction. $1 log, $2 reader.
func lockCheckpointQuery(schema string) string {
	return `SELECT tx_id::text::bigint, position FROM ` + pgx.Identifier{schema, "txlog_checkpoints"}.Sanitize() + `
WHERE log_name = $1 AND reader = $2 FOR UPDATE`
}

// sleep waits d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// AllTypes in a projection's Handles means every event type.
const AllTypes = "*"

// typeSet is the event types a projection handles.
type typeSet map[string]bool

// has reports whether the projection handles events of type typ.
func (s typeSet) has(typ string) bool { return s[AllTypes] || s[typ] }

func handledSet(p Projection) typeSet {
	set := make(typeSet)
	for _, t := range p.Handles() {
		set[t] = true
	}
	return set
}

func validateProjections(projections []Projection) error {
	if len(projections) == 0 {
		return errors.New("projection: Run: no projection")
	}
	var errs []error
	seen := make(map[string]bool)
	for i, p := range projections {
		if p == nil {
			errs = append(errs, fmt.Errorf("projection: projections[%d] is nil", i))
			continue
		}
		if err := validateProjection(p); err != nil {
			errs = append(errs, fmt.Errorf("projection: projections[%d]: %w", i, err))
		}
		if seen[p.Name()] {
			errs = append(errs, fmt.Errorf("projection: projections[%d]: name %q is used twice", i, p.Name()))
		}
		seen[p.Name()] = true
	}
	return errors.Join(errs...)
}

func validateProjection(p Projection) error {
	var errs []error
	if l := len(p.Name()); l < 1 || l > MaxNameLen {
		errs = append(errs, fmt.Errorf("Name: %d bytes, want 1..%d", l, MaxNameLen))
	}
	if len(p.Handles()) == 0 {
		errs = append(errs, fmt.Errorf("Handles: projection %q handles no event type", p.Name()))
	}
	return errors.Join(errs...)
}
