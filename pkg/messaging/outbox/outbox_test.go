package outbox_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

// waitFor bounds every wait of these tests.
const waitFor = 10 * time.Second

const testType = "test.thing.happened"

type fixture struct {
	schema *pgtest.Schema
	pool   *pgxpool.Pool
	ob     *outbox.Outbox
}

// setup gives a test its own migrated schema, with a table "business" that
// stands for a service's own state, and an Outbox on it configured by cfg.
func setup(t testing.TB, cfg outbox.Config) *fixture {
	t.Helper()
	s := pgtest.NewSchema(t)
	_, err := s.Pool.Exec(t.Context(), "CREATE TABLE business (id text PRIMARY KEY, note text)")
	require.NoError(t, err)
	f := &fixture{schema: s, pool: s.Pool}
	f.ob = f.outbox(t, cfg)
	return f
}

func (f *fixture) outbox(t testing.TB, cfg outbox.Config) *outbox.Outbox {
	t.Helper()
	cfg.Schema = f.schema.Name
	ob, err := outbox.New(cfg)
	require.NoError(t, err)
	return ob
}

// outboxRow is a row of the outbox table as the relay reads it.
type outboxRow struct {
	Topic   string
	Key     *string
	Headers map[string]string
	Payload []byte
}

// rows returns the outbox rows in the relay's order, (tx_id, position).
func (f *fixture) rows(t *testing.T) []outboxRow {
	t.Helper()
	rs, err := f.pool.Query(t.Context(), "SELECT topic, key, headers, payload FROM outbox ORDER BY tx_id, position")
	require.NoError(t, err)
	out, err := pgx.CollectRows(rs, pgx.RowToStructByPos[outboxRow])
	require.NoError(t, err)
	return out
}

func (f *fixture) begin(t *testing.T) pgx.Tx {
	t.Helper()
	return pgtest.Tx(t, f.pool)
}

// envelope returns a valid envelope of testType with data {"n": n} and key.
func envelope(t testing.TB, n int, key string) messaging.Envelope {
	t.Helper()
	e, err := messaging.NewEnvelope(testType, "/test/outbox", map[string]int{"n": n})
	require.NoError(t, err)
	e.PartitionKey = key
	return e
}

func newMessage(t testing.TB, n int, key string) *message.Message {
	t.Helper()
	msg, err := envelope(t, n, key).ToMessage()
	require.NoError(t, err)
	return msg
}

func registry(t *testing.T) *messaging.SchemaRegistry {
	t.Helper()
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: fstest.MapFS{
		testType + ".v1.json": {Data: []byte(`{"type": "object", "required": ["n"],
			"properties": {"n": {"type": "integer", "minimum": 0}}}`)},
	}})
	require.NoError(t, err)
	return reg
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	_, err := outbox.New(outbox.Config{})
	require.NoError(t, err)

	_, err = outbox.New(outbox.Config{Schema: "Bad-Name", MaxRecordBytes: outbox.MaxRecordBytesLimit + 1, KeyOrder: 7})
	require.Error(t, err)
	for _, field := range []string{"Schema", "MaxRecordBytes", "KeyOrder"} {
		require.ErrorContains(t, err, "outbox: "+field+":")
	}
	_, err = outbox.New(outbox.Config{MaxRecordBytes: -1})
	require.ErrorContains(t, err, "MaxRecordBytes")
	require.Equal(t, "verify", outbox.KeyOrderVerify.String())
	require.Equal(t, "unchecked", outbox.KeyOrderUnchecked.String())
}

func TestWriteCommitWritesExactRecords(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	keyed := envelope(t, 1, "order-1")
	keyed.Subject = "order-1"
	keyed.Extensions = map[string]string{"tenant": "acme"}
	unkeyed := envelope(t, 2, "")

	tx := f.begin(t)
	require.NoError(t, f.ob.WriteEnvelopes(t.Context(), tx, "sales.orders", keyed, unkeyed))
	require.Empty(t, f.rows(t), "rows are visible before commit")
	require.NoError(t, tx.Commit(t.Context()))

	rows := f.rows(t)
	require.Len(t, rows, 2)
	require.Equal(t, "sales.orders", rows[0].Topic)
	require.NotNil(t, rows[0].Key)
	require.Equal(t, "order-1", *rows[0].Key)
	require.JSONEq(t, `{"n":1}`, string(rows[0].Payload))
	require.Equal(t, map[string]string{
		messaging.HeaderID:            keyed.ID,
		messaging.HeaderSpecVersion:   "1.0",
		messaging.HeaderType:          testType,
		messaging.HeaderSource:        "/test/outbox",
		messaging.HeaderTime:          keyed.Time.Format(time.RFC3339Nano),
		messaging.HeaderContentType:   messaging.ContentTypeJSON,
		messaging.HeaderSchemaVersion: "1",
		messaging.HeaderPartitionKey:  "order-1",
		messaging.HeaderSubject:       "order-1",
		"ce_tenant":                   "acme",
	}, rows[0].Headers)
	require.Nil(t, rows[1].Key, "a message without partition key has no record key")
	require.Equal(t, unkeyed.ID, rows[1].Headers[messaging.HeaderID])
}

