package inbox

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/internal/pgtx"
	"github.com/vextrus/dtx/internal/sqlfile"
	"github.com/vextrus/dtx/internal/sweep"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/migrate"
)

// Defaults and limits of Config.
const (
	// DefaultSchema is the schema of the inbox table when Config.Schema is empty.
	DefaultSchema = migrate.DefaultSchema
	// DefaultRetention is how long a record is kept when Config.Retention is zero.
	DefaultRetention = 7 * 24 * time.Hour
	// MinRetention is the shortest Config.Retention accepted.
	MinRetention = time.Hour
	// DefaultSweepInterval is the pause between sweeps when Config.SweepInterval is zero.
	DefaultSweepInterval = time.Minute
	// DefaultSweepBatchSize is the most rows one sweep statement deletes when
	// Config.SweepBatchSize is zero.
	DefaultSweepBatchSize = 1000
	// MaxSweepBatchSize is the largest Config.SweepBatchSize accepted.
	MaxSweepBatchSize = 100_000
	// MaxConsumerLen is the longest consumer name, in bytes.
	MaxConsumerLen = 255
	// MaxMessageIDLen is the longest message id, in bytes.
	MaxMessageIDLen = 512
)

// ErrInvalidMessageID reports a message id the inbox cannot record: empty,
// longer than MaxMessageIDLen bytes, not valid UTF-8 or containing a NUL
// byte. Such a message can never be processed, so callers should treat the
// error as permanent (dead-letter the message) rather than retry it.
var ErrInvalidMessageID = errors.New("inbox: invalid message id")

// ErrAlreadyStarted is returned by Start while the sweeper of the same Inbox
// is running.
var ErrAlreadyStarted = errors.New("inbox: sweeper already started")

// Config configures an Inbox.
type Config struct {
	// Schema is the PostgreSQL schema holding the inbox table.
	// Defaults to DefaultSchema ("dtx"); must pass [migrate.ValidateSchemaName].
	Schema string

	// Consumer names the handler whose messages this Inbox deduplicates, e.g.
	// "orchestrator/replies". Two handlers that must each process a message
	// need different names; replicas of one handler share the name.
	// Required; 1 to MaxConsumerLen bytes of UTF-8 without NUL.
	Consumer string

	// Retention is how long a processed message id is remembered. It must
	// outlive every redelivery of the message: consumer lag, the longest
	// pause of a consumer group, replays of the topic from an old offset.
	// A message redelivered after its record was swept is processed again.
	// Defaults to DefaultRetention (7 days); at least MinRetention (1 hour).
	Retention time.Duration

	// TxOptions are the options of the transaction Handler opens. Defaults to
	// the zero value: READ COMMITTED, read-write. Under SERIALIZABLE, a
	// concurrent duplicate may fail with a serialization error instead of
	// being skipped; the message is then redelivered and skipped.
	TxOptions pgx.TxOptions

	// SweepInterval is the pause between two sweeps of Run and Start.
	// Defaults to DefaultSweepInterval (1 minute); between 1 second and 24 hours.
	SweepInterval time.Duration

	// SweepBatchSize is the most rows one DELETE statement of Sweep removes;
	// smaller batches hold locks for less time.
	// Defaults to DefaultSweepBatchSize (1000); between 1 and MaxSweepBatchSize.
	SweepBatchSize int

	// Logger receives sweep failures (warn) and sweep results (debug).
	// Defaults to no logging.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	sweep.SetDefaults(&c.SweepInterval, &c.SweepBatchSize)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	var errs []error
	if err := migrate.ValidateSchemaName(c.Schema); err != nil {
		errs = append(errs, fmt.Errorf("inbox: Schema: %w", err))
	}
	if err := validateText(c.Consumer, MaxConsumerLen); err != nil {
		errs = append(errs, fmt.Errorf("inbox: Consumer: %w", err))
	}
	if c.Retention < MinRetention {
		errs = append(errs, fmt.Errorf("inbox: Retention: %s is shorter than %s", c.Retention, MinRetention))
	}
	errs = append(errs, sweep.Validate("inbox: ", "SweepInterval", "SweepBatchSize", c.SweepInterval, c.SweepBatchSize)...)
	return errors.Join(errs...)
}

