package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/relay"
	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/internal/txlog"
)

func TestMain(m *testing.M) {
	if schema := os.Getenv(envHelperSchema); schema != "" {
		os.Exit(runHelperRelay(schema))
	}
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait for the relay, the broker or the database.
const waitFor = 30 * time.Second

// fixture is a schema with the migrations applied and a topic of its own.
type fixture struct {
	schema *pgtest.Schema
	topic  string
}

func setup(t testing.TB, partitions int32) *fixture {
	t.Helper()
	return &fixture{schema: pgtest.NewSchema(t), topic: kafkatest.NewTopic(t, partitions)}
}

// msg is one outbox row to insert.
type msg struct {
	Key     string // "" for none
	Headers map[string]string
	Payload string
}

// insert writes msgs to the outbox of q (the pool: one transaction for all;
// a transaction: in it).
func (f *fixture) insert(t testing.TB, q txlog.Querier, topic string, msgs ...msg) {
	t.Helper()
	ctx := context.Background()
	for _, m := range msgs {
		var key *string
		if m.Key != "" {
			key = &m.Key
		}
		hs := m.Headers
		if hs == nil {
			hs = map[string]string{}
		}
		h, err := json.Marshal(hs)
		require.NoError(t, err)
		_, err = q.Exec(ctx, "INSERT INTO outbox (topic, key, headers, payload) VALUES ($1, $2, $3, $4)",
			topic, key, h, []byte(m.Payload))
		require.NoError(t, err)
	}
}

// insertTx writes msgs in one committed transaction.
func (f *fixture) insertTx(t testing.TB, msgs ...msg) {
	t.Helper()
	tx, err := f.schema.Pool.Begin(context.Background())
	require.NoError(t, err)
	f.insert(t, tx, f.topic, msgs...)
	require.NoError(t, tx.Commit(context.Background()))
}

// numbered returns n messages "<prefix>-<i>" over keys k0..k(keys-1).
func numbered(prefix string, n, keys int) []msg {
	out := make([]msg, n)
	for i := range out {
		out[i] = msg{Key: fmt.Sprintf("k%d", i%keys), Payload: fmt.Sprintf("%s-%d", prefix, i),
			Headers: map[string]string{"ce_id": fmt.Sprintf("%s-%d", prefix, i), "ce_type": "test"}}
	}
	return out
}

// running is a relay running in a goroutine.
type running struct {
	relay  *relay.Relay
	reg    *prometheus.Registry
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

func (f *fixture) config(holder string) relay.Config {
	return relay.Config{
		Schema:         f.schema.Name,
		Holder:         holder,
		PollInterval:   100 * time.Millisecond,
		LeaseDuration:  2 * time.Second,
		MaxBackoff:     time.Second,
		ProduceTimeout: 5 * time.Second,
	}
}

// start runs a relay with cfg (Registerer and Logger are filled in) and
// extra Kafka options, stopped at cleanup.
func (f *fixture) start(t testing.TB, cfg relay.Config, kopts ...kgo.Opt) *running {
	t.Helper()
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := relay.New(f.schema.Pool, append([]kgo.Opt{kgo.SeedBrokers(kafkatest.Brokers()...)}, kopts...), cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	rr := &running{relay: r, reg: reg, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { rr.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		rr.stop(t)
		if t.Failed() {
			t.Logf("relay %s logs:\n%s", cfg.Holder, logs.String())
		}
	})
	return rr
}

// stop cancels the relay and waits for Run to return nil.
func (rr *running) stop(t testing.TB) {
	t.Helper()
	rr.cancel()
	select {
	case err, ok := <-rr.done:
		if ok {
			require.NoError(t, err)
			close(rr.done)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

// metric returns the value of the counter or gauge name (summed over its
// labels, or the one with label kind when kind is not empty).
func (rr *running) metric(t testing.TB, name, kind string) float64 {
	t.Helper()
	mfs, err := rr.reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if kind != "" {
				match := false
				for _, l := range m.GetLabel() {
					match = match || l.GetName() == "kind" && l.GetValue() == kind
				}
				if !match {
					continue
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func (rr *running) leader(t testing.TB) bool {
	return rr.metric(t, "dtx_relay_is_leader", "") == 1
}

// checkpoint returns the relay's checkpoint (reader "outbox-relay").
func (f *fixture) checkpoint(t testing.TB) txlog.Position {
	t.Helper()
	var p txlog.Position
	err := f.schema.Pool.QueryRow(context.Background(),
		"SELECT tx_id, position FROM txlog_checkpoints WHERE log_name = 'outbox' AND reader = $1", relay.DefaultName).Scan(&p.TxID, &p.Pos)
	if err == pgx.ErrNoRows { //nolint:errorlint // QueryRow returns it unwrapped
		return txlog.Position{}
	}
	require.NoError(t, err)
	return p
}

// lastPosition is the Position of the outbox's last row, by read order.
func (f *fixture) lastPosition(t testing.TB) txlog.Position {
	t.Helper()
	var p txlog.Position
	require.NoError(t, f.schema.Pool.QueryRow(context.Background(),
		"SELECT tx_id, position FROM outbox ORDER BY tx_id DESC, position DESC LIMIT 1").Scan(&p.TxID, &p.Pos))
	return p
}

// waitCheckpoint waits until the checkpoint reaches the outbox's last row.
func (f *fixture) waitCheckpoint(t testing.TB) txlog.Position {
	t.Helper()
	want := f.lastPosition(t)
	require.Eventually(t, func() bool { return f.checkpoint(t) == want }, waitFor, 20*time.Millisecond,
		"checkpoint reaches %s", want)
	return want
}

// consumer reads a topic from its start.
type consumer struct {
	cl   *kgo.Client
	recs []*kgo.Record
}

func newConsumer(t testing.TB, topic string) *consumer {
	t.Helper()
	return &consumer{cl: kafkatest.NewClient(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))}
}

// until polls until it has read at least n records in all and returns them.
func (c *consumer) until(t testing.TB, n int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for len(c.recs) < n {
		fs := c.cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d records of %d", len(c.recs), n)
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		c.recs = append(c.recs, fs.Records()...)
	}
	return c.recs
}

// more polls for d and returns the records read meanwhile.
func (c *consumer) more(t testing.TB, d time.Duration) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var got []*kgo.Record
	for ctx.Err() == nil {
		fs := c.cl.PollFetches(ctx)
		got = append(got, fs.Records()...)
	}
	c.recs = append(c.recs, got...)
	return got
}

// payloads returns the values of recs, in order.
func payloads(recs []*kgo.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Value)
	}
	return out
}

// byKey groups the payloads of recs by key, in partition order.
func byKey(recs []*kgo.Record) map[string][]string {
	out := map[string][]string{}
	for _, r := range recs {
		out[string(r.Key)] = append(out[string(r.Key)], string(r.Value))
	}
	return out
}

// dedup drops repeated payloads, keeping the first.
func dedup(vals []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range vals {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// chaosDialer dials the broker while up; cut closes every connection it
// made and refuses new ones until restore.
type chaosDialer struct {
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	dials atomic.Int64
}

func newChaosDialer() *chaosDialer { return &chaosDialer{conns: map[net.Conn]struct{}{}} }

func (d *chaosDialer) dial(ctx context.Context, network, host string) (net.Conn, error) {
	d.dials.Add(1)
	d.mu.Lock()
	down := d.down
	d.mu.Unlock()
	if down {
		return nil, fmt.Errorf("chaos: broker %s is down", host)
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		_ = c.Close()
		return nil, fmt.Errorf("chaos: broker %s is down", host)
	}
	d.conns[c] = struct{}{}
	return c, nil
}

func (d *chaosDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = true
	for c := range d.conns {
		_ = c.Close()
	}
	clear(d.conns)
}

func (d *chaosDialer) restore() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = false
}
