package cqrs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/pkg/messaging"
)

// QueryHandlerFunc answers a query of Go type Q with a result of type R. It
// must have no side effects. With QueryBusConfig.Pool set, ctx carries the
// read-only transaction the query runs in (messaging.TxFromContext).
type QueryHandlerFunc[Q, R any] func(ctx context.Context, q Q) (R, error)

// QueryBusConfig configures a QueryBus.
type QueryBusConfig struct {
	// Source is the CloudEvents source of the queries' envelopes, seen by
	// middleware and logs. Defaults to "/cqrs/query".
	Source string

	// Schemas, if set, validates every query against the JSON Schema of its
	// type before its handler runs. Defaults to nil: queries are not
	// validated.
	Schemas *messaging.SchemaRegistry

	// Pool, if set, runs each query whose context carries no transaction in
	// a READ ONLY transaction on it, rolled back when the handler returns,
	// so that a handler cannot write. A query whose context carries a
	// transaction runs in a savepoint of it, rolled back too: it sees the
	// caller's uncommitted writes, and its own writes are undone. Defaults
	// to nil: a query is a function call, and having no side effects is the
	// handler's promise alone.
	Pool *pgxpool.Pool

	// Middleware runs around every handler, inside the standard middleware
	// (tracing, logging, correlation, validation), first element outermost.
	// Defaults to none.
	Middleware []Middleware

	// Logger receives a debug line per query and a warning per failure.
	// Defaults to no logging.
	Logger *slog.Logger

	// TracerProvider starts a span per query. Defaults to the global
	// TracerProvider (otel.GetTracerProvider).
	TracerProvider trace.TracerProvider
}

// QueryBus runs queries in process: each query type has one handler, and
// Query returns its typed result. It is safe for concurrent use.
type QueryBus struct {
	cfg   QueryBusConfig
	chain chainConfig
	names names

	mu       sync.RWMutex
	handlers map[string]HandlerFunc
}

// NewQueryBus returns a QueryBus configured by cfg; it fails when Source is
// not a valid URI reference.
func NewQueryBus(cfg QueryBusConfig) (*QueryBus, error) {
	if cfg.Source == "" {
		cfg.Source = "/cqrs/query"
	}
	if _, err := messaging.NewEnvelope("cqrs.check", cfg.Source, nil); err != nil {
		return nil, fmt.Errorf("cqrs: QueryBusConfig.Source: %w", err)
	}
	return &QueryBus{
		cfg:      cfg,
		chain:    chainConfig{schemas: cfg.Schemas, logger: cfg.Logger, tp: cfg.TracerProvider, extra: cfg.Middleware},
		names:    newNames(),
		handlers: make(map[string]HandlerFunc),
	}, nil
}

// HandleQuery makes h the handler of the query type typ, bound to the Go
// type Q. A query type has exactly one handler: a second registration fails
// with ErrDuplicateHandler, naming the type, and so does binding Q or typ to
// another type.
func HandleQuery[Q, R any](b *QueryBus, typ string, h QueryHandlerFunc[Q, R]) error {
	if h == nil {
		return fmt.Errorf("cqrs: HandleQuery %q: handler is nil", typ)
	}
	if err := checkType(b.cfg.Schemas, KindQuery, typ, ErrUnknownQuery); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.handlers[typ]; ok {
		return fmt.Errorf("%w: query %q already has a handler", ErrDuplicateHandler, typ)
	}
	if err := b.names.bind(KindQuery, reflect.TypeFor[Q](), typ); err != nil {
		return err
	}
	b.handlers[typ] = b.chain.chain(func(ctx context.Context, m *Message) (any, error) {
		q, ok := m.Value.(Q)
		if !ok {
			return nil, fmt.Errorf("cqrs: query %q: value is %T, not %s", typ, m.Value, reflect.TypeFor[Q]())
		}
		return h(ctx, q)
	})
	return nil
}

// Query runs the handler of q's type and returns its result: in a read-only
// transaction, or a savepoint rolled back, when the bus has a Pool (see
// QueryBusConfig.Pool). A Go type without handler fails with
// ErrUnknownQuery; a handler whose result is not an R fails naming both
// types.
func Query[Q, R any](ctx context.Context, b *QueryBus, q Q) (R, error) {
	var zero R
	typ, ok := b.names.lookup(reflect.TypeFor[Q]())
	var h HandlerFunc
	if ok {
		b.mu.RLock()
		h, ok = b.handlers[typ]
		b.mu.RUnlock()
	}
	if !ok {
		return zero, fmt.Errorf("%w: Go type %s: no handler registered (HandleQuery)", ErrUnknownQuery, reflect.TypeFor[Q]())
	}
	m, err := newMessage(KindQuery, typ, b.cfg.Source, q)
	if err != nil {
		return zero, err
	}
	var res any
	run := func(ctx context.Context) error {
		var err error
		res, err = h(ctx, m)
		return err
	}
	if b.cfg.Pool == nil {
		err = run(ctx)
	} else if tx, ok := messaging.TxFromContext(ctx); ok {
		err = inSavepoint(ctx, tx, typ, run)
	} else {
		err = withTx(ctx, b.cfg.Pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, string(KindQuery)+" "+typ, run)
	}
	if err != nil {
		return zero, err
	}
	if res == nil {
		return zero, nil
	}
	r, ok := res.(R)
	if !ok {
		return zero, fmt.Errorf("cqrs: query %q: result is %T, not %s", typ, res, reflect.TypeFor[R]())
	}
	return r, nil
}

// inSavepoint runs f in a savepoint of tx that is rolled back afterwards.
func inSavepoint(ctx context.Context, tx pgx.Tx, typ string, f func(context.Context) error) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("cqrs: query %q: savepoint: %w", typ, err)
	}
	err = f(messaging.ContextWithTx(ctx, sp))
	if rbErr := sp.Rollback(context.WithoutCancel(ctx)); rbErr != nil && !errors.Is(rbErr, pgx.ErrTxClosed) {
		err = errors.Join(err, fmt.Errorf("cqrs: query %q: roll back savepoint: %w", typ, rbErr))
	}
	return err
}
