package relay_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/vextrus/dtx/internal/relay"
	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
)

// spanRecorder returns a provider that samples every span it is asked for
// (so that a span the relay should not have started shows up) and the
// recorder of its spans.
func spanRecorder(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, sr
}

// newSpanContext returns a new random span context with flags.
func newSpanContext(flags trace.TraceFlags) trace.SpanContext {
	var tid trace.TraceID
	var sid trace.SpanID
	_, _ = rand.Read(tid[:])
	_, _ = rand.Read(sid[:])
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags})
}

// traceParent is sc as a W3C traceparent, with its flags written as flags
// (two hex digits).
func traceParent(sc trace.SpanContext, flags string) string {
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + flags
}

// spanAttrs returns the attributes of s by key.
func spanAttrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	out := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		out[kv.Key] = kv.Value
	}
	return out
}

// header returns the value of rec's header key, and whether it has it.
func header(rec *kgo.Record, key string) (string, bool) {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// A row whose headers carry a sampled trace context is published in one
// PRODUCER span "publish <topic>", a child of that context, ended with the
// record's partition and offset; rows with an unsampled, invalid or no trace
// context get no span; every record keeps the row's ce_traceparent and
// ce_tracestate, so consumers stay children of the writer's span.
func TestPublishSpans(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	c := newConsumer(t, f.topic)
	tp, sr := spanRecorder(t)

	type traced struct {
		parent trace.SpanContext
		header string // ce_traceparent
		state  string
		key    string
	}
	sampled := map[string]traced{} // by ce_id
	var msgs []msg
	for i := range 6 {
		sc := newSpanContext(trace.FlagsSampled)
		id := fmt.Sprintf("sampled-%d", i)
		flags := "01"
		if i == 5 {
			flags = "03" // sampled and random: any odd flags are sampled
		}
		tr := traced{parent: sc, header: traceParent(sc, flags), key: fmt.Sprintf("k%d", i%3)}
		h := map[string]string{messaging.HeaderID: id, messaging.HeaderTraceParent: tr.header}
		if i == 1 {
			tr.state = "vendor=opaque,other=1"
			h[messaging.HeaderTraceState] = tr.state
		}
		sampled[id] = tr
		msgs = append(msgs, msg{Key: tr.key, Payload: id, Headers: h})
	}
	untraced := map[string]string{ // ce_id: ce_traceparent ("" for none)
		"unsampled-0": traceParent(newSpanContext(0), "00"),
		"unsampled-1": traceParent(newSpanContext(0), "02"),
		"invalid-0":   "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
		"invalid-1":   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
		"none-0":      "",
		"none-1":      "",
	}
	for id, parent := range untraced {
		h := map[string]string{messaging.HeaderID: id}
		if parent != "" {
			h[messaging.HeaderTraceParent] = parent
		}
		msgs = append(msgs, msg{Key: "k0", Payload: id, Headers: h})
	}
	f.insertTx(t, msgs...)

	cfg := f.config("r1")
	cfg.TracerProvider = tp
	f.start(t, cfg)
	f.waitCheckpoint(t)

	recs := map[string]*kgo.Record{}
	for _, rec := range c.until(t, len(msgs)) {
		id, _ := header(rec, messaging.HeaderID)
		recs[id] = rec
	}
	require.Len(t, recs, len(msgs))
	for id, tr := range sampled {
		got, _ := header(recs[id], messaging.HeaderTraceParent)
		require.Equal(t, tr.header, got, "the record of %s carries the row's traceparent, not the relay's span", id)
		state, ok := header(recs[id], messaging.HeaderTraceState)
		require.Equal(t, tr.state != "", ok)
		require.Equal(t, tr.state, state)
	}
	for id, parent := range untraced {
		got, ok := header(recs[id], messaging.HeaderTraceParent)
		require.Equal(t, parent != "", ok, id)
		require.Equal(t, parent, got, id)
	}

	require.Len(t, sr.Started(), len(sampled), "one span per row with a sampled trace context, none for the others")
	spans := sr.Ended()
	require.Len(t, spans, len(sampled), "every span is ended")
	seen := map[string]bool{}
	for _, s := range spans {
		attrs := spanAttrs(s)
		id := attrs["messaging.message.id"].AsString()
		tr, ok := sampled[id]
		require.True(t, ok, "span of row %q, which carries no sampled trace context", id)
		require.False(t, seen[id], "a second span for %s", id)
		seen[id] = true
		rec := recs[id]

		require.Equal(t, "publish "+f.topic, s.Name())
		require.Equal(t, trace.SpanKindProducer, s.SpanKind())
		require.Equal(t, relay.ScopeName, s.InstrumentationScope().Name)
		require.True(t, s.Parent().IsRemote())
		require.Equal(t, tr.parent.TraceID(), s.Parent().TraceID(), "parent trace id of %s", id)
		require.Equal(t, tr.parent.SpanID(), s.Parent().SpanID(), "parent span id of %s", id)
		require.Equal(t, tr.state, s.Parent().TraceState().String())
		require.Equal(t, tr.parent.TraceID(), s.SpanContext().TraceID(), "the span is in the row's trace")
		require.NotEqual(t, tr.parent.SpanID(), s.SpanContext().SpanID())
		require.Equal(t, codes.Unset, s.Status().Code)
		require.Empty(t, s.Events())
		require.False(t, s.StartTime().After(s.EndTime()))

		require.Equal(t, "kafka", attrs["messaging.system"].AsString())
		require.Equal(t, "send", attrs["messaging.operation.type"].AsString())
		require.Equal(t, "publish", attrs["messaging.operation.name"].AsString())
		require.Equal(t, f.topic, attrs["messaging.destination.name"].AsString())
		require.Equal(t, tr.key, attrs["messaging.kafka.message.key"].AsString())
		require.Equal(t, strconv.Itoa(int(rec.Partition)), attrs["messaging.destination.partition.id"].AsString(), id)
		require.Equal(t, rec.Offset, attrs["messaging.kafka.offset"].AsInt64(), id)
		require.Equal(t, int64(len(rec.Value)), attrs["messaging.message.body.size"].AsInt64())
	}
}

// A record the broker refuses ends its span with status Error and the
// broker's reason; the row is rejected, and the next row's span ends with
// its offset.
func TestPublishSpanRecordsRefusal(t *testing.T) {
	t.Parallel()
	f := &fixture{schema: pgtest.NewSchema(t), topic: newSmallTopic(t, 10000)}
	tp, sr := spanRecorder(t)
	big, small := newSpanContext(trace.FlagsSampled), newSpanContext(trace.FlagsSampled)
	f.insertTx(t, msg{Key: "k", Payload: string(incompressible(20000)),
		Headers: map[string]string{messaging.HeaderID: "big", messaging.HeaderTraceParent: traceParent(big, "01")}})
	f.insertTx(t, msg{Key: "k", Payload: "small",
		Headers: map[string]string{messaging.HeaderID: "small", messaging.HeaderTraceParent: traceParent(small, "01")}})

	cfg := f.config("r1")
	cfg.TracerProvider = tp
	rr := f.start(t, cfg)
	f.waitCheckpoint(t)
	require.InDelta(t, 1, rr.metric(t, "dtx_relay_rejected_total", ""), 0)

	var bigSpans, smallSpans []sdktrace.ReadOnlySpan
	for _, s := range sr.Ended() {
		switch s.Parent().SpanID() {
		case big.SpanID():
			bigSpans = append(bigSpans, s)
		case small.SpanID():
			smallSpans = append(smallSpans, s)
		default:
			t.Fatalf("span %s with an unknown parent", s.Name())
		}
	}
	require.NotEmpty(t, bigSpans)
	for _, s := range bigSpans {
		require.Equal(t, codes.Error, s.Status().Code)
		require.Contains(t, s.Status().Description, "MESSAGE_TOO_LARGE")
		require.Equal(t, "MESSAGE_TOO_LARGE", spanAttrs(s)["error.type"].AsString())
		require.NotEmpty(t, s.Events(), "the error is recorded as an exception event")
		require.Equal(t, "exception", s.Events()[0].Name)
		_, acked := spanAttrs(s)["messaging.kafka.offset"]
		require.False(t, acked, "no offset for a refused record")
	}
	// The small row may have failed beside the big one in the first
	// attempt, and been produced again alone: its last span is the
	// acknowledged one.
	require.NotEmpty(t, smallSpans)
	last := smallSpans[len(smallSpans)-1]
	require.Equal(t, codes.Unset, last.Status().Code)
	_, acked := spanAttrs(last)["messaging.kafka.offset"]
	require.True(t, acked)
	require.Len(t, sr.Started(), len(bigSpans)+len(smallSpans), "every span is ended")
}

// BenchmarkRelayTraced is BenchmarkRelay's outbox with a sampled
// traceparent on every row, published with the no-op provider, with tracing
// off (the global provider, with no SDK installed) and on (an SDK provider whose batch span
// processor exports to an exporter that drops the spans: every row gets its
// span). Run it with -benchtime=1x.
func BenchmarkRelayTraced(b *testing.B) {
	f := &fixture{schema: pgtest.NewSchema(b), topic: kafkatest.NewTopic(b, 3)}
	ctx := context.Background()
	f.prefill(b, benchRows)
	_, err := f.schema.Pool.Exec(ctx, `UPDATE outbox SET headers = headers || jsonb_build_object(
		'ce_traceparent', '00-' || md5(payload::text) || '-' || left(md5(headers::text), 16) || '-01')`)
	require.NoError(b, err)
	_, err = f.schema.Pool.Exec(ctx, "VACUUM ANALYZE outbox")
	require.NoError(b, err)
	last := f.lastPosition(b)
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })

	for _, bc := range []struct {
		name string
		tp   trace.TracerProvider
	}{{"noop", noop.NewTracerProvider()}, {"off", nil}, {"on", sdk}} {
		b.Run(bc.name, func(b *testing.B) {
			var relayTime time.Duration
			for b.Loop() {
				_, err := f.schema.Pool.Exec(ctx, "DELETE FROM txlog_checkpoints")
				require.NoError(b, err)
				relayTime += runRelayWith(b, f, last, bc.tp)
			}
			b.ReportMetric(float64(benchRows*b.N)/relayTime.Seconds(), "relay_rows/s")
		})
	}
}
