package relay

import (
	"context"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/vextrus/dtx/pkg/messaging"
)

// ScopeName is the instrumentation scope of the spans the relay records.
const ScopeName = "github.com/vextrus/dtx/internal/relay"

// traceParentLen is the length of a version 00 traceparent,
// "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"; later versions may
// append fields after it.
const traceParentLen = 55

// newTracer returns tp's tracer for the relay's spans, or nil when tp is the
// no-op provider: then the relay does no span work at all.
func newTracer(tp trace.TracerProvider) trace.Tracer {
	if _, ok := tp.(noop.TracerProvider); ok || tp == nil {
		return nil
	}
	return tp.Tracer(ScopeName)
}

// sampledTraceParent reports whether v looks like a traceparent whose
// sampled flag is set, by its length, its dashes and the last hex digit of
// its flags, without parsing it: the cheap test that spares every row
// without a sampled trace context any further work. The propagator checks
// the rest.
func sampledTraceParent(v []byte) bool {
	if len(v) < traceParentLen || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return false
	}
	switch v[54] { // the low nibble of the flags; bit 0 is "sampled"
	case '1', '3', '5', '7', '9', 'b', 'd', 'f':
		return true
	}
	return false
}

// headerCarrier hands a record's trace context to a W3C propagator: the
// fields "traceparent" and "tracestate" are the headers
// messaging.HeaderTraceParent and messaging.HeaderTraceState. It is read
// only: the record's headers stay the row's.
type headerCarrier struct{ parent, state string }

var _ propagation.TextMapCarrier = headerCarrier{}

// Get returns the field key's value, or "".
func (c headerCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.parent
	case "tracestate":
		return c.state
	}
	return ""
}

// Set does nothing: the relay never rewrites a row's headers.
func (headerCarrier) Set(string, string) {}

// Keys returns the fields the carrier holds.
func (c headerCarrier) Keys() []string {
	if c.state == "" {
		return []string{"traceparent"}
	}
	return []string{"traceparent", "tracestate"}
}

// startSpan starts the PRODUCER span "publish <topic>" of rec, a child of
// the trace context its headers carry, when that trace context is sampled;
// otherwise, and when the span would not be recorded, it returns nil. Call
// it just before rec is handed to the client, and endSpan with the
// broker's answer.
func (r *Relay) startSpan(ctx context.Context, rec *kgo.Record) trace.Span {
	var parent []byte
	for i := range rec.Headers {
		if rec.Headers[i].Key == messaging.HeaderTraceParent {
			parent = rec.Headers[i].Value
			break
		}
	}
	if !sampledTraceParent(parent) {
		return nil
	}
	c := headerCarrier{parent: string(parent)}
	var id string
	for _, h := range rec.Headers {
		switch h.Key {
		case messaging.HeaderTraceState:
			c.state = string(h.Value)
		case messaging.HeaderID:
			id = string(h.Value)
		}
	}
	ctx = propagation.TraceContext{}.Extract(ctx, c)
	if sc := trace.SpanContextFromContext(ctx); !sc.IsValid() || !sc.IsSampled() {
		return nil
	}
	attrs := make([]attribute.KeyValue, 0, 7)
	attrs = append(attrs,
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("publish"),
		semconv.MessagingDestinationName(rec.Topic),
		semconv.MessagingMessageBodySize(len(rec.Value)),
	)
	if rec.Key != nil {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(string(rec.Key)))
	}
	if id != "" {
		attrs = append(attrs, semconv.MessagingMessageID(id))
	}
	_, span := r.tracer.Start(ctx, "publish "+rec.Topic,
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	if !span.IsRecording() {
		span.End()
		return nil
	}
	return span
}

// endSpan ends the span of rec with the broker's answer: the partition and
// offset once acknowledged, or err with status Error. The error may still
// be retried, hold the row's topic or reject the row: each attempt to
// produce a row is a span of its own.
func endSpan(span trace.Span, rec *kgo.Record, err error) {
	if err == nil {
		span.SetAttributes(
			semconv.MessagingDestinationPartitionID(strconv.FormatInt(int64(rec.Partition), 10)),
			semconv.MessagingKafkaOffsetKey.Int64(rec.Offset),
		)
	} else {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		if reason := retryReason(err); reason != "other" {
			span.SetAttributes(semconv.ErrorTypeKey.String(reason))
		} else {
			span.SetAttributes(semconv.ErrorType(err))
		}
	}
	span.End()
}
