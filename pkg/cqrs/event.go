package cqrs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

// EventAppender appends events to a stream in the caller's transaction, with
// their outbox rows; eventstore/postgres's *Store is one.
type EventAppender interface {
	AppendTx(ctx context.Context, tx pgx.Tx, p eventstore.AppendParams) (eventstore.AppendResult, error)
}

// EventBusConfig configures an EventBus.
type EventBusConfig struct {
	// Source is the CloudEvents source of the events Publish builds, a URI
	// reference such as "/sales/api". Required.
	Source string

	// Schemas validates every event against the JSON Schema of its type
	// (version 1) before it is written; registering a type it holds no
	// schema for fails, unless it allows unknown types. Required.
	Schemas *messaging.SchemaRegistry

	// Outbox writes the events of Publish. Defaults to nil: Publish fails.
	Outbox *outbox.Outbox

	// Store appends the events of Append to the event store, which writes
	// them to its outbox too. Defaults to nil: Append fails.
	Store EventAppender

	// TopicFunc gives the Kafka topic of an event type, for Publish.
	// Defaults to DefaultEventTopic ("<first segment>.events").
	TopicFunc func(eventType string) string

	// Middleware runs around every write of an event, inside the standard
	// middleware (tracing, logging, correlation, validation), first element
	// outermost. Defaults to none.
	Middleware []Middleware

	// Logger receives a debug line per event and a warning per failure.
	// Defaults to no logging.
	Logger *slog.Logger

	// TracerProvider starts a span per event. Defaults to the global
	// TracerProvider (otel.GetTracerProvider).
	TracerProvider trace.TracerProvider
}

// EventBus publishes events through the outbox (Publish) or appends them to
// the event store (Append), in the caller's transaction. Register the Go
// type of each event with RegisterEvent first. It is safe for concurrent
// use.
type EventBus struct {
	cfg   EventBusConfig
	chain chainConfig
	names names
}

