package cqrs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

// ScopeName is the instrumentation scope of the spans the buses start.
const ScopeName = "github.com/vextrus/dtx/pkg/cqrs"

// ErrDuplicateHandler is wrapped by the error of a registration that would
// give a command or query type a second handler, or give a Go type a second
// message type (or a message type a second Go type). The first registration
// stays in force.
var ErrDuplicateHandler = errors.New("cqrs: duplicate registration")

// ErrUnknownCommand is wrapped by the error of a command that no handler of
// the bus takes (Dispatch, and a CommandProcessor receiving it), that was not
// registered (Send), or whose type has no schema (registration). The error
// names the type. A CommandProcessor marks it permanent: the message is
// dead-lettered, not retried.
var ErrUnknownCommand = errors.New("cqrs: unknown command")

// ErrUnknownQuery is wrapped by the error of a query whose type no handler of
// the bus takes. The error names the type.
var ErrUnknownQuery = errors.New("cqrs: unknown query")

// ErrUnknownEvent is wrapped by the error of an event whose Go type was not
// registered with the bus (RegisterEvent), or whose type has no schema. The
// error names the type.
var ErrUnknownEvent = errors.New("cqrs: unknown event")

// Kind says what a Message is: a command, a query or an event.
type Kind string

// The kinds of Message.
const (
	KindCommand Kind = "command"
	KindQuery   Kind = "query"
	KindEvent   Kind = "event"
)

// Message is a command, query or event on its way through a bus's
// middleware to its handler, or to the outbox or the event store.
type Message struct {
	// Kind is KindCommand, KindQuery or KindEvent.
	Kind Kind
	// Envelope is the message as it travels: its Type names the message
	// type (and so the JSON Schema), its Data is Value encoded as JSON, and
	// it carries the correlation, causation and trace context. A middleware
	// may change its attributes; Data must stay Value's encoding.
	Envelope messaging.Envelope
	// Value is the typed command, query or event.
	Value any
}

// HandlerFunc is the untyped form of every step a Message goes through: a
// handler, or the write to the outbox or the event store. result is a
// query's result, nil for commands and events.
type HandlerFunc func(ctx context.Context, m *Message) (result any, err error)

// Middleware wraps a HandlerFunc with behaviour of its own. Every bus runs
// tracing, logging, correlation and validation (in that order, outermost
// first) and then the middleware of its Config, in order.
type Middleware func(next HandlerFunc) HandlerFunc

// Keyed is implemented by a command or event that names its partition key:
// messages with one key keep their order in Kafka. The key is the
// envelope's PartitionKey; a value that does not implement Keyed has none.
type Keyed interface {
	PartitionKey() string
}

// DefaultCommandTopic is the topic of a command type when
// CommandBusConfig.TopicFunc is nil: the type's first dot-separated segment
// followed by ".commands", e.g. "billing.commands" for
// "billing.invoice.create".
func DefaultCommandTopic(commandType string) string {
	return firstSegment(commandType) + ".commands"
}

// DefaultEventTopic is the topic of an event type when
// EventBusConfig.TopicFunc is nil: the type's first dot-separated segment
// followed by ".events", e.g. "sales.events" for "sales.order.placed".
func DefaultEventTopic(eventType string) string {
	return firstSegment(eventType) + ".events"
}

func firstSegment(typ string) string {
	s, _, _ := strings.Cut(typ, ".")
	return s
}

// names binds Go types to message types, one to one.
type names struct {
	mu     sync.RWMutex
	byGo   map[reflect.Type]string
	byName map[string]reflect.Type
}

func newNames() names {
	return names{byGo: make(map[reflect.Type]string), byName: make(map[string]reflect.Type)}
}

// bind binds t to typ, or checks they are bound to each other already.
func (n *names) bind(kind Kind, t reflect.Type, typ string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if old, ok := n.byGo[t]; ok && old != typ {
		return fmt.Errorf("%w: %s: Go type %s is already %s %q", ErrDuplicateHandler, typ, t, kind, old)
	}
	if old, ok := n.byName[typ]; ok && old != t {
		return fmt.Errorf("%w: %s %q is already Go type %s, not %s", ErrDuplicateHandler, kind, typ, old, t)
	}
	n.byGo[t], n.byName[typ] = typ, t
	return nil
}

// lookup returns the message type of t.
func (n *names) lookup(t reflect.Type) (string, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	typ, ok := n.byGo[t]
	return typ, ok
}

// checkType checks that typ is a valid envelope type with a schema in reg
// (unless reg lets unknown types pass); unknown wraps the failure.
func checkType(reg *messaging.SchemaRegistry, kind Kind, typ string, unknown error) error {
	if _, err := messaging.NewEnvelope(typ, "/cqrs", nil); err != nil {
		return fmt.Errorf("cqrs: %s type %q: %w", kind, typ, err)
	}
	if reg != nil && reg.UnknownTypes() == messaging.RejectUnknownTypes && !reg.HasType(typ) {
		return fmt.Errorf("%w: %s type %q has no schema in the registry", unknown, kind, typ)
	}
	return nil
}

