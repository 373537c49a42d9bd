package fault

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
)

// Rows for a topic nobody created are interleaved with rows for two topics
// that exist. The relay holds the missing topic: the others' rows are
// published once each and in order while /readyz is 503 and names the held
// topic. Once the topic is created, its rows (held ones and later ones) are
// published once each, in order per key, and /readyz turns 200.
func TestTopicMissingThenCreated(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	brokers := kafkatest.Brokers()
	topicA, topicB, missing := kafkatest.TopicName(t)+"-a", kafkatest.TopicName(t)+"-b", kafkatest.TopicName(t)+"-m"
	createTopic(t, brokers, topicA, nil)
	createTopic(t, brokers, topicB, nil)
	p := startRelay(t, relayOpts{name: "relay-missing-topic", dbURL: db.url, schema: db.schema, brokers: joinBrokers(brokers)})
	p.logs.WaitFor(t, msgAcquired, 30*time.Second)

	ja, jb, jm := newJournal("a"), newJournal("b"), newJournal("m")
	for i := range 20 {
		commitTx(t, db, topicA, ja, 50, "k1", "k2")
		if i%4 == 0 {
			commitTx(t, db, missing, jm, 50, "k1", "k2")
		}
		commitTx(t, db, topicB, jb, 50, "k1", "k3")
	}

	// The existing topics flow, once each, while the missing one is held.
	requireClean(t, verify(t, brokers, topicA, expect(ja.snapshot(), db.committedIDs(t)), 60*time.Second), 0)
	requireClean(t, verify(t, brokers, topicB, expect(jb.snapshot(), db.committedIDs(t)), 60*time.Second), 0)
	require.Eventually(t, func() bool {
		code, body := p.get("/readyz")
		return code == http.StatusServiceUnavailable && containsAll(body, missing, "UNKNOWN_TOPIC_OR_PARTITION")
	}, 30*time.Second, 100*time.Millisecond, "/readyz names the held topic and why")
	require.Eventually(t, func() bool {
		return labelledMetric(t, p, "dtx_relay_topic_held", `topic="`+missing+`"`) > 0
	}, 30*time.Second, 100*time.Millisecond, "the held rows are counted")
	require.Contains(t, p.logs.String(), missing, "a warning names the held topic")

	// More rows on every topic while the hold lasts.
	for range 5 {
		commitTx(t, db, missing, jm, 50, "k1", "k2")
		commitTx(t, db, topicA, ja, 50, "k1")
	}

	createTopic(t, brokers, missing, nil)
	requireClean(t, verify(t, brokers, missing, expect(jm.snapshot(), db.committedIDs(t)), 90*time.Second), 0)
	requireClean(t, verify(t, brokers, topicA, expect(ja.snapshot(), db.committedIDs(t)), 60*time.Second), 0)
	require.Eventually(t, func() bool {
		code, _ := p.get("/readyz")
		return code == http.StatusOK
	}, 60*time.Second, 100*time.Millisecond, "/readyz turns 200 once the held rows are published")
	require.Zero(t, labelledMetric(t, p, "dtx_relay_topic_held", `topic="`+missing+`"`))
	var rejected int
	require.NoError(t, db.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+db.qualified("outbox_rejected")).Scan(&rejected))
	require.Zero(t, rejected, "a missing topic sets no row aside for good")
	p.stop(t)
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
