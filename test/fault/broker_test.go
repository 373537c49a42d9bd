package fault

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
)

// The broker (a private one) stops for 3 seconds under load and starts
// again. The relay stays up, /readyz turns 503 and back to 200, and it
// publishes every committed row, in order per key.
func TestBrokerStoppedAndRestarted(t *testing.T) {
	t.Parallel()
	const (
		batchSize = 50
		outage    = 3 * time.Second
	)
	broker := kafkatest.StartBroker(t)
	brokers := []string{broker.Addr()}
	db := sharedDB(t)
	topic := kafkatest.TopicName(t)
	createTopic(t, brokers, topic, nil)
	const published = "dtx_relay_published_total"

	p := startRelay(t, relayOpts{name: "relay-broker", dbURL: db.url, schema: db.schema, brokers: broker.Addr(),
		batchSize: batchSize, leaseDuration: time.Second})
	p.logs.WaitFor(t, msgAcquired, 30*time.Second)
	j := newJournal("broker")
	w := startWriter(t, db, topic, j)
	p.waitMetric(t, published, 30*time.Second, func(v float64) bool { return v >= 200 })

	broker.Stop()
	stoppedAt := time.Now()
	require.Eventually(t, func() bool {
		code, _ := p.get("/readyz")
		return code == http.StatusServiceUnavailable
	}, 30*time.Second, 100*time.Millisecond, "/readyz turns 503 while the broker is down")
	<-time.After(outage - time.Since(stoppedAt)) // the outage's length
	broker.Start()
	t.Logf("broker answering again %s after it stopped", time.Since(stoppedAt).Round(time.Millisecond))
	require.Eventually(t, func() bool {
		code, _ := p.get("/readyz")
		return code == http.StatusOK
	}, 60*time.Second, 100*time.Millisecond, "/readyz turns 200 once the broker is back")

	before := p.metric(t, published)
	p.waitMetric(t, published, 60*time.Second, func(v float64) bool { return v >= before+200 })
	w.stop()
	rep := verify(t, brokers, topic, expect(j.snapshot(), db.committedIDs(t)), 90*time.Second)
	t.Log(w.summary())
	require.True(t, p.running(), "the relay stays up through the outage")
	// Records the broker appended but could not acknowledge before it went
	// down are published again from the checkpoint: at most a batch.
	requireClean(t, rep, batchSize)
	p.stop(t)
}
