package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/relay"
	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
)

// setMaxMessageBytes sets the topic's max.message.bytes and waits until
// the broker describes the new value.
func setMaxMessageBytes(t *testing.T, adm *kadm.Client, topic, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dlqWait)
	defer cancel()
	res, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &value}}, topic)
	require.NoError(t, err)
	for _, r := range res {
		require.NoError(t, r.Err)
	}
	// The broker applies a config change after it answers: wait until it
	// describes the new value, or the relay may produce under the old one.
	require.Eventually(t, func() bool {
		rcs, err := adm.DescribeTopicConfigs(ctx, topic)
		if err != nil {
			return false
		}
		rc, err := rcs.On(topic, nil)
		if err != nil || rc.Err != nil {
			return false
		}
		for _, c := range rc.Configs {
			if c.Key == "max.message.bytes" && c.Value != nil && *c.Value == value {
				return true
			}
		}
		return false
	}, dlqWait, 20*time.Millisecond, "the broker applies max.message.bytes=%s to %s", value, topic)
}

// startRelay runs the outbox relay on schema until the test ends.
func startRelay(t *testing.T, schema *pgtest.Schema) {
	t.Helper()
	r, err := relay.New(schema.Pool, []kgo.Opt{kgo.SeedBrokers(kafkatest.Brokers()...)}, relay.Config{
		Schema: schema.Name, Holder: "test-relay", PollInterval: 50 * time.Millisecond,
		LeaseDuration: 2 * time.Second, MaxBackoff: 200 * time.Millisecond, ProduceTimeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(tlogWriter{t}, nil)),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(dlqWait):
			t.Error("the relay did not stop")
		}
	})
}

// The relay sets aside the rows a topic refuses as too large; once the
// topic takes them, requeue publishes one of them after the rows already
// published, and delete removes the other for good.
func TestOutboxRejectedRequeueAndDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := pgtest.NewSchema(t)
	topic := kafkatest.NewTopic(t, 1)
	adm := kadm.NewClient(kafkatest.NewClient(t))
	setMaxMessageBytes(t, adm, topic, "1024")

	big := func() []byte {
		b := make([]byte, 6000)
		_, _ = rand.Read(b)
		return []byte(base64.StdEncoding.EncodeToString(b)) // compresses little
	}
	rows := []struct {
		id, key string
		payload []byte
	}{
		{"m1", "k1", []byte(`{"n":1}`)},
		{"m2", "k1", big()},
		{"m3", "k2", big()},
		{"m4", "k1", []byte(`{"n":4}`)},
	}
	for _, r := range rows {
		headers, err := json.Marshal(map[string]string{messaging.HeaderID: r.id, messaging.HeaderType: "test.thing"})
		require.NoError(t, err)
		_, err = schema.Pool.Exec(ctx, "INSERT INTO "+schema.Name+".outbox (topic, key, headers, payload) VALUES ($1, $2, $3, $4)",
			topic, r.key, headers, r.payload)
		require.NoError(t, err)
	}
	startRelay(t, schema)

	env := map[string]string{"DTX_DATABASE_URL": pgtest.URL(), "DTX_SCHEMA": schema.Name}
	list := func(args ...string) []rejectedRow {
		t.Helper()
		r := dtxctl(t, env, append([]string{"outbox", "rejected", "list", "--json"}, args...)...)
		require.Equal(t, exitOK, r.code, r.stderr)
		var out []rejectedRow
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
		return out
	}
	var rejected []rejectedRow
	require.Eventually(t, func() bool { rejected = list(); return len(rejected) == 2 }, dlqWait, 50*time.Millisecond,
		"the relay rejects the two large rows")
	require.Equal(t, "m2", rejected[0].MessageID, "in their original order")
	require.Equal(t, "m3", rejected[1].MessageID)
	require.Equal(t, topic, rejected[0].Topic)
	require.Equal(t, "k1", *rejected[0].Key)
	require.Equal(t, "test.thing", rejected[0].Type)
	require.Equal(t, "test-relay", rejected[0].RejectedBy)
	require.Contains(t, rejected[0].Reason, "MESSAGE_TOO_LARGE")
	require.Len(t, list("--reason", "message_too_large", "--topic", topic, "--since", "1h"), 2)
	require.Empty(t, list("--topic", "elsewhere"))
	require.Empty(t, list("--until", "1h"))
	require.Eventually(t, func() bool { return len(consumeAll(t, topic)) == 2 }, dlqWait, 50*time.Millisecond)

	r := dtxctl(t, env, "outbox", "rejected", "list")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "MESSAGE_TOO_LARGE")
	require.Contains(t, r.stdout, "m2")

	// Usage errors change nothing.
	for _, args := range [][]string{
		{"outbox", "rejected", "requeue"},
		{"outbox", "rejected", "requeue", "x1"},
		{"outbox", "rejected", "requeue", "1", "--all"},
		{"outbox", "rejected", "delete", "--all"},
		{"outbox", "rejected", "list", "--since", "tomorrow"},
	} {
		r := dtxctl(t, env, args...)
		require.Equal(t, exitUsage, r.code, args)
		require.NotEmpty(t, r.stderr, args)
	}
	r = dtxctl(t, env, "outbox", "rejected", "requeue", itoa64(rejected[0].ID), "999999")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "no rejected row with id 999999")
	require.Len(t, list(), 2, "nothing was requeued")

	setMaxMessageBytes(t, adm, topic, "1048588")
	r = dtxctl(t, env, "outbox", "rejected", "requeue", itoa64(rejected[0].ID))
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "requeued 1 rejected rows into the outbox\n", r.stdout)

	var recs []*kgo.Record
	require.Eventually(t, func() bool { recs = consumeAll(t, topic); return len(recs) == 3 }, dlqWait, 50*time.Millisecond,
		"the relay publishes the requeued row")
	var order []string
	for _, rec := range recs {
		order = append(order, headerMap(rec)[messaging.HeaderID])
	}
	require.Equal(t, []string{"m1", "m4", "m2"}, order, "the requeued row comes after the rows already published")
	require.Equal(t, "k1", string(recs[2].Key))
	require.Equal(t, rows[1].payload, recs[2].Value)
	require.Equal(t, "test.thing", headerMap(recs[2])[messaging.HeaderType])

	r = dtxctl(t, env, "outbox", "rejected", "delete", itoa64(rejected[1].ID))
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "--yes")
	require.Len(t, list(), 1)
	r = dtxctl(t, env, "outbox", "rejected", "delete", "--all", "--topic", topic, "--yes")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "deleted 1 rejected rows\n", r.stdout)
	require.Empty(t, list())
	r = dtxctl(t, env, "outbox", "rejected", "requeue", "--all")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "requeued 0 rejected rows into the outbox\n", r.stdout)
	// Read in this goroutine, not in require.Never's: a read still running
	// when Never returns would outlive it (and the test).
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		require.Len(t, consumeAll(t, topic), 3, "the deleted row is never published")
	}
}

func itoa64(i int64) string { return strconv.FormatInt(i, 10) }

// tlogWriter writes the relay's log to the test's log.
type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
