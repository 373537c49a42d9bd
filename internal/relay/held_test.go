package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/relay"
	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

// Rows for two existing topics around rows for a topic that does not exist:
// the existing topics' rows are published exactly once each, in order,
// while the missing topic is held, visibly (health, metric, warning) and
// with nothing set aside for good; once the topic is created, its rows,
// those written before the hold and after it, are published once, in order.
func TestMissingTopicDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	f := &fixture{schema: pgtest.NewSchema(t), topic: kafkatest.NewTopic(t, 3)}
	other := kafkatest.NewTopic(t, 3)
	missing := kafkatest.TopicName(t)
	ca, cb := newConsumer(t, f.topic), newConsumer(t, other)

	ctx := context.Background()
	tx := pgtest.Tx(t, f.schema.Pool)
	f.insert(t, tx, f.topic, numbered("a", 6, 3)...)
	f.insert(t, tx, missing, msg{Key: "k0", Payload: "m-0"}, msg{Key: "k1", Payload: "m-1"})
	f.insert(t, tx, other, numbered("b", 6, 3)...)
	f.insert(t, tx, f.topic, numbered("a2", 6, 3)...)
	require.NoError(t, tx.Commit(ctx))

	rr := f.start(t, f.config("r1"))
	recsA := ca.until(t, 12)
	recsB := cb.until(t, 6)
	// Long enough for several retries of the missing topic.
	recsA = append(recsA, ca.more(t, 4*time.Second)...)
	recsB = append(recsB, cb.more(t, time.Second)...)
	require.Equal(t, payloads6("a", "a2"), sortedByKey(recsA),
		"the first topic's rows are published exactly once, in order per key")
	require.Equal(t, payloads6("b"), sortedByKey(recsB), "the second topic's rows are published exactly once")

	require.Eventually(t, func() bool {
		return rr.metricLabel(t, "dtx_relay_publish_retries_total", "topic", missing) >= 1
	}, waitFor, 20*time.Millisecond, "the missing topic's rows are retried")
	require.Contains(t, rr.logs.String(), "topic="+missing)
	// The first produce may run out of its timeout before the client gives
	// up looking the topic up (a loaded machine): it is held as "timeout",
	// and its retry, which asks the broker first, names the topic's fault.
	require.Regexp(t, "reason=(UNKNOWN_TOPIC_OR_PARTITION|timeout)", rr.logs.String())
	var health error
	require.Eventually(t, func() bool {
		health = rr.relay.Health()
		return health != nil && strings.Contains(health.Error(), "UNKNOWN_TOPIC_OR_PARTITION")
	}, waitFor, 20*time.Millisecond, "the relay's health names the topic's fault")
	require.ErrorContains(t, health, fmt.Sprintf("topic %q held", missing), "the relay's health names the held topic")
	require.NotContains(t, health.Error(), f.topic)
	require.InDelta(t, 2, rr.metricGauge(t, "dtx_relay_topic_held", "topic", missing), 0, "two rows held")
	var rejected int
	require.NoError(t, f.schema.Pool.QueryRow(ctx, "SELECT count(*) FROM outbox_rejected").Scan(&rejected))
	require.Zero(t, rejected, "nothing is set aside for good")

	// Written while the topic is held: published after the held rows.
	f.insert(t, f.schema.Pool, missing, msg{Key: "k0", Payload: "m-2"}, msg{Key: "k1", Payload: "m-3"})
	f.insert(t, f.schema.Pool, other, msg{Key: "k0", Payload: "b-late"})
	require.Equal(t, []string{"b-late"}, payloads(cb.until(t, 7)[6:]), "other topics keep flowing")
	require.Eventually(t, func() bool { return rr.metricGauge(t, "dtx_relay_topic_held", "topic", missing) == 4 },
		waitFor, 20*time.Millisecond, "rows written while the topic is held are held too")

	createTopicLater(t, missing, 2)
	cm := newConsumer(t, missing)
	recsM := cm.until(t, 4)
	recsM = append(recsM, cm.more(t, 2*time.Second)...)
	keys := byKey(recsM)
	require.Equal(t, []string{"m-0", "m-2"}, keys["k0"], "held rows first, each once, in order")
	require.Equal(t, []string{"m-1", "m-3"}, keys["k1"], "held rows first, each once, in order")
	require.Len(t, recsM, 4)
	f.waitCheckpoint(t)
	require.Empty(t, ca.more(t, 500*time.Millisecond), "nothing of the first topic published again")
	require.Eventually(t, func() bool { return rr.relay.Health() == nil }, waitFor, 20*time.Millisecond, "healthy again")
	require.Zero(t, rr.metricGauge(t, "dtx_relay_topic_held", "topic", missing))
	var held int
	require.NoError(t, f.schema.Pool.QueryRow(ctx, "SELECT count(*) FROM outbox_held").Scan(&held))
	require.Zero(t, held, "the held rows are deleted once published")
}

