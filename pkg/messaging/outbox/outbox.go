package outbox

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/internal/sqlfile"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/migrate"
)

// Defaults and limits of Config.
const (
	// DefaultSchema is the schema of the outbox table when Config.Schema is
	// empty.
	DefaultSchema = migrate.DefaultSchema
	// DefaultMaxRecordBytes is Config.MaxRecordBytes when it is zero: 900
	// KiB.
	DefaultMaxRecordBytes = 900 * 1024
	// MaxRecordBytesLimit is the largest Config.MaxRecordBytes accepted: the
	// outbox table's own CHECK on the size of a row, which stays below
	// Kafka's default message.max.bytes (1048588).
	MaxRecordBytesLimit = 1_000_000
)

// lockSeed is the seed of hashtextextended for key lock ids, so that they
// rarely collide with the advisory locks of other code. A collision costs
// waiting, never correctness.
const lockSeed int64 = 0x6474786f75746278 // "dtxoutbx"

// KeyOrder says what Write and Lock do when a transaction takes a key's lock
// after it already holds a transaction id, so that its rows could be read
// before the rows of a transaction that committed earlier (see the package
// documentation, "Order per key").
type KeyOrder int

const (
	// KeyOrderVerify checks, once the key's lock is granted, that no
	// transaction with a higher id has committed a row of the key; if one
	// has, the call writes nothing and fails with ErrKeyOrder. The check is
	// exact at READ COMMITTED. At REPEATABLE READ and SERIALIZABLE the
	// transaction's snapshot predates the lock, so the check cannot see the
	// rows it looks for: the call proceeds and the risk is counted as
	// "unverified". It is the default.
	KeyOrderVerify KeyOrder = iota
	// KeyOrderUnchecked neither checks nor refuses: the risk is counted as
	// "unchecked" and logged at debug level. For code that orders its
	// writers by other means, such as a row lock taken first.
	KeyOrderUnchecked
)

// String returns the mode's name.
func (k KeyOrder) String() string {
	switch k {
	case KeyOrderVerify:
		return "verify"
	case KeyOrderUnchecked:
		return "unchecked"
	}
	return "KeyOrder(" + strconv.Itoa(int(k)) + ")"
}

// Config configures an Outbox.
type Config struct {
	// Schema is the PostgreSQL schema holding the outbox table.
	// Defaults to DefaultSchema ("dtx"); must pass [migrate.ValidateSchemaName].
	Schema string

	// Registry validates every message's payload against the JSON Schema of
	// its type and schema version before anything is written. Defaults to
	// nil: messages are only checked to be valid dtx envelopes.
	Registry *messaging.SchemaRegistry

	// MaxRecordBytes is the largest record the outbox accepts, counted as
	// the bytes of the key, of the headers as PostgreSQL prints the jsonb
	// object, and of the payload. Keep it below the broker's and the
	// topic's message.max.bytes with room for the record's framing.
	// Defaults to DefaultMaxRecordBytes (900 KiB); between 1 and
	// MaxRecordBytesLimit (1000000).
	MaxRecordBytes int

	// KeyOrder says what to do when a transaction locks a key after it
	// already holds a transaction id. Defaults to KeyOrderVerify.
	KeyOrder KeyOrder

	// Logger receives order risks (debug). Defaults to no logging.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.MaxRecordBytes == 0 {
		c.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	var errs []error
	if err := migrate.ValidateSchemaName(c.Schema); err != nil {
		errs = append(errs, fmt.Errorf("outbox: Schema: %w", err))
	}
	if c.MaxRecordBytes < 1 || c.MaxRecordBytes > MaxRecordBytesLimit {
		errs = append(errs, fmt.Errorf("outbox: MaxRecordBytes: %d is outside 1..%d", c.MaxRecordBytes, MaxRecordBytesLimit))
	}
	if c.KeyOrder != KeyOrderVerify && c.KeyOrder != KeyOrderUnchecked {
		errs = append(errs, fmt.Errorf("outbox: KeyOrder: %d is neither KeyOrderVerify nor KeyOrderUnchecked", int(c.KeyOrder)))
	}
	return errors.Join(errs...)
}