// validateText checks s against the inbox table's text columns: 1 to max
// bytes, valid UTF-8 and no NUL, which PostgreSQL's text type refuses.
func validateText(s string, maxLen int) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > maxLen:
		return fmt.Errorf("is %d bytes long, more than %d", len(s), maxLen)
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return errors.New("contains a NUL byte")
	}
	return nil
}

//go:embed sql/*.sql
var sqlFiles embed.FS

// queries holds the package's SQL with the schema filled in.
type queries struct {
	record string
	sweep  string
}

// loadQueries reads the embedded queries for schema, already checked by
// migrate.ValidateSchemaName.
func loadQueries(schema string) (queries, error) {
	l := sqlfile.NewLoader(sqlFiles, "sql", schema)
	q := queries{record: l.Load("record.sql"), sweep: l.Load("sweep.sql")}
	if err := l.Err(); err != nil {
		return queries{}, fmt.Errorf("inbox: %w", err)
	}
	return q, nil
}

// Inbox records which messages a consumer has processed, in the same
// transaction as the processing, so that a redelivered message is recognised
// and its effect is not repeated. It is safe for concurrent use.
type Inbox struct {
	pool *pgxpool.Pool
	cfg  Config
	q    queries

	sweeper *sweep.Sweeper
}

// New returns an Inbox for cfg.Consumer on pool. It checks cfg and fails with
// an error naming every invalid field; it does not touch the database.
func New(pool *pgxpool.Pool, cfg Config) (*Inbox, error) {
	if pool == nil {
		return nil, errors.New("inbox: pool is nil")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q, err := loadQueries(cfg.Schema)
	if err != nil {
		return nil, err
	}
	i := &Inbox{pool: pool, cfg: cfg, q: q}
	i.sweeper = sweep.New(sweep.Config{
		Name: "inbox", Interval: cfg.SweepInterval, BatchSize: cfg.SweepBatchSize, Logger: cfg.Logger,
		LogAttrs: []any{"consumer", cfg.Consumer},
		BatchFunc: func(ctx context.Context, limit int) (int64, error) {
			tag, err := pool.Exec(ctx, q.sweep, limit)
			return tag.RowsAffected(), err
		},
	})
	return i, nil
}

// Consumer returns the consumer name the Inbox records messages for.
func (i *Inbox) Consumer() string { return i.cfg.Consumer }

// Record records messageID as processed by the Inbox's consumer within tx and
// reports whether it is the first record of it. first is false when the id
// was recorded by a committed transaction before: the caller must then skip
// the message's effect. The record becomes durable when tx commits and
// disappears if tx rolls back, so record and effect share tx's fate.
//
// If another transaction has recorded the same id and not ended yet, Record
// waits for it: first is false if it commits and true if it rolls back.
// An invalid id fails with ErrInvalidMessageID.
func (i *Inbox) Record(ctx context.Context, tx pgx.Tx, messageID string) (first bool, err error) {
	if err := validateText(messageID, MaxMessageIDLen); err != nil {
		return false, fmt.Errorf("%w: %w", ErrInvalidMessageID, err)
	}
	tag, err := tx.Exec(ctx, i.q.record, i.cfg.Consumer, messageID, i.cfg.Retention.Microseconds())
	if err != nil {
		return false, fmt.Errorf("inbox: record message %q for consumer %q: %w", messageID, i.cfg.Consumer, err)
	}
	return tag.RowsAffected() == 1, nil
}

// HandlerFunc processes one message inside tx, the transaction in which the
// inbox recorded it. ctx carries tx too (TxFromContext). Its effects must go
// through tx to happen once; see Handler for what happens to the messages it
// returns.
type HandlerFunc func(ctx context.Context, tx pgx.Tx, msg *message.Message) ([]*message.Message, error)

// Handler wraps h into a Watermill handler that processes each message id at
// most once per consumer, for a router's AddHandler or AddConsumerHandler.
// For each message it:
//
//  1. begins a transaction on the pool (Config.TxOptions), with msg.Context();
//  2. records msg.UUID, the CloudEvents id, with Record; if it was recorded
//     before, rolls back and returns (nil, nil): the message is acked and h
//     does not run;
//  3. runs h with the transaction, also reachable through TxFromContext(ctx);
//  4. commits if h returned no error, and returns h's messages.
//
// If h fails (or panics) the transaction rolls back, taking the record with
// it, and the error is returned, so the router nacks the message and its
// redelivery runs h again. A failed commit is returned the same way; if the
// commit did in fact succeed, the redelivery is recognised and skipped.
//
// The messages h returns are published by the router after the commit, not
// with it: if that publish fails, the message is redelivered and skipped, and
// they are lost. Messages that must leave with the effect belong in the
// outbox, written with the transaction.
//
// An id that Record refuses fails every delivery with an error wrapping
// ErrInvalidMessageID; route it to a dead-letter topic.
func (i *Inbox) Handler(h HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) (_ []*message.Message, err error) {
		ctx := msg.Context()
		tx, err := i.pool.BeginTx(ctx, i.cfg.TxOptions)
		if err != nil {
			return nil, fmt.Errorf("inbox: begin transaction: %w", err)
		}
		committed := false
		defer func() {
			if !committed {
				pgtx.Rollback(ctx, tx)
			}
		}()

		first, err := i.Record(ctx, tx, msg.UUID)
		if err != nil {
			return nil, err
		}
		if !first {
			i.cfg.Logger.Debug("inbox: duplicate message skipped", "consumer", i.cfg.Consumer, "message_id", msg.UUID)
			return nil, nil
		}

		out, err := h(ContextWithTx(ctx, tx), tx, msg)
		if err != nil {
			return nil, err
		}
		committed = true // Whatever Commit returns, the transaction has ended.
		if err := tx.Commit(ctx); err != nil {
			return nil, fmt.Errorf("inbox: commit message %q for consumer %q: %w", msg.UUID, i.cfg.Consumer, err)
		}
		return out, nil
	}
}