// metricGauge returns the value of gauge name summed over the series whose
// label has value.
func (rr *running) metricGauge(t testing.TB, name, label, value string) float64 {
	t.Helper()
	mfs, err := rr.reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}

// payloads6 is the payloads of numbered(prefix, 6, 3) for each prefix,
// grouped by key k0, k1, k2, in the order written.
func payloads6(prefixes ...string) []string {
	var out []string
	for k := range 3 {
		for _, prefix := range prefixes {
			for i := k; i < 6; i += 3 {
				out = append(out, fmt.Sprintf("%s-%d", prefix, i))
			}
		}
	}
	return out
}

// sortedByKey returns the payloads of recs of keys k0, k1, k2, in that
// order, each key's in partition order.
func sortedByKey(recs []*kgo.Record) []string {
	keys := byKey(recs)
	var out []string
	for k := range 3 {
		out = append(out, keys[fmt.Sprintf("k%d", k)]...)
	}
	return out
}

// createTopicLater creates topic on the test cluster, deleted at cleanup.
func createTopicLater(t *testing.T, topic string, partitions int32) {
	t.Helper()
	adm := kadm.NewClient(kafkatest.NewClient(t))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	res, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
	require.NoError(t, err)
	require.NoError(t, res.Err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_, _ = adm.DeleteTopic(ctx, topic)
	})
}

// envHelperSchema, when set, makes the test binary a relay of that schema
// (runHelperRelay) instead of running tests: a process the crash test can
// kill -9.
const envHelperSchema = "DTX_RELAY_TEST_HELPER_SCHEMA"

