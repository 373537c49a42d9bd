package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

var dlqTime = time.Date(2026, 11, 23, 9, 30, 0, 123456789, time.FixedZone("CET", 3600))

// consumed returns msg as a Kafka subscriber delivers it: with the
// receive-only metadata of where it was read.
func consumed(msg *message.Message, topic string, partition, offset int) *message.Message {
	msg.Metadata.Set(messaging.MetadataKafkaTopic, topic)
	msg.Metadata.Set(messaging.MetadataKafkaPartition, fmt.Sprint(partition))
	msg.Metadata.Set(messaging.MetadataKafkaOffset, fmt.Sprint(offset))
	msg.Metadata.Set(messaging.MetadataKafkaConsumerGroup, "billing")
	return msg
}

func deadLetterSetup(t *testing.T, cfg middleware.DeadLetterConfig) (message.HandlerMiddleware, *recordingPublisher) {
	t.Helper()
	pub := &recordingPublisher{}
	if cfg.NowFunc == nil {
		cfg.NowFunc = func() time.Time { return dlqTime }
	}
	mw, err := middleware.DeadLetter(pub, cfg)
	require.NoError(t, err)
	return mw, pub
}

func failWith(err error) message.HandlerFunc {
	return func(*message.Message) ([]*message.Message, error) {
		return []*message.Message{message.NewMessage("produced", nil)}, err
	}
}

func TestDeadLetterPermanent(t *testing.T) {
	t.Parallel()
	mw, pub := deadLetterSetup(t, middleware.DeadLetterConfig{})
	msg := consumed(envelopeMessage(t, "sales.order.placed", []byte(`{"order_id":"x"}`)), "orders", 3, 42)
	msg.Metadata.Set(messaging.HeaderCorrelationID, "corr-1")
	msg.Metadata.Set(messaging.HeaderTraceParent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	original := msg.Copy()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the partition was revoked meanwhile
	msg.SetContext(ctx)

	out, err := mw(failWith(messaging.Permanent(errors.New("order has no lines"))))(msg)
	require.NoError(t, err, "the message is acked")
	require.Nil(t, out, "nothing is produced")

	topics, msgs := pub.published()
	require.Equal(t, []string{"orders.dlq"}, topics)
	dl := msgs[0]
	require.Equal(t, msg.UUID, dl.UUID)
	require.Equal(t, []byte(msg.Payload), []byte(dl.Payload))

	want := message.Metadata{}
	for k, v := range msg.Metadata {
		if !strings.HasPrefix(k, messaging.ReceiveOnlyPrefix) {
			want[k] = v
		}
	}
	require.Equal(t, "ord-1001", want[messaging.MetadataPartitionKey], "the record key is kept")
	want[messaging.HeaderDLQReason] = "order has no lines"
	want[messaging.HeaderDLQOriginalTopic] = "orders"
	want[messaging.HeaderDLQOriginalPartition] = "3"
	want[messaging.HeaderDLQOriginalOffset] = "42"
	want[messaging.HeaderDLQConsumerGroup] = "billing"
	want[messaging.HeaderDLQTime] = "2026-11-23T08:30:00.123456789Z"
	require.Equal(t, want, dl.Metadata)

	require.Equal(t, original.Metadata, msg.Metadata, "the original message is not changed")
	require.NoError(t, dl.Context().Err(), "the dead letter goes out although the message's context ended")
}

func TestDeadLetterDecidesByClassifier(t *testing.T) {
	t.Parallel()
	exhausted := &middleware.RetryExhaustedError{Attempts: 10, Elapsed: 33 * time.Second, Err: errTransient}
	unavailable := &middleware.RetryExhaustedError{Attempts: 10, Elapsed: 33 * time.Second,
		Err: &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}}
	for _, tt := range []struct {
		name          string
		cfg           middleware.DeadLetterConfig
		err           error
		deadLettered  bool
		reasonPrefix  string
		returnedError error
	}{
		{name: "undecodable", err: messaging.Permanent(&messaging.DecodeError{Field: messaging.HeaderSpecVersion, Reason: "missing"}),
			deadLettered: true, reasonPrefix: "messaging: cannot decode message: ce_specversion: missing"},
		{name: "schema violation", err: &messaging.SchemaError{Type: "sales.order.placed", Version: 1, Details: []string{"at '': bad"}},
			deadLettered: true, reasonPrefix: "messaging: payload of sales.order.placed v1 violates its schema"},
		{name: "unknown type", err: fmt.Errorf("validate: %w", messaging.ErrUnknownType), deadLettered: true, reasonPrefix: "validate: no schema"},
		{name: "retryable", err: errTransient, returnedError: errTransient},
		{name: "context canceled", err: fmt.Errorf("handle: %w", context.Canceled), returnedError: context.Canceled},
		{name: "retries exhausted", err: exhausted, deadLettered: true, reasonPrefix: "retries exhausted after 10 attempts in 33s: transient failure"},
		{name: "retries exhausted, nacked", cfg: middleware.DeadLetterConfig{NackExhausted: true}, err: exhausted, returnedError: exhausted},
		{name: "retries exhausted while PostgreSQL is down", err: unavailable, returnedError: unavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mw, pub := deadLetterSetup(t, tt.cfg)
			msg := consumed(message.NewMessage("id-1", []byte("x")), "orders", 0, 7)
			out, err := mw(failWith(tt.err))(msg)
			_, msgs := pub.published()
			if tt.deadLettered {
				require.NoError(t, err)
				require.Nil(t, out)
				require.Len(t, msgs, 1)
				require.True(t, strings.HasPrefix(msgs[0].Metadata.Get(messaging.HeaderDLQReason), tt.reasonPrefix),
					"reason %q", msgs[0].Metadata.Get(messaging.HeaderDLQReason))
				return
			}
			require.ErrorIs(t, err, tt.returnedError)
			require.Len(t, out, 1, "the handler's result is passed on untouched")
			require.Empty(t, msgs)
		})
	}
}

