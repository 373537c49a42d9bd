package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/internal/sqlfile"
	"github.com/vextrus/dtx/internal/txlog"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/migrate"
)

// Defaults of Config.
const (
	// DefaultSchema is the schema of the events table when Config.Schema is
	// empty.
	DefaultSchema = migrate.DefaultSchema
	// DefaultSource is the CloudEvents source of published events when
	// Config.Source is empty.
	DefaultSource = "/dtx/eventstore"
	// DefaultTopicSuffix ends the topic DefaultTopic names.
	DefaultTopicSuffix = ".events"
	// LogName is the events table's name, the log ReadAll reads.
	LogName = "events"
	// readAllReader names the txlog reader of ReadAll; it reads and never
	// saves a checkpoint.
	readAllReader = "eventstore.readall"
)

// DefaultTopic is the default Config.TopicFunc: the stream type followed by
// ".events", e.g. "order" → "order.events".
func DefaultTopic(streamType string) string { return streamType + DefaultTopicSuffix }

// TopicFunc names the Kafka topic the events of a stream type are published
// to. It must return a name Kafka accepts (ASCII letters, digits, '.', '_',
// '-'; at most 249 bytes).
type TopicFunc func(streamType string) string

// Config configures a Store.
type Config struct {
	// Schema is the PostgreSQL schema holding the events, outbox and
	// txlog_checkpoints tables (migrations 003 to 005).
	// Defaults to DefaultSchema ("dtx"); must pass [migrate.ValidateSchemaName].
	Schema string

	// TopicFunc names the topic of each stream type's events in the outbox.
	// Defaults to DefaultTopic ("<stream type>.events").
	TopicFunc TopicFunc

	// Source is the CloudEvents source (ce_source) of the published events,
	// a URI reference. Defaults to DefaultSource ("/dtx/eventstore").
	Source string

	// Registry, when set, validates every event's data against the JSON
	// Schema of its type and schema version before anything is written
	// (the outbox checks it). Defaults to nil: data need only be JSON.
	Registry *messaging.SchemaRegistry

	// BatchSize is the most events ReadAll returns when its Limit is 0.
	// Defaults to 500; between 1 and 10000.
	BatchSize int

	// Upcasters turn events of old schema versions into the current one as
	// they are read; the stored events stay as they are. Defaults to nil:
	// events are read as stored.
	Upcasters *eventstore.Upcasters
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.TopicFunc == nil {
		c.TopicFunc = DefaultTopic
	}
	if c.Source == "" {
		c.Source = DefaultSource
	}
	if c.BatchSize == 0 {
		c.BatchSize = txlog.DefaultBatchSize
	}
}

func (c *Config) validate() error {
	var errs []error
	if err := migrate.ValidateSchemaName(c.Schema); err != nil {
		errs = append(errs, fmt.Errorf("eventstore/postgres: Schema: %w", err))
	}
	if c.BatchSize < 1 || c.BatchSize > txlog.MaxBatchSize {
		errs = append(errs, fmt.Errorf("eventstore/postgres: BatchSize: %d is outside 1..%d", c.BatchSize, txlog.MaxBatchSize))
	}
	if _, err := messaging.NewEnvelope("dtx.check", c.Source, nil); err != nil {
		errs = append(errs, fmt.Errorf("eventstore/postgres: Source: %w", err))
	}
	return errors.Join(errs...)
}

//go:embed sql/*.sql
var sqlFiles embed.FS

type queries struct {
	append, readForward, readBackward string
	snapshotLoad, snapshotSave        string
}

func loadQueries(schema string) (queries, error) {
	l := sqlfile.NewLoader(sqlFiles, "sql", schema)
	q := queries{
		append:       l.Load("append.sql"),
		readForward:  l.Load("read_stream_forward.sql"),
		readBackward: l.Load("read_stream_backward.sql"),
		snapshotLoad: l.Load("snapshot_load.sql"),
		snapshotSave: l.Load("snapshot_save.sql"),
	}
	if err := l.Err(); err != nil {
		return queries{}, fmt.Errorf("eventstore/postgres: %w", err)
	}
	return q, nil
}

// Store is the event store on PostgreSQL. Its own methods run on the pool,
// each Append in a transaction of its own; AppendTx and WithTx run in the
// caller's transaction. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	cfg  Config
	q    queries
	ob   *outbox.Outbox
	all  *txlog.Reader[eventRow]
}

var _ eventstore.Store = (*Store)(nil)

