package txlog_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/internal/txlog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait for something another transaction or goroutine
// does. Other tests (of this package and of others running at once) hold
// transactions open for moments, which holds every reader's horizon back
// until they end, so reads that expect rows poll until this deadline.
const waitFor = 15 * time.Second

// msg is the payload of the test log's rows.
type msg struct {
	Topic   string
	Payload []byte
}

func msgDest(m *msg) []any { return []any{&m.Topic, &m.Payload} }

// logTable is the test log's table, shaped as the package requires, with a
// created_at time column.
const logTable = `CREATE TABLE %s (
    tx_id      xid8        NOT NULL DEFAULT pg_current_xact_id(),
    position   bigint      GENERATED ALWAYS AS IDENTITY,
    topic      text        NOT NULL,
    payload    bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tx_id, position)
)`

// fixture is a migrated schema of its own with one log table and a reader of
// it named "r".
type fixture struct {
	schema *pgtest.Schema
	pool   *pgxpool.Pool
	log    string
	reader *txlog.Reader[msg]
}

func setup(t testing.TB, configure ...func(*txlog.Config)) *fixture {
	t.Helper()
	s := pgtest.NewSchema(t)
	f := &fixture{schema: s, pool: s.Pool, log: "test_log"}
	createLog(t, f.pool, f.log)
	f.reader = f.newReader(t, "r", configure...)
	return f
}

func createLog(t testing.TB, db txlog.Querier, name string) {
	t.Helper()
	_, err := db.Exec(context.Background(), fmt.Sprintf(logTable, pgx.Identifier{name}.Sanitize()))
	require.NoError(t, err)
}

func (f *fixture) newReader(t testing.TB, name string, configure ...func(*txlog.Config)) *txlog.Reader[msg] {
	t.Helper()
	cfg := txlog.Config{
		Schema:  f.schema.Name,
		Log:     f.log,
		Reader:  name,
		Columns: []string{"topic", "payload"},
	}
	for _, c := range configure {
		c(&cfg)
	}
	r, err := txlog.NewReader(cfg, msgDest)
	require.NoError(t, err)
	return r
}

// insert appends one row per topic in q (a pool: one transaction each; a
// transaction: all in it) and returns their positions.
func (f *fixture) insert(t testing.TB, q txlog.Querier, topics ...string) []int64 {
	t.Helper()
	positions := make([]int64, len(topics))
	for i, topic := range topics {
		require.NoError(t, q.QueryRow(context.Background(),
			"INSERT INTO "+f.log+" (topic, payload) VALUES ($1, $2) RETURNING position",
			topic, []byte("payload of "+topic)).Scan(&positions[i]))
	}
	return positions
}

// begin starts a transaction that is rolled back at cleanup unless the test
// ends it.
func begin(t testing.TB, db pgtest.TxBeginner) pgx.Tx {
	t.Helper()
	return pgtest.Tx(t, db)
}

// takeXID makes tx take its transaction id now and returns it.
func takeXID(t testing.TB, tx pgx.Tx) uint64 {
	t.Helper()
	var xid uint64
	require.NoError(t, tx.QueryRow(context.Background(), "SELECT pg_current_xact_id()").Scan(&xid))
	return xid
}

func commit(t testing.TB, tx pgx.Tx) {
	t.Helper()
	require.NoError(t, tx.Commit(context.Background()))
}

// read runs one ReadBatch that must succeed.
func read(t testing.TB, r *txlog.Reader[msg], q txlog.Querier, after txlog.Position) txlog.Batch[msg] {
	t.Helper()
	b, err := r.ReadBatch(context.Background(), q, after)
	require.NoError(t, err)
	return b
}

// readN reads after after until it has n rows, polling while rows are held
// behind the horizon, and fails if it gets more or runs out of time.
func readN(t testing.TB, r *txlog.Reader[msg], q txlog.Querier, after txlog.Position, n int) []txlog.Row[msg] {
	t.Helper()
	var rows []txlog.Row[msg]
	deadline := time.Now().Add(waitFor)
	for len(rows) < n {
		b := read(t, r, q, after)
		rows = append(rows, b.Rows...)
		after = b.End
		if len(b.Rows) == 0 {
			require.True(t, time.Now().Before(deadline), "read %d rows of %d before the deadline", len(rows), n)
			pause(t)
		}
	}
	require.Len(t, rows, n)
	b := read(t, r, q, after)
	require.Empty(t, b.Rows, "more rows than expected")
	return rows
}

// pause waits a moment between two polls of the database.
func pause(t testing.TB) {
	t.Helper()
	timer := time.NewTimer(20 * time.Millisecond)
	defer timer.Stop()
	<-timer.C
}

func topics(rows []txlog.Row[msg]) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Value.Topic
	}
	return out
}

// readByPosition is the reader this package exists to replace: rows after a
// position, by position alone. It skips rows that commit late.
func (f *fixture) readByPosition(t testing.TB, after int64) []int64 {
	t.Helper()
	return f.positions(t, "SELECT position FROM "+f.log+" WHERE position > $1 ORDER BY position", after)
}

// readByPositionBelowHorizon keeps only rows below the horizon but still
// orders and checkpoints by position alone. It skips rows too.
func (f *fixture) readByPositionBelowHorizon(t testing.TB, after int64) []int64 {
	t.Helper()
	return f.positions(t, "SELECT position FROM "+f.log+
		" WHERE position > $1 AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY position", after)
}

func (f *fixture) positions(t testing.TB, sql string, args ...any) []int64 {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), sql, args...)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	return out
}

// allPositions returns every committed row's Position, in read order, as the
// database orders them.
func (f *fixture) allPositions(t testing.TB) []txlog.Position {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), "SELECT tx_id, position FROM "+f.log+" ORDER BY tx_id, position")
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (txlog.Position, error) {
		var p txlog.Position
		return p, row.Scan(&p.TxID, &p.Pos)
	})
	require.NoError(t, err)
	return out
}

func rowPositions(rows []txlog.Row[msg]) []txlog.Position {
	out := make([]txlog.Position, len(rows))
	for i, r := range rows {
		out[i] = r.Position
	}
	return out
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