func TestDeadLetterPublishFailure(t *testing.T) {
	t.Parallel()
	brokerDown := errors.New("broker down")
	pub := &recordingPublisher{err: brokerDown}
	mw, err := middleware.DeadLetter(pub, middleware.DeadLetterConfig{})
	require.NoError(t, err)
	cause := messaging.Permanent(errors.New("bad input"))
	out, err := mw(failWith(cause))(consumed(message.NewMessage("id-1", nil), "orders", 0, 1))
	require.Nil(t, out)
	require.ErrorIs(t, err, brokerDown, "the message is nacked")
	require.ErrorIs(t, err, cause)
	require.Contains(t, err.Error(), "orders.dlq")
}

func TestDeadLetterTopic(t *testing.T) {
	t.Parallel()
	cause := messaging.Permanent(errors.New("bad input"))

	mw, pub := deadLetterSetup(t, middleware.DeadLetterConfig{Suffix: "-dead", FallbackTopic: "all.dlq"})
	_, err := mw(failWith(cause))(consumed(message.NewMessage("id-1", nil), "orders", 0, 1))
	require.NoError(t, err)
	_, err = mw(failWith(cause))(message.NewMessage("id-2", nil))
	require.NoError(t, err)
	topics, msgs := pub.published()
	require.Equal(t, []string{"orders-dead", "all.dlq"}, topics)
	for _, h := range []string{messaging.HeaderDLQOriginalTopic, messaging.HeaderDLQOriginalPartition, messaging.HeaderDLQOriginalOffset, messaging.HeaderDLQConsumerGroup} {
		_, ok := msgs[1].Metadata[h]
		require.False(t, ok, "%s is unknown for a message without Kafka metadata", h)
	}
	require.NotEmpty(t, msgs[1].Metadata.Get(messaging.HeaderDLQTime))

	// Without any topic the failure is returned.
	mw, pub = deadLetterSetup(t, middleware.DeadLetterConfig{})
	_, err = mw(failWith(cause))(message.NewMessage("id-3", nil))
	require.ErrorIs(t, err, cause)
	require.ErrorContains(t, err, "FallbackTopic")
	_, msgs = pub.published()
	require.Empty(t, msgs)
}

func TestDeadLetterReasonTruncated(t *testing.T) {
	t.Parallel()
	mw, pub := deadLetterSetup(t, middleware.DeadLetterConfig{MaxReasonBytes: 64})
	long := strings.Repeat("é", 100) // two bytes each
	_, err := mw(failWith(messaging.Permanent(errors.New(long))))(consumed(message.NewMessage("id-1", nil), "orders", 0, 1))
	require.NoError(t, err)
	_, msgs := pub.published()
	reason := msgs[0].Metadata.Get(messaging.HeaderDLQReason)
	require.LessOrEqual(t, len(reason), 64)
	require.True(t, utf8.ValidString(reason))
	require.True(t, strings.HasSuffix(reason, "..."))
	require.True(t, strings.HasPrefix(long, strings.TrimSuffix(reason, "...")))
}

func TestDeadLetterRecordWithoutID(t *testing.T) {
	t.Parallel()
	// A record with an empty ce_id header: the subscriber names the message
	// <topic>/<partition>/<offset>. A Publisher writes the UUID as ce_id and
	// refuses a ce_id that differs, so the empty one is dropped.
	mw, pub := deadLetterSetup(t, middleware.DeadLetterConfig{})
	msg := consumed(message.NewMessage("orders/0/5", []byte{0xff, 0x00}), "orders", 0, 5)
	msg.Metadata.Set(messaging.HeaderID, "")
	msg.Metadata.Set("x-other", "kept")
	_, err := mw(failWith(messaging.Permanent(errors.New("undecodable"))))(msg)
	require.NoError(t, err)
	_, msgs := pub.published()
	_, ok := msgs[0].Metadata[messaging.HeaderID]
	require.False(t, ok)
	require.Equal(t, "kept", msgs[0].Metadata.Get("x-other"))
	require.Equal(t, []byte{0xff, 0x00}, []byte(msgs[0].Payload))
}

func TestDeadLetterMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	pub := &recordingPublisher{}
	mw1, err := middleware.DeadLetter(pub, middleware.DeadLetterConfig{Registerer: reg})
	require.NoError(t, err)
	mw2, err := middleware.DeadLetter(pub, middleware.DeadLetterConfig{Registerer: reg})
	require.NoError(t, err, "a second DeadLetter shares the counter")

	msg := func() *message.Message { return consumed(message.NewMessage("id", nil), "orders", 0, 1) }
	_, err = mw1(failWith(messaging.Permanent(&messaging.DecodeError{Field: "ce_id", Reason: "missing"})))(msg())
	require.NoError(t, err)
	_, err = mw2(failWith(&messaging.SchemaError{Type: "t", Version: 1}))(msg())
	require.NoError(t, err)
	_, err = mw2(failWith(&middleware.RetryExhaustedError{Attempts: 1, Err: errTransient}))(msg())
	require.NoError(t, err)
	_, err = mw1(failWith(messaging.Permanent(&middleware.PanicError{Value: "boom"})))(msg())
	require.NoError(t, err)
	_, err = mw1(failWith(messaging.Permanent(errors.New("no"))))(msg())
	require.NoError(t, err)

	families, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != middleware.DeadLettersMetric {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[labels["topic"]+"/"+labels["reason"]] = m.GetCounter().GetValue()
		}
	}
	require.Equal(t, map[string]float64{
		"orders/invalid_envelope":  1,
		"orders/schema_violation":  1,
		"orders/retries_exhausted": 1,
		"orders/panic":             1,
		"orders/permanent":         1,
	}, got)
}

func TestDeadLetterConfigValidation(t *testing.T) {
	t.Parallel()
	_, err := middleware.DeadLetter(nil, middleware.DeadLetterConfig{})
	require.ErrorContains(t, err, "publisher is nil")

	_, err = middleware.DeadLetter(&recordingPublisher{}, middleware.DeadLetterConfig{
		MaxReasonBytes: 1, Suffix: "/dlq", FallbackTopic: "a b",
	})
	require.Error(t, err)
	for _, field := range []string{"MaxReasonBytes", "Suffix", "FallbackTopic"} {
		require.Contains(t, err.Error(), field)
	}
}

// logBuffer collects JSON log lines, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the logged records whose message is msg.
func (b *logBuffer) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

func newLogger(b *logBuffer) *slog.Logger { return slog.New(slog.NewJSONHandler(b, nil)) }

// TestDeadLetterLogRateLimit sends bursts of dead letters: each original
// topic and reason logs at most one warning per LogInterval, and the next
// one says how many were left out; every dead letter is still published.
func TestDeadLetterLogRateLimit(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	var mu sync.Mutex
	now := dlqTime
	mw, pub := deadLetterSetup(t, middleware.DeadLetterConfig{
		Logger: newLogger(&logs),
		NowFunc: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return now
		},
	})
	advance := func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(d)
	}
	send := func(topic string, err error, offset int) {
		t.Helper()
		msg := consumed(envelopeMessage(t, "sales.order.teleported", []byte(`{}`)), topic, 2, offset)
		_, herr := mw(failWith(err))(msg)
		require.NoError(t, herr)
	}
	unknown := fmt.Errorf("messaging: type %q version 1: %w", "sales.order.teleported", messaging.ErrUnknownType)
	violation := &messaging.SchemaError{Type: "sales.order.teleported", Version: 1}

	for i := range 3 {
		send("orders", unknown, 10+i) // the first logs, two are left out
	}
	send("orders", violation, 20)   // another reason: logged
	send("payments", unknown, 30)   // another topic: logged
	advance(999 * time.Millisecond) // still within the second
	send("orders", unknown, 13)
	advance(time.Millisecond)
	send("orders", unknown, 14) // logs, and says 3 were left out

	_, msgs := pub.published()
	require.Len(t, msgs, 7, "every dead letter is published")

	recs := logs.records(t, middleware.DeadLetterLogMsg)
	require.Len(t, recs, 4)
	first := recs[0]
	require.Equal(t, "WARN", first["level"])
	require.Equal(t, "sales.order.teleported", first["type"])
	require.Equal(t, "orders", first["topic"])
	require.Equal(t, "2", first["partition"])
	require.Equal(t, "10", first["offset"])
	require.Equal(t, "orders.dlq", first["dead_letter_topic"])
	require.Equal(t, middleware.CauseUnknownType, first["reason"])
	require.Equal(t, unknown.Error(), first["cause"])
	require.NotContains(t, first, "suppressed")

	require.Equal(t, middleware.CauseSchemaViolation, recs[1]["reason"])
	require.Equal(t, "payments", recs[2]["topic"])
	last := recs[3]
	require.Equal(t, "14", last["offset"])
	require.InDelta(t, 3, last["suppressed"], 0)

	// A negative interval logs every one.
	var all logBuffer
	mw, _ = deadLetterSetup(t, middleware.DeadLetterConfig{Logger: newLogger(&all), LogInterval: -1})
	for i := range 3 {
		_, err := mw(failWith(unknown))(consumed(message.NewMessage(fmt.Sprint(i), nil), "orders", 0, i))
		require.NoError(t, err)
	}
	require.Len(t, all.records(t, middleware.DeadLetterLogMsg), 3)
}
