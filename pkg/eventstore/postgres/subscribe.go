package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/internal/txlog"
	"github.com/vextrus/dtx/internal/wait"
	"github.com/vextrus/dtx/pkg/eventstore"
)

// Defaults of SubscribeParams.
const (
	// DefaultSubscribeBatchSize is SubscribeParams.BatchSize when 0.
	DefaultSubscribeBatchSize = 100
	// DefaultMinRetryDelay is SubscribeParams.MinRetryDelay when 0.
	DefaultMinRetryDelay = 100 * time.Millisecond
	// DefaultMaxRetryDelay is SubscribeParams.MaxRetryDelay when 0.
	DefaultMaxRetryDelay = 10 * time.Second
)

// HandlerFunc handles one event inside the transaction of its batch: it
// writes the event's effect with tx and returns nil, or returns an error to
// roll back the whole batch (effects and checkpoint). It must not commit or
// roll back tx. It may run more than once for an event whose batch was
// rolled back, but its effects commit once.
type HandlerFunc func(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error

// SubscribeErrorFunc is told of a failed batch: a handler's error, wrapped
// in a *HandlerError, or a database error. attempt counts the consecutive
// failures, from 1. It returns nil to retry the batch after a backoff, or
// an error to end Subscribe with it.
type SubscribeErrorFunc func(ctx context.Context, err error, attempt int) error

// HandlerError reports the event whose handler failed. It wraps the
// handler's error.
type HandlerError struct {
	// Reader is the subscription's reader name.
	Reader string
	// Event is the event the handler failed on, as it was given to it.
	Event eventstore.RecordedEvent
	// Err is the handler's error.
	Err error
}

// Error implements error.
func (e *HandlerError) Error() string {
	return fmt.Sprintf("eventstore/postgres: subscription %q: handler failed on event %s (%s, stream %q version %d, position %s): %v",
		e.Reader, e.Event.ID, e.Event.Type, e.Event.StreamID, e.Event.Version, e.Event.Position, e.Err)
}

// Unwrap returns the handler's error.
func (e *HandlerError) Unwrap() error { return e.Err }

// errCheckpointAhead reports that the stored checkpoint did not move at the
// end of a batch: another subscriber of the same reader name committed the
// batch first. The batch is rolled back and reading resumes from the stored
// checkpoint.
var errCheckpointAhead = errors.New("eventstore/postgres: the checkpoint is ahead: another subscriber of the reader handled the batch")

// SubscribeParams configures Subscribe.
type SubscribeParams struct {
	// Reader names the subscription's checkpoint in the txlog_checkpoints
	// table (log "events"). Required; 1 to 255 bytes. Subscribers sharing a
	// name share a checkpoint: of two that handle the same batch, one
	// commits and the other rolls back.
	Reader string

	// From is where a reader without a checkpoint starts: it handles the
	// events after From. The zero Position (the default) starts at the
	// first event. Ignored once the reader has a checkpoint: Subscribe
	// always resumes from it.
	From eventstore.Position

	// Handler handles each event. Required.
	Handler HandlerFunc

	// BatchSize is the most events handled in one transaction.
	// Defaults to DefaultSubscribeBatchSize (100); between 1 and 10000.
	BatchSize int

	// PollInterval is the longest wait for new events without a
	// notification. Defaults to 1s; between 1ms and 1h.
	PollInterval time.Duration

	// MinRetryDelay is the wait after a batch's first failure; it doubles
	// with each further failure up to MaxRetryDelay. Defaults to
	// DefaultMinRetryDelay (100ms); must be positive.
	MinRetryDelay time.Duration

	// MaxRetryDelay caps the wait between retries. Defaults to
	// DefaultMaxRetryDelay (10s); must not be below MinRetryDelay.
	MaxRetryDelay time.Duration

	// ErrorFunc decides what a failed batch does (see SubscribeErrorFunc).
	// Defaults to logging it with Logger and retrying.
	ErrorFunc SubscribeErrorFunc

	// Logger logs failures and the listening connection's state. Defaults
	// to slog.Default().
	Logger *slog.Logger
}

func (p *SubscribeParams) setDefaults() {
	if p.BatchSize == 0 {
		p.BatchSize = DefaultSubscribeBatchSize
	}
	if p.PollInterval == 0 {
		p.PollInterval = txlog.DefaultPollInterval
	}
	if p.MinRetryDelay == 0 {
		p.MinRetryDelay = DefaultMinRetryDelay
	}
	if p.MaxRetryDelay == 0 {
		p.MaxRetryDelay = max(DefaultMaxRetryDelay, p.MinRetryDelay)
	}
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	if p.ErrorFunc == nil {
		logger, reader := p.Logger, p.Reader
		p.ErrorFunc = func(ctx context.Context, err error, attempt int) error {
			logger.WarnContext(ctx, "eventstore/postgres: subscription batch failed; retrying",
				"reader", reader, "attempt", attempt, "err", err)
			return nil
		}
	}
}

func (p *SubscribeParams) validate() error {
	var errs []error
	if p.Handler == nil {
		errs = append(errs, errors.New("eventstore/postgres: subscribe: Handler is nil"))
	}
	if p.BatchSize < 1 || p.BatchSize > txlog.MaxBatchSize {
		errs = append(errs, fmt.Errorf("eventstore/postgres: subscribe: BatchSize: %d is outside 1..%d", p.BatchSize, txlog.MaxBatchSize))
	}
	if p.PollInterval < txlog.MinInterval || p.PollInterval > txlog.MaxInterval {
		errs = append(errs, fmt.Errorf("eventstore/postgres: subscribe: PollInterval: %s is outside %s..%s", p.PollInterval, txlog.MinInterval, txlog.MaxInterval))
	}
	if p.MinRetryDelay <= 0 {
		errs = append(errs, fmt.Errorf("eventstore/postgres: subscribe: MinRetryDelay: %s is not positive", p.MinRetryDelay))
	}
	if p.MaxRetryDelay < p.MinRetryDelay {
		errs = append(errs, fmt.Errorf("eventstore/postgres: subscribe: MaxRetryDelay: %s is below MinRetryDelay (%s)", p.MaxRetryDelay, p.MinRetryDelay))
	}
	return errors.Join(errs...)
}

// Subscribe hands every event of the store to p.Handler once, in global
// commit order (ReadAll's order, gap-safe), from the reader's checkpoint,
// and returns nil when ctx ends. It runs in the caller's goroutine, plus a
// listening connection of its own (taken from the pool and not counted
// against it) that it closes before it returns.
//
// Each batch of up to p.BatchSize events is handled in one transaction:
// the handler is called for each event in order with that transaction, and
// the reader's checkpoint is moved past the batch in it before it commits.
// So a batch's effects and the checkpoint commit together or not at all
// (G3, docs/guarantees.md): after a crash or a restart, Subscribe resumes after the
// last committed batch and no effect is applied twice. Events are upcast
// (Config.Upcasters) before the handler sees them.
//
// A handler error (as a *HandlerError) or a database error rolls the batch
// back, effects and checkpoint, and goes to p.ErrorFunc; by default it is
// logged and the batch is retried after a backoff (MinRetryDelay, doubling
// up to MaxRetryDelay), for as long as it fails, so one event that always
// fails stops the subscription from moving on. An ErrorFunc that returns
// an error ends Subscribe with it. Subscribers of the same name take turns
// on a transaction-scoped lock; one that finds the checkpoint moved since it
// read its batch (another one handled some of it) rolls back and resumes
// from that checkpoint, so overlapping batches are never applied twice.
//
// Between batches Subscribe waits for the events table's notification
// (channel "<schema>.events") or at most p.PollInterval. It fails at once
// for invalid p, and with an error wrapping eventstore.ErrPositionAhead when the
// checkpoint lies beyond the database's transaction ids.
func (s *Store) Subscribe(ctx context.Context, p SubscribeParams) error {
	p.setDefaults()
	if err := p.validate(); err != nil {
		return err
	}
	reader, err := txlog.NewReader(txlog.Config{
		Schema:    s.cfg.Schema,
		Log:       LogName,
		Reader:    p.Reader,
		Columns:   eventColumns,
		BatchSize: p.BatchSize,
	}, func(v *eventRow) []any { return v.dest() })
	if err != nil {
		return fmt.Errorf("eventstore/postgres: subscribe: %w", err)
	}
	listener, err := txlog.NewListener(s.pool, txlog.ListenerConfig{
		Channel:             s.cfg.Schema + "." + LogName,
		PollInterval:        p.PollInterval,
		BlockedPollInterval: min(p.PollInterval, txlog.DefaultBlockedPollInterval),
		Logger:              p.Logger,
	})
	if err != nil {
		return fmt.Errorf("eventstore/postgres: subscribe %q: %w", p.Reader, err)
	}
	sub := listener.Subscribe()
	defer sub.Close()
	if err := listener.Start(ctx); err != nil {
		return fmt.Errorf("eventstore/postgres: subscribe %q: %w", p.Reader, err)
	}
	defer listener.Stop()

	sb := subscriber{s: s, p: p, reader: reader}
	var (
		after    txlog.Position
		loaded   bool
		attempt  int
		blocked  bool
		readMore bool
	)
	for {
		if ctx.Err() != nil {
			return nil
		}
		var err error
		if !loaded {
			after, err = sb.start(ctx)
			loaded = err == nil
		}
		if err == nil {
			after, readMore, blocked, err = sb.batch(ctx, after)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, txlog.ErrPositionAhead):
			return positionAhead(err)
		case errors.Is(err, errCheckpointAhead):
			loaded, attempt = false, 0
			readMore = true
		case err != nil:
			attempt++
			if stop := p.ErrorFunc(ctx, err, attempt); stop != nil {
				return stop
			}
			if !wait.Sleep(ctx, wait.Backoff(p.MinRetryDelay, p.MaxRetryDelay, attempt)) {
				return nil
			}
			continue
		default:
			attempt = 0
		}
		if !readMore {
			if _, err := sub.Wait(ctx, blocked); err != nil {
				return nil
			}
		}
	}
}

