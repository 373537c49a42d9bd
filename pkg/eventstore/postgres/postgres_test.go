package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/eventstoretest"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
	"github.com/vextrus/dtx/pkg/messaging"
)

type fixture struct {
	pool  *pgxpool.Pool
	store *postgres.Store
}

// setup gives a test its own migrated schema and a Store on it.
func setup(t testing.TB, cfg postgres.Config) *fixture {
	t.Helper()
	s := pgtest.NewSchema(t)
	cfg.Schema = s.Name
	store, err := postgres.New(s.Pool, cfg)
	require.NoError(t, err)
	return &fixture{pool: s.Pool, store: store}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	eventstoretest.Run(t, func(t *testing.T) eventstore.Store {
		return setup(t, postgres.Config{}).store
	})
}

func TestConformanceInCallersTransactions(t *testing.T) {
	t.Parallel()
	// Append through WithTx in a transaction that commits after it: the
	// same contract holds.
	eventstoretest.Run(t, func(t *testing.T) eventstore.Store {
		return committingStore{setup(t, postgres.Config{})}
	})
}

// committingStore appends with WithTx in a transaction of its own.
type committingStore struct{ f *fixture }

func (c committingStore) Append(ctx context.Context, p eventstore.AppendParams) (eventstore.AppendResult, error) {
	var res eventstore.AppendResult
	err := pgx.BeginFunc(ctx, c.f.pool, func(tx pgx.Tx) error {
		var err error
		res, err = c.f.store.WithTx(tx).Append(ctx, p)
		return err
	})
	return res, err
}

func (c committingStore) ReadStream(ctx context.Context, p eventstore.ReadStreamParams) ([]eventstore.RecordedEvent, error) {
	return c.f.store.ReadStream(ctx, p)
}

func (c committingStore) ReadAll(ctx context.Context, p eventstore.ReadAllParams) (eventstore.AllBatch, error) {
	return c.f.store.ReadAll(ctx, p)
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewSchema(t).Pool
	_, err := postgres.New(nil, postgres.Config{})
	require.Error(t, err)
	_, err = postgres.New(pool, postgres.Config{Schema: "Bad-Name", BatchSize: -1, Source: "%zz"})
	for _, field := range []string{"Schema", "BatchSize", "Source"} {
		require.ErrorContains(t, err, "eventstore/postgres: "+field+":")
	}
	s, err := postgres.New(pool, postgres.Config{})
	require.NoError(t, err)
	require.Equal(t, "order.events", s.Config().TopicFunc("order"))
	require.Equal(t, postgres.DefaultSource, s.Config().Source)
}

func event(t testing.TB, typ string, data any) eventstore.EventData {
	t.Helper()
	b, err := json.Marshal(data)
	require.NoError(t, err)
	return eventstore.EventData{Type: typ, Data: b}
}

type outboxRow struct {
	Topic   string
	Key     *string
	Headers map[string]string
	Payload []byte
}

func (f *fixture) outboxRows(t *testing.T) []outboxRow {
	t.Helper()
	rs, err := f.pool.Query(t.Context(), "SELECT topic, key, headers, payload FROM outbox ORDER BY tx_id, position")
	require.NoError(t, err)
	out, err := pgx.CollectRows(rs, pgx.RowToStructByPos[outboxRow])
	require.NoError(t, err)
	return out
}

func (f *fixture) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	require.NoError(t, f.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n))
	return n
}

// The outbox rows of an append carry each event as a valid dtx envelope,
// keyed by the stream id, on the stream type's topic.
func TestAppendWritesOutboxEnvelopes(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	ctx := t.Context()
	e1 := event(t, "sales.order.placed", map[string]int{"total": 42})
	e1.Metadata = eventstore.Metadata{CorrelationID: "corr-1", CausationID: "cmd-1",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	e2 := event(t, "sales.order.paid", map[string]int{"amount": 42})
	e2.SchemaVersion = 3
	_, err := f.store.Append(ctx, eventstore.AppendParams{StreamID: "order-42", StreamType: "order",
		Expected: eventstore.NoStream, Events: []eventstore.EventData{e1, e2}})
	require.NoError(t, err)
	stored, err := f.store.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "order-42"})
	require.NoError(t, err)

	rows := f.outboxRows(t)
	require.Len(t, rows, 2)
	for i, r := range rows {
		require.Equal(t, "order.events", r.Topic)
		require.NotNil(t, r.Key)
		require.Equal(t, "order-42", *r.Key)
		msg := message.NewMessage(r.Headers[messaging.HeaderID], r.Payload)
		for k, v := range r.Headers {
			msg.Metadata[k] = v
		}
		msg.Metadata[messaging.MetadataPartitionKey] = *r.Key
		env, err := messaging.Decode(msg)
		require.NoError(t, err)
		ev := stored[i]
		require.Equal(t, ev.ID, env.ID)
		require.Equal(t, ev.Type, env.Type)
		require.Equal(t, "order-42", env.Subject)
		require.Equal(t, "order-42", env.PartitionKey)
		require.Equal(t, ev.SchemaVersion, env.SchemaVersion)
		require.Equal(t, ev.Metadata.CorrelationID, env.CorrelationID)
		require.Equal(t, ev.Metadata.CausationID, env.CausationID)
		require.Equal(t, ev.Metadata.TraceParent, env.TraceParent)
		require.Equal(t, postgres.DefaultSource, env.Source)
		require.True(t, ev.RecordedAt.Equal(env.Time))
		require.Equal(t, ev.RecordedAt.UTC().Format(time.RFC3339Nano), r.Headers[messaging.HeaderTime],
			"ce_time written as messaging writes times")
		require.Equal(t, "order", env.Extensions[eventstore.ExtensionStreamType])
		require.Equal(t, strconv.FormatInt(ev.Version, 10), env.Extensions[eventstore.ExtensionStreamVersion])
		require.JSONEq(t, string(ev.Data), string(env.Data))
	}
}

