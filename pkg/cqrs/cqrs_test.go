package cqrs_test

import (
	"context"
	"errors"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/cqrs"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

// The message types of the tests and their schemas.
const (
	createInvoiceType  = "test.invoice.create"
	invoiceCreatedType = "test.invoice.created"
	getInvoiceType     = "test.invoice.get"
)

// createInvoice is a command.
type createInvoice struct {
	OrderID string `json:"order_id"`
	Amount  int    `json:"amount"`
}

// PartitionKey makes the order id the record key.
func (c createInvoice) PartitionKey() string { return c.OrderID }

// invoiceCreated is the event its handler emits.
type invoiceCreated struct {
	OrderID string `json:"order_id"`
}

// getInvoice is a query; invoice its result.
type getInvoice struct {
	OrderID string `json:"order_id"`
}

type invoice struct {
	OrderID string
	Amount  int
}

var testSchemas = fstest.MapFS{
	createInvoiceType + ".v1.json": {Data: []byte(`{
		"type": "object", "required": ["order_id", "amount"], "additionalProperties": false,
		"properties": {"order_id": {"type": "string", "minLength": 1}, "amount": {"type": "integer", "minimum": 1}}}`)},
	invoiceCreatedType + ".v1.json": {Data: []byte(`{
		"type": "object", "required": ["order_id"],
		"properties": {"order_id": {"type": "string", "minLength": 1}}}`)},
	getInvoiceType + ".v1.json": {Data: []byte(`{
		"type": "object", "required": ["order_id"],
		"properties": {"order_id": {"type": "string", "minLength": 1}}}`)},
}

func newRegistry(t testing.TB) *messaging.SchemaRegistry {
	t.Helper()
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: testSchemas})
	require.NoError(t, err)
	return reg
}

// fixture is a schema with dtx's tables and an invoices table, an outbox,
// and a command bus whose handler of createInvoice inserts an invoice and
// publishes invoiceCreated.
type fixture struct {
	schema   *pgtest.Schema
	pool     *pgxpool.Pool
	reg      *messaging.SchemaRegistry
	ob       *outbox.Outbox
	commands *cqrs.CommandBus
	events   *cqrs.EventBus
	// handled counts the runs of the createInvoice handler.
	handled int
}

func setup(t testing.TB) *fixture {
	t.Helper()
	s := pgtest.NewSchema(t)
	_, err := s.Pool.Exec(t.Context(), "CREATE TABLE invoices (order_id text PRIMARY KEY, amount int NOT NULL)")
	require.NoError(t, err)
	f := &fixture{schema: s, pool: s.Pool, reg: newRegistry(t)}
	f.ob, err = outbox.New(outbox.Config{Schema: s.Name, Registry: f.reg})
	require.NoError(t, err)
	f.events, err = cqrs.NewEventBus(cqrs.EventBusConfig{Source: "/test/billing", Schemas: f.reg, Outbox: f.ob})
	require.NoError(t, err)
	require.NoError(t, cqrs.RegisterEvent[invoiceCreated](f.events, invoiceCreatedType))
	f.commands = f.newCommandBus(t, nil)
	require.NoError(t, cqrs.HandleCommand(f.commands, createInvoiceType, f.createInvoice))
	return f
}

func (f *fixture) newCommandBus(t testing.TB, topic func(string) string) *cqrs.CommandBus {
	t.Helper()
	bus, err := cqrs.NewCommandBus(cqrs.CommandBusConfig{
		Source: "/test/billing", Schemas: f.reg, Pool: f.pool, Outbox: f.ob, TopicFunc: topic,
	})
	require.NoError(t, err)
	return bus
}

// createInvoice is the command handler: an effect and an event, both in tx.
func (f *fixture) createInvoice(ctx context.Context, tx pgx.Tx, c createInvoice) error {
	f.handled++
	if _, err := tx.Exec(ctx, "INSERT INTO invoices (order_id, amount) VALUES ($1, $2)", c.OrderID, c.Amount); err != nil {
		return err
	}
	return cqrs.Publish(ctx, f.events, invoiceCreated{OrderID: c.OrderID})
}

func (f *fixture) count(t testing.TB, table string) int {
	t.Helper()
	var n int
	require.NoError(t, f.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n))
	return n
}

// outboxRow is a row of the outbox table.
type outboxRow struct {
	Topic   string
	Key     *string
	Headers map[string]string
	Payload []byte
}

func (f *fixture) outboxRows(t testing.TB) []outboxRow {
	t.Helper()
	rs, err := f.pool.Query(t.Context(), "SELECT topic, key, headers, payload FROM outbox ORDER BY tx_id, position")
	require.NoError(t, err)
	rows, err := pgx.CollectRows(rs, pgx.RowToStructByPos[outboxRow])
	require.NoError(t, err)
	return rows
}