// New returns a Store on pool configured by cfg. It checks cfg and fails
// with an error naming every invalid field; it does not touch the database.
func New(pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, errors.New("eventstore/postgres: pool is nil")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q, err := loadQueries(cfg.Schema)
	if err != nil {
		return nil, err
	}
	ob, err := outbox.New(outbox.Config{Schema: cfg.Schema, Registry: cfg.Registry})
	if err != nil {
		return nil, fmt.Errorf("eventstore/postgres: %w", err)
	}
	all, err := newAllReader(cfg, cfg.BatchSize)
	if err != nil {
		return nil, err
	}
	return &Store{pool: pool, cfg: cfg, q: q, ob: ob, all: all}, nil
}

// Config returns the Store's configuration with defaults filled in.
func (s *Store) Config() Config { return s.cfg }

// Append appends in a transaction of its own: it commits the events and
// their outbox rows together (see AppendTx). A version conflict rolls back
// and returns the *VersionConflictError. It costs one round trip whatever
// the number of events: BEGIN, the stream's lock, one statement that checks
// the version and inserts the events and their outbox rows, and COMMIT go
// in one pipeline.
func (s *Store) Append(ctx context.Context, p eventstore.AppendParams) (eventstore.AppendResult, error) {
	if err := p.Validate(); err != nil {
		return eventstore.AppendResult{}, err
	}
	in, err := s.prepare(p)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append to %q: %w", p.StreamID, err)
	}
	defer pc.Release()
	conn := pc.Conn()
	inTx := false
	defer func() {
		if inTx {
			// A connection left in a transaction is closed by the pool on
			// release; roll back so that it can be reused.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := conn.Exec(rctx, "ROLLBACK"); err != nil {
				_ = conn.Close(rctx)
			}
		}
	}()

	var b pgx.Batch
	b.Queue("BEGIN")
	check, err := s.ob.QueueLock(&b, in.topic, p.StreamID)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append to %q: lock the stream: %w", p.StreamID, err)
	}
	inTx = true
	var r appendResult
	s.queueAppend(&b, p, in, true, &r)
	b.Queue("COMMIT")
	sendErr := conn.SendBatch(ctx, &b).Close()
	if sendErr == nil {
		inTx = false
		// A fresh transaction holds no id when it takes the lock: the check
		// has nothing to verify, and the append has written.
		sendErr = check(ctx, conn)
	}
	if err := s.appendResult(p, r, sendErr); err != nil {
		return eventstore.AppendResult{}, err
	}
	return eventstore.AppendResult{Version: r.current + int64(len(p.Events)), Position: eventstore.Position{TxID: r.txID, Pos: r.lastPos}}, nil
}

// AppendTx appends p's events to their stream in tx, with one outbox row
// per event (topic Config.TopicFunc(p.StreamType), key = the stream id), so
// that they commit with the caller's other changes or not at all
// (G1, docs/guarantees.md). It costs two round trips whatever the number of events:
// the stream's lock pipelined with the version check and the insert of
// every event, then the outbox write (three when tx already holds a
// transaction id: the insert then waits for the lock's order check).
//
// The stream's lock is the outbox's lock of (topic, stream id), taken
// first, so that appends to one stream are serialised and their events are
// read by ReadAll and published in commit order (G4, docs/guarantees.md). Call
// AppendTx before tx writes anything else, or lock the stream first with
// LockStream: a transaction that already holds a transaction id when it
// takes the lock may find that a younger transaction appended to the stream
// meanwhile, and then fails with outbox.ErrKeyOrder; roll it back and retry.
//
// A stream that is not at p.Expected fails with a *VersionConflictError
// before anything is written, and tx remains usable. Invalid params fail
// with an error wrapping eventstore.ErrInvalidAppend, also leaving tx
// usable. A database error (including a duplicate event id,
// eventstore.ErrDuplicateEventID) aborts tx: roll it back.
func (s *Store) AppendTx(ctx context.Context, tx pgx.Tx, p eventstore.AppendParams) (eventstore.AppendResult, error) {
	if err := p.Validate(); err != nil {
		return eventstore.AppendResult{}, err
	}
	return s.appendTx(ctx, tx, p)
}

// appendResult is what append.sql reports.
type appendResult struct {
	current                     int64
	typeOK, versionOK, mayWrite bool
	inserted                    int64
	txID                        uint64
	lastPos                     int64
	recordedAt                  *time.Time
}

func (r *appendResult) dest() []any {
	return []any{&r.current, &r.typeOK, &r.versionOK, &r.mayWrite, &r.inserted, &r.txID, &r.lastPos, &r.recordedAt}
}