//go:embed sql/*.sql
var sqlFiles embed.FS

// queries holds the package's SQL with the schema filled in.
type queries struct {
	lock, insert, verify string
}

// loadQueries reads the embedded queries for schema, already checked by
// migrate.ValidateSchemaName.
func loadQueries(schema string) (queries, error) {
	l := sqlfile.NewLoader(sqlFiles, "sql", schema)
	q := queries{lock: l.Load("lock.sql"), insert: l.Load("insert.sql"), verify: l.Load("verify.sql")}
	if err := l.Err(); err != nil {
		return queries{}, fmt.Errorf("outbox: %w", err)
	}
	return q, nil
}

// Results of a key order risk, the label "result" of
// dtx_outbox_order_risk_total.
const (
	riskVerified   = "verified"
	riskInverted   = "inverted"
	riskUnverified = "unverified"
	riskUnchecked  = "unchecked"
)

// Outbox writes messages to the outbox table in the caller's transaction; the
// outbox relay publishes them to Kafka once the transaction has committed.
// It holds no connection and is safe for concurrent use.
type Outbox struct {
	cfg  Config
	q    queries
	risk *prometheus.CounterVec
}

// New returns an Outbox configured by cfg. It checks cfg and fails with an
// error naming every invalid field; it does not touch the database.
func New(cfg Config) (*Outbox, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q, err := loadQueries(cfg.Schema)
	if err != nil {
		return nil, err
	}
	risk := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dtx_outbox_order_risk_total",
		Help: "Outbox writes and locks that took a key's lock after the transaction already had its id, " +
			"by result: verified (no inversion), inverted (refused), unverified (isolation above read committed), unchecked.",
		ConstLabels: prometheus.Labels{"schema": cfg.Schema},
	}, []string{"result"})
	for _, r := range []string{riskVerified, riskInverted, riskUnverified, riskUnchecked} {
		risk.WithLabelValues(r)
	}
	return &Outbox{cfg: cfg, q: q, risk: risk}, nil
}

// Collector returns the Outbox's metrics for registration with a Prometheus
// registry: the counter dtx_outbox_order_risk_total{schema, result}.
func (o *Outbox) Collector() prometheus.Collector { return o.risk }

// Write validates msgs and inserts them into the outbox as records of topic,
// in tx and in one round trip. Nothing is published before tx commits, and
// nothing at all if it rolls back (G1, docs/guarantees.md). Messages of one call keep
// their order.
//
// Messages that lack a correlation or causation id are first stamped with
// the Origin ctx carries (middleware.StampContext), which changes their
// metadata. Each must then be a valid dtx envelope (messaging.Decode) whose
// UUID is its ce_id, whose payload follows its schema when Config.Registry
// is set, whose metadata are valid UTF-8 without NUL, and whose record fits
// Config.MaxRecordBytes. Every message is checked before anything is
// written: if one fails, Write writes nothing and returns a *MessageError
// naming it, which wraps the cause (ErrTooLarge, ErrInvalidMessage,
// messaging.ErrInvalidEnvelope, messaging.ErrSchemaViolation,
// messaging.ErrUnknownType). A topic that Kafka would refuse fails with
// ErrInvalidTopic.
//
// The record of a message is what the kafka package's Publisher would
// produce for it: the key is its messaging.MetadataPartitionKey metadata
// (none when empty), the value its payload, the headers ce_id = its UUID
// and every other metadata entry except the key and the receive-only
// messaging.ReceiveOnlyPrefix entries.
//
// Before inserting, Write takes the transaction-scoped lock of each distinct
// key (see Lock). If the transaction already held a transaction id, Config.
// KeyOrder applies and Write may fail with ErrKeyOrder, having written
// nothing. After any error other than a validation error, roll tx back.
func (o *Outbox) Write(ctx context.Context, tx pgx.Tx, topic string, msgs ...*message.Message) error {
	middleware.StampContext(ctx, msgs...)
	middleware.InjectTraceContext(ctx, msgs...)
	return o.write(ctx, tx, topic, msgs)
}

