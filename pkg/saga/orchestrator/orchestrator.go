package orchestrator

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/internal/sqlfile"
	"github.com/vextrus/dtx/internal/sweep"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/saga"
)

//go:embed sql/*.sql
var sqlFS embed.FS

// ErrNotRunning is returned by Handle once the orchestrator's Run has
// stopped: the message is nacked and comes again. (Before Run starts, Handle
// waits for it, or for the message's context.)
var ErrNotRunning = errors.New("orchestrator: not running")

// ErrUnknownSaga is returned by operator calls for a saga id that does not
// exist.
var ErrUnknownSaga = errors.New("orchestrator: no such saga")

// ErrUnknownDefinition is returned when a saga's definition version, or a
// definition to start, is not among Config.Definitions.
var ErrUnknownDefinition = errors.New("orchestrator: unknown saga definition")

type queries struct {
	lock, seen, inbox, load, save, history, outbox, claim, list, show, timeline, counts string
	pruneCandidates, prune                                                              string
}

func loadQueries(schema string) (queries, error) {
	l := sqlfile.NewLoader(sqlFS, "sql", schema)
	q := queries{
		lock: l.Load("lock.sql"), seen: l.Load("seen.sql"), inbox: l.Load("inbox.sql"), load: l.Load("load.sql"),
		save: l.Load("save.sql"), history: l.Load("history.sql"), outbox: l.Load("outbox.sql"), claim: l.Load("claim.sql"),
		list: l.Load("list.sql"), show: l.Load("show.sql"), timeline: l.Load("timeline.sql"),
		counts: l.Load("counts.sql"), pruneCandidates: l.Load("prune_candidates.sql"), prune: l.Load("prune.sql"),
	}
	return q, l.Err()
}

// Orchestrator runs sagas: see the package documentation.
type Orchestrator struct {
	cfg   Config
	pool  *pgxpool.Pool
	q     queries
	ob    *outbox.Outbox
	inbox *inbox.Inbox
	m     *metrics
	// pruner deletes finished sagas past their retention; nil when
	// pruning is disabled.
	pruner *sweep.Sweeper

	queue chan *item
	warns warnLimiter // rate-limits Handle's warnings

	mu      sync.Mutex
	running bool
	stopped chan struct{} // closed when Run ends
}

