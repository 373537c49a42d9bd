package relay_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

// Rows of two existing topics and of a missing one, committed one small
// transaction at a time while the relay runs, as services write them: the
// missing topic's rows reach the relay in batches of their own, before and
// after it is held. The existing topics' rows keep flowing, each once and in
// order per key; the held rows are retried again and again, each time for
// the reason the broker gives (the topic does not exist, which the health
// names), never running out of time; once the topic is created, its rows
// are published, each once, in order.
func TestHeldTopicInSmallTransactions(t *testing.T) {
	t.Parallel()
	f := &fixture{schema: pgtest.NewSchema(t), topic: kafkatest.NewTopic(t, 3)}
	other := kafkatest.NewTopic(t, 3)
	missing := kafkatest.TopicName(t)
	ca, cb := newConsumer(t, f.topic), newConsumer(t, other)
	rr := f.start(t, f.config("r1"))

	var wantA, wantB, wantM []msg
	commit := func(topic string, want *[]msg, prefix string, keys ...string) {
		tx := pgtest.Tx(t, f.schema.Pool)
		var ms []msg
		for _, k := range keys {
			ms = append(ms, msg{Key: k, Payload: fmt.Sprintf("%s-%d", prefix, len(*want)+len(ms))})
		}
		f.insert(t, tx, topic, ms...)
		require.NoError(t, tx.Commit(context.Background()))
		*want = append(*want, ms...)
	}
	for i := range 20 {
		commit(f.topic, &wantA, "a", "k1", "k2")
		if i%4 == 0 {
			commit(missing, &wantM, "m", "k1", "k2")
		}
		commit(other, &wantB, "b", "k1", "k3")
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	requireInOrder(t, ca.until(t, len(wantA)), wantA, "existing topic A")
	requireInOrder(t, cb.until(t, len(wantB)), wantB, "existing topic B")
	require.Less(t, time.Since(start), 15*time.Second, "the other topics flow while the missing one is held")
	// Its held rows are retried, each time for the reason the broker gives:
	// the topic does not exist.
	require.Eventually(t, func() bool {
		return rr.metricLabel(t, "dtx_relay_publish_retries_total", "topic", missing) >= 4
	}, waitFor, 20*time.Millisecond, "the held rows are retried")
	require.ErrorContains(t, rr.relay.Health(), fmt.Sprintf("topic %q held", missing))
	require.ErrorContains(t, rr.relay.Health(), "UNKNOWN_TOPIC_OR_PARTITION")
	// No retry ran out of time (the first produce may, on a loaded machine,
	// before the client gives up looking the topic up: it is no retry).
	for line := range strings.SplitSeq(rr.logs.String(), "\n") {
		if strings.Contains(line, "publishing its held rows failed") {
			require.NotContains(t, line, "reason=timeout", "no retry ran out of time")
		}
	}

	createTopicLater(t, missing, 2)
	requireInOrder(t, newConsumer(t, missing).until(t, len(wantM)), wantM, "the held topic")
	require.Eventually(t, func() bool { return rr.relay.Health() == nil }, waitFor, 20*time.Millisecond, "healthy again")
	requireInOrder(t, ca.more(t, 300*time.Millisecond), nil, "nothing of A published again")
}

// requireInOrder checks that got holds each of want once, in want's order
// per key.
func requireInOrder(t *testing.T, got []*kgo.Record, want []msg, what string) {
	t.Helper()
	require.Len(t, got, len(want), "%s: each row once", what)
	exp := map[string][]string{}
	for _, m := range want {
		exp[m.Key] = append(exp[m.Key], m.Payload)
	}
	if len(want) == 0 {
		return
	}
	require.Equal(t, exp, byKey(got), "%s: in order per key", what)
}

// A missing topic met alone (its rows are the whole batch) stops
// publishing, as the broker may be at fault; once another topic's rows
// follow, the relay holds it, for the reason the broker gives, and
// publishes the other topic's rows at once: the missing topic's rows are
// not produced again only to wait for the produce timeout.
func TestMissingTopicMetAloneIsHeldOnceOthersFollow(t *testing.T) {
	t.Parallel()
	f := &fixture{schema: pgtest.NewSchema(t), topic: kafkatest.NewTopic(t, 3)}
	missing := kafkatest.TopicName(t)
	ca := newConsumer(t, f.topic)
	cfg := f.config("r1")
	cfg.ProduceTimeout = 15 * time.Second
	f.insert(t, f.schema.Pool, missing, msg{Key: "k1", Payload: "m-0"})
	rr := f.start(t, cfg)
	require.Eventually(t, func() bool {
		fs := rr.relay.Faults()
		return len(fs) == 1 && fs[0].Stopped && fs[0].Topic == missing && fs[0].Reason == "UNKNOWN_TOPIC_OR_PARTITION"
	}, waitFor, 20*time.Millisecond, "publishing stops at the missing topic's row")

	// Past the Kafka client's first, quick look-ups of the topic.
	time.Sleep(3 * time.Second)

	start := time.Now()
	f.insert(t, f.schema.Pool, f.topic, msg{Key: "k1", Payload: "a-0"}, msg{Key: "k2", Payload: "a-1"})
	require.Equal(t, []string{"a-0", "a-1"}, sortedPayloads(ca.until(t, 2)))
	require.Eventually(t, func() bool {
		fs := rr.relay.Faults()
		return len(fs) == 1 && !fs[0].Stopped && fs[0].Topic == missing && fs[0].Reason == "UNKNOWN_TOPIC_OR_PARTITION"
	}, waitFor, 20*time.Millisecond, "the missing topic is held, for the broker's reason")
	require.Less(t, time.Since(start), cfg.ProduceTimeout/2,
		"the other topic's rows are published, and the missing topic held, without waiting for a produce timeout")
	f.waitCheckpoint(t)

	createTopicLater(t, missing, 1)
	require.Equal(t, []string{"m-0"}, payloads(newConsumer(t, missing).until(t, 1)))
	require.Eventually(t, func() bool { return rr.relay.Health() == nil }, waitFor, 20*time.Millisecond, "healthy again")
}

// sortedPayloads returns the payloads of recs, sorted.
func sortedPayloads(recs []*kgo.Record) []string {
	out := payloads(recs)
	slices.Sort(out)
	return out
}