// runHelperRelay runs a relay of schema until the process is killed, and
// returns the exit code.
func runHelperRelay(schema string) int {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.URL())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pool.Close()
	r, err := relay.New(pool, []kgo.Opt{kgo.SeedBrokers(kafkatest.Brokers()...)}, relay.Config{
		Schema: schema, Holder: fmt.Sprintf("helper-%d", os.Getpid()),
		PollInterval: 50 * time.Millisecond, LeaseDuration: time.Second, MaxBackoff: 200 * time.Millisecond,
		ProduceTimeout: 5 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := r.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startHelperRelay starts a relay of schema in a process of its own, with
// its output in logs.
func startHelperRelay(t *testing.T, schema string, logs *syncBuffer) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelperSchema+"="+schema)
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// kill9 kills the relay process at once: no drain, no release of the lease.
func kill9(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
}

// A relay killed with SIGKILL, again and again, while a topic is held and
// rows of it and of another topic keep coming, loses nothing: once the
// topic exists, each key's rows of both topics arrive, in order (a row may
// come twice, never out of order after its first arrival).
func TestHeldTopicSurvivesKill9(t *testing.T) {
	t.Parallel()
	f := &fixture{schema: pgtest.NewSchema(t), topic: kafkatest.NewTopic(t, 3)}
	missing := kafkatest.TopicName(t)
	logs := &syncBuffer{}
	defer func() {
		if t.Failed() {
			t.Logf("relay processes' logs:\n%s", logs.String())
		}
	}()

	const keys = 4
	var wantOK, wantMissing []msg
	write := func(round int) {
		tx := pgtest.Tx(t, f.schema.Pool)
		ok, miss := numbered(fmt.Sprintf("ok%d", round), 8, keys), numbered(fmt.Sprintf("miss%d", round), 4, keys)
		f.insert(t, tx, f.topic, ok[:4]...)
		f.insert(t, tx, missing, miss...)
		f.insert(t, tx, f.topic, ok[4:]...)
		require.NoError(t, tx.Commit(context.Background()))
		wantOK, wantMissing = append(wantOK, ok...), append(wantMissing, miss...)
	}
	heldRows := func() int {
		var n int
		require.NoError(t, f.schema.Pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox_held").Scan(&n))
		return n
	}

	write(0)
	for round := 1; round <= 4; round++ {
		cmd := startHelperRelay(t, f.schema.Name, logs)
		if round == 1 {
			require.Eventually(t, func() bool { return heldRows() > 0 }, waitFor, 20*time.Millisecond, "the topic is held")
		}
		write(round)
		// Killed at a different moment of its work each round.
		time.Sleep(time.Duration(round) * 700 * time.Millisecond)
		kill9(t, cmd)
	}
	write(5)

	rr := f.start(t, f.config("survivor"))
	f.waitCheckpoint(t)
	require.Eventually(t, func() bool { return heldRows() == len(wantMissing) }, waitFor, 20*time.Millisecond,
		"every row of the missing topic is held")
	require.ErrorContains(t, rr.relay.Health(), missing)
	createTopicLater(t, missing, 3)

	for _, c := range []struct {
		topic string
		want  []msg
	}{{f.topic, wantOK}, {missing, wantMissing}} {
		cons := newConsumer(t, c.topic)
		got := byKey(cons.until(t, len(c.want)))
		for k := range keys {
			key := fmt.Sprintf("k%d", k)
			var exp []string
			for _, m := range c.want {
				if m.Key == key {
					exp = append(exp, m.Payload)
				}
			}
			require.Equal(t, exp, dedup(got[key]), "topic %s, key %s: every row, in order", c.topic, key)
		}
	}
	require.Eventually(t, func() bool { return heldRows() == 0 }, waitFor, 20*time.Millisecond)
}

// A held topic's rows, those held when the topic failed and those written
// while it is held, are published in per-key order once the topic exists,
// each once, over several batches and several retries of held rows; the
// other topic's rows, interleaved with them, are published each once.
func TestHeldTopicKeepsKeyOrder(t *testing.T) {
	t.Parallel()
	f := &fixture{schema: pgtest.NewSchema(t), topic: kafkatest.NewTopic(t, 2)}
	missing := kafkatest.TopicName(t)
	cfg := f.config("r1")
	cfg.BatchSize = 5
	const keys = 3
	var wantOK, wantMissing []msg
	write := func(prefix string) {
		tx := pgtest.Tx(t, f.schema.Pool)
		ok, miss := numbered("ok-"+prefix, 6, keys), numbered("miss-"+prefix, 9, keys)
		for i := range 3 {
			f.insert(t, tx, f.topic, ok[2*i:2*i+2]...)
			f.insert(t, tx, missing, miss[3*i:3*i+3]...)
		}
		require.NoError(t, tx.Commit(context.Background()))
		wantOK, wantMissing = append(wantOK, ok...), append(wantMissing, miss...)
	}
	write("before")
	rr := f.start(t, cfg)
	co := newConsumer(t, f.topic)
	co.until(t, 6)
	require.Eventually(t, func() bool { return rr.relay.Health() != nil }, waitFor, 20*time.Millisecond, "the topic is held")
	for i := range 3 {
		write(fmt.Sprint("while-", i))
	}
	co.until(t, len(wantOK))
	f.waitCheckpoint(t)
	// The gauge follows the checkpoint's commit: wait for it, not only for
	// the checkpoint.
	require.Eventually(t, func() bool {
		return rr.metricGauge(t, "dtx_relay_topic_held", "topic", missing) == float64(len(wantMissing))
	}, waitFor, 20*time.Millisecond, "every row of the missing topic is counted as held")
	faults := rr.relay.Faults()
	require.Len(t, faults, 1)
	require.Equal(t, missing, faults[0].Topic)
	require.False(t, faults[0].Stopped, "the other topic is published")

	createTopicLater(t, missing, 2)
	cm := newConsumer(t, missing)
	cm.until(t, len(wantMissing))
	cm.more(t, time.Second)
	co.more(t, 200*time.Millisecond)
	gotOK, gotMissing := co.recs, cm.recs
	for _, c := range []struct {
		name string
		got  []*kgo.Record
		want []msg
	}{{"existing", gotOK, wantOK}, {"held", gotMissing, wantMissing}} {
		require.Len(t, c.got, len(c.want), "%s topic: each row once", c.name)
		got := byKey(c.got)
		for k := range keys {
			key := fmt.Sprintf("k%d", k)
			var exp []string
			for _, m := range c.want {
				if m.Key == key {
					exp = append(exp, m.Payload)
				}
			}
			require.Equal(t, exp, got[key], "%s topic, key %s: in order", c.name, key)
		}
	}
	require.Eventually(t, func() bool { return rr.relay.Health() == nil }, waitFor, 20*time.Millisecond)
}
