package relay_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/relay"
	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

// Committed rows reach Kafka with topic, key, headers and value intact, in
// (tx_id, position) order per key; rolled-back rows never do; the checkpoint
// reaches the last row.
func TestPublishesCommittedRows(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	c := newConsumer(t, f.topic)

	f.insertTx(t, numbered("a", 30, 3)...)
	rolledBack := pgtest.Tx(t, f.schema.Pool)
	f.insert(t, rolledBack, f.topic, numbered("rolled-back", 5, 3)...)
	require.NoError(t, rolledBack.Rollback(context.Background()))
	f.insertTx(t, msg{Payload: "no key"}, msg{Key: "k1", Payload: "headers",
		Headers: map[string]string{"z": "last", "ce_id": "h-1", "content-type": "application/json"}})

	rr := f.start(t, f.config("r1"))
	f.insertTx(t, numbered("b", 30, 3)...) // after start: woken by the notification
	f.waitCheckpoint(t)

	recs := c.until(t, 62)
	require.Empty(t, c.more(t, 500*time.Millisecond), "no record beyond the committed rows")
	for _, r := range recs {
		require.Equal(t, f.topic, r.Topic)
		require.NotContains(t, string(r.Value), "rolled-back")
	}
	keys := byKey(recs)
	for k := range 3 {
		var want []string
		for i := k; i < 30; i += 3 {
			want = append(want, fmt.Sprintf("a-%d", i))
		}
		if k == 1 {
			want = append(want, "headers")
		}
		for i := k; i < 30; i += 3 {
			want = append(want, fmt.Sprintf("b-%d", i))
		}
		require.Equal(t, want, keys[fmt.Sprintf("k%d", k)], "order of key k%d", k)
	}
	require.Equal(t, []string{"no key"}, keys[""])
	for _, r := range recs {
		switch string(r.Value) {
		case "no key":
			require.Nil(t, r.Key)
			require.Empty(t, r.Headers)
		case "headers":
			require.Equal(t, []kgo.RecordHeader{
				{Key: "ce_id", Value: []byte("h-1")},
				{Key: "content-type", Value: []byte("application/json")},
				{Key: "z", Value: []byte("last")},
			}, r.Headers, "headers sorted by name")
		case "a-4":
			require.Equal(t, []kgo.RecordHeader{{Key: "ce_id", Value: []byte("a-4")}, {Key: "ce_type", Value: []byte("test")}}, r.Headers)
		}
	}
	require.InDelta(t, 62, rr.metric(t, "dtx_relay_published_total", ""), 0)
	require.InDelta(t, 1, rr.metric(t, "dtx_relay_is_leader", ""), 0)
	require.Positive(t, rr.metric(t, "dtx_relay_commit_to_ack_seconds", ""))
	require.Positive(t, rr.metric(t, "dtx_relay_batch_size", ""))
}

// A transaction that stays open holds back every row committed after it
// began; once it commits, its rows are published, before the later ones of
// the same key.
func TestLateCommit(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	c := newConsumer(t, f.topic)
	rr := f.start(t, f.config("r1"))

	f.insertTx(t, msg{Key: "k1", Payload: "early"})
	require.Equal(t, []string{"early"}, payloads(c.until(t, 1)))

	late := pgtest.Tx(t, f.schema.Pool)
	f.insert(t, late, f.topic, msg{Key: "k1", Payload: "late-1"}) // takes its transaction id now
	f.insertTx(t, msg{Key: "k1", Payload: "after-1"}, msg{Key: "k2", Payload: "after-2"})
	require.Empty(t, c.more(t, time.Second), "nothing after the open transaction is published while it is open")

	f.insert(t, late, f.topic, msg{Key: "k2", Payload: "late-2"})
	require.NoError(t, late.Commit(context.Background()))
	recs := c.until(t, 5)
	f.waitCheckpoint(t)
	keys := byKey(recs)
	require.Equal(t, []string{"early", "late-1", "after-1"}, keys["k1"])
	require.Equal(t, []string{"late-2", "after-2"}, keys["k2"])
	require.InDelta(t, 5, rr.metric(t, "dtx_relay_published_total", ""), 0)
}