// WriteEnvelopes is Write for envelopes: each becomes a message with
// Envelope.ToMessage, then Write writes them all. An invalid envelope fails
// as a *MessageError wrapping messaging.ErrInvalidEnvelope, and nothing is
// written.
func (o *Outbox) WriteEnvelopes(ctx context.Context, tx pgx.Tx, topic string, envs ...messaging.Envelope) error {
	if tx == nil {
		return fmt.Errorf("outbox: write to %s: %w", topic, ErrNoTransaction)
	}
	_, stamped := middleware.OriginFromContext(ctx)
	if stamped || trace.SpanContextFromContext(ctx).IsValid() {
		msgs, err := envelopeMessages(topic, envs)
		if err != nil {
			return err
		}
		// Stamping changes the messages' metadata: check them all again.
		return o.Write(ctx, tx, topic, msgs...)
	}
	var b pgx.Batch
	check, err := o.QueueWriteEnvelopes(&b, topic, envs...)
	if err != nil || b.Len() == 0 {
		return err
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("outbox: write %d messages to %s: %w", len(envs), topic, err)
	}
	return check()
}

// QueueWriteEnvelopes is WriteEnvelopes in a pipeline: it checks envs and
// queues on b the statements that lock their keys and insert them, so that
// the caller sends them in one round trip with statements of its own (its
// COMMIT, say). Once b has been sent and its results read, check returns
// what WriteEnvelopes would have returned (ErrKeyOrder when the order check
// failed: nothing was inserted; roll back). Messages are not stamped from a
// context: set their correlation and causation ids. An invalid envelope or
// topic fails at once and queues nothing.
func (o *Outbox) QueueWriteEnvelopes(b *pgx.Batch, topic string, envs ...messaging.Envelope) (check func() error, err error) {
	if err := validateTopic(topic); err != nil {
		return nil, fmt.Errorf("outbox: write to %q: %w", topic, err)
	}
	msgs, err := envelopeMessages(topic, envs)
	if err != nil {
		return nil, err
	}
	// ToMessage has validated each envelope, and Decode would read its
	// message back as an equal envelope: skip decoding and checking again.
	rows := make([]row, len(msgs))
	for i, msg := range msgs {
		r, err := o.envelopeRow(envs[i], msg)
		if err != nil {
			return nil, fmt.Errorf("outbox: write to %s: %w", topic, &MessageError{Index: i, ID: msg.UUID, Err: err})
		}
		rows[i] = r
	}
	return o.queueInsert(b, topic, rows), nil
}

// envelopeMessages turns envelopes into messages, failing on the first
// invalid one.
func envelopeMessages(topic string, envs []messaging.Envelope) ([]*message.Message, error) {
	msgs := make([]*message.Message, len(envs))
	for i, env := range envs {
		msg, err := env.ToMessage()
		if err != nil {
			return nil, fmt.Errorf("outbox: write to %s: %w", topic, &MessageError{Index: i, ID: env.ID, Err: err})
		}
		msgs[i] = msg
	}
	return msgs, nil
}