// newMessage encodes v as the envelope of a Message of typ from source,
// with v's partition key.
func newMessage(kind Kind, typ, source string, v any) (*Message, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("cqrs: encode %s %q: %w", kind, typ, err)
	}
	env, err := messaging.NewEnvelope(typ, source, json.RawMessage(data))
	if err != nil {
		return nil, fmt.Errorf("cqrs: %s %q: %w", kind, typ, err)
	}
	if k, ok := v.(Keyed); ok {
		env.PartitionKey = k.PartitionKey()
	}
	return &Message{Kind: kind, Envelope: env, Value: v}, nil
}

// chainConfig is what the standard middleware needs.
type chainConfig struct {
	schemas *messaging.SchemaRegistry
	logger  *slog.Logger
	tp      trace.TracerProvider
	extra   []Middleware
}

// chain returns final wrapped in the standard middleware and then extra.
func (c chainConfig) chain(final HandlerFunc) HandlerFunc {
	h := final
	for i := len(c.extra) - 1; i >= 0; i-- {
		h = c.extra[i](h)
	}
	h = validating(c.schemas)(h)
	h = correlating(h)
	h = logging(c.logger)(h)
	return tracing(c.tp)(h)
}

// tracing starts a span "<kind> <type>" around the rest and writes its trace
// context into the envelope, so the messages a handler emits and a command
// sent through the outbox continue the trace.
func tracing(tp trace.TracerProvider) Middleware {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	tracer := tp.Tracer(ScopeName)
	prop := propagation.TraceContext{}
	return func(next HandlerFunc) HandlerFunc {
		return func(ctx context.Context, m *Message) (any, error) {
			if !trace.SpanContextFromContext(ctx).IsValid() && m.Envelope.TraceParent != "" {
				ctx = prop.Extract(ctx, propagation.MapCarrier{
					"traceparent": m.Envelope.TraceParent, "tracestate": m.Envelope.TraceState,
				})
			}
			ctx, span := tracer.Start(ctx, string(m.Kind)+" "+m.Envelope.Type,
				trace.WithAttributes(
					attribute.String("cqrs.kind", string(m.Kind)),
					semconv.CloudEventsEventType(m.Envelope.Type),
					semconv.CloudEventsEventID(m.Envelope.ID),
					semconv.CloudEventsEventSource(m.Envelope.Source),
				))
			defer span.End()
			carrier := propagation.MapCarrier{}
			prop.Inject(ctx, carrier)
			m.Envelope.TraceParent, m.Envelope.TraceState = carrier["traceparent"], carrier["tracestate"]
			res, err := next(ctx, m)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return res, err
		}
	}
}

// logging logs each message at debug level, and its failure at warn level.
func logging(l *slog.Logger) Middleware {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return func(next HandlerFunc) HandlerFunc {
		return func(ctx context.Context, m *Message) (any, error) {
			start := time.Now()
			res, err := next(ctx, m)
			attrs := []any{"kind", m.Kind, "type", m.Envelope.Type, "id", m.Envelope.ID,
				"correlation_id", m.Envelope.CorrelationID, "duration", time.Since(start)}
			if err != nil {
				l.WarnContext(ctx, "cqrs: "+string(m.Kind)+" failed", append(attrs, "error", err)...)
			} else {
				l.DebugContext(ctx, "cqrs: "+string(m.Kind)+" handled", attrs...)
			}
			return res, err
		}
	}
}

// correlating stamps the envelope with the Origin ctx carries (causation,
// correlation and saga ids), then makes the message the Origin of what its
// handler emits.
func correlating(next HandlerFunc) HandlerFunc {
	return func(ctx context.Context, m *Message) (any, error) {
		if o, ok := middleware.OriginFromContext(ctx); ok {
			m.Envelope = o.StampEnvelope(m.Envelope)
		}
		o := middleware.Origin{MessageID: m.Envelope.ID, CorrelationID: m.Envelope.CorrelationID, SagaID: m.Envelope.SagaID}
		if o.CorrelationID == "" {
			o.CorrelationID = o.MessageID
		}
		return next(middleware.ContextWithOrigin(ctx, o), m)
	}
}

// validating checks the envelope and its payload against reg (when set)
// before the rest runs. A failure is permanent.
func validating(reg *messaging.SchemaRegistry) Middleware {
	return func(next HandlerFunc) HandlerFunc {
		return func(ctx context.Context, m *Message) (any, error) {
			if err := m.Envelope.Validate(); err != nil {
				return nil, messaging.Permanent(fmt.Errorf("cqrs: %s %q: %w", m.Kind, m.Envelope.Type, err))
			}
			if reg != nil {
				if err := reg.ValidateEnvelope(m.Envelope); err != nil {
					return nil, messaging.Permanent(fmt.Errorf("cqrs: %s %q: %w", m.Kind, m.Envelope.Type, err))
				}
			}
			return next(ctx, m)
		}
	}
}