// Two relays with the same name: one publishes, the other stands by; when
// the leader drains, the standby takes over from the checkpoint, and no row
// is lost.
func TestStandbyTakesOver(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	c := newConsumer(t, f.topic)
	a := f.start(t, f.config("a"))
	b := f.start(t, f.config("b"))

	f.insertTx(t, numbered("one", 40, 4)...)
	f.waitCheckpoint(t)
	require.Eventually(t, func() bool { return a.leader(t) != b.leader(t) }, waitFor, 20*time.Millisecond, "exactly one leader")
	leader, standby := a, b
	if b.leader(t) {
		leader, standby = b, a
	}
	require.Zero(t, standby.metric(t, "dtx_relay_published_total", ""), "the standby publishes nothing")
	require.InDelta(t, 40, leader.metric(t, "dtx_relay_published_total", ""), 0)

	leader.stop(t)
	var released bool
	require.NoError(t, f.schema.Pool.QueryRow(context.Background(),
		"SELECT expires_at <= now() FROM relay_leases WHERE name = $1", relay.DefaultName).Scan(&released))
	require.True(t, released, "a draining leader releases its lease")

	took := time.Now()
	f.insertTx(t, numbered("two", 40, 4)...)
	require.Eventually(t, func() bool { return standby.leader(t) }, waitFor, 20*time.Millisecond)
	f.waitCheckpoint(t)
	require.Less(t, time.Since(took), 2*f.config("").LeaseDuration+5*time.Second, "takeover within about LeaseDuration")

	got := dedup(payloads(c.until(t, 80)))
	want := append(payloads80("one"), payloads80("two")...)
	require.ElementsMatch(t, want, got, "every row published at least once")
	require.InDelta(t, 40, standby.metric(t, "dtx_relay_published_total", ""), 0, "the standby continued from the checkpoint")
}

