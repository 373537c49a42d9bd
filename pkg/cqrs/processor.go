package cqrs

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/migrate"
)

// SubscriberFunc returns the subscriber of one router handler, named
// handlerName: with Kafka, a subscriber of its own consumer group, so that
// every handler receives every message of its topic.
type SubscriberFunc func(handlerName string) (message.Subscriber, error)

// ProcessorConfig configures a CommandProcessor or an EventProcessor.
type ProcessorConfig struct {
	// Pool runs each message's handler in a transaction that also records
	// the message id in the inbox. Required.
	Pool *pgxpool.Pool

	// Schema is the PostgreSQL schema of the inbox table. Defaults to
	// migrate.DefaultSchema ("dtx").
	Schema string

	// Consumer names the inbox consumer, and prefixes the router handler
	// names, e.g. "billing". Replicas of one service share it. Required.
	Consumer string

	// NewSubscriber returns the subscriber of each router handler.
	// Required.
	NewSubscriber SubscriberFunc

	// Stack configures the standard consumer middleware
	// (middleware.Standard: tracing, dead letters, retry, recovery,
	// correlation, decoding and validation) installed on every handler the
	// processor adds; do not add it to the router as well. Its
	// DeadLetterPublisher is required; its Schemas defaults to the bus's.
	Stack middleware.StackConfig
}

func (c *ProcessorConfig) validate(what string) error {
	var errs []error
	if c.Pool == nil {
		errs = append(errs, fmt.Errorf("cqrs: %s.Pool: required", what))
	}
	if c.Consumer == "" {
		errs = append(errs, fmt.Errorf("cqrs: %s.Consumer: required", what))
	}
	if c.NewSubscriber == nil {
		errs = append(errs, fmt.Errorf("cqrs: %s.NewSubscriber: required", what))
	}
	if c.Stack.DeadLetterPublisher == nil {
		errs = append(errs, fmt.Errorf("cqrs: %s.Stack.DeadLetterPublisher: required", what))
	}
	if c.Schema != "" {
		if err := migrate.ValidateSchemaName(c.Schema); err != nil {
			errs = append(errs, fmt.Errorf("cqrs: %s.Schema: %w", what, err))
		}
	}
	return errors.Join(errs...)
}

// addHandler adds a router handler of topic that runs h for each message in
// an inbox transaction of consumer, behind the standard middleware. A message
// whose type accept refuses is acked without touching the database.
func (c *ProcessorConfig) addHandler(r *message.Router, name, topic, consumer string, schemas *messaging.SchemaRegistry,
	accept func(typ string) bool, h func(ctx context.Context, env messaging.Envelope) error,
) error {
	if _, ok := r.Handlers()[name]; ok {
		return fmt.Errorf("%w: the router already has a handler %q", ErrDuplicateHandler, name)
	}
	stackCfg := c.Stack
	if stackCfg.Schemas == nil {
		stackCfg.Schemas = schemas
	}
	stack, err := middleware.Standard(stackCfg)
	if err != nil {
		return fmt.Errorf("cqrs: ProcessorConfig.Stack: %w", err)
	}
	ib, err := inbox.New(c.Pool, inbox.Config{Schema: c.Schema, Consumer: consumer})
	if err != nil {
		return fmt.Errorf("cqrs: handler %q: %w", name, err)
	}
	sub, err := c.NewSubscriber(name)
	if err != nil {
		return fmt.Errorf("cqrs: handler %q: subscriber: %w", name, err)
	}
	handle := ib.Handler(func(ctx context.Context, _ pgx.Tx, msg *message.Message) ([]*message.Message, error) {
		env, ok := middleware.EnvelopeFromContext(ctx)
		if !ok {
			var err error
			if env, err = messaging.Decode(msg); err != nil {
				return nil, messaging.Permanent(err)
			}
		}
		return nil, h(ctx, env)
	})
	r.AddConsumerHandler(name, topic, sub, func(msg *message.Message) error {
		if accept != nil && !accept(msg.Metadata.Get(messaging.HeaderType)) {
			return nil
		}
		_, err := handle(msg)
		return err
	}).AddMiddleware(stack...)
	return nil
}

// CommandProcessor handles the commands a CommandBus sent through the
// outbox: it adds to a Watermill router one handler per topic of the bus's
// command types, which runs each command's handler once (inbox) in the
// transaction that records it, behind the standard middleware and the bus's
// own.
type CommandProcessor struct {
	bus *CommandBus
	cfg ProcessorConfig
}

// NewCommandProcessor returns a processor of bus's commands. It fails with an
// error naming every invalid field of cfg.
func NewCommandProcessor(bus *CommandBus, cfg ProcessorConfig) (*CommandProcessor, error) {
	if bus == nil {
		return nil, errors.New("cqrs: NewCommandProcessor: bus is nil")
	}
	if err := cfg.validate("ProcessorConfig"); err != nil {
		return nil, err
	}
	return &CommandProcessor{bus: bus, cfg: cfg}, nil
}

// AddHandlersToRouter adds to r one handler, named "<Consumer>/<topic>", per
// topic of the command types the bus has handlers for (register them first).
// A command of a type without handler that arrives on such a topic fails
// with ErrUnknownCommand, marked permanent: it is dead-lettered. A command
// that breaks its schema is dead-lettered too, before the inbox records it.
// Any other error of a handler rolls its transaction back, and the message
// is retried or redelivered as middleware.Standard says; a redelivered
// command that committed before is skipped.
func (p *CommandProcessor) AddHandlersToRouter(r *message.Router) error {
	byTopic := make(map[string]bool)
	var topics []string
	for _, typ := range p.bus.CommandTypes() {
		t := p.bus.Topic(typ)
		if !byTopic[t] {
			byTopic[t] = true
			topics = append(topics, t)
		}
	}
	if len(topics) == 0 {
		return errors.New("cqrs: AddHandlersToRouter: the bus has no command handler (HandleCommand)")
	}
	for _, topic := range topics {
		name := p.cfg.Consumer + "/" + topic
		if err := p.cfg.addHandler(r, name, topic, p.cfg.Consumer, p.bus.cfg.Schemas, nil, p.handle); err != nil {
			return err
		}
	}
	return nil
}

// handle runs the handler of env's command type.
func (p *CommandProcessor) handle(ctx context.Context, env messaging.Envelope) error {
	h, ok := p.bus.handler(env.Type)
	if !ok {
		return messaging.Permanent(fmt.Errorf("%w: %q (id %s): no handler registered", ErrUnknownCommand, env.Type, env.ID))
	}
	v, err := p.bus.decode(env.Type, env.Data)
	if err != nil {
		return messaging.Permanent(fmt.Errorf("cqrs: command %q (id %s): decode: %w", env.Type, env.ID, err))
	}
	_, err = h(ctx, &Message{Kind: KindCommand, Envelope: env, Value: v})
	return err
}
