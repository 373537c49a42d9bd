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
	"github.com/vextrus/dtx/internal/wait"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
)

// Defaults and limits of Config.
const (
	// DefaultBatchSize is Config.BatchSize when 0.
	DefaultBatchSize = 500
	// DefaultMetricsTimeout is Config.MetricsTimeout when 0.
	DefaultMetricsTimeout = 5 * time.Second
	// DefaultSwapTimeout is Config.SwapTimeout when 0.
	DefaultSwapTimeout = 30 * time.Second
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
	// during Rebuild. Defaults to DefaultBatchSize (500); between 1 and
	// 10000.
	BatchSize int

	// PollInterval is the longest a live projection waits for new events
	// without a notification. Defaults to 1s (the event store's default);
	// between 10ms and 1 minute.
	PollInterval time.Duration

	// Registerer receives the Runner's metrics and those of the event
	// store's log (see the package documentation). Defaults to nil:
	// metrics are kept but not registered. Register one Runner per
	// registry, and no other collector of the log's metrics (an outbox
	// relay's) on it.
	Registerer prometheus.Registerer

	// MetricsTimeout bounds the queries a scrape runs for
	// dtx_projection_events_behind and the log's metrics. Defaults to DefaultMetricsTimeout
	// (5s); between 10ms and 1 minute.
	MetricsTimeout time.Duration

	// SwapTimeout bounds the transaction in which Rebuild swaps the
	// rebuilt tables in (its waits for locks, each statement, the whole
	// transaction): live batches, Kafka handlers and readers of the live
	// tables wait for it, and it holds the cluster's horizon. A swap that
	// takes longer is rolled back and Rebuild fails with ErrSwapTimeout.
	// Defaults to DefaultSwapTimeout (30s); between 100ms and 1 hour.
	SwapTimeout time.Duration

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
	if c.SwapTimeout == 0 {
		c.SwapTimeout = DefaultSwapTimeout
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
	if c.SwapTimeout < 100*time.Millisecond || c.SwapTimeout > time.Hour {
		errs = append(errs, fmt.Errorf("projection: SwapTimeout: %s is outside 100ms..1h", c.SwapTimeout))
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

	streams        streams
	lockCheckpoint string
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
		if err := m.register(cfg.Registerer, store.Config().Schema); err != nil {
			return nil, fmt.Errorf("projection: register metrics: %w", err)
		}
	}
	schema := store.Config().Schema
	return &Runner{store: store, pool: pool, cfg: cfg, m: m,
		streams: newStreams(schema), lockCheckpoint: lockCheckpointQuery(schema)}, nil
}

// Run runs every projection from the event store's global log until ctx
// ends, each in its own goroutine, and returns nil then. Each batch of
// events (Config.BatchSize) is read in the store's gap-safe order and
// applied in one transaction with the projection's checkpoint (reader
// name: the projection's) and its streams' versions; events the versions
// already hold (applied from Kafka) are skipped. Failed batches are logged and retried with a backoff,
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
			if _, err := r.run(ctx, p, false); err != nil {
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

// CatchUp applies to every projection the events committed after its
// checkpoint, as Run does, and returns nil once a read of each finds less
// than a full batch: the projections have caught up with the log (events
// committed meanwhile are left to the live source). Use it before RunKafka
// to start a projection from the log and continue it live from Kafka: the
// per-stream versions make the records of events it applied no-ops. It
// returns ctx's error when ctx ends first, and fails as Run does.
func (r *Runner) CatchUp(ctx context.Context, projections ...Projection) error {
	if err := validateProjections(projections); err != nil {
		return err
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, p := range projections {
		r.m.track(p.Name())
		wg.Go(func() {
			done, err := r.run(ctx, p, true)
			if err == nil && !done {
				err = fmt.Errorf("projection %q: catch up: %w", p.Name(), context.Cause(ctx))
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// errAlreadyApplied reports a batch read after a position that is no
// longer the projection's checkpoint: another replica (or a rebuild's swap)
// moved it. The batch is rolled back and reading resumes from the
// checkpoint.
var errAlreadyApplied = errors.New("projection: the batch was applied by another replica")

// Retry delays of a failed batch: the first wait, doubling up to the last.
const (
	minRetryDelay = 100 * time.Millisecond
	maxRetryDelay = 10 * time.Second
)

// run runs one projection from the global log until ctx ends, or, with
// untilCaughtUp, until a read returns less than a full batch. It reports
// whether it caught up.
func (r *Runner) run(ctx context.Context, p Projection, untilCaughtUp bool) (bool, error) {
	name := p.Name()
	schema := r.store.Config().Schema
	cp, err := txlog.NewReader[struct{}](txlog.Config{Schema: schema, Log: postgres.LogName, Reader: name}, nil)
	if err != nil {
		return false, fmt.Errorf("projection %q: %w", name, err)
	}
	// Each batch locks the checkpoint row: it must exist.
	for {
		_, err := cp.Register(ctx, r.pool)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false, nil
		}
		r.cfg.Logger.WarnContext(ctx, "projection: register the checkpoint; retrying", "projection", name, "err", err)
		if !wait.Sleep(ctx, r.cfg.PollInterval) {
			return false, nil
		}
	}
	listener, err := txlog.NewListener(r.pool, txlog.ListenerConfig{
		Channel:             schema + "." + postgres.LogName,
		PollInterval:        r.cfg.PollInterval,
		BlockedPollInterval: min(r.cfg.PollInterval, txlog.DefaultBlockedPollInterval),
		Logger:              r.cfg.Logger,
	})
	if err != nil {
		return false, fmt.Errorf("projection %q: %w", name, err)
	}
	sub := listener.Subscribe()
	defer sub.Close()
	if err := listener.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		return false, fmt.Errorf("projection %q: %w", name, err)
	}
	defer listener.Stop()

	a := newApplier(p, r.m)
	var (
		after   eventstore.Position
		loaded  bool
		attempt int
		wake    = txlog.WakeNotified
	)
	for {
		if ctx.Err() != nil {
			return false, nil
		}
		var (
			n    int
			full bool
		)
		if !loaded {
			var at txlog.Position
			at, err = cp.LoadCheckpoint(ctx, r.pool)
			after, loaded = eventstore.Position{TxID: at.TxID, Pos: at.Pos}, err == nil
		}
		if err == nil {
			after, n, full, err = r.batch(ctx, cp, a, after)
		}
		switch {
		case ctx.Err() != nil:
			return false, nil
		case errors.Is(err, txlog.ErrPositionAhead):
			return false, fmt.Errorf("projection %q: %w: %w", name, eventstore.ErrPositionAhead, err)
		case errors.Is(err, errAlreadyApplied):
			loaded, attempt = false, 0
			continue
		case err != nil:
			attempt++
			r.cfg.Logger.WarnContext(ctx, "projection: batch failed; retrying", "projection", name, "attempt", attempt, "err", err)
			if !wait.Sleep(ctx, wait.Backoff(minRetryDelay, maxRetryDelay, attempt)) {
				return false, nil
			}
			continue
		}
		attempt = 0
		if full {
			continue
		}
		if untilCaughtUp {
			return true, nil
		}
		// A notification whose events cannot be read yet means an older
		// transaction holds them back: look again soon.
		blocked := n == 0 && wake == txlog.WakeNotified
		if wake, err = sub.Wait(ctx, blocked); err != nil {
			return false, nil
		}
	}
}

// batch reads the events after after and, in one transaction, applies those
// its streams' versions do not hold yet, moves the versions and the
// checkpoint. It returns where the next read continues, how many events it
// read, and whether the read was full.
//
// The transaction locks the checkpoint before anything else and goes on
// only if it is still after: replicas of the projection take turns, and a
// replica that read a batch another one has applied meanwhile rolls back.
// It then locks the versions of the batch's streams (in stream order), so
// that an event another source (Kafka) applied is skipped, and that source
// waits for this batch or this batch for it. Locking the checkpoint and the
// versions before any effect also orders the writers of the read model, so
// that they do not deadlock on its rows.
func (r *Runner) batch(ctx context.Context, cp *txlog.Reader[struct{}], a applier, after eventstore.Position) (eventstore.Position, int, bool, error) {
	b, err := r.store.ReadAll(ctx, eventstore.ReadAllParams{After: after, Limit: r.cfg.BatchSize})
	if err != nil {
		return after, 0, false, err
	}
	if len(b.Events) == 0 {
		return b.End, 0, b.Full, nil
	}
	name := a.name
	var dups int
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		var at eventstore.Position
		if err := tx.QueryRow(ctx, r.lockCheckpoint, postgres.LogName, name).Scan(&at.TxID, &at.Pos); err != nil {
			return fmt.Errorf("lock the checkpoint: %w", err)
		}
		if at != after {
			return errAlreadyApplied
		}
		versions, err := r.streams.lockVersions(ctx, tx, name, streamIDs(b.Events))
		if err != nil {
			return err
		}
		kept, moved := fresh(b.Events, versions)
		dups = len(b.Events) - len(kept)
		if err := a.apply(ctx, tx, kept); err != nil {
			return err
		}
		if err := r.streams.saveVersions(ctx, tx, name, moved); err != nil {
			return err
		}
		ok, err := cp.SaveCheckpoint(ctx, tx, txlog.Position{TxID: b.End.TxID, Pos: b.End.Pos})
		if err != nil {
			return err
		}
		if !ok {
			return errAlreadyApplied
		}
		return nil
	})
	if err != nil {
		return after, 0, false, err
	}
	if dups > 0 {
		r.m.duplicates.WithLabelValues(name).Add(float64(dups))
	}
	r.m.lag.WithLabelValues(name).Set(time.Since(b.Events[len(b.Events)-1].RecordedAt).Seconds())
	return b.End, len(b.Events), b.Full, nil
}

// lockCheckpointQuery returns a reader's checkpoint, locked until the end of
// the transaction. $1 log, $2 reader.
func lockCheckpointQuery(schema string) string {
	return `SELECT tx_id::text::bigint, position FROM ` + pgx.Identifier{schema, "txlog_checkpoints"}.Sanitize() + `
WHERE log_name = $1 AND reader = $2 FOR UPDATE`
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