// write is Write without stamping.
func (o *Outbox) write(ctx context.Context, tx pgx.Tx, topic string, msgs []*message.Message) error {
	if tx == nil {
		return fmt.Errorf("outbox: write to %s: %w", topic, ErrNoTransaction)
	}
	if err := validateTopic(topic); err != nil {
		return fmt.Errorf("outbox: write to %q: %w", topic, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	rows, err := o.rows(msgs)
	if err != nil {
		return fmt.Errorf("outbox: write to %s: %w", topic, err)
	}
	return o.insert(ctx, tx, topic, rows)
}

// insert locks the keys of rows and inserts them, in one round trip.
func (o *Outbox) insert(ctx context.Context, tx pgx.Tx, topic string, rows []row) error {
	var b pgx.Batch
	check := o.queueInsert(&b, topic, rows)
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("outbox: write %d messages to %s: %w", len(rows), topic, err)
	}
	return check()
}

// queueInsert queues the statements that lock the keys of rows and insert
// them; check reports the order check once they ran.
func (o *Outbox) queueInsert(b *pgx.Batch, topic string, rows []row) (check func() error) {
	if len(rows) == 0 {
		return func() error { return nil }
	}
	keys := make([]*string, len(rows))
	headers := make([][]byte, len(rows))
	payloads := make([][]byte, len(rows))
	var distinct []string
	for i, r := range rows {
		if r.key != "" {
			keys[i] = &rows[i].key
			distinct = append(distinct, r.key)
		}
		headers[i], payloads[i] = r.headers, r.payload
	}
	slices.Sort(distinct)
	distinct = slices.Compact(distinct)

	lock := &lockResult{}
	if len(distinct) > 0 {
		b.Queue(o.q.lock, topic, distinct, lockSeed).QueryRow(func(row pgx.Row) error {
			return row.Scan(&lock.risky, &lock.locked, &lock.readCommitted, nil)
		})
	}
	var inserted int64
	b.Queue(o.q.insert, topic, keys, headers, payloads, distinct, o.cfg.KeyOrder == KeyOrderVerify).
		Exec(func(tag pgconn.CommandTag) error {
			inserted = tag.RowsAffected()
			return nil
		})
	return func() error {
		if lock.risky || inserted != int64(len(rows)) {
			return o.orderRisk(topic, distinct, lock.readCommitted, inserted == int64(len(rows)))
		}
		return nil
	}
}

// lockResult is what lock.sql reports.
type lockResult struct {
	// risky: the transaction had its id and took at least one of the locks
	// for the first time.
	risky         bool
	locked        int64
	readCommitted bool
}

// orderRisk counts and reports a key lock taken after the transaction got its
// id; ok says whether the verification (if any) passed.
func (o *Outbox) orderRisk(topic string, keys []string, readCommitted, ok bool) error {
	var result string
	switch {
	case o.cfg.KeyOrder == KeyOrderUnchecked:
		result = riskUnchecked
	case !readCommitted:
		result = riskUnverified
	case !ok:
		result = riskInverted
	default:
		result = riskVerified
	}
	o.risk.WithLabelValues(result).Inc()
	if result == riskInverted {
		return fmt.Errorf("outbox: write to %s, keys %q: %w", topic, keys, ErrKeyOrder)
	}
	if result != riskVerified {
		o.cfg.Logger.Debug("outbox: key lock taken after the transaction got its id: per-key order not guaranteed",
			"topic", topic, "keys", keys, "result", result)
	}
	return nil
}

// Lock takes the transaction-scoped lock of each of keys of topic, in an
// order that cannot deadlock with another Lock or Write of the same topic,
// and holds it until tx ends. Called as the first statement of a
// transaction, before it writes or locks any row, it guarantees that
// messages of these keys written later in tx are read by the relay in commit
// order (G4, docs/guarantees.md; see the package documentation). Empty keys are
// skipped: messages without a key have no order to keep.
//
// If tx already holds a transaction id, Config.KeyOrder applies, as for
// Write, and Lock may fail with ErrKeyOrder; roll tx back and retry it.
// Keys of several topics, locked by several calls, may deadlock with another
// transaction locking them in the opposite order; PostgreSQL then fails one
// of the two (SQLSTATE 40P01), which may be retried.
func (o *Outbox) Lock(ctx context.Context, tx pgx.Tx, topic string, keys ...string) error {
	if tx == nil {
		return fmt.Errorf("outbox: lock keys of %s: %w", topic, ErrNoTransaction)
	}
	var b pgx.Batch
	check, err := o.QueueLock(&b, topic, keys...)
	if err != nil {
		return err
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("outbox: lock keys of %s: %w", topic, err)
		}
	}
	return check(ctx, tx)
}