func TestWriteDropsReceiveOnlyMetadata(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	msg := newMessage(t, 1, "k")
	msg.Metadata[messaging.MetadataKafkaOffset] = "42"
	msg.Metadata[messaging.MetadataKafkaTopic] = "elsewhere"
	msg.Metadata["x-custom"] = "kept"
	msg.Payload = nil

	tx := f.begin(t)
	require.NoError(t, f.ob.Write(t.Context(), tx, "t1", msg))
	require.NoError(t, tx.Commit(t.Context()))
	rows := f.rows(t)
	require.Len(t, rows, 1)
	require.NotContains(t, rows[0].Headers, messaging.MetadataKafkaOffset)
	require.NotContains(t, rows[0].Headers, messaging.MetadataKafkaTopic)
	require.NotContains(t, rows[0].Headers, messaging.MetadataPartitionKey)
	require.Equal(t, "kept", rows[0].Headers["x-custom"])
	require.Empty(t, rows[0].Payload)
}

func TestWriteRollbackWritesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	tx := f.begin(t)
	require.NoError(t, f.ob.Write(t.Context(), tx, "t1", newMessage(t, 1, "k"), newMessage(t, 2, "")))
	require.NoError(t, tx.Rollback(t.Context()))
	require.Empty(t, f.rows(t))
}

func TestWriteRefusesInvalidMessagesAndWritesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{Registry: registry(t), MaxRecordBytes: 4096})

	tests := []struct {
		name   string
		topic  string
		mangle func(*message.Message)
		want   error
	}{
		{"not an envelope", "t1", func(m *message.Message) { delete(m.Metadata, messaging.HeaderType) }, messaging.ErrInvalidEnvelope},
		{"schema violation", "t1", func(m *message.Message) { m.Payload = []byte(`{"n": -1}`) }, messaging.ErrSchemaViolation},
		{"unknown type", "t1", func(m *message.Message) { m.Metadata[messaging.HeaderType] = "test.other" }, messaging.ErrUnknownType},
		{"too large payload", "t1", func(m *message.Message) {
			m.Payload = []byte(`{"n": 1, "pad": "` + strings.Repeat("x", 4096) + `"}`)
		}, outbox.ErrTooLarge},
		{"too large headers", "t1", func(m *message.Message) { m.Metadata["x-big"] = strings.Repeat("\n", 2100) }, outbox.ErrTooLarge},
		{"UUID differs from ce_id", "t1", func(m *message.Message) { m.UUID = "other" }, outbox.ErrInvalidMessage},
		{"metadata not UTF-8", "t1", func(m *message.Message) { m.Metadata["x-bin"] = "\xff" }, outbox.ErrInvalidMessage},
		{"metadata with NUL", "t1", func(m *message.Message) { m.Metadata["x-nul"] = "a\x00b" }, outbox.ErrInvalidMessage},
		{"bad topic", "no spaces", nil, outbox.ErrInvalidTopic},
		{"empty topic", "", nil, outbox.ErrInvalidTopic},
		{"dot topic", "..", nil, outbox.ErrInvalidTopic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good, bad := newMessage(t, 1, "k1"), newMessage(t, 2, "k2")
			if tt.mangle != nil {
				tt.mangle(bad)
			}
			tx := f.begin(t)
			err := f.ob.Write(t.Context(), tx, tt.topic, good, bad)
			require.ErrorIs(t, err, tt.want)
			if tt.mangle != nil {
				var me *outbox.MessageError
				require.ErrorAs(t, err, &me)
				require.Equal(t, 1, me.Index)
				require.Equal(t, bad.UUID, me.ID)
				require.Contains(t, err.Error(), "message #1")
			}
			// The transaction goes on: validation runs before any statement.
			require.NoError(t, f.ob.Write(t.Context(), tx, "t1", newMessage(t, 3, "")))
			var n int
			require.NoError(t, tx.QueryRow(t.Context(), "SELECT count(*) FROM outbox").Scan(&n))
			require.Equal(t, 1, n, "only the later, valid call wrote")
		})
	}

	t.Run("nil message", func(t *testing.T) {
		err := f.ob.Write(t.Context(), f.begin(t), "t1", nil)
		require.ErrorIs(t, err, outbox.ErrInvalidMessage)
	})
	t.Run("nil transaction", func(t *testing.T) {
		require.ErrorIs(t, f.ob.Write(t.Context(), nil, "t1", newMessage(t, 1, "")), outbox.ErrNoTransaction)
	})
	t.Run("invalid envelope", func(t *testing.T) {
		e := envelope(t, 1, "")
		e.Source = ""
		err := f.ob.WriteEnvelopes(t.Context(), f.begin(t), "t1", envelope(t, 0, ""), e)
		require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)
		var me *outbox.MessageError
		require.ErrorAs(t, err, &me)
		require.Equal(t, 1, me.Index)
	})
}

