package fault

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
)

// Killed with SIGKILL at random moments while it publishes under load, five
// times, and restarted each time, the relay loses nothing and keeps per-key
// order; the duplicates are the rows acknowledged but not yet checkpointed
// at each kill, at most one batch per kill.
func TestKillNineMidBatchUnderLoad(t *testing.T) {
	t.Parallel()
	const (
		kills     = 5
		batchSize = 20
	)
	db := sharedDB(t)
	brokers := kafkatest.Brokers()
	topic := kafkatest.TopicName(t)
	createTopic(t, brokers, topic, nil)
	opts := relayOpts{name: "relay-kill", dbURL: db.url, schema: db.schema, brokers: joinBrokers(brokers),
		batchSize: batchSize, leaseDuration: time.Second}

	j := newJournal("kill")
	w := startWriter(t, db, topic, j)
	for range kills {
		p := startRelay(t, opts)
		p.logs.WaitFor(t, msgAcquired, 30*time.Second)
		p.waitMetric(t, "dtx_relay_published_total", 30*time.Second, func(v float64) bool { return v > 0 })
		// The fault's moment, not a wait for something: anywhere in the
		// relay's read, produce, checkpoint cycle.
		<-time.After(time.Duration(rand.IntN(500)) * time.Millisecond)
		p.kill9(t)
	}
	w.stop()

	final := startRelay(t, opts)
	rep := verify(t, brokers, topic, expect(j.snapshot(), db.committedIDs(t)), 90*time.Second)
	t.Log(w.summary())
	requireClean(t, rep, kills*batchSize)
	final.stop(t)
}