// Querier runs one query: a pgx.Tx, or the *pgx.Conn of a transaction
// begun with a plain BEGIN.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// QueueLock is Lock in a pipeline: it queues on b the statement that takes
// the locks Lock takes, so that the caller sends it in one round trip with
// statements of its own queued after it, which then run holding the locks.
// Once b has been sent and its results read, the caller calls check with
// the same transaction: check returns what Lock would have returned, after
// the order check Lock makes when the transaction already held its id
// (one more round trip, only then). Until check has returned nil, the
// statements queued after the lock must not have written anything (guard
// them, e.g. with pg_current_xact_id_if_assigned() IS NULL, which holds
// when no order risk is possible). An invalid topic or key fails at once and
// queues nothing.
func (o *Outbox) QueueLock(b *pgx.Batch, topic string, keys ...string) (check func(ctx context.Context, tx Querier) error, err error) {
	if err := validateTopic(topic); err != nil {
		return nil, fmt.Errorf("outbox: lock keys of %q: %w", topic, err)
	}
	var distinct []string
	for i, k := range keys {
		if k == "" {
			continue
		}
		if reason := checkText(k); reason != "" {
			return nil, fmt.Errorf("outbox: lock keys of %s: key #%d %s: %w", topic, i, reason, ErrInvalidMessage)
		}
		distinct = append(distinct, k)
	}
	slices.Sort(distinct)
	distinct = slices.Compact(distinct)
	if len(distinct) == 0 {
		return func(context.Context, Querier) error { return nil }, nil
	}
	var lock lockResult
	var lockErr error
	b.Queue(o.q.lock, topic, distinct, lockSeed).QueryRow(func(row pgx.Row) error {
		if err := row.Scan(&lock.risky, &lock.locked, &lock.readCommitted, nil); err != nil {
			lockErr = fmt.Errorf("outbox: lock %d keys of %s: %w", len(distinct), topic, err)
			return err
		}
		return nil
	})
	return func(ctx context.Context, tx Querier) error {
		if lockErr != nil {
			return lockErr
		}
		if !lock.risky {
			return nil
		}
		inverted := false
		if o.cfg.KeyOrder == KeyOrderVerify && lock.readCommitted {
			if err := tx.QueryRow(ctx, o.q.verify, topic, distinct).Scan(&inverted); err != nil {
				return fmt.Errorf("outbox: verify the order of %d keys of %s: %w", len(distinct), topic, err)
			}
		}
		return o.orderRisk(topic, distinct, lock.readCommitted, !inverted)
	}, nil
}

// Record is an outbox row as Write inserts it: the record key (nil for
// none), the headers as a JSON object of strings, and the payload.
type Record struct {
	Key     *string
	Headers []byte
	Payload []byte
}

// Records checks envs as WriteEnvelopes does (envelope, schema, text, size)
// and returns the rows it would insert, for a caller that inserts them with
// its own statement (in one round trip with its other writes). The caller
// must hold the key locks (Lock or QueueLock) before inserting them, and may
// change header values only for values no longer than those it passed (the
// size was checked with these).
func (o *Outbox) Records(envs ...messaging.Envelope) ([]Record, error) {
	msgs, err := envelopeMessages("", envs)
	if err != nil {
		return nil, err
	}
	out := make([]Record, len(msgs))
	for i, msg := range msgs {
		r, err := o.envelopeRow(envs[i], msg)
		if err != nil {
			return nil, fmt.Errorf("outbox: %w", &MessageError{Index: i, ID: msg.UUID, Err: err})
		}
		out[i] = Record{Headers: r.headers, Payload: r.payload}
		if r.key != "" {
			out[i].Key = &r.key
		}
	}
	return out, nil
}