// An append in the caller's transaction commits and rolls back with it.
func TestAppendInCallersTransaction(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	ctx := t.Context()
	_, err := f.pool.Exec(ctx, "CREATE TABLE business (id text PRIMARY KEY)")
	require.NoError(t, err)
	p := eventstore.AppendParams{StreamID: "order-1", StreamType: "order", Expected: eventstore.NoStream,
		Events: []eventstore.EventData{event(t, "sales.order.placed", map[string]int{"n": 1})}}

	tx := pgtest.Tx(t, f.pool)
	require.NoError(t, f.store.LockStream(ctx, tx, "order", "order-1"))
	_, err = tx.Exec(ctx, "INSERT INTO business (id) VALUES ('order-1')")
	require.NoError(t, err)
	res, err := f.store.AppendTx(ctx, tx, p)
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Version)
	seen, err := f.store.WithTx(tx).ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "order-1"})
	require.NoError(t, err)
	require.Len(t, seen, 1, "the transaction sees its own events")
	require.NoError(t, tx.Rollback(ctx))
	require.Zero(t, f.count(t, "events"), "rollback leaves no events")
	require.Zero(t, f.count(t, "outbox"), "rollback leaves no outbox rows")
	require.Zero(t, f.count(t, "business"))

	// A conflict leaves the caller's transaction usable.
	_, err = f.store.Append(ctx, p)
	require.NoError(t, err)
	tx = pgtest.Tx(t, f.pool)
	_, err = f.store.AppendTx(ctx, tx, p)
	var vc *eventstore.VersionConflictError
	require.ErrorAs(t, err, &vc)
	require.Equal(t, int64(1), vc.Actual)
	_, err = tx.Exec(ctx, "INSERT INTO business (id) VALUES ('order-1')")
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, 1, f.count(t, "events"))
	require.Equal(t, 1, f.count(t, "outbox"))
	require.Equal(t, 1, f.count(t, "business"))
}

func TestUpcasting(t *testing.T) {
	t.Parallel()
	up := eventstore.NewUpcasters()
	// v1 {"name": "..."} → v2 {"full_name": "..."} → v3 adds "country".
	require.NoError(t, up.Register("customer.registered", 1, func(d json.RawMessage) (json.RawMessage, error) {
		var v1 struct{ Name string }
		if err := json.Unmarshal(d, &v1); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]string{"full_name": v1.Name})
	}))
	require.NoError(t, up.Register("customer.registered", 2, func(d json.RawMessage) (json.RawMessage, error) {
		var v2 map[string]any
		if err := json.Unmarshal(d, &v2); err != nil {
			return nil, err
		}
		v2["country"] = "unknown"
		return json.Marshal(v2)
	}))
	require.Error(t, up.Register("customer.registered", 1, func(d json.RawMessage) (json.RawMessage, error) { return d, nil }))
	require.NoError(t, up.Register("customer.broken", 1, func(json.RawMessage) (json.RawMessage, error) {
		return nil, errors.New("boom")
	}))

	f := setup(t, postgres.Config{Upcasters: up})
	ctx := t.Context()
	old := event(t, "customer.registered", map[string]string{"name": "Ada"})
	current := event(t, "customer.registered", map[string]string{"full_name": "Bob", "country": "NL"})
	current.SchemaVersion = 3
	_, err := f.store.Append(ctx, eventstore.AppendParams{StreamID: "customer-1", StreamType: "customer",
		Expected: eventstore.NoStream, Events: []eventstore.EventData{old, current}})
	require.NoError(t, err)

	got, err := f.store.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "customer-1"})
	require.NoError(t, err)
	require.Equal(t, 3, got[0].SchemaVersion)
	require.JSONEq(t, `{"full_name": "Ada", "country": "unknown"}`, string(got[0].Data))
	require.Equal(t, 3, got[1].SchemaVersion)
	require.JSONEq(t, string(current.Data), string(got[1].Data))
	var after eventstore.Position
	require.Len(t, readAllUntil(t, f.store, &after, 2), 2)
	all, err := f.store.ReadAll(ctx, eventstore.ReadAllParams{})
	require.NoError(t, err)
	require.NotEmpty(t, all.Events)
	require.JSONEq(t, string(got[0].Data), string(all.Events[0].Data), "ReadAll upcasts too")

	var storedVersion int
	var stored []byte
	require.NoError(t, f.pool.QueryRow(ctx, "SELECT schema_version, data FROM events WHERE version = 1").Scan(&storedVersion, &stored))
	require.Equal(t, 1, storedVersion, "the stored event is never rewritten")
	require.JSONEq(t, `{"name": "Ada"}`, string(stored))

	_, err = f.store.Append(ctx, eventstore.AppendParams{StreamID: "customer-2", StreamType: "customer",
		Expected: eventstore.NoStream, Events: []eventstore.EventData{event(t, "customer.broken", map[string]int{})}})
	require.NoError(t, err)
	_, err = f.store.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "customer-2"})
	require.ErrorIs(t, err, eventstore.ErrUpcast)
}
