package cqrs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/internal/pgtx"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

// CommandHandlerFunc handles a command of Go type C in tx, the transaction
// its effect must go through; ctx carries tx too (messaging.TxFromContext), so
// events published with the same ctx (Publish) commit with the effect, and
// the command's Origin (middleware.OriginFromContext), so they record the
// command as their cause. A returned error rolls tx back; mark it with
// messaging.Permanent when retrying cannot help.
type CommandHandlerFunc[C any] func(ctx context.Context, tx pgx.Tx, cmd C) error

// CommandBusConfig configures a CommandBus.
type CommandBusConfig struct {
	// Source is the CloudEvents source of the commands the bus builds, a URI
	// reference such as "/billing/api". Required.
	Source string

	// Schemas validates every command against the JSON Schema of its type
	// (version 1) before it is handled or sent; registering a type it holds
	// no schema for fails, unless it allows unknown types. Required.
	Schemas *messaging.SchemaRegistry

	// Pool runs a Dispatch, or a Send, whose context carries no transaction
	// in a transaction of its own, committed when the handler (or the outbox
	// write) succeeds. Defaults to nil: such a call fails with
	// outbox.ErrNoTransaction.
	Pool *pgxpool.Pool

	// Outbox writes the commands of Send. Defaults to nil: Send fails.
	Outbox *outbox.Outbox

	// TopicFunc gives the Kafka topic of a command type, for Send and for
	// the CommandProcessor. Defaults to DefaultCommandTopic
	// ("<first segment>.commands").
	TopicFunc func(commandType string) string

	// Middleware runs around every handler and every Send, inside the
	// standard middleware (tracing, logging, correlation, validation), first
	// element outermost. Defaults to none.
	Middleware []Middleware

	// Logger receives a debug line per command and a warning per failure.
	// Defaults to no logging.
	Logger *slog.Logger

	// TracerProvider starts a span per command. Defaults to the global
	// TracerProvider (otel.GetTracerProvider).
	TracerProvider trace.TracerProvider
}

func (c *CommandBusConfig) validate() error {
	var errs []error
	if c.Source == "" {
		errs = append(errs, errors.New("cqrs: CommandBusConfig.Source: required"))
	} else if _, err := messaging.NewEnvelope("cqrs.check", c.Source, nil); err != nil {
		errs = append(errs, fmt.Errorf("cqrs: CommandBusConfig.Source: %w", err))
	}
	if c.Schemas == nil {
		errs = append(errs, errors.New("cqrs: CommandBusConfig.Schemas: required"))
	}
	return errors.Join(errs...)
}

// CommandBus dispatches commands to their one handler, in process
// (Dispatch) or through the outbox to a CommandProcessor (Send). Register
// handlers with HandleCommand and commands handled elsewhere with
// RegisterCommand. It is safe for concurrent use.
type CommandBus struct {
	cfg   CommandBusConfig
	chain chainConfig
	names names

	mu       sync.RWMutex
	handlers map[string]HandlerFunc // by command type: the chained handler
	decoders map[string]func(data []byte) (any, error)
}

// NewCommandBus returns a CommandBus configured by cfg. It fails with an
// error naming every invalid field; it does not touch the database.
func NewCommandBus(cfg CommandBusConfig) (*CommandBus, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.TopicFunc == nil {
		cfg.TopicFunc = DefaultCommandTopic
	}
	return &CommandBus{
		cfg:      cfg,
		chain:    chainConfig{schemas: cfg.Schemas, logger: cfg.Logger, tp: cfg.TracerProvider, extra: cfg.Middleware},
		names:    newNames(),
		handlers: make(map[string]HandlerFunc),
		decoders: make(map[string]func([]byte) (any, error)),
	}, nil
}

// Topic returns the Kafka topic of commandType (Config.TopicFunc).
func (b *CommandBus) Topic(commandType string) string { return b.cfg.TopicFunc(commandType) }

// RegisterCommand names the Go type C as the command type typ, so that Send
// can send it to a service that handles it. It fails, naming typ, when typ
// has no schema (ErrUnknownCommand) or when C or typ is already bound to
// another type (ErrDuplicateHandler). Registering the same pair again does
// nothing.
func RegisterCommand[C any](b *CommandBus, typ string) error {
	if err := checkType(b.cfg.Schemas, KindCommand, typ, ErrUnknownCommand); err != nil {
		return err
	}
	return b.names.bind(KindCommand, reflect.TypeFor[C](), typ)
}

// HandleCommand makes h the handler of the command type typ, bound to the Go
// type C as RegisterCommand binds it. A command type has exactly one
// handler: a second registration of typ fails with ErrDuplicateHandler, and
// so does binding C or typ to another type; a type without schema fails
// with ErrUnknownCommand. Each error names the type.
func HandleCommand[C any](b *CommandBus, typ string, h CommandHandlerFunc[C]) error {
	if h == nil {
		return fmt.Errorf("cqrs: HandleCommand %q: handler is nil", typ)
	}
	if err := checkType(b.cfg.Schemas, KindCommand, typ, ErrUnknownCommand); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.handlers[typ]; ok {
		return fmt.Errorf("%w: command %q already has a handler", ErrDuplicateHandler, typ)
	}
	if err := b.names.bind(KindCommand, reflect.TypeFor[C](), typ); err != nil {
		return err
	}
	raw := func(ctx context.Context, tx pgx.Tx, m *Message) error {
		cmd, ok := m.Value.(C)
		if !ok {
			return messaging.Permanent(fmt.Errorf("cqrs: command %q: value is %T, not %s", typ, m.Value, reflect.TypeFor[C]()))
		}
		return h(ctx, tx, cmd)
	}
	b.decoders[typ] = func(data []byte) (any, error) {
		var c C
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, err
		}
		return c, nil
	}
	b.handlers[typ] = b.chain.chain(func(ctx context.Context, m *Message) (any, error) {
		tx, ok := messaging.TxFromContext(ctx)
		if !ok {
			return nil, fmt.Errorf("cqrs: command %q: %w", typ, outbox.ErrNoTransaction)
		}
		return nil, raw(ctx, tx, m)
	})
	return nil
}