// appendInput is an append's parameters as the append query takes them.
type appendInput struct {
	topic string
	// The outbox rows, with room for their stream version and time, which
	// the append statement sets.
	keys     []*string
	headers  [][]byte
	payloads [][]byte
	ids      []string
	types    []string
	versions []int32
	data     [][]byte
	metadata [][]byte
}

// prepare gives the events their ids and encodes them for the append query.
func (s *Store) prepare(p eventstore.AppendParams) (appendInput, error) {
	n := len(p.Events)
	in := appendInput{
		topic: s.cfg.TopicFunc(p.StreamType),
		ids:   make([]string, n), types: make([]string, n), versions: make([]int32, n),
		data: make([][]byte, n), metadata: make([][]byte, n),
	}
	for i, e := range p.Events {
		in.ids[i] = e.ID
		if in.ids[i] == "" {
			id, err := uuid.NewV7()
			if err != nil {
				return appendInput{}, fmt.Errorf("eventstore/postgres: new event id: %w", err)
			}
			in.ids[i] = id.String()
		}
		in.types[i] = e.Type
		in.versions[i] = int32(max(e.SchemaVersion, 1))
		in.data[i] = e.Data
		md, err := json.Marshal(e.Metadata)
		if err != nil {
			return appendInput{}, fmt.Errorf("eventstore/postgres: encode metadata: %w", err)
		}
		in.metadata[i] = md
	}
	recs, err := s.ob.Records(s.envelopes(p, in)...)
	if err != nil {
		return appendInput{}, fmt.Errorf("eventstore/postgres: append to %q: the outbox records: %w", p.StreamID, err)
	}
	in.keys, in.headers, in.payloads = make([]*string, n), make([][]byte, n), make([][]byte, n)
	for i, r := range recs {
		in.keys[i], in.headers[i], in.payloads[i] = r.Key, r.Headers, r.Payload
	}
	return in, nil
}

// queueAppend queues the append query; onlyWithoutID makes it write only if
// the transaction has no id yet.
func (s *Store) queueAppend(b *pgx.Batch, p eventstore.AppendParams, in appendInput, onlyWithoutID bool, r *appendResult) {
	b.Queue(s.q.append, p.StreamID, p.StreamType, int64(p.Expected), in.ids, in.types, in.versions, in.data, in.metadata, onlyWithoutID,
		in.topic, in.keys, in.headers, in.payloads).
		QueryRow(func(row pgx.Row) error { return row.Scan(r.dest()...) })
}

// appendResult turns the append query's outcome into the append's error.
func (s *Store) appendResult(p eventstore.AppendParams, r appendResult, err error) error {
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			switch pgErr.ConstraintName {
			case "events_event_id_key":
				return fmt.Errorf("eventstore/postgres: append to %q: %w: %s", p.StreamID, eventstore.ErrDuplicateEventID, pgErr.Detail)
			case "events_stream_version_key":
				return &eventstore.VersionConflictError{StreamID: p.StreamID, Expected: p.Expected, Actual: -1}
			}
		}
		return fmt.Errorf("eventstore/postgres: append %d events to %q: %w", len(p.Events), p.StreamID, err)
	}
	if !r.typeOK {
		return fmt.Errorf("%w: stream %q: StreamType: %q differs from the stream's type",
			eventstore.ErrInvalidAppend, p.StreamID, p.StreamType)
	}
	if !r.versionOK {
		return &eventstore.VersionConflictError{StreamID: p.StreamID, Expected: p.Expected, Actual: r.current}
	}
	if r.inserted != int64(len(p.Events)) {
		return fmt.Errorf("eventstore/postgres: append to %q: inserted %d of %d events", p.StreamID, r.inserted, len(p.Events))
	}
	return nil
}

