package fault

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

// PostgreSQL (a private server) is stopped and started under load. The relay
// stays up and publishes every committed row, in order per key; commits
// whose outcome the writer never learned are judged by the ledger.
func TestPostgresRestarted(t *testing.T) {
	t.Parallel()
	const (
		batchSize = 50
		outage    = 2 * time.Second
	)
	cluster := pgtest.NewCluster(t)
	db := clusterDB(t, cluster)
	brokers := kafkatest.Brokers()
	topic := kafkatest.TopicName(t)
	createTopic(t, brokers, topic, nil)
	const published = "dtx_relay_published_total"

	p := startRelay(t, relayOpts{name: "relay-pg", dbURL: db.url, schema: db.schema, brokers: joinBrokers(brokers),
		batchSize: batchSize, leaseDuration: time.Second})
	p.logs.WaitFor(t, msgAcquired, 30*time.Second)
	j := newJournal("pg")
	w := startWriter(t, db, topic, j)
	p.waitMetric(t, published, 30*time.Second, func(v float64) bool { return v >= 200 })

	cluster.Stop()
	stoppedAt := time.Now()
	<-time.After(outage) // the outage's length
	cluster.Start()
	t.Logf("PostgreSQL back %s after it stopped", time.Since(stoppedAt).Round(time.Millisecond))

	// The relay takes its lease again and publishes what the writer commits
	// after the restart.
	p.logs.WaitForNth(t, msgAcquired, 2, 60*time.Second)
	before := p.metric(t, published)
	p.waitMetric(t, published, 60*time.Second, func(v float64) bool { return v >= before+200 })
	w.stop()
	rep := verify(t, brokers, topic, expect(j.snapshot(), db.committedIDs(t)), 90*time.Second)
	t.Log(w.summary())
	require.True(t, p.running(), "the relay stays up through the restart")
	require.Positive(t, j.failedTxs, "the writer saw the outage")
	// A batch acknowledged while its checkpoint could not be saved is
	// published again: at most one batch.
	requireClean(t, rep, batchSize)
	p.stop(t)
}