func TestHandleCommandTwiceFails(t *testing.T) {
	t.Parallel()
	f := setup(t)
	err := cqrs.HandleCommand(f.commands, createInvoiceType, func(context.Context, pgx.Tx, createInvoice) error { return nil })
	require.ErrorIs(t, err, cqrs.ErrDuplicateHandler)
	require.ErrorContains(t, err, createInvoiceType)

	// Another Go type for the same command type, or the same Go type under
	// another command type, is refused too.
	type other struct{}
	bus := f.newCommandBus(t, nil)
	require.NoError(t, cqrs.RegisterCommand[createInvoice](bus, createInvoiceType))
	require.NoError(t, cqrs.RegisterCommand[createInvoice](bus, createInvoiceType), "the same pair again")
	require.ErrorIs(t, cqrs.RegisterCommand[other](bus, createInvoiceType), cqrs.ErrDuplicateHandler)
	require.ErrorIs(t, cqrs.RegisterCommand[createInvoice](bus, getInvoiceType), cqrs.ErrDuplicateHandler)

	// The first handler stays in force.
	require.NoError(t, cqrs.Dispatch(t.Context(), f.commands, createInvoice{OrderID: "o-1", Amount: 5}))
	require.Equal(t, 1, f.handled)
}

func TestUnknownCommand(t *testing.T) {
	t.Parallel()
	f := setup(t)
	type refund struct{ OrderID string }

	err := cqrs.Dispatch(t.Context(), f.commands, refund{OrderID: "o-1"})
	require.ErrorIs(t, err, cqrs.ErrUnknownCommand)
	require.ErrorContains(t, err, "refund")

	err = cqrs.Send(t.Context(), f.commands, refund{OrderID: "o-1"})
	require.ErrorIs(t, err, cqrs.ErrUnknownCommand)
	require.ErrorContains(t, err, "refund")

	// A command type without schema cannot be registered.
	err = cqrs.HandleCommand(f.commands, "test.invoice.refund", func(context.Context, pgx.Tx, refund) error { return nil })
	require.ErrorIs(t, err, cqrs.ErrUnknownCommand)
	require.ErrorContains(t, err, `"test.invoice.refund"`)

	// Registered for Send only: Dispatch has no handler to run.
	require.NoError(t, cqrs.RegisterCommand[getInvoice](f.commands, getInvoiceType))
	require.ErrorIs(t, cqrs.Dispatch(t.Context(), f.commands, getInvoice{OrderID: "o-1"}), cqrs.ErrUnknownCommand)
	require.Zero(t, f.count(t, "outbox"))
}

func TestCommandSchemaViolation(t *testing.T) {
	t.Parallel()
	f := setup(t)
	bad := createInvoice{OrderID: "o-1", Amount: 0} // minimum 1

	err := cqrs.Dispatch(t.Context(), f.commands, bad)
	require.ErrorIs(t, err, messaging.ErrSchemaViolation)
	require.True(t, messaging.IsPermanent(err))
	require.ErrorContains(t, err, createInvoiceType)
	require.ErrorContains(t, err, "/amount")
	require.Zero(t, f.handled, "the handler does not run")

	err = cqrs.Send(t.Context(), f.commands, bad)
	require.ErrorIs(t, err, messaging.ErrSchemaViolation)
	require.Zero(t, f.count(t, "outbox"), "nothing is sent")
	require.Zero(t, f.count(t, "invoices"))
}

// Dispatch runs the handler in the caller's transaction: its effect and the
// event it publishes commit, or roll back, with the caller's own writes.
func TestDispatchInCallersTransaction(t *testing.T) {
	t.Parallel()
	f := setup(t)

	tx := pgtest.Tx(t, f.pool)
	ctx := middleware.WithCorrelationID(inbox.ContextWithTx(t.Context(), tx), "corr-1")
	require.NoError(t, cqrs.Dispatch(ctx, f.commands, createInvoice{OrderID: "o-1", Amount: 5}))
	require.NoError(t, tx.Rollback(t.Context()))
	require.Zero(t, f.count(t, "invoices"))
	require.Zero(t, f.count(t, "outbox"))

	tx = pgtest.Tx(t, f.pool)
	ctx = middleware.WithCorrelationID(inbox.ContextWithTx(t.Context(), tx), "corr-1")
	require.NoError(t, cqrs.Dispatch(ctx, f.commands, createInvoice{OrderID: "o-1", Amount: 5}))
	require.NoError(t, tx.Commit(t.Context()))
	require.Equal(t, 1, f.count(t, "invoices"))
	rows := f.outboxRows(t)
	require.Len(t, rows, 1)
	require.Equal(t, "test.events", rows[0].Topic)
	require.Equal(t, invoiceCreatedType, rows[0].Headers[messaging.HeaderType])
	require.Equal(t, "corr-1", rows[0].Headers[messaging.HeaderCorrelationID], "the caller's correlation id")
	require.NotEmpty(t, rows[0].Headers[messaging.HeaderCausationID], "the command caused the event")
	require.NotEqual(t, rows[0].Headers[messaging.HeaderID], rows[0].Headers[messaging.HeaderCausationID])

	// A failing handler's effects are rolled back with its transaction, and
	// without a transaction in ctx the bus begins one on its pool.
	boom := errors.New("boom")
	failing := f.newCommandBus(t, nil)
	require.NoError(t, cqrs.HandleCommand(failing, createInvoiceType, func(ctx context.Context, tx pgx.Tx, c createInvoice) error {
		if err := f.createInvoice(ctx, tx, c); err != nil {
			return err
		}
		return boom
	}))
	require.ErrorIs(t, cqrs.Dispatch(t.Context(), failing, createInvoice{OrderID: "o-2", Amount: 5}), boom)
	require.Equal(t, 1, f.count(t, "invoices"))
	require.Len(t, f.outboxRows(t), 1)

	require.NoError(t, cqrs.Dispatch(t.Context(), f.commands, createInvoice{OrderID: "o-3", Amount: 5}))
	require.Equal(t, 2, f.count(t, "invoices"))
}

