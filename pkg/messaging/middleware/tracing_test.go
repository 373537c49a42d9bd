package middleware_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

// spanNamed returns the one ended span called name.
func spanNamed(t *testing.T, rec *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			found = append(found, s)
		}
	}
	require.Len(t, found, 1, "spans named %q", name)
	return found[0]
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// TestTracingConsumeSpanIsChildOfProducer publishes through TracingPublisher
// in one "process" and handles the message in another, with separate
// providers: the consume span continues the producer's trace from the
// headers alone.
func TestTracingConsumeSpanIsChildOfProducer(t *testing.T) {
	t.Parallel()
	producerTP, producerRec := newTracer(t)
	consumerTP, consumerRec := newTracer(t)

	wire := &recordingPublisher{}
	pub := middleware.TracingPublisher(wire, producerTP, nil)
	ctx, parent := producerTP.Tracer("test").Start(context.Background(), "place order")
	msg := envelopeMessage(t, "sales.order.placed", []byte(`{}`))
	msg.SetContext(ctx)
	require.NoError(t, pub.Publish("orders", msg))
	parent.End()
	require.NoError(t, pub.Close())

	send := spanNamed(t, producerRec, "send orders")
	require.Equal(t, trace.SpanKindProducer, send.SpanKind())
	require.Equal(t, parent.SpanContext().SpanID(), send.Parent().SpanID())
	a := attrs(send)
	require.Equal(t, "kafka", a["messaging.system"].AsString())
	require.Equal(t, "send", a["messaging.operation.type"].AsString())
	require.Equal(t, "orders", a["messaging.destination.name"].AsString())
	require.Equal(t, msg.UUID, a["messaging.message.id"].AsString())
	require.Equal(t, "ord-1001", a["messaging.kafka.message.key"].AsString())
	require.Equal(t, "sales.order.placed", a["cloudevents.event_type"].AsString())

	// What crosses the wire: the headers, not the context.
	_, sent := wire.published()
	require.NotEmpty(t, sent[0].Metadata.Get(messaging.HeaderTraceParent))
	received := message.NewMessage(sent[0].UUID, sent[0].Payload)
	received.Metadata = consumed(sent[0].Copy(), "orders", 2, 17).Metadata

	var handlerSpan trace.SpanContext
	h := middleware.Tracing(consumerTP, nil)(func(m *message.Message) ([]*message.Message, error) {
		handlerSpan = trace.SpanContextFromContext(m.Context())
		return nil, nil
	})
	_, err := h(received)
	require.NoError(t, err)

	process := spanNamed(t, consumerRec, "process orders")
	require.Equal(t, trace.SpanKindConsumer, process.SpanKind())
	require.Equal(t, send.SpanContext().TraceID(), process.SpanContext().TraceID(), "one trace")
	require.Equal(t, send.SpanContext().SpanID(), process.Parent().SpanID(), "child of the send span")
	require.True(t, process.Parent().IsRemote())
	require.Equal(t, process.SpanContext().SpanID(), handlerSpan.SpanID(), "the handler runs in the span")
	a = attrs(process)
	require.Equal(t, "kafka", a["messaging.system"].AsString())
	require.Equal(t, "process", a["messaging.operation.type"].AsString())
	require.Equal(t, "process", a["messaging.operation.name"].AsString())
	require.Equal(t, "orders", a["messaging.destination.name"].AsString())
	require.Equal(t, "2", a["messaging.destination.partition.id"].AsString())
	require.Equal(t, int64(17), a["messaging.kafka.offset"].AsInt64())
	require.Equal(t, "billing", a["messaging.consumer.group.name"].AsString())
	require.Equal(t, "ord-1001", a["messaging.kafka.message.key"].AsString())
	require.Equal(t, received.UUID, a["messaging.message.id"].AsString())
	require.Equal(t, codes.Unset, process.Status().Code)
}

func TestTracingRecordsErrorsAndDeadLetters(t *testing.T) {
	t.Parallel()
	tp, rec := newTracer(t)
	dl, err := middleware.DeadLetter(&recordingPublisher{}, middleware.DeadLetterConfig{})
	require.NoError(t, err)
	tracing := middleware.Tracing(tp, nil)

	_, err = tracing(failWith(errTransient))(consumed(message.NewMessage("m-1", nil), "orders", 0, 1))
	require.ErrorIs(t, err, errTransient)
	failed := rec.Ended()[0]
	require.Equal(t, codes.Error, failed.Status().Code)
	require.Equal(t, errTransient.Error(), failed.Status().Description)
	require.True(t, slices.ContainsFunc(failed.Events(), func(e sdktrace.Event) bool { return e.Name == "exception" }))

	rec.Reset()
	_, err = tracing(dl(failWith(messaging.Permanent(errors.New("bad input")))))(consumed(message.NewMessage("m-2", nil), "orders", 0, 2))
	require.NoError(t, err, "acked")
	dead := rec.Ended()[0]
	require.Equal(t, codes.Error, dead.Status().Code, "a dead letter is a failure")
	require.True(t, slices.ContainsFunc(dead.Events(), func(e sdktrace.Event) bool { return e.Name == "dead_letter" }))
}