// CommandTypes returns the command types the bus has a handler for, sorted.
func (b *CommandBus) CommandTypes() []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	types := make([]string, 0, len(b.handlers))
	for t := range b.handlers {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}

// handler returns the chained handler of typ.
func (b *CommandBus) handler(typ string) (HandlerFunc, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	h, ok := b.handlers[typ]
	return h, ok
}

// decode turns the payload of a command of typ into its Go value.
func (b *CommandBus) decode(typ string, data []byte) (any, error) {
	b.mu.RLock()
	dec, ok := b.decoders[typ]
	b.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q: no handler registered", ErrUnknownCommand, typ)
	}
	return dec(data)
}

// Dispatch runs cmd's handler now, in the caller's goroutine: after the
// middleware (its envelope stamped with the Origin ctx carries and checked
// against its schema), in the transaction ctx carries (messaging.TxFromContext,
// e.g. set with messaging.ContextWithTx), so its effect commits or rolls back
// with the caller's. When ctx carries none, Dispatch begins one on
// Config.Pool and commits it when the handler succeeds (without Pool it
// fails with outbox.ErrNoTransaction).
//
// A command of a Go type without handler fails with ErrUnknownCommand; one
// that breaks its schema with messaging.ErrSchemaViolation, before the
// handler runs. The handler's error is returned as it is. After an error in
// the caller's transaction, roll it back.
func Dispatch[C any](ctx context.Context, b *CommandBus, cmd C) error {
	typ, ok := b.names.lookup(reflect.TypeFor[C]())
	var h HandlerFunc
	if ok {
		h, ok = b.handler(typ)
	}
	if !ok {
		return fmt.Errorf("%w: Go type %s: no handler registered (HandleCommand)", ErrUnknownCommand, reflect.TypeFor[C]())
	}
	m, err := newMessage(KindCommand, typ, b.cfg.Source, cmd)
	if err != nil {
		return err
	}
	return b.inTx(ctx, typ, func(ctx context.Context) error {
		_, err := h(ctx, m)
		return err
	})
}

// Send writes cmd to the outbox (Config.Outbox) in the transaction ctx
// carries, as a record of the topic Config.TopicFunc gives its type: it
// reaches Kafka if and only if that transaction commits, and the
// CommandProcessor of the service that handles it runs its handler once
// (the inbox deduplicates redeliveries). When ctx carries no transaction,
// Send writes in one of its own on Config.Pool and commits it.
//
// C must be registered (RegisterCommand or HandleCommand), else Send fails
// with ErrUnknownCommand. The command is validated against its schema
// before anything is written (messaging.ErrSchemaViolation).
func Send[C any](ctx context.Context, b *CommandBus, cmd C) error {
	typ, ok := b.names.lookup(reflect.TypeFor[C]())
	if !ok {
		return fmt.Errorf("%w: Go type %s: not registered (RegisterCommand)", ErrUnknownCommand, reflect.TypeFor[C]())
	}
	if b.cfg.Outbox == nil {
		return fmt.Errorf("cqrs: send %q: CommandBusConfig.Outbox is nil", typ)
	}
	m, err := newMessage(KindCommand, typ, b.cfg.Source, cmd)
	if err != nil {
		return err
	}
	topic := b.cfg.TopicFunc(typ)
	send := b.chain.chain(func(ctx context.Context, m *Message) (any, error) {
		tx, _ := messaging.TxFromContext(ctx)
		return nil, b.cfg.Outbox.WriteEnvelopes(ctx, tx, topic, m.Envelope)
	})
	return b.inTx(ctx, typ, func(ctx context.Context) error {
		_, err := send(ctx, m)
		return err
	})
}

// inTx runs f with the transaction ctx carries, or in one of its own on
// Config.Pool.
func (b *CommandBus) inTx(ctx context.Context, typ string, f func(context.Context) error) error {
	return withTx(ctx, b.cfg.Pool, pgx.TxOptions{}, string(KindCommand)+" "+typ, f)
}

// withTx runs f with the transaction ctx carries or, when it carries none, in
// one begun on pool with opts and committed when f succeeds (rolled back
// when opts are read-only).
func withTx(ctx context.Context, pool *pgxpool.Pool, opts pgx.TxOptions, what string, f func(context.Context) error) (err error) {
	if _, ok := messaging.TxFromContext(ctx); ok {
		return f(ctx)
	}
	if pool == nil {
		return fmt.Errorf("cqrs: %s: the context carries no transaction (messaging.ContextWithTx) and Config.Pool is nil: %w",
			what, outbox.ErrNoTransaction)
	}
	tx, err := pool.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("cqrs: %s: begin transaction: %w", what, err)
	}
	defer func() {
		if tx != nil {
			pgtx.Rollback(ctx, tx)
		}
	}()
	if err := f(messaging.ContextWithTx(ctx, tx)); err != nil {
		return err
	}
	if opts.AccessMode == pgx.ReadOnly {
		return nil // rolled back: a query has nothing to commit
	}
	t := tx
	tx = nil // whatever Commit returns, the transaction has ended
	if err := t.Commit(ctx); err != nil {
		return fmt.Errorf("cqrs: %s: commit: %w", what, err)
	}
	return nil
}