// ContextWithTx returns a copy of ctx that carries tx, for TxFromContext. It
// is messaging.ContextWithTx.
func ContextWithTx(ctx context.Context, tx pgx.Tx) context.Context {
	return messaging.ContextWithTx(ctx, tx)
}

// TxFromContext returns the transaction ctx carries: within a Handler, the
// one the message was recorded in. It is messaging.TxFromContext.
func TxFromContext(ctx context.Context) (tx pgx.Tx, ok bool) {
	return messaging.TxFromContext(ctx)
}

// Sweep deletes the expired records of every consumer in the table, not only the Inbox's own, so records of a consumer that no longer runs go too. Each statement deletes at most
// Config.SweepBatchSize rows and commits on its own, skipping rows that a
// concurrent transaction holds locked, so Sweep never waits on other work and
// several replicas may sweep at once. It returns the number of rows deleted,
// also when it fails part way.
func (i *Inbox) Sweep(ctx context.Context) (int64, error) { return i.sweeper.Sweep(ctx) }

// Run sweeps at once and then every Config.SweepInterval until ctx is done,
// and returns nil then. A failed sweep is logged and retried at the next
// interval: a database outage does not end Run.
func (i *Inbox) Run(ctx context.Context) error { return i.sweeper.Run(ctx) }

// Start runs Run in a goroutine the Inbox owns, until ctx is done or Stop is
// called. It fails with ErrAlreadyStarted if that goroutine is still running.
func (i *Inbox) Start(ctx context.Context) error {
	err := i.sweeper.Start(ctx)
	if errors.Is(err, sweep.ErrAlreadyStarted) {
		return ErrAlreadyStarted
	}
	return err
}

// Stop ends the goroutine Start began and waits for it; a sweep in progress
// is interrupted. It is safe to call more than once, and without Start.
func (i *Inbox) Stop() { i.sweeper.Stop() }