// Placeholders of the values the append statement writes into each outbox
// row's headers, as long as the longest value: the record's size is checked
// with them.
var (
	placeholderVersion = strconv.FormatInt(math.MaxInt64, 10)
	placeholderTime    = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

// envelopes are the outbox records of the events, with placeholders for
// their stream version and time.
func (s *Store) envelopes(p eventstore.AppendParams, in appendInput) []messaging.Envelope {
	envs := make([]messaging.Envelope, len(p.Events))
	for i, e := range p.Events {
		envs[i] = messaging.Envelope{
			ID:              in.ids[i],
			Type:            e.Type,
			Source:          s.cfg.Source,
			Subject:         p.StreamID,
			Time:            placeholderTime,
			DataContentType: messaging.ContentTypeJSON,
			SchemaVersion:   int(in.versions[i]),
			PartitionKey:    p.StreamID,
			CorrelationID:   e.Metadata.CorrelationID,
			CausationID:     e.Metadata.CausationID,
			TraceParent:     e.Metadata.TraceParent,
			TraceState:      e.Metadata.TraceState,
			Extensions: map[string]string{
				eventstore.ExtensionStreamType:    p.StreamType,
				eventstore.ExtensionStreamVersion: placeholderVersion,
			},
			Data: e.Data,
		}
	}
	return envs
}

// appendTx is AppendTx for valid params.
func (s *Store) appendTx(ctx context.Context, tx pgx.Tx, p eventstore.AppendParams) (eventstore.AppendResult, error) {
	in, err := s.prepare(p)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	// The lock and the append go in one round trip. The append writes only
	// if the transaction had no id yet, when the lock cannot be an order
	// risk; otherwise it runs again once the lock's order check passed.
	var b pgx.Batch
	check, err := s.ob.QueueLock(&b, in.topic, p.StreamID)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append to %q: lock the stream: %w", p.StreamID, err)
	}
	var r appendResult
	s.queueAppend(&b, p, in, true, &r)
	sendErr := tx.SendBatch(ctx, &b).Close()
	if err := check(ctx, tx); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append to %q: lock the stream: %w", p.StreamID, err)
	}
	if sendErr == nil && !r.mayWrite {
		b = pgx.Batch{}
		s.queueAppend(&b, p, in, false, &r)
		sendErr = tx.SendBatch(ctx, &b).Close()
	}
	if err := s.appendResult(p, r, sendErr); err != nil {
		return eventstore.AppendResult{}, err
	}
	return eventstore.AppendResult{
		Version:  r.current + int64(len(p.Events)),
		Position: eventstore.Position{TxID: r.txID, Pos: r.lastPos},
	}, nil
}

// LockStream takes the lock AppendTx takes for a stream, for a transaction
// that must write other rows before it appends: call it first, before tx
// writes anything. See AppendTx.
func (s *Store) LockStream(ctx context.Context, tx pgx.Tx, streamType, streamID string) error {
	if err := s.ob.Lock(ctx, tx, s.cfg.TopicFunc(streamType), streamID); err != nil {
		return fmt.Errorf("eventstore/postgres: lock stream %q: %w", streamID, err)
	}
	return nil
}

// ReadStream reads events of one stream on the pool; see
// eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, p eventstore.ReadStreamParams) ([]eventstore.RecordedEvent, error) {
	return s.readStream(ctx, s.pool, p)
}