// subscriber is the state of one Subscribe.
type subscriber struct {
	s      *Store
	p      SubscribeParams
	reader *txlog.Reader[eventRow]
}

// start returns where reading begins: the checkpoint, or From without one.
func (sb subscriber) start(ctx context.Context) (txlog.Position, error) {
	cp, err := sb.reader.LoadCheckpoint(ctx, sb.s.pool)
	if err != nil {
		return txlog.Position{}, fmt.Errorf("eventstore/postgres: subscription %q: %w", sb.p.Reader, err)
	}
	if cp.IsZero() {
		cp = txlog.Position{TxID: sb.p.From.TxID, Pos: sb.p.From.Pos}
	}
	return cp, nil
}

// batch reads the events after after and handles them in one transaction
// with the checkpoint. It returns where the next read continues, whether to
// read again at once, and whether the read was held back by an open
// transaction.
func (sb subscriber) batch(ctx context.Context, after txlog.Position) (next txlog.Position, full, blocked bool, err error) {
	b, err := sb.reader.ReadBatch(ctx, sb.s.pool, after)
	if err != nil {
		return after, false, false, fmt.Errorf("eventstore/postgres: subscription %q: %w", sb.p.Reader, err)
	}
	if len(b.Rows) == 0 {
		return b.End, b.Full, b.HorizonBlocked, nil
	}
	err = pgx.BeginFunc(ctx, sb.s.pool, func(tx pgx.Tx) error {
		// Subscribers of one reader name take turns here, and each handles
		// its batch only if the checkpoint is still where the batch was read
		// from: another one may have handled (part of) it meanwhile, and
		// SaveCheckpoint alone would only refuse a batch ending at or before
		// the checkpoint, not one that overlaps it.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
			"dtx.subscribe:"+sb.s.cfg.Schema+"."+sb.p.Reader); err != nil {
			return fmt.Errorf("eventstore/postgres: subscription %q: lock: %w", sb.p.Reader, err)
		}
		cp, err := sb.reader.LoadCheckpoint(ctx, tx)
		if err != nil {
			return fmt.Errorf("eventstore/postgres: subscription %q: %w", sb.p.Reader, err)
		}
		from := txlog.Position{TxID: sb.p.From.TxID, Pos: sb.p.From.Pos}
		if stillHere := cp == after || (cp.IsZero() && after == from); !stillHere {
			return errCheckpointAhead
		}
		for _, row := range b.Rows {
			ev, err := sb.s.recorded(row.Value, eventstore.Position{TxID: row.Position.TxID, Pos: row.Position.Pos})
			if err != nil {
				return fmt.Errorf("eventstore/postgres: subscription %q: %w", sb.p.Reader, err)
			}
			if err := sb.p.Handler(ctx, tx, ev); err != nil {
				return &HandlerError{Reader: sb.p.Reader, Event: ev, Err: err}
			}
		}
		moved, err := sb.reader.SaveCheckpoint(ctx, tx, b.End)
		if err != nil {
			return fmt.Errorf("eventstore/postgres: subscription %q: %w", sb.p.Reader, err)
		}
		if !moved {
			return errCheckpointAhead
		}
		return nil
	})
	if err != nil {
		return after, false, false, err
	}
	return b.End, b.Full, b.HorizonBlocked, nil
}