func TestWriteSizeLimitIsInclusive(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{MaxRecordBytes: outbox.MaxRecordBytesLimit})
	msg := newMessage(t, 0, "key")
	// Fill the record to exactly the limit, which the table's CHECK allows too.
	headers := make(map[string]string)
	for k, v := range msg.Metadata {
		if k != messaging.MetadataPartitionKey {
			headers[k] = v
		}
	}
	headers["x-pad"] = ""
	room := outbox.MaxRecordBytesLimit - len("key") - outbox.JSONBTextLen(headers) - len(`{"s":""}`)
	msg.Metadata["x-pad"] = ""
	msg.Payload = []byte(`{"s":"` + strings.Repeat("a", room) + `"}`)

	tx := f.begin(t)
	require.NoError(t, f.ob.Write(t.Context(), tx, "t1", msg))
	var size int
	require.NoError(t, tx.QueryRow(t.Context(),
		"SELECT octet_length(payload) + octet_length(key) + octet_length(headers::text) FROM outbox").Scan(&size))
	require.Equal(t, outbox.MaxRecordBytesLimit, size, "the outbox measures as the table's CHECK does")
	msg.Payload = []byte(`{"s":"` + strings.Repeat("a", room+1) + `"}`)
	require.ErrorIs(t, f.ob.Write(t.Context(), tx, "t1", msg), outbox.ErrTooLarge)
	require.NoError(t, tx.Commit(t.Context()))
	require.Len(t, f.rows(t), 1)
}

func TestWriteStampsOriginFromContext(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	ctx := middleware.ContextWithOrigin(t.Context(), middleware.Origin{MessageID: "cause-1", CorrelationID: "corr-1", SagaID: "saga-1"})
	own := newMessage(t, 2, "")
	own.Metadata[messaging.HeaderCorrelationID] = "corr-own"

	tx := f.begin(t)
	require.NoError(t, f.ob.Write(ctx, tx, "t1", newMessage(t, 1, ""), own))
	require.NoError(t, tx.Commit(t.Context()))
	rows := f.rows(t)
	require.Len(t, rows, 2)
	require.Equal(t, "cause-1", rows[0].Headers[messaging.HeaderCausationID])
	require.Equal(t, "corr-1", rows[0].Headers[messaging.HeaderCorrelationID])
	require.Equal(t, "saga-1", rows[0].Headers[messaging.HeaderSagaID])
	require.Equal(t, "cause-1", rows[1].Headers[messaging.HeaderCausationID])
	require.Equal(t, "corr-own", rows[1].Headers[messaging.HeaderCorrelationID], "a correlation id the message has is kept")
}