func TestPublishNeedsTransaction(t *testing.T) {
	t.Parallel()
	f := setup(t)
	err := cqrs.Publish(t.Context(), f.events, invoiceCreated{OrderID: "o-1"})
	require.ErrorIs(t, err, outbox.ErrNoTransaction)
	type unregistered struct{}
	tx := pgtest.Tx(t, f.pool)
	err = cqrs.Publish(inbox.ContextWithTx(t.Context(), tx), f.events, unregistered{})
	require.ErrorIs(t, err, cqrs.ErrUnknownEvent)
	err = cqrs.Publish(inbox.ContextWithTx(t.Context(), tx), f.events, invoiceCreated{})
	require.ErrorIs(t, err, messaging.ErrSchemaViolation)
}

func TestQuery(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, err := f.pool.Exec(t.Context(), "INSERT INTO invoices VALUES ('o-1', 42)")
	require.NoError(t, err)

	qb, err := cqrs.NewQueryBus(cqrs.QueryBusConfig{Schemas: f.reg, Pool: f.pool})
	require.NoError(t, err)
	require.NoError(t, cqrs.HandleQuery(qb, getInvoiceType, func(ctx context.Context, q getInvoice) (invoice, error) {
		tx, _ := inbox.TxFromContext(ctx)
		inv := invoice{OrderID: q.OrderID}
		err := tx.QueryRow(ctx, "SELECT amount FROM invoices WHERE order_id = $1", q.OrderID).Scan(&inv.Amount)
		return inv, err
	}))
	err = cqrs.HandleQuery(qb, getInvoiceType, func(context.Context, getInvoice) (int, error) { return 0, nil })
	require.ErrorIs(t, err, cqrs.ErrDuplicateHandler)

	inv, err := cqrs.Query[getInvoice, invoice](t.Context(), qb, getInvoice{OrderID: "o-1"})
	require.NoError(t, err)
	require.Equal(t, invoice{OrderID: "o-1", Amount: 42}, inv)

	_, err = cqrs.Query[getInvoice, int](t.Context(), qb, getInvoice{OrderID: "o-1"})
	require.ErrorContains(t, err, "not int", "a result of another type is an error")

	_, err = cqrs.Query[createInvoice, invoice](t.Context(), qb, createInvoice{})
	require.ErrorIs(t, err, cqrs.ErrUnknownQuery)

	_, err = cqrs.Query[getInvoice, invoice](t.Context(), qb, getInvoice{})
	require.ErrorIs(t, err, messaging.ErrSchemaViolation)
}

// A query has no side effects: on its own it runs read-only, and in the
// caller's transaction its writes are undone.
func TestQueryCannotWrite(t *testing.T) {
	t.Parallel()
	f := setup(t)
	qb, err := cqrs.NewQueryBus(cqrs.QueryBusConfig{Pool: f.pool})
	require.NoError(t, err)
	require.NoError(t, cqrs.HandleQuery(qb, getInvoiceType, func(ctx context.Context, q getInvoice) (bool, error) {
		tx, _ := inbox.TxFromContext(ctx)
		_, err := tx.Exec(ctx, "INSERT INTO invoices VALUES ($1, 1)", q.OrderID)
		return err == nil, nil
	}))

	wrote, err := cqrs.Query[getInvoice, bool](t.Context(), qb, getInvoice{OrderID: "o-1"})
	require.NoError(t, err)
	require.False(t, wrote, "a read-only transaction refuses the write")

	tx := pgtest.Tx(t, f.pool)
	wrote, err = cqrs.Query[getInvoice, bool](inbox.ContextWithTx(t.Context(), tx), qb, getInvoice{OrderID: "o-2"})
	require.NoError(t, err)
	require.True(t, wrote)
	require.NoError(t, tx.Commit(t.Context()), "the caller's transaction is still usable")
	require.Zero(t, f.count(t, "invoices"), "the savepoint was rolled back")
}
