package fault

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
)

// The clock that stamped a batch of rows runs 2 hours ahead of the broker's
// (the rows' created_at, which the relay sends as the records' timestamps).
// The broker refuses those records with INVALID_TIMESTAMP, a fault of the
// environment: the relay retries, counts and never sets a row aside; the
// rows after them on the same topic wait, so per-key order holds. Once the
// broker accepts the timestamps (here: the topic's
// message.timestamp.after.max.ms is raised, as a fixed clock would do),
// every row is published, once, in order.
func TestClockAheadIsRetriedNotRejected(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	brokers := kafkatest.Brokers()
	topic := kafkatest.TopicName(t)
	// Records more than 1 minute ahead of the broker's clock are refused.
	aheadMax := "60000"
	createTopic(t, brokers, topic, map[string]*string{"message.timestamp.after.max.ms": &aheadMax})
	p := startRelay(t, relayOpts{name: "relay-clock", dbURL: db.url, schema: db.schema, brokers: joinBrokers(brokers)})
	p.logs.WaitFor(t, msgAcquired, 30*time.Second)

	j := newJournal("clock")
	for range 3 {
		commitTx(t, db, topic, j, 50, "a", "b")
	}
	// One transaction stamped 2 hours ahead, then more rows on the same keys
	// with a correct clock.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tx, ahead := openTx(t, db, topic, j, 50, "a", "b", "a")
	_, err := tx.Exec(ctx, "UPDATE "+db.qualified("outbox")+" SET created_at = created_at + interval '2 hours' WHERE tx_id = pg_current_xact_id()")
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	j.ended(ahead...)
	for range 3 {
		commitTx(t, db, topic, j, 50, "a", "b")
	}

	// The relay retries INVALID_TIMESTAMP, and moves nothing aside.
	require.Eventually(t, func() bool {
		return labelledMetric(t, p, "dtx_relay_publish_retries_total", `reason="INVALID_TIMESTAMP"`) >= 2
	}, 60*time.Second, 100*time.Millisecond, "the relay retries the records the broker refuses for their timestamp")
	var rejected int
	require.NoError(t, db.pool.QueryRow(ctx, "SELECT count(*) FROM "+db.qualified("outbox_rejected")).Scan(&rejected))
	require.Zero(t, rejected, "a fault of the clock sets no row aside")
	require.True(t, p.running())

	// The clock is fixed: the broker accepts the timestamps.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	threeHours := strconv.Itoa(int((3 * time.Hour).Milliseconds()))
	res, err := kadm.NewClient(cl).AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "message.timestamp.after.max.ms", Value: &threeHours},
	}, topic)
	require.NoError(t, err)
	for _, r := range res {
		require.NoError(t, r.Err, "alter %s", r.Name)
	}

	rep := verify(t, brokers, topic, expect(j.snapshot(), db.committedIDs(t)), 60*time.Second)
	requireClean(t, rep, 0)
	require.NoError(t, db.pool.QueryRow(ctx, "SELECT count(*) FROM "+db.qualified("outbox_rejected")).Scan(&rejected))
	require.Zero(t, rejected)
	require.InDelta(t, 0, p.metric(t, "dtx_relay_rejected_total"), 0)
	p.stop(t)
}

// labelledMetric sums the samples of a metric whose labels contain match
// (e.g. `reason="INVALID_TIMESTAMP"`) on the process's /metrics.
func labelledMetric(t *testing.T, p *relayProc, name, match string) float64 {
	t.Helper()
	code, body := p.get("/metrics")
	require.Equal(t, 200, code, body)
	var sum float64
	for line := range strings.SplitSeq(body, "\n") {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok || !strings.Contains(labels, match) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		require.NoError(t, err, "metric line %q", line)
		sum += v
	}
	return sum
}
