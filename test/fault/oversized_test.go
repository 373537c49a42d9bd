package fault

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
)

// A row larger than its topic's max.message.bytes lands in outbox_rejected
// with the reason; the rows around it, on its key and others, are published
// in order, once each.
func TestOversizedRowIsRejected(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	brokers := kafkatest.Brokers()
	topic := kafkatest.TopicName(t)
	maxBytes := "10000"
	createTopic(t, brokers, topic, map[string]*string{"max.message.bytes": &maxBytes})
	p := startRelay(t, relayOpts{name: "relay-oversized", dbURL: db.url, schema: db.schema, brokers: joinBrokers(brokers)})
	p.logs.WaitFor(t, msgAcquired, 30*time.Second)

	j := newJournal("big")
	for range 5 {
		commitTx(t, db, topic, j, 100, "a", "b", "a")
	}
	// The big row shares its transaction, key and (probably) the record
	// batch with small ones.
	tx, rows := openTx(t, db, topic, j, 100, "a", "b")
	big := j.newRow("a")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, db.insertRow(ctx, tx, topic, big, 20000))
	after := []row{j.newRow("a"), j.newRow("b")}
	for _, r := range after {
		require.NoError(t, db.insertRow(ctx, tx, topic, r, 100))
	}
	require.NoError(t, tx.Commit(ctx))
	j.ended(append(append(rows, big), after...)...)
	for range 5 {
		commitTx(t, db, topic, j, 100, "a", "b", "a")
	}

	p.logs.WaitFor(t, msgRejected, 30*time.Second)
	var id, reason string
	require.NoError(t, db.pool.QueryRow(ctx, "SELECT headers->>'ce_id', reason FROM "+db.qualified("outbox_rejected")).Scan(&id, &reason))
	require.Equal(t, big.id, id)
	require.Contains(t, reason, "MESSAGE_TOO_LARGE")
	t.Logf("rejected %s: %s", id, reason)

	rep := verify(t, brokers, topic, expect(j.snapshot(), db.committedIDs(t), big.id), 30*time.Second)
	requireClean(t, rep, 0)
	require.InDelta(t, 1, p.metric(t, "dtx_relay_rejected_total"), 0)
	p.stop(t)
}
