package fault

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/internal/txlog"
)

// A transaction holding a transaction id in another database of the
// cluster holds back every outbox row committed after it began. The relay
// never skips them; it says so: dtx_txlog_horizon_held_seconds rises, a
// warning names the blocking pid and database, and /readyz turns 503 under
// "horizon". Once the transaction ends the rows are published, in order,
// and /readyz turns 200. The transaction stays open a few seconds only: it
// stalls every log reader of the cluster, other tests' too.
func TestLongTransactionElsewhere(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	brokers := kafkatest.Brokers()
	topic := kafkatest.TopicName(t)
	createTopic(t, brokers, topic, nil)
	p := startRelay(t, relayOpts{name: "relay-horizon", dbURL: db.url, schema: db.schema, brokers: joinBrokers(brokers),
		env: []string{"DTX_HORIZON_WARN_AFTER=500ms", "DTX_HORIZON_NOT_READY_AFTER=1s",
			"DTX_HORIZON_WARN_EVERY=1s"}})
	p.logs.WaitFor(t, msgAcquired, 30*time.Second)
	j := newJournal("horizon")
	commitTx(t, db, topic, j, 0, "a", "b")
	requireClean(t, verify(t, brokers, topic, expect(j.snapshot(), db.committedIDs(t)), 30*time.Second), 0)

	// Another database of the cluster; the transaction in it takes an id.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	other := "t_fault_hz_" + strconv.FormatInt(time.Now().UnixNano()%1e12, 36)
	_, err := db.pool.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{other}.Sanitize())
	require.NoError(t, err, "the test's role needs CREATEDB")
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		_, err := db.pool.Exec(cctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{other}.Sanitize()+" WITH (FORCE)")
		require.NoError(t, err)
	})
	cfg, err := pgx.ParseConfig(pgtest.URL())
	require.NoError(t, err)
	cfg.Database = other
	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) }) // rolls back a transaction left open
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	var pid int
	var xid string
	require.NoError(t, tx.QueryRow(ctx, "SELECT pg_backend_pid(), pg_current_xact_id()::text").Scan(&pid, &xid))
	openedAt := time.Now()

	held := commitTx(t, db, topic, j, 0, "a", "b", "a")
	// Other tests' transactions (in this package or another, on the same
	// cluster) may hold the horizon first; the warning names whichever
	// holds it, so wait for the one naming this test's transaction.
	rec := p.logs.WaitForMatch(t, txlog.HorizonWarnMsg, func(rec map[string]any) bool {
		return rec["pid"] == float64(pid)
	}, 30*time.Second)
	require.Equal(t, other, rec["database"], "the warning names the blocking backend's database: %v", rec)
	require.Eventually(t, func() bool {
		code, body := p.get("/readyz")
		return code == http.StatusServiceUnavailable && containsAll(body, "horizon", other)
	}, 10*time.Second, 50*time.Millisecond, "/readyz says a transaction holds the horizon")
	require.Positive(t, labelledMetric(t, p, "dtx_txlog_horizon_held_seconds", `log="outbox"`))
	rep := verify(t, brokers, topic, expect(held, db.committedIDs(t)), 500*time.Millisecond)
	require.Len(t, rep.Missing, len(held), "the rows wait; none is skipped: %s", rep)

	require.NoError(t, tx.Commit(ctx))
	t.Logf("the transaction %s in %s (pid %d) held the horizon for %s", xid, other, pid, time.Since(openedAt).Round(time.Millisecond))
	commitTx(t, db, topic, j, 0, "a", "b")
	requireClean(t, verify(t, brokers, topic, expect(j.snapshot(), db.committedIDs(t)), 30*time.Second), 0)
	require.Eventually(t, func() bool {
		code, _ := p.get("/readyz")
		return code == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "/readyz turns 200 once the transaction ended")
	p.stop(t)
}