func payloads80(prefix string) []string {
	var out []string
	for i := range 40 {
		out = append(out, fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

// A relay whose lease was taken over moves the checkpoint no further and,
// once it noticed, publishes nothing more.
func TestFencedRelayAdvancesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t, 1)
	c := newConsumer(t, f.topic)
	cfg := f.config("r1")
	cfg.LeaseDuration = 3 * time.Second
	rr := f.start(t, cfg)

	f.insertTx(t, numbered("before", 10, 2)...)
	cp := f.waitCheckpoint(t)
	c.until(t, 10)

	_, err := f.schema.Pool.Exec(context.Background(),
		"UPDATE relay_leases SET holder = 'intruder', token = token + 1, expires_at = now() + interval '1 hour' WHERE name = $1",
		relay.DefaultName)
	require.NoError(t, err)
	// Published before the relay notices, perhaps; never checkpointed.
	f.insertTx(t, numbered("window", 10, 2)...)
	require.Eventually(t, func() bool { return !rr.leader(t) }, waitFor, 20*time.Millisecond, "the relay notices the takeover")
	require.Equal(t, cp, f.checkpoint(t))

	f.insertTx(t, numbered("after", 10, 2)...)
	for _, p := range payloads(c.more(t, 2*time.Second)) {
		require.False(t, strings.HasPrefix(p, "after-"), "published %s after losing the lease", p)
	}
	require.Equal(t, cp, f.checkpoint(t), "the checkpoint does not move")
	var holder string
	require.NoError(t, f.schema.Pool.QueryRow(context.Background(),
		"SELECT holder FROM relay_leases WHERE name = $1", relay.DefaultName).Scan(&holder))
	require.Equal(t, "intruder", holder)
}

// A record the broker refuses for good, and a row whose headers cannot
// become record headers, are moved to outbox_rejected with the reason; the
// rows after them, of the same key too, are published.
func TestRejectsRefusedRows(t *testing.T) {
	t.Parallel()
	f := &fixture{schema: pgtest.NewSchema(t), topic: newSmallTopic(t, 10000)}
	c := newConsumer(t, f.topic)

	f.insertTx(t, msg{Key: "k", Payload: "small-1"}, msg{Key: "j", Payload: "other-1"})
	f.insertTx(t, msg{Key: "k", Payload: string(incompressible(20000))})
	f.insertTx(t, msg{Key: "k", Payload: "small-2"}, msg{Key: "j", Payload: "other-2"})
	_, err := f.schema.Pool.Exec(context.Background(),
		`INSERT INTO outbox (topic, key, headers, payload) VALUES ($1, 'k', '{"n": 1}', 'bad headers')`, f.topic)
	require.NoError(t, err)
	f.insertTx(t, msg{Key: "k", Payload: "small-3"})
	last := f.lastPosition(t)

	rr := f.start(t, f.config("r1"))
	require.Eventually(t, func() bool { return f.checkpoint(t) == last }, waitFor, 20*time.Millisecond)

	recs := c.until(t, 5)
	keys := byKey(recs)
	require.Equal(t, []string{"small-1", "small-2", "small-3"}, dedup(keys["k"]))
	require.Equal(t, []string{"other-1", "other-2"}, dedup(keys["j"]))

	rows, err := f.schema.Pool.Query(context.Background(),
		"SELECT octet_length(payload), reason, rejected_by FROM outbox_rejected ORDER BY tx_id, position")
	require.NoError(t, err)
	type rejected struct {
		Size          int
		Reason, Actor string
	}
	var got []rejected
	for rows.Next() {
		var r rejected
		require.NoError(t, rows.Scan(&r.Size, &r.Reason, &r.Actor))
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	require.Len(t, got, 2)
	require.Equal(t, 20000, got[0].Size)
	require.Contains(t, got[0].Reason, "MESSAGE_TOO_LARGE")
	require.Equal(t, "r1", got[0].Actor)
	require.Contains(t, got[1].Reason, "headers")
	require.InDelta(t, 2, rr.metric(t, "dtx_relay_rejected_total", ""), 0)
	require.Contains(t, rr.logs.String(), "moved it to outbox_rejected")

	var left int
	require.NoError(t, f.schema.Pool.QueryRow(context.Background(),
		"SELECT count(*) FROM outbox WHERE octet_length(payload) = 20000").Scan(&left))
	require.Zero(t, left, "the refused row left the outbox")
}

// incompressible returns n random bytes: franz-go compresses batches, and
// the broker checks the compressed size.
func incompressible(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// newSmallTopic creates a one-partition topic whose records may be at most
// maxBytes long, deleted at cleanup.
func newSmallTopic(t *testing.T, maxBytes int) string {
	t.Helper()
	adm := kadm.NewClient(kafkatest.NewClient(t))
	topic := kafkatest.TopicName(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	v := fmt.Sprint(maxBytes)
	res, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &v}, topic)
	if err == nil {
		err = res.Err
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_, _ = adm.DeleteTopic(ctx, topic) // The broker's own retention removes it otherwise.
	})
	// Usable once the partition has a leader that answers.
	require.Eventually(t, func() bool {
		offs, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return false
		}
		o, ok := offs.Lookup(topic, 0)
		return ok && o.Err == nil
	}, waitFor, 50*time.Millisecond)
	return topic
}

// During a broker outage the relay backs off instead of spinning, and
// publishes every row once the broker is back.
func TestBrokerOutage(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	c := newConsumer(t, f.topic)
	d := newChaosDialer()
	cfg := f.config("r1")
	cfg.ProduceTimeout = time.Second
	cfg.MaxBackoff = time.Second
	cfg.LeaseDuration = 5 * time.Second
	rr := f.start(t, cfg, kgo.Dialer(d.dial))

	f.insertTx(t, numbered("up", 10, 2)...)
	f.waitCheckpoint(t)
	c.until(t, 10)

	d.cut()
	cp := f.checkpoint(t)
	f.insertTx(t, numbered("down", 10, 2)...)
	require.Eventually(t, func() bool { return rr.metric(t, "dtx_relay_errors_total", "produce") >= 1 }, waitFor, 20*time.Millisecond)
	errs0, dials0 := rr.metric(t, "dtx_relay_errors_total", "produce"), d.dials.Load()
	c.more(t, 3*time.Second) // Let the outage last.
	errs, dials := rr.metric(t, "dtx_relay_errors_total", "produce")-errs0, d.dials.Load()-dials0
	t.Logf("during 3s of outage: %v failed batches, %d dials", errs, dials)
	require.LessOrEqual(t, errs, 4.0, "the relay backs off between attempts")
	require.Less(t, dials, int64(100), "no dial storm")
	require.Equal(t, cp, f.checkpoint(t), "nothing checkpointed while the broker is down")
	require.ErrorContains(t, rr.relay.Health(), "publishing of every topic stopped", "the relay's health says it is stopped")

	d.restore()
	f.waitCheckpoint(t)
	got := dedup(payloads(c.until(t, 20)))
	require.Len(t, got, 20, "nothing lost")
}