// roundTrips counts what a connection sends: batches and lone queries.
type roundTrips struct {
	batches, queries atomic.Int64
}

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.queries.Add(1)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.batches.Add(1)
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func TestWriteManyMessagesInOneRoundTrip(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	tracer := &roundTrips{}
	cfg := f.schema.Config()
	cfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	defer pool.Close()

	const n = 500
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = newMessage(t, i, "key-"+string(rune('a'+i%7)))
	}
	tx, err := pool.Begin(t.Context())
	require.NoError(t, err)
	queries := tracer.queries.Load() // BEGIN
	require.NoError(t, f.ob.Write(t.Context(), tx, "t1", msgs...))
	require.Equal(t, int64(1), tracer.batches.Load(), "one pipeline: key locks and insert")
	require.Equal(t, queries, tracer.queries.Load(), "no statement besides the pipeline")
	require.NoError(t, tx.Commit(t.Context()))

	rows := f.rows(t)
	require.Len(t, rows, n)
	for i, r := range rows {
		require.Equal(t, msgs[i].UUID, r.Headers[messaging.HeaderID], "row %d is out of order", i)
	}
}

func TestNotifyArrivesAtCommitOnly(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	listener := pgtest.Connect(t)
	channel := pgx.Identifier{f.schema.Name + ".outbox"}.Sanitize()
	_, err := listener.Exec(t.Context(), "LISTEN "+channel)
	require.NoError(t, err)

	noNotification := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		n, err := listener.WaitForNotification(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded, "unexpected notification %+v", n)
	}
	// Rolled back: nothing. To tell "none" from "not yet", a marker sent
	// after the rollback must be the first notification to arrive.
	tx := f.begin(t)
	require.NoError(t, f.ob.Write(t.Context(), tx, "t1", newMessage(t, 1, "k")))
	require.NoError(t, tx.Rollback(t.Context()))
	_, err = f.pool.Exec(t.Context(), "SELECT pg_notify($1, 'marker')", f.schema.Name+".outbox")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	n, err := listener.WaitForNotification(ctx)
	require.NoError(t, err)
	require.Equal(t, "marker", n.Payload, "the rolled-back write notified")

	// Committed: nothing before the commit, one notification at it.
	tx = f.begin(t)
	require.NoError(t, f.ob.Write(t.Context(), tx, "t1", newMessage(t, 1, "k"), newMessage(t, 2, "j")))
	noNotification()
	require.NoError(t, tx.Commit(t.Context()))
	n, err = listener.WaitForNotification(ctx)
	require.NoError(t, err)
	require.Equal(t, f.schema.Name+".outbox", n.Channel)
	require.Empty(t, n.Payload)
}

func TestWriteNoMessagesDoesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	tx := f.begin(t)
	require.NoError(t, f.ob.Write(t.Context(), tx, "t1"))
	require.NoError(t, f.ob.WriteEnvelopes(t.Context(), tx, "t1"))
	var hasXID bool
	require.NoError(t, tx.QueryRow(t.Context(), "SELECT pg_current_xact_id_if_assigned() IS NOT NULL").Scan(&hasXID))
	require.False(t, hasXID)
}

func TestMessageErrorUnwraps(t *testing.T) {
	t.Parallel()
	err := error(&outbox.MessageError{Index: 3, ID: "x", Err: outbox.ErrTooLarge})
	require.ErrorIs(t, err, outbox.ErrTooLarge)
	require.NotErrorIs(t, err, outbox.ErrInvalidMessage)
	require.Equal(t, `message #3 (id "x"): outbox: record too large`, err.Error())
}

// A message written in a traced context carries its trace context; one with
// a traceparent of its own keeps it. Not parallel: it installs the global
// propagator, as telemetry.Setup does.
func TestWriteCarriesTheTraceContextOfItsContext(t *testing.T) {
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })
	f := setup(t, outbox.Config{})
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := otel.GetTextMapPropagator().Extract(t.Context(), propagation.MapCarrier{"traceparent": parent})
	own := envelope(t, 2, "")
	own.TraceParent = "00-11111111111111111111111111111111-2222222222222222-01"

	tx := f.begin(t)
	require.NoError(t, f.ob.WriteEnvelopes(ctx, tx, "t1", envelope(t, 1, ""), own))
	require.NoError(t, f.ob.Write(ctx, tx, "t1", newMessage(t, 3, "")))
	require.NoError(t, tx.Commit(t.Context()))
	rows := f.rows(t)
	require.Len(t, rows, 3)
	require.Equal(t, parent, rows[0].Headers[messaging.HeaderTraceParent])
	require.Equal(t, own.TraceParent, rows[1].Headers[messaging.HeaderTraceParent], "a traceparent the envelope has is kept")
	require.Equal(t, parent, rows[2].Headers[messaging.HeaderTraceParent])
}
