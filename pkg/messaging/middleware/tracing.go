package middleware

import (
	"context"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/pkg/messaging"
)

// ScopeName is the instrumentation scope of the spans this package starts.
const ScopeName = "github.com/vextrus/dtx/pkg/messaging/middleware"

// MetadataCarrier lets an OpenTelemetry propagator read and write trace
// context in a Watermill message's metadata, as CloudEvents extensions: the
// W3C "traceparent" and "tracestate" fields are the headers
// messaging.HeaderTraceParent and messaging.HeaderTraceState, and any other
// field (such as "baggage") is "ce_" followed by the field's name in lower
// case without the characters a CloudEvents attribute name may not hold.
// Fields that would land on another attribute of the envelope (id, type,
// ...) are neither read nor written, so no propagator can corrupt an
// envelope. Set needs a non-nil map.
type MetadataCarrier message.Metadata

var _ propagation.TextMapCarrier = MetadataCarrier(nil)

// Get returns the value of the field key, or "".
func (c MetadataCarrier) Get(key string) string {
	if h, ok := carrierHeader(key); ok {
		return c[h]
	}
	return ""
}

// Set sets the field key to value.
func (c MetadataCarrier) Set(key, value string) {
	if h, ok := carrierHeader(key); ok {
		c[h] = value
	}
}

// Keys returns the names of the CloudEvents extensions in the metadata, the
// fields a propagator may read.
func (c MetadataCarrier) Keys() []string {
	var keys []string
	for k := range c {
		if name, ok := strings.CutPrefix(k, "ce_"); ok && name != "" {
			if _, ok := carrierHeader(name); ok {
				keys = append(keys, name)
			}
		}
	}
	return keys
}

// carrierHeader maps a propagation field to its metadata key; ok is false for
// a field that has no key of its own.
func carrierHeader(field string) (header string, ok bool) {
	name := make([]byte, 0, len(field))
	for i := 0; i < len(field); i++ {
		c := field[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			name = append(name, c)
		case c >= 'A' && c <= 'Z':
			name = append(name, c+'a'-'A')
		}
	}
	n := string(name)
	switch {
	case n == "traceparent":
		return messaging.HeaderTraceParent, true
	case n == "tracestate":
		return messaging.HeaderTraceState, true
	case n == "" || messaging.ReservedAttribute(n):
		return "", false
	}
	return "ce_" + n, true
}

// tracing holds what Tracing and TracingPublisher need.
type tracing struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

func newTracing(tp trace.TracerProvider, prop propagation.TextMapPropagator) tracing {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	return tracing{tracer: tp.Tracer(ScopeName), prop: prop}
}

// inject writes the trace context of span into msg's metadata, replacing
// whatever trace context it carried.
func (t tracing) inject(span trace.Span, msg *message.Message) {
	if msg.Metadata == nil {
		msg.Metadata = make(message.Metadata)
	}
	delete(msg.Metadata, messaging.HeaderTraceParent)
	delete(msg.Metadata, messaging.HeaderTraceState)
	t.prop.Inject(trace.ContextWithSpan(msg.Context(), span), MetadataCarrier(msg.Metadata))
}

// Tracing returns a router middleware that handles each message in a
// CONSUMER span named "process <topic>", following the OpenTelemetry
// semantic conventions for messaging (v1.43.0): its parent is the trace
// context the message carries in its metadata (extracted with prop; see
// MetadataCarrier), or whatever span the message's context holds when it
// carries none. The span is in msg.Context() for the handler and the
// middlewares after this one, so their spans and logs join the trace.
//
// The span has the attributes messaging.system "kafka",
// messaging.operation.type and .name "process", messaging.destination.name,
// messaging.message.id (the UUID), messaging.message.body.size and, when the
// message carries them, messaging.kafka.message.key,
// messaging.kafka.offset, messaging.destination.partition.id,
// messaging.consumer.group.name, cloudevents.event_type and
// cloudevents.event_source. The topic is messaging.MetadataKafkaTopic, or
// the topic the router subscribed to. A handler's error is recorded on the
// span, which then has status Error.
//
// Each message the handler returns gets the trace context of this span
// written into its metadata, unless its own context holds a span, whose
// context is written instead; the message's context gets the span too, so a
// TracingPublisher that publishes it starts its span as a child.
//
// tp defaults to the global TracerProvider (otel.GetTracerProvider) and prop
// to W3C Trace Context (propagation.TraceContext) when nil.
func Tracing(tp trace.TracerProvider, prop propagation.TextMapPropagator) message.HandlerMiddleware {
	t := newTracing(tp, prop)
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := t.prop.Extract(msg.Context(), MetadataCarrier(msg.Metadata))
			topic := consumedTopic(msg)
			ctx, span := t.tracer.Start(ctx, spanName("process", topic),
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(consumeAttributes(msg, topic)...))
			defer span.End()
			msg.SetContext(ctx)

			out, err := h(msg)
			if err != nil {
				recordError(span, err)
				return out, err
			}
			for _, p := range out {
				if p == nil {
					continue
				}
				s := trace.SpanFromContext(p.Context())
				if !s.SpanContext().IsValid() {
					s = span
					p.SetContext(trace.ContextWithSpan(p.Context(), span))
				}
				t.inject(s, p)
			}
			return out, nil
		}
	}
}