// Cancelling Run while rows stream in: Run returns nil, having saved the
// checkpoint of what it published and released the lease.
func TestDrain(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	c := newConsumer(t, f.topic)
	rr := f.start(t, f.config("r1"))

	ctx, stopWriting := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			tx, err := f.schema.Pool.Begin(ctx)
			if err != nil {
				return
			}
			for j := range 10 {
				if _, err := tx.Exec(ctx, "INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, $3)",
					f.topic, fmt.Sprintf("k%d", j%3), []byte(fmt.Sprintf("m-%d-%d", i, j))); err != nil {
					_ = tx.Rollback(context.Background())
					return
				}
			}
			_ = tx.Commit(ctx)
		}
	})
	t.Cleanup(func() { stopWriting(); wg.Wait() })

	require.Eventually(t, func() bool { return f.checkpoint(t).Pos > 200 }, waitFor, 10*time.Millisecond)
	rr.stop(t)
	stopWriting()
	wg.Wait()

	cp := f.checkpoint(t)
	var released bool
	require.NoError(t, f.schema.Pool.QueryRow(context.Background(),
		"SELECT expires_at <= now() FROM relay_leases WHERE name = $1", relay.DefaultName).Scan(&released))
	require.True(t, released, "lease released")

	// Every row up to the checkpoint is on Kafka.
	rows, err := f.schema.Pool.Query(context.Background(),
		"SELECT convert_from(payload, 'UTF8') FROM outbox WHERE (tx_id, position) <= ($1::xid8, $2::bigint) ORDER BY tx_id, position",
		cp.TxID, cp.Pos)
	require.NoError(t, err)
	var want []string
	for rows.Next() {
		var p string
		require.NoError(t, rows.Scan(&p))
		want = append(want, p)
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, want)
	got := dedup(payloads(c.until(t, len(want))))
	for _, w := range want {
		require.True(t, slices.Contains(got, w), "row %s before the checkpoint is on Kafka", w)
	}
}

// New names every invalid field.
func TestConfigValidation(t *testing.T) {
	t.Parallel()
	s := pgtest.NewSchema(t)
	_, err := relay.New(s.Pool, nil, relay.Config{
		Schema: "Bad-Schema", BatchSize: 10001, PollInterval: time.Millisecond,
		LeaseDuration: 10 * time.Minute, MaxBackoff: time.Millisecond, ProduceTimeout: time.Hour,
		Name: strings.Repeat("n", 256), PruneInterval: time.Millisecond,
	})
	require.Error(t, err)
	for _, field := range []string{"Schema", "Name", "BatchSize", "PollInterval", "LeaseDuration", "MaxBackoff", "ProduceTimeout", "PruneInterval"} {
		require.Contains(t, err.Error(), "relay: "+field+":")
	}
	_, err = relay.New(s.Pool, nil, relay.Config{LeaseDuration: 3 * time.Second, LeaseRenewInterval: 2 * time.Second})
	require.ErrorContains(t, err, "relay: LeaseRenewInterval:")
	_, err = relay.New(nil, nil, relay.Config{})
	require.Error(t, err)

	r, err := relay.New(s.Pool, nil, relay.Config{Schema: s.Name})
	require.NoError(t, err)
	require.NotNil(t, r)
}
