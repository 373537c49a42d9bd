package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/internal/txlog"
	"github.com/vextrus/dtx/internal/wait"
)

// outboxLog is the outbox's table name, which names the log in
// txlog_checkpoints.
const outboxLog = "outbox"

// saveTimeout bounds saving the checkpoint and releasing the lease once the
// relay's context is done.
const saveTimeout = 5 * time.Second

// ErrRunning is returned by Run while an earlier Run of the same Relay is
// still running.
var ErrRunning = errors.New("relay: already running")

// Relay publishes the outbox log to Kafka. Create it with New and run it
// with Run; see the package docs for what it guarantees.
type Relay struct {
	pool   *pgxpool.Pool
	kopts  []kgo.Opt
	cfg    Config
	q      queries
	reader *txlog.Reader[row]
	pruner *txlog.Pruner
	m      *metrics
	tracer trace.Tracer // nil: no spans (see trace.go)

	running atomic.Bool
	// clientStale is set when the broker answered a record with an error
	// the Kafka client keeps for good (see isClientStale): the loop
	// replaces the client before it produces again.
	clientStale atomic.Bool
	healthState
}

// New returns a Relay that reads the outbox with connections of pool and
// produces with a franz-go client of its own, built from kopts (seed
// brokers, TLS, SASL, client id, ...) when Run starts. The relay adds, before
// kopts: kgo.ProducerLinger(0) (a batch is sent as soon as it is produced);
// and after kopts, so that they cannot be overridden, franz-go's default
// partitioner (kgo.StickyKeyPartitioner(nil): murmur2 of the key, as dtx's
// Kafka Pub/Sub and the Java client), acks=all,
// kgo.RecordDeliveryTimeout(0) and kgo.AllowIdempotentProduceCancellation.
// Records are stamped with their row's created_at, and franz-go's delivery
// timeout counts from a record's timestamp, so it would fail at once every
// row older than it: the relay bounds each produce with a context deadline
// of cfg.ProduceTimeout instead. AllowIdempotentProduceCancellation lets
// that deadline fail records whose request may have been sent (a broker
// that is down, a connection that broke): without it, franz-go waits for
// such records for as long as the outage lasts, and the relay could neither
// back off nor drain within a bound. The cost is the one the relay pays anyway: a record
// that failed so may still have been written, and is published again
// (at-least-once; the client bumps its producer epoch first, so no old
// request lands after the new ones). Do not pass kgo.DisableIdempotentWrite:
// without idempotence, retries may reorder the records of a key.
//
// New checks cfg and fails with an error naming every invalid field, and
// registers the metrics on cfg.Registerer; it does not touch the database
// or the broker.
func New(pool *pgxpool.Pool, kopts []kgo.Opt, cfg Config) (*Relay, error) {
	if pool == nil {
		return nil, errors.New("relay: pool is nil")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q, err := loadQueries(cfg.Schema)
	if err != nil {
		return nil, err
	}
	reader, err := txlog.NewReader(txlog.Config{
		Schema: cfg.Schema, Log: outboxLog, Reader: cfg.Name, Columns: rowColumns, BatchSize: cfg.BatchSize,
	}, rowDest)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	pruner, err := txlog.NewPruner(pool, txlog.PrunerConfig{
		Schema: cfg.Schema, Log: outboxLog, Interval: cfg.PruneInterval, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	m := newMetrics()
	if cfg.Registerer != nil {
		collector, err := txlog.NewCollector(pool, txlog.MetricsConfig{
			Logs:   []txlog.MetricsLog{{Schema: cfg.Schema, Log: outboxLog, TimeColumn: "created_at"}},
			Logger: cfg.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("relay: %w", err)
		}
		if err := register(cfg.Registerer, append(m.collectables, collector)...); err != nil {
			return nil, err
		}
	}
	opts := make([]kgo.Opt, 0, len(kopts)+6)
	opts = append(opts, kgo.ProducerLinger(0))
	opts = append(opts, kopts...)
	opts = append(opts, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordDeliveryTimeout(0), kgo.AllowIdempotentProduceCancellation())
	return &Relay{pool: pool, kopts: opts, cfg: cfg, q: q, reader: reader, pruner: pruner, m: m,
		tracer: newTracer(cfg.TracerProvider)}, nil
}

// Run publishes until ctx is done, then drains: it finishes the batch in
// flight (waiting for the broker's acknowledgements at most
// Config.ProduceTimeout), saves the checkpoint, releases the lease so that
// a standby takes over at once, and returns nil. Failures of PostgreSQL or
// of the broker never end Run: it logs, backs off and carries on. It
// returns an error only when the Kafka client cannot be created from the
// options given to New, or with ErrRunning when another Run of r is still
// running.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)

	cl, err := kgo.NewClient(r.kopts...)
	if err != nil {
		return fmt.Errorf("relay: kafka client: %w", err)
	}
	r.clientStale.Store(false)

	l := newLease(r.pool, r.q, r.cfg, r.m)
	listener, err := txlog.NewListener(r.pool, txlog.ListenerConfig{
		Channel:           r.cfg.Schema + ".outbox", // migration 004's trigger
		PollInterval:      r.cfg.PollInterval,
		MaxReconnectDelay: r.cfg.MaxBackoff,
		Logger:            r.cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	w := listener.Subscribe()
	defer w.Close()
	// The lease outlives ctx: it must stay renewed while the last batch
	// drains, and is released after it.
	leaseCtx, stopLease := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { l.run(leaseCtx) })
	wg.Go(func() { _ = listener.Run(ctx) }) // Returns when ctx ends; failures are logged and retried.
	wg.Go(func() { _ = r.pruner.Run(ctx) }) // Returns only nil; failures are logged.

	r.loop(ctx, cl, l, w)

	stopLease()
	wg.Wait()
	releaseCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	l.release(releaseCtx)
	return nil
}

// loop is the relay's work: while holding the lease, read a batch, publish
// it, save the checkpoint; retry the held topics (see held.go) beside it;
// wait for rows when caught up. It owns cl: it replaces it when it is stale
// (see renewClient) and closes the one it holds when it returns.
func (r *Relay) loop(ctx context.Context, cl *kgo.Client, l *lease, w *txlog.Subscription) {
	var (
		token      int64 // the lease token the checkpoint below was loaded under
		after      txlog.Position
		registered bool
		backoff    = wait.Doubling{Min: minBackoff, Max: r.cfg.MaxBackoff}
		warned     = retryWarnings{last: map[[2]string]time.Time{}, skipped: map[[2]string]int{}}
		held       *heldState // the held topics of this term
		stop       *Fault     // the fault that stopped publishing, nil while it goes on
		// Rows after the checkpoint the broker acknowledged in this term
		// while an earlier row failed: not produced again.
		acked = map[txlog.Position]struct{}{}
		// Topics whose rows failed in the last batch that had them: probed
		// before their rows are produced again (see probeSuspects).
		suspects = map[string]bool{}
	)
	fail := func(kind, msg string, err error) {
		r.m.errors.WithLabelValues(kind).Inc()
		pause := backoff.Next()
		r.cfg.Logger.Warn("relay: "+msg, "retry_in", pause.String(), "err", err)
		wait.Sleep(ctx, wait.Jitter(pause))
	}
	var lastRenewLog time.Time
	defer func() { cl.Close() }() // runs last: the held retries settled below use cl
	defer func() { r.settle(ctx, l, held, &warned) }()
	for ctx.Err() == nil {
		// Checked before every batch: a replica that lost its lease, or was
		// paused past it, publishes nothing more.
		tok, ok := l.current()
		if !ok {
			if held != nil && !l.holding() {
				// Lost: a standby reports nothing; the next term reloads.
				r.settle(ctx, l, held, &warned)
				held, stop, token = nil, nil, 0
				r.m.topicHeld.Reset()
				r.report(nil, nil)
			}
			l.wait(ctx, min(r.cfg.LeaseDuration/2, time.Second))
			continue
		}
		if !registered {
			// Retention keeps what this reader has not read from now on.
			if _, err := r.reader.Register(ctx, r.pool); err != nil {
				fail(errKindRead, "registering the reader failed", err)
				continue
			}
			registered = true
		}
		if tok != token {
			// A new term: another replica may have moved the checkpoint and
			// changed the held rows.
			r.settle(ctx, l, held, &warned)
			p, err := r.reader.LoadCheckpoint(ctx, r.pool)
			if err != nil {
				fail(errKindRead, "loading the checkpoint failed", err)
				continue
			}
			hs, err := r.loadHeld(ctx, tok)
			if err != nil {
				fail(errKindRead, "loading the held topics failed", err)
				continue
			}
			token, after, held, stop = tok, p, hs, nil
			clear(acked)
			r.report(held, stop)
			r.cfg.Logger.Info("relay: resuming from the checkpoint", "lease", r.cfg.Name, "token", tok, "checkpoint", p.String(),
				"held_topics", len(held.topics))
		}
		if r.clientStale.Load() {
			// The held retries in flight use the stale client: land them
			// first (they fail within the produce timeout).
			r.settle(ctx, l, held, &warned)
			ncl, err := r.renewClient(cl, &lastRenewLog)
			if err != nil {
				fail(errKindClient, "replacing the Kafka client failed", err)
				continue
			}
			cl = ncl
		}
		r.tendHeld(ctx, cl, l, held, &warned)
		r.report(held, stop)

		b, err := r.reader.ReadBatch(ctx, r.pool, after)
		if err != nil {
			if ctx.Err() == nil {
				fail(errKindRead, "reading the outbox failed", err)
			}
			continue
		}
		if len(b.Rows) > 0 {
			r.m.batchSize.Observe(float64(len(b.Rows)))
			skip := heldSkip(b.Rows, held, acked)
			known := r.probeSuspects(ctx, cl, b.Rows, skip, suspects)
			errs := r.publish(ctx, cl, b.Rows, func(i int) bool {
				_, ok := known[b.Rows[i].Value.Topic]
				return ok || skip(i)
			})
			for i, rw := range b.Rows {
				if err, ok := known[rw.Value.Topic]; ok && !skip(i) {
					errs[i] = err
				}
			}
			noteSuspects(suspects, b.Rows, errs, skip)
			p := planBatch(b, errs, held, acked)
			for _, pos := range p.acked {
				acked[pos] = struct{}{}
			}
			if p.done > 0 {
				end := b.Rows[p.done-1].Position
				if err := r.save(ctx, l, tok, end, p.rejected, p.held); err != nil {
					if errors.Is(err, errLeaseLost) {
						r.m.errors.WithLabelValues(errKindFenced).Inc()
						r.cfg.Logger.Warn("relay: the lease was taken over; the checkpoint stays where the new holder finds it", "err", err)
						l.lose(tok, "the checkpoint was fenced")
						continue
					}
					fail(errKindCheckpoint, "saving the checkpoint failed; the batch will be published again", err)
					continue
				}
				after = end
				for pos := range acked {
					if pos.Compare(end) <= 0 {
						delete(acked, pos)
					}
				}
				r.applyHeld(held, p, &warned)
				for _, rej := range p.rejected {
					r.m.rejected.Inc()
					r.cfg.Logger.Error("relay: the broker refused a row for good; moved it to outbox_rejected",
						"position", rej.pos.String(), "topic", rej.topic, "reason", rej.reason)
				}
			}
			if p.stop != nil {
				r.m.errors.WithLabelValues(errKindProduce).Inc()
				if ctx.Err() == nil {
					failed := b.Rows[p.done]
					reason := retryReason(p.stop)
					if stop == nil || stop.Topic != failed.Value.Topic || stop.Reason != reason {
						since := time.Now()
						if stop != nil {
							since = stop.Since
						}
						stop = &Fault{Topic: failed.Value.Topic, Reason: reason, Since: since, Stopped: true}
					}
					r.report(held, stop)
					r.m.publishRetries.WithLabelValues(failed.Value.Topic, reason).Inc()
					pause := backoff.Next()
					if n, ok := warned.allow(failed.Value.Topic, reason, time.Now()); ok {
						r.cfg.Logger.Warn("relay: publishing failed; retrying from the failed row, nothing is set aside",
							"topic", failed.Value.Topic, "reason", reason, "position", failed.Position.String(),
							"retry_in", pause.String(), "retries_not_logged", n, "err", p.stop)
					}
					wait.Sleep(ctx, wait.Jitter(pause))
				}
				continue
			}
			backoff.Reset()
			stop = nil
			r.report(held, stop)
			if b.Full {
				continue
			}
		}
		backoff.Reset()
		stop = nil
		r.report(held, stop)
		r.idle(ctx, w, held, b.HorizonBlocked)
	}
}

// renewClient closes cl, which the broker's answers made stale (see
// isClientStale), and returns a new client built from the same options; it
// logs so at most every retryWarnEvery, and counts every replacement in
// dtx_relay_errors_total{kind="client"}. No record is in flight on cl: the
// loop produces and waits for the answers before it calls renewClient.
func (r *Relay) renewClient(cl *kgo.Client, lastLog *time.Time) (*kgo.Client, error) {
	ncl, err := kgo.NewClient(r.kopts...)
	if err != nil {
		return nil, fmt.Errorf("relay: kafka client: %w", err)
	}
	cl.Close()
	r.clientStale.Store(false)
	r.m.errors.WithLabelValues(errKindClient).Inc()
	if now := time.Now(); now.Sub(*lastLog) >= retryWarnEvery {
		*lastLog = now
		r.cfg.Logger.Warn("relay: the broker refused the Kafka client's producer id (CLUSTER_AUTHORIZATION_FAILED); " +
			"the client is replaced so that the next attempt asks again (an ACL not granted yet?)")
	}
	return ncl, nil
}

// idle waits for rows (see txlog.Subscription.Wait), or until a retry of a
// held topic lands or another is due.
func (r *Relay) idle(ctx context.Context, w *txlog.Subscription, hs *heldState, blocked bool) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if d, ok := hs.nextDue(); ok {
		t := time.AfterFunc(d, cancel)
		defer t.Stop()
	}
	stopWatch := make(chan struct{})
	defer close(stopWatch)
	go func() {
		select {
		case <-hs.landed:
			cancel()
		case <-stopWatch:
		}
	}()
	_, _ = w.Wait(wctx, blocked) // An error is wctx's: the loop goes on, or ends with ctx.
}

// retryWarnEvery is how often, at most, the relay warns about failed
// publishing of one topic for one reason; the retries in between are
// counted in the next warning and in dtx_relay_publish_retries_total.
const retryWarnEvery = 10 * time.Second

// retryWarnings rate-limits the warnings about publishing retries, per
// topic and reason. It belongs to the loop's goroutine.
type retryWarnings struct {
	last    map[[2]string]time.Time
	skipped map[[2]string]int
}

// allow reports whether a warning about topic and reason may be logged at
// now, and how many were not logged since the last one.
func (w *retryWarnings) allow(topic, reason string, now time.Time) (int, bool) {
	k := [2]string{topic, reason}
	if last, ok := w.last[k]; ok && now.Sub(last) < retryWarnEvery {
		w.skipped[k]++
		return 0, false
	}
	n := w.skipped[k]
	w.last[k], w.skipped[k] = now, 0
	return n, true
}