// TracingPublisher returns a Publisher that publishes through pub, each
// message in a PRODUCER span named "send <topic>" that ends when pub's
// Publish returns (with its error recorded). The span's parent is the span
// in the message's context or, when that holds none, the trace context in
// the message's metadata; the span's trace context is then written into the
// metadata (replacing any there), so the consumer's span becomes its child
// and one business transaction is one trace across processes.
//
// The span has the attributes messaging.system "kafka",
// messaging.operation.type and .name "send", messaging.destination.name,
// messaging.message.id, messaging.message.body.size and, when set,
// messaging.kafka.message.key, cloudevents.event_type and
// cloudevents.event_source.
//
// tp and prop default as for Tracing. Close closes pub.
func TracingPublisher(pub message.Publisher, tp trace.TracerProvider, prop propagation.TextMapPropagator) message.Publisher {
	return &tracingPublisher{pub: pub, t: newTracing(tp, prop)}
}

type tracingPublisher struct {
	pub message.Publisher
	t   tracing
}

// Publish implements message.Publisher.
func (p *tracingPublisher) Publish(topic string, msgs ...*message.Message) error {
	spans := make([]trace.Span, 0, len(msgs))
	for _, msg := range msgs {
		if msg == nil {
			continue
		}
		ctx := msg.Context()
		if !trace.SpanContextFromContext(ctx).IsValid() {
			ctx = p.t.prop.Extract(ctx, MetadataCarrier(msg.Metadata))
		}
		_, span := p.t.tracer.Start(ctx, spanName("send", topic),
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(produceAttributes(msg, topic)...))
		p.t.inject(span, msg)
		spans = append(spans, span)
	}
	err := p.pub.Publish(topic, msgs...)
	for _, span := range spans {
		if err != nil {
			recordError(span, err)
		}
		span.End()
	}
	return err
}

// Close implements message.Publisher.
func (p *tracingPublisher) Close() error { return p.pub.Close() }

func spanName(operation, topic string) string {
	if topic == "" {
		return operation
	}
	return operation + " " + topic
}

// consumedTopic is the topic msg was read from.
func consumedTopic(msg *message.Message) string {
	if t := msg.Metadata.Get(messaging.MetadataKafkaTopic); t != "" {
		return t
	}
	return message.SubscribeTopicFromCtx(msg.Context())
}

func consumeAttributes(msg *message.Message, topic string) []attribute.KeyValue {
	md := msg.Metadata
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process"),
	}
	attrs = append(attrs, commonAttributes(msg, topic)...)
	if p := md.Get(messaging.MetadataKafkaPartition); p != "" {
		attrs = append(attrs, semconv.MessagingDestinationPartitionID(p))
	}
	if o, err := strconv.ParseInt(md.Get(messaging.MetadataKafkaOffset), 10, 64); err == nil {
		attrs = append(attrs, semconv.MessagingKafkaOffsetKey.Int64(o))
	}
	if g := md.Get(messaging.MetadataKafkaConsumerGroup); g != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(g))
	}
	return attrs
}

func produceAttributes(msg *message.Message, topic string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"),
	}
	return append(attrs, commonAttributes(msg, topic)...)
}

func commonAttributes(msg *message.Message, topic string) []attribute.KeyValue {
	md := msg.Metadata
	attrs := []attribute.KeyValue{
		semconv.MessagingMessageID(msg.UUID),
		semconv.MessagingMessageBodySize(len(msg.Payload)),
	}
	if topic != "" {
		attrs = append(attrs, semconv.MessagingDestinationName(topic))
	}
	if k := md.Get(messaging.MetadataPartitionKey); k != "" {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(k))
	}
	if typ := md.Get(messaging.HeaderType); typ != "" {
		attrs = append(attrs, semconv.CloudEventsEventType(typ))
	}
	if src := md.Get(messaging.HeaderSource); src != "" {
		attrs = append(attrs, semconv.CloudEventsEventSource(src))
	}
	return attrs
}

// recordError marks span as failed by err.
func recordError(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	span.SetAttributes(semconv.ErrorType(err))
}

// InjectTraceContext writes the trace context of ctx (through the global
// propagator, otel.GetTextMapPropagator) into each message that carries no
// traceparent yet, so that a message written while handling a request or
// another message continues its trace. A message with a traceparent of its
// own keeps it; nothing is written when ctx carries no valid span context.
// The outbox calls it for every message it writes.
func InjectTraceContext(ctx context.Context, msgs ...*message.Message) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	prop := otel.GetTextMapPropagator()
	for _, msg := range msgs {
		if msg == nil || msg.Metadata.Get(messaging.HeaderTraceParent) != "" {
			continue
		}
		if msg.Metadata == nil {
			msg.Metadata = make(message.Metadata)
		}
		prop.Inject(ctx, MetadataCarrier(msg.Metadata))
	}
}