// TestTracingAcrossRouterHops runs two handlers on a Go channel Pub/Sub with
// Tracing and the router's publisher wrapped by TracingPublisher: edge send →
// process → send → process form one trace, each span the child of the one
// before.
func TestTracingAcrossRouterHops(t *testing.T) {
	t.Parallel()
	tp, rec := newTracer(t)
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { require.NoError(t, pubsub.Close()) })
	pub := middleware.TracingPublisher(pubsub, tp, nil)

	r := newRouter(t)
	r.AddMiddleware(middleware.Tracing(tp, nil))
	r.AddHandler("first", "commands", pubsub, "events", pub, func(msg *message.Message) ([]*message.Message, error) {
		return []*message.Message{message.NewMessage(watermill.NewUUID(), nil)}, nil
	})
	done := make(chan struct{})
	r.AddConsumerHandler("second", "events", pubsub, func(msg *message.Message) error {
		close(done)
		return nil
	})
	runRouter(t, r)

	require.NoError(t, pub.Publish("commands", message.NewMessage(watermill.NewUUID(), nil)))
	<-done
	require.Eventually(t, func() bool { return len(rec.Ended()) == 4 }, waitFor, pollEvery)

	send1 := spanNamed(t, rec, "send commands")
	process1 := spanNamed(t, rec, "process commands")
	send2 := spanNamed(t, rec, "send events")
	process2 := spanNamed(t, rec, "process events")
	require.False(t, send1.Parent().IsValid(), "the edge starts the trace")
	for i, pair := range [][2]sdktrace.ReadOnlySpan{{send1, process1}, {process1, send2}, {send2, process2}} {
		require.Equal(t, send1.SpanContext().TraceID(), pair[1].SpanContext().TraceID(), "hop %d", i)
		require.Equal(t, pair[0].SpanContext().SpanID(), pair[1].Parent().SpanID(), "hop %d: %s is the parent of %s", i, pair[0].Name(), pair[1].Name())
	}
}

func TestTracingProducedMessages(t *testing.T) {
	t.Parallel()
	tp, rec := newTracer(t)
	tracer := tp.Tracer("test")
	var own trace.SpanContext
	h := middleware.Tracing(tp, nil)(func(msg *message.Message) ([]*message.Message, error) {
		plain := message.NewMessage("plain", nil)
		plain.Metadata.Set(messaging.HeaderTraceParent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		plain.Metadata.Set(messaging.HeaderTraceState, "stale=1")
		withSpan := message.NewMessage("with-span", nil)
		ctx, span := tracer.Start(msg.Context(), "child")
		own = span.SpanContext()
		span.End()
		withSpan.SetContext(ctx)
		return []*message.Message{plain, withSpan}, nil
	})
	out, err := h(message.NewMessage("in", nil))
	require.NoError(t, err)
	process := spanNamed(t, rec, "process")

	prop := propagation.TraceContext{}
	got := trace.SpanContextFromContext(prop.Extract(context.Background(), middleware.MetadataCarrier(out[0].Metadata)))
	require.Equal(t, process.SpanContext().SpanID(), got.SpanID(), "the process span's context replaces what was there")
	_, ok := out[0].Metadata[messaging.HeaderTraceState]
	require.False(t, ok, "the stale tracestate is gone")
	require.Equal(t, process.SpanContext().SpanID(), trace.SpanContextFromContext(out[0].Context()).SpanID())

	got = trace.SpanContextFromContext(prop.Extract(context.Background(), middleware.MetadataCarrier(out[1].Metadata)))
	require.Equal(t, own.SpanID(), got.SpanID(), "a message's own span wins")
}

func TestMetadataCarrier(t *testing.T) {
	t.Parallel()
	md := message.Metadata{messaging.HeaderID: "id-1", messaging.HeaderType: "t"}
	c := middleware.MetadataCarrier(md)
	c.Set("traceparent", "tp")
	c.Set("Tracestate", "ts")
	c.Set("baggage", "k=v")
	c.Set("uber-trace-id", "u")
	c.Set("id", "clobbered?")
	c.Set("-", "nothing")
	require.Equal(t, message.Metadata{
		messaging.HeaderID:          "id-1",
		messaging.HeaderType:        "t",
		messaging.HeaderTraceParent: "tp",
		messaging.HeaderTraceState:  "ts",
		"ce_baggage":                "k=v",
		"ce_ubertraceid":            "u",
	}, md)
	require.Equal(t, "tp", c.Get("traceparent"))
	require.Equal(t, "u", c.Get("uber-trace-id"))
	require.Empty(t, c.Get("id"))
	keys := c.Keys()
	slices.Sort(keys)
	require.Equal(t, []string{"baggage", "traceparent", "tracestate", "ubertraceid"}, keys)

	// Whatever the carrier writes still decodes as an envelope.
	env, err := messaging.NewEnvelope("sales.order.placed", "/sales", nil)
	require.NoError(t, err)
	msg, err := env.ToMessage()
	require.NoError(t, err)
	member, err := baggage.NewMember("tenant", "acme")
	require.NoError(t, err)
	bag, err := baggage.New(member)
	require.NoError(t, err)
	tp, _ := newTracer(t)
	ctx, span := tp.Tracer("test").Start(baggage.ContextWithBaggage(context.Background(), bag), "s")
	defer span.End()
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	prop.Inject(ctx, middleware.MetadataCarrier(msg.Metadata))
	decoded, err := messaging.Decode(msg)
	require.NoError(t, err)
	require.Equal(t, msg.Metadata.Get(messaging.HeaderTraceParent), decoded.TraceParent)
	require.Equal(t, "tenant=acme", decoded.Extensions["baggage"])
	back := prop.Extract(context.Background(), middleware.MetadataCarrier(msg.Metadata))
	require.Equal(t, "acme", baggage.FromContext(back).Member("tenant").Value())
	require.Equal(t, span.SpanContext().SpanID(), trace.SpanContextFromContext(back).SpanID())
}
