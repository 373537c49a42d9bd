package fault

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
)

// lateCommit is the interleaving of the late-commit scenario. Keys a and b
// are written before, by, and after the transaction held open; keys c and d
// by the transactions that commit while it is open. (Those never write a or
// b: two open transactions writing one key are ordered by transaction id,
// the order the relay documents, which a test of commit order cannot
// judge.)
type lateCommit struct {
	db    *outboxDB
	topic string
	j     *journal

	before, late, during, after []row
}

// run commits a transaction on a and b, opens the late one (a, b, a, b),
// commits five on c and d, calls whileOpen, commits the late one, then one
// more on every key.
func (lc *lateCommit) run(t *testing.T, whileOpen func()) {
	t.Helper()
	lc.before = commitTx(t, lc.db, lc.topic, lc.j, 0, "a", "b")
	tx, late := openTx(t, lc.db, lc.topic, lc.j, 0, "a", "b", "a", "b")
	for range 5 {
		lc.during = append(lc.during, commitTx(t, lc.db, lc.topic, lc.j, 0, "c", "d", "c")...)
	}
	whileOpen()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, tx.Commit(ctx))
	lc.j.ended(late...)
	lc.late = late
	lc.after = commitTx(t, lc.db, lc.topic, lc.j, 0, "a", "b", "c", "d")
}

func ids(rows []row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.id
	}
	return out
}

// A transaction that stays open while later ones commit holds them back;
// once it commits, its rows are published, in commit order per key with
// the rows before and after it, and nothing is lost or duplicated.
func TestLateCommit(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	brokers := kafkatest.Brokers()
	topic := kafkatest.TopicName(t)
	createTopic(t, brokers, topic, nil)
	p := startRelay(t, relayOpts{name: "relay-late", dbURL: db.url, schema: db.schema, brokers: joinBrokers(brokers)})
	p.logs.WaitFor(t, msgAcquired, 30*time.Second)

	lc := &lateCommit{db: db, topic: topic, j: newJournal("late")}
	lc.run(t, func() {
		// The rows before the open transaction are published (waiting for
		// them as long as a transaction of another test may hold the
		// cluster's horizon); the ones committed after it began are held
		// back (G5 in docs/guarantees.md: gap safety first) over a short
		// window.
		requireClean(t, verify(t, brokers, topic, expect(lc.before, db.committedIDs(t)), 30*time.Second), 0)
		rep := verify(t, brokers, topic, expect(lc.j.snapshot(), db.committedIDs(t)), 2*time.Second)
		require.Empty(t, rep.Phantoms)
		require.Equal(t, ids(lc.during), rep.Missing, "the rows committed while an older transaction is open are held back")
		require.Equal(t, len(lc.before), rep.Distinct)
	})

	rep := verify(t, brokers, topic, expect(lc.j.snapshot(), db.committedIDs(t)), 30*time.Second)
	requireClean(t, rep, 0)
	require.Equal(t, len(lc.before)+len(lc.late)+len(lc.during)+len(lc.after), rep.Distinct)
	p.stop(t)
}

// The verifier catches a relay that reads by position alone (id > last):
// it skips the rows of the transaction that committed late, and the
// verifier reports them missing.
func TestLateCommitCatchesPositionOnlyRelay(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	brokers := kafkatest.Brokers()
	topic := kafkatest.TopicName(t)
	createTopic(t, brokers, topic, nil)
	naive := &positionOnlyRelay{db: db, cl: kafkatest.NewClient(t, kgo.SeedBrokers(brokers...))}

	lc := &lateCommit{db: db, topic: topic, j: newJournal("naive")}
	lc.run(t, func() { naive.pump(t) })
	naive.pump(t)

	rep := verify(t, brokers, topic, expect(lc.j.snapshot(), db.committedIDs(t)), 3*time.Second)
	require.Equal(t, ids(lc.late), rep.Missing, "the verifier reports the late transaction's rows lost")
	require.Empty(t, rep.Phantoms)
}

// positionOnlyRelay is the mistake docs/architecture.md#the-log warns about: it reads the
// outbox by position > last, so a row whose transaction commits after a
// later-positioned row was read is never read.
type positionOnlyRelay struct {
	db   *outboxDB
	cl   *kgo.Client
	last int64
}

// pump publishes every row visible now with a position above the last one.
func (r *positionOnlyRelay) pump(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := r.db.pool.Query(ctx, "SELECT position, topic, key, headers::text, payload FROM "+
		r.db.qualified("outbox")+" WHERE position > $1 ORDER BY position", r.last)
	require.NoError(t, err)
	var recs []*kgo.Record
	for rows.Next() {
		var (
			pos          int64
			topic, hdrs  string
			key          *string
			payload      []byte
			headers      map[string]string
			recordHeader []kgo.RecordHeader
		)
		require.NoError(t, rows.Scan(&pos, &topic, &key, &hdrs, &payload))
		require.NoError(t, json.Unmarshal([]byte(hdrs), &headers))
		for k, v := range headers {
			recordHeader = append(recordHeader, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		rec := &kgo.Record{Topic: topic, Value: payload, Headers: recordHeader}
		if key != nil {
			rec.Key = []byte(*key)
		}
		recs = append(recs, rec)
		r.last = max(r.last, pos)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, r.cl.ProduceSync(ctx, recs...).FirstErr())
}