func (s *Store) readStream(ctx context.Context, q txlog.Querier, p eventstore.ReadStreamParams) ([]eventstore.RecordedEvent, error) {
	if p.StreamID == "" {
		return nil, errors.New("eventstore/postgres: read stream: StreamID is empty")
	}
	if p.From < 0 || p.Limit < 0 {
		return nil, fmt.Errorf("eventstore/postgres: read stream %q: From (%d) and Limit (%d) must not be negative", p.StreamID, p.From, p.Limit)
	}
	var limit *int64
	if p.Limit > 0 {
		l := int64(p.Limit)
		limit = &l
	}
	query := s.q.readForward
	if p.Direction == eventstore.Backward {
		query = s.q.readBackward
	}
	rows, err := q.Query(ctx, query, p.StreamID, p.From, limit)
	if err != nil {
		return nil, fmt.Errorf("eventstore/postgres: read stream %q: %w", p.StreamID, err)
	}
	var out []eventstore.RecordedEvent
	var r eventRow
	_, err = pgx.ForEachRow(rows, append(r.dest(), &r.txID, &r.pos), func() error {
		ev, err := s.recorded(r, eventstore.Position{TxID: r.txID, Pos: r.pos})
		if err != nil {
			return err
		}
		out = append(out, ev)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("eventstore/postgres: read stream %q: %w", p.StreamID, err)
	}
	return out, nil
}

// ReadAll reads the events after p.After in global commit order on the
// pool, through the gap-safe log reader: an event whose
// transaction is still open, and every event of younger transactions, is
// held back until it ends; none is skipped. See eventstore.Store.
func (s *Store) ReadAll(ctx context.Context, p eventstore.ReadAllParams) (eventstore.AllBatch, error) {
	return s.readAll(ctx, s.pool, p)
}

func (s *Store) readAll(ctx context.Context, q txlog.Querier, p eventstore.ReadAllParams) (eventstore.AllBatch, error) {
	r := s.all
	if p.Limit != 0 && p.Limit != s.cfg.BatchSize {
		var err error
		if r, err = newAllReader(s.cfg, p.Limit); err != nil {
			return eventstore.AllBatch{}, err
		}
	}
	b, err := r.ReadBatch(ctx, q, txlog.Position{TxID: p.After.TxID, Pos: p.After.Pos})
	if err != nil {
		return eventstore.AllBatch{}, fmt.Errorf("eventstore/postgres: read all: %w", positionAhead(err))
	}
	out := eventstore.AllBatch{
		End:    eventstore.Position{TxID: b.End.TxID, Pos: b.End.Pos},
		Full:   b.Full,
		Events: make([]eventstore.RecordedEvent, 0, len(b.Rows)),
	}
	for _, row := range b.Rows {
		ev, err := s.recorded(row.Value, eventstore.Position{TxID: row.Position.TxID, Pos: row.Position.Pos})
		if err != nil {
			return eventstore.AllBatch{}, fmt.Errorf("eventstore/postgres: read all: %w", err)
		}
		out.Events = append(out.Events, ev)
	}
	return out, nil
}

// WithTx returns a view of the Store whose methods all run in tx: Append is
// AppendTx, and reads see tx's own uncommitted events. ReadAll in a
// transaction that has written holds back the events of younger
// transactions until it ends.
func (s *Store) WithTx(tx pgx.Tx) eventstore.Store { return txStore{s: s, tx: tx} }

type txStore struct {
	s  *Store
	tx pgx.Tx
}

func (t txStore) Append(ctx context.Context, p eventstore.AppendParams) (eventstore.AppendResult, error) {
	return t.s.AppendTx(ctx, t.tx, p)
}

func (t txStore) ReadStream(ctx context.Context, p eventstore.ReadStreamParams) ([]eventstore.RecordedEvent, error) {
	return t.s.readStream(ctx, t.tx, p)
}

func (t txStore) ReadAll(ctx context.Context, p eventstore.ReadAllParams) (eventstore.AllBatch, error) {
	return t.s.readAll(ctx, t.tx, p)
}

// eventRow holds the payload columns of an event as they are scanned.
type eventRow struct {
	streamID, streamType string
	version              int64
	id, typ              string
	schemaVersion        int32
	data, metadata       []byte
	recordedAt           time.Time
	txID                 uint64
	pos                  int64
}

// eventColumns are the payload columns of the events table, in the order of
// eventRow.dest.
var eventColumns = []string{"stream_id", "stream_type", "version", "event_id", "type", "schema_version", "data", "metadata", "recorded_at"}

func (r *eventRow) dest() []any {
	return []any{&r.streamID, &r.streamType, &r.version, &r.id, &r.typ, &r.schemaVersion, &r.data, &r.metadata, &r.recordedAt}
}

func newAllReader(cfg Config, batch int) (*txlog.Reader[eventRow], error) {
	r, err := txlog.NewReader(txlog.Config{
		Schema:    cfg.Schema,
		Log:       LogName,
		Reader:    readAllReader,
		Columns:   eventColumns,
		BatchSize: batch,
	}, func(v *eventRow) []any { return v.dest() })
	if err != nil {
		return nil, fmt.Errorf("eventstore/postgres: read all: %w", err)
	}
	return r, nil
}

// recorded turns a scanned row into a RecordedEvent, upcast if configured.
func (s *Store) recorded(r eventRow, pos eventstore.Position) (eventstore.RecordedEvent, error) {
	ev := eventstore.RecordedEvent{
		StreamID:      r.streamID,
		StreamType:    r.streamType,
		Version:       r.version,
		ID:            r.id,
		Type:          r.typ,
		SchemaVersion: int(r.schemaVersion),
		Data:          json.RawMessage(r.data),
		RecordedAt:    r.recordedAt,
		Position:      pos,
	}
	if len(r.metadata) > 0 {
		if err := json.Unmarshal(r.metadata, &ev.Metadata); err != nil {
			return ev, fmt.Errorf("event %s: metadata: %w", r.id, err)
		}
	}
	if s.cfg.Upcasters != nil {
		return s.cfg.Upcasters.Upcast(ev)
	}
	return ev, nil
}

// positionAhead makes a read past the database's transaction ids wrap
// eventstore.ErrPositionAhead, which callers can test for.
func positionAhead(err error) error {
	if errors.Is(err, txlog.ErrPositionAhead) {
		return fmt.Errorf("%w: %w", eventstore.ErrPositionAhead, err)
	}
	return err
}