// NewEventBus returns an EventBus configured by cfg. It fails with an error
// naming every invalid field.
func NewEventBus(cfg EventBusConfig) (*EventBus, error) {
	var errs []error
	if cfg.Source == "" {
		errs = append(errs, errors.New("cqrs: EventBusConfig.Source: required"))
	} else if _, err := messaging.NewEnvelope("cqrs.check", cfg.Source, nil); err != nil {
		errs = append(errs, fmt.Errorf("cqrs: EventBusConfig.Source: %w", err))
	}
	if cfg.Schemas == nil {
		errs = append(errs, errors.New("cqrs: EventBusConfig.Schemas: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.TopicFunc == nil {
		cfg.TopicFunc = DefaultEventTopic
	}
	return &EventBus{
		cfg:   cfg,
		chain: chainConfig{schemas: cfg.Schemas, logger: cfg.Logger, tp: cfg.TracerProvider, extra: cfg.Middleware},
		names: newNames(),
	}, nil
}

// RegisterEvent names the Go type E as the event type typ. It fails, naming
// typ, when typ has no schema (ErrUnknownEvent) or when E or typ is already
// bound to another type (ErrDuplicateHandler). Registering the same pair
// again does nothing.
func RegisterEvent[E any](b *EventBus, typ string) error {
	if err := checkType(b.cfg.Schemas, KindEvent, typ, ErrUnknownEvent); err != nil {
		return err
	}
	return b.names.bind(KindEvent, reflect.TypeFor[E](), typ)
}

// events builds the messages of events, which must be of a registered type.
func events[E any](b *EventBus, evs []E) (string, []*Message, error) {
	typ, ok := b.names.lookup(reflect.TypeFor[E]())
	if !ok {
		return "", nil, fmt.Errorf("%w: Go type %s: not registered (RegisterEvent)", ErrUnknownEvent, reflect.TypeFor[E]())
	}
	ms := make([]*Message, len(evs))
	for i, e := range evs {
		m, err := newMessage(KindEvent, typ, b.cfg.Source, e)
		if err != nil {
			return "", nil, err
		}
		ms[i] = m
	}
	return typ, ms, nil
}

// Publish writes events to the outbox (Config.Outbox) in the transaction ctx
// carries (messaging.TxFromContext: within a command or event handler, the
// handler's), as records of the topic Config.TopicFunc gives their type: they
// reach Kafka if and only if that transaction commits. Each event is stamped
// with the Origin ctx carries (within a handler, the handled message is its
// cause) and validated against its schema; the first failure returns before
// the rest are written. Without a transaction in ctx it fails with
// outbox.ErrNoTransaction; with an unregistered E, with ErrUnknownEvent.
func Publish[E any](ctx context.Context, b *EventBus, evs ...E) error {
	typ, ms, err := events(b, evs)
	if err != nil {
		return err
	}
	if b.cfg.Outbox == nil {
		return fmt.Errorf("cqrs: publish %q: EventBusConfig.Outbox is nil", typ)
	}
	tx, ok := messaging.TxFromContext(ctx)
	if !ok {
		return fmt.Errorf("cqrs: publish %q: the context carries no transaction (messaging.ContextWithTx): %w", typ, outbox.ErrNoTransaction)
	}
	topic := b.cfg.TopicFunc(typ)
	write := b.chain.chain(func(ctx context.Context, m *Message) (any, error) {
		return nil, b.cfg.Outbox.WriteEnvelopes(ctx, tx, topic, m.Envelope)
	})
	for _, m := range ms {
		if _, err := write(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// Stream names the event stream Append appends to, and the version it must
// be at (see eventstore.AppendParams).
type Stream struct {
	// Type is the stream's category, e.g. "order": the event store picks
	// the outbox topic from it. Required.
	Type string
	// ID names the stream, e.g. "order-42". Required.
	ID string
	// Expected is the version the stream must be at; the zero value is
	// eventstore.NoStream.
	Expected eventstore.ExpectedVersion
}

// Append appends events to stream in the event store (Config.Store), in the
// transaction ctx carries, after the middleware (each event stamped with the
// Origin ctx carries, and validated against its schema): they are stored and
// written to the outbox with the caller's other changes, or not at all. A
// stream that is not at stream.Expected fails with an
// *eventstore.VersionConflictError; without a transaction in ctx, with
// outbox.ErrNoTransaction; with an unregistered E, with ErrUnknownEvent.
func Append[E any](ctx context.Context, b *EventBus, stream Stream, evs ...E) (eventstore.AppendResult, error) {
	typ, ms, err := events(b, evs)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if b.cfg.Store == nil {
		return eventstore.AppendResult{}, fmt.Errorf("cqrs: append %q: EventBusConfig.Store is nil", typ)
	}
	tx, ok := messaging.TxFromContext(ctx)
	if !ok {
		return eventstore.AppendResult{}, fmt.Errorf("cqrs: append %q: the context carries no transaction (messaging.ContextWithTx): %w", typ, outbox.ErrNoTransaction)
	}
	// The middleware runs per event and collects it; the append then writes
	// them all at once, atomically.
	data := make([]eventstore.EventData, 0, len(ms))
	collect := b.chain.chain(func(_ context.Context, m *Message) (any, error) {
		e := m.Envelope
		data = append(data, eventstore.EventData{
			ID: e.ID, Type: e.Type, SchemaVersion: e.SchemaVersion, Data: json.RawMessage(e.Data),
			Metadata: eventstore.Metadata{
				CorrelationID: e.CorrelationID, CausationID: e.CausationID,
				TraceParent: e.TraceParent, TraceState: e.TraceState,
			},
		})
		return nil, nil
	})
	for _, m := range ms {
		if _, err := collect(ctx, m); err != nil {
			return eventstore.AppendResult{}, err
		}
	}
	return b.cfg.Store.AppendTx(ctx, tx, eventstore.AppendParams{
		StreamID: stream.ID, StreamType: stream.Type, Expected: stream.Expected, Events: data,
	})
}

// EventHandlerFunc handles an event of Go type E in tx, the transaction
// that records it in the handler's inbox; ctx carries tx and the event's
// Origin, as for a CommandHandlerFunc.
type EventHandlerFunc[E any] func(ctx context.Context, tx pgx.Tx, ev E) error

// EventProcessor subscribes event handlers through a Watermill router: each
// handler gets a router handler of its own (its own subscriber, from
// ProcessorConfig.NewSubscriber, and its own inbox consumer,
// "<Consumer>/<name>"), behind the standard middleware, and runs once per
// event in the transaction that records it.
type EventProcessor struct {
	router    *message.Router
	cfg       ProcessorConfig
	chain     chainConfig
	topicFunc func(string) string
}

// EventProcessorConfig configures an EventProcessor.
type EventProcessorConfig struct {
	ProcessorConfig

	// Schemas validates every event before its handler runs. Required.
	Schemas *messaging.SchemaRegistry

	// TopicFunc gives the topic of an event type. Defaults to
	// DefaultEventTopic.
	TopicFunc func(eventType string) string

	// Middleware runs around every handler, inside the standard middleware
	// (tracing, logging, correlation, validation), first element outermost.
	// Defaults to none.
	Middleware []Middleware

	// Logger receives a debug line per event and a warning per failure.
	// Defaults to no logging.
	Logger *slog.Logger

	// TracerProvider starts a span per event. Defaults to the global
	// TracerProvider (otel.GetTracerProvider).
	TracerProvider trace.TracerProvider
}

// NewEventProcessor returns a processor that adds its handlers to r. It
// fails with an error naming every invalid field of cfg.
func NewEventProcessor(r *message.Router, cfg EventProcessorConfig) (*EventProcessor, error) {
	errs := []error{cfg.validate("EventProcessorConfig")}
	if r == nil {
		errs = append(errs, errors.New("cqrs: NewEventProcessor: router is nil"))
	}
	if cfg.Schemas == nil {
		errs = append(errs, errors.New("cqrs: EventProcessorConfig.Schemas: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.TopicFunc == nil {
		cfg.TopicFunc = DefaultEventTopic
	}
	p := &EventProcessor{router: r, cfg: cfg.ProcessorConfig,
		chain: chainConfig{schemas: cfg.Schemas, logger: cfg.Logger, tp: cfg.TracerProvider, extra: cfg.Middleware}}
	p.cfg.Stack.Schemas = cfg.Schemas
	if cfg.Stack.Schemas != nil {
		p.cfg.Stack.Schemas = cfg.Stack.Schemas
	}
	p.topicFunc = cfg.TopicFunc
	return p, nil
}

// HandleEvent adds to the processor's router a handler named
// "<Consumer>/<name>" that runs h once for every event of type typ on its
// topic (EventProcessorConfig.TopicFunc), in the transaction that records
// the event in the inbox of consumer "<Consumer>/<name>". Events of other
// types on the topic are acked and skipped, after middleware.Standard has
// validated them: the registry must know their types too (or allow unknown
// types), else they are dead-lettered. Several handlers may take one event
// type, each under its own name. A name already in use fails with
// ErrDuplicateHandler; a type without schema with ErrUnknownEvent. A
// handler added while the router runs starts with Router.RunHandlers.
func HandleEvent[E any](p *EventProcessor, name, typ string, h EventHandlerFunc[E]) error {
	if h == nil || name == "" {
		return fmt.Errorf("cqrs: HandleEvent %q: name and handler are required", typ)
	}
	if err := checkType(p.chain.schemas, KindEvent, typ, ErrUnknownEvent); err != nil {
		return err
	}
	chained := p.chain.chain(func(ctx context.Context, m *Message) (any, error) {
		tx, ok := messaging.TxFromContext(ctx)
		if !ok {
			return nil, fmt.Errorf("cqrs: event %q: %w", typ, outbox.ErrNoTransaction)
		}
		ev, ok := m.Value.(E)
		if !ok {
			return nil, messaging.Permanent(fmt.Errorf("cqrs: event %q: value is %T, not %s", typ, m.Value, reflect.TypeFor[E]()))
		}
		return nil, h(ctx, tx, ev)
	})
	full := p.cfg.Consumer + "/" + name
	return p.cfg.addHandler(p.router, full, p.topicFunc(typ), full, p.chain.schemas,
		func(t string) bool { return t == typ },
		func(ctx context.Context, env messaging.Envelope) error {
			var ev E
			if err := json.Unmarshal(env.Data, &ev); err != nil {
				return messaging.Permanent(fmt.Errorf("cqrs: event %q (id %s): decode: %w", typ, env.ID, err))
			}
			_, err := chained(ctx, &Message{Kind: KindEvent, Envelope: env, Value: ev})
			return err
		})
}