// New returns an Orchestrator over pool. It does not touch the database.
func New(pool *pgxpool.Pool, cfg Config) (*Orchestrator, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if pool == nil {
		return nil, errors.New("orchestrator: pool: required")
	}
	if err := CheckSchemas(cfg.Definitions, cfg.Schemas); err != nil {
		return nil, err
	}
	q, err := loadQueries(cfg.Schema)
	if err != nil {
		return nil, fmt.Errorf("orchestrator: %w", err)
	}
	// A batch takes the outbox's lock of every (topic, key) it writes before
	// its transaction gets an id (see process), so its own transactions never
	// risk the order. A caller's transaction that wrote before Start cannot:
	// KeyOrderVerify refuses it with ErrKeyOrder rather than invert a key.
	ob, err := outbox.New(outbox.Config{Schema: cfg.Schema, Registry: cfg.Schemas, KeyOrder: outbox.KeyOrderVerify, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("orchestrator: %w", err)
	}
	ib, err := inbox.New(pool, inbox.Config{Schema: cfg.Schema, Consumer: cfg.Consumer, Retention: cfg.InboxRetention, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("orchestrator: %w", err)
	}
	o := &Orchestrator{
		cfg: cfg, pool: pool, q: q, ob: ob, inbox: ib,
		queue:   make(chan *item, cfg.MaxBatch*cfg.Workers),
		stopped: make(chan struct{}),
	}
	o.m = newMetrics(o)
	o.pruner = o.newPruner()
	if cfg.Registerer != nil {
		if err := o.m.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("orchestrator: register metrics: %w", err)
		}
	}
	return o, nil
}

// Definitions returns the registry the orchestrator runs.
func (o *Orchestrator) Definitions() *saga.Registry { return o.cfg.Definitions }

// Topics returns the topics the orchestrator must consume: the reply topic
// and every trigger's topic, each once.
func (o *Orchestrator) Topics() []string {
	topics := []string{o.cfg.ReplyTopic}
	seen := map[string]bool{o.cfg.ReplyTopic: true}
	for _, t := range o.cfg.Definitions.Triggers() {
		if !seen[t.Trigger.Topic] {
			seen[t.Trigger.Topic] = true
			topics = append(topics, t.Trigger.Topic)
		}
	}
	return topics
}

// Run handles what Handle queues and fires due sagas (the scheduler), sweeps
// the inbox and prunes finished sagas (see Prune), until ctx ends. A batch in flight when ctx ends is
// finished (its transaction commits or rolls back) before Run returns. Run
// may be called once.
func (o *Orchestrator) Run(ctx context.Context) error {
	o.mu.Lock()
	if o.running {
		o.mu.Unlock()
		return errors.New("orchestrator: Run called twice")
	}
	o.running = true
	o.mu.Unlock()
	defer close(o.stopped)

	var wg sync.WaitGroup
	for range o.cfg.Workers {
		wg.Go(func() { o.work(ctx) })
	}
	wg.Go(func() { o.schedule(ctx) })
	wg.Go(func() {
		if err := o.inbox.Run(ctx); err != nil && ctx.Err() == nil {
			o.cfg.Logger.ErrorContext(ctx, "orchestrator: inbox sweeper stopped", "err", err)
		}
	})
	wg.Go(func() { o.prune(ctx) })
	wg.Wait()
	o.failQueued()
	return nil
}

// failQueued answers items still queued once the workers stopped.
func (o *Orchestrator) failQueued() {
	for {
		select {
		case it := <-o.queue:
			it.finish(result{err: ErrNotRunning})
		default:
			return
		}
	}
}

// submit queues items for the workers and waits for their results. Items
// queued before Run starts wait for it (or for ctx).
func (o *Orchestrator) submit(ctx context.Context, items ...*item) error {
	for _, it := range items {
		select {
		case o.queue <- it:
		case <-ctx.Done():
			return ctx.Err()
		case <-o.stopped:
			return ErrNotRunning
		}
	}
	var errs []error
	for _, it := range items {
		select {
		case r := <-it.done:
			if r.err != nil {
				errs = append(errs, r.err)
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-o.stopped:
			// The workers are gone; failQueued answers what they left.
			if r := <-it.done; r.err != nil {
				errs = append(errs, r.err)
			}
		}
	}
	return errors.Join(errs...)
}

// work takes batches off the queue until ctx ends.
func (o *Orchestrator) work(ctx context.Context) {
	for {
		var first *item
		select {
		case first = <-o.queue:
		case <-ctx.Done():
			return
		}
		batch := o.collect(ctx, first)
		o.runBatch(context.WithoutCancel(ctx), batch)
	}
}

// collect gathers a batch: first and what arrives within the batch window,
// up to MaxBatch items.
func (o *Orchestrator) collect(ctx context.Context, first *item) []*item {
	batch := []*item{first}
	var timeout <-chan time.Time
	if o.cfg.BatchWindow > 0 {
		t := time.NewTimer(o.cfg.BatchWindow)
		defer t.Stop()
		timeout = t.C
	}
	for len(batch) < o.cfg.MaxBatch {
		if timeout == nil {
			select {
			case it := <-o.queue:
				batch = append(batch, it)
				continue
			default:
				return batch
			}
		}
		select {
		case it := <-o.queue:
			batch = append(batch, it)
		case <-timeout:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

// batchTimeout bounds one batch's transaction, so that a drain is not held
// by a hung connection.
const batchTimeout = 30 * time.Second

// runBatch handles batch in one transaction. If that fails, it handles each
// item in a transaction of its own, so that one bad item fails alone.
func (o *Orchestrator) runBatch(ctx context.Context, batch []*item) {
	o.m.batchSize.Observe(float64(len(batch)))
	err := o.inTx(ctx, batch)
	if err == nil || len(batch) == 1 {
		for _, it := range batch {
			if err != nil {
				it.res.err = err
			}
			it.finish(it.res)
		}
		return
	}
	o.cfg.Logger.WarnContext(ctx, "orchestrator: batch failed; handling its messages one by one", "size", len(batch), "err", err)
	for _, it := range batch {
		it.res = result{}
		if err := o.inTx(ctx, []*item{it}); err != nil {
			it.res.err = err
		}
		it.finish(it.res)
	}
}

// inTx runs process in a transaction of its own, retrying deadlocks,
// serialization failures and a message recorded concurrently a few times.
func (o *Orchestrator) inTx(ctx context.Context, batch []*item) error {
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			for _, it := range batch {
				it.res = result{}
			}
		}
		err = o.tryTx(ctx, batch)
		var pgErr *pgconn.PgError
		if errors.Is(err, errInboxRace) {
			continue
		}
		if err == nil || !errors.As(err, &pgErr) || (pgErr.Code != "40P01" && pgErr.Code != "40001") {
			return err
		}
	}
	return err
}

func (o *Orchestrator) tryTx(ctx context.Context, batch []*item) error {
	ctx, cancel := context.WithTimeout(ctx, batchTimeout)
	defer cancel()
	tx, err := o.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("orchestrator: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := o.process(ctx, tx, batch); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("orchestrator: commit: %w", err)
	}
	o.m.observe(batch)
	return nil
}

// inOwnTx runs items in a transaction of the caller's (tx != nil) or of its
// own.
func (o *Orchestrator) inOwnTx(ctx context.Context, tx pgx.Tx, items ...*item) error {
	if tx != nil {
		return o.process(ctx, tx, items)
	}
	return o.inTx(ctx, items)
}
