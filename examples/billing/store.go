package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// setupSQL creates the service's own tables; {{schema}} is its schema.
// dtx's tables (outbox, idempotency keys, saga barrier) live in dtx's schema
// and come from dtx's migrations (billing --migrate, or dtxctl migrate up).
const setupSQL = `
CREATE SCHEMA IF NOT EXISTS {{schema}};

-- What the API recorded, and where the saga has got to.
CREATE TABLE IF NOT EXISTS {{schema}}.invoices (
    id           text PRIMARY KEY,
    customer_id  text NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    currency     text NOT NULL,
    status       text NOT NULL DEFAULT 'requested',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The credit participant's effects.
CREATE TABLE IF NOT EXISTS {{schema}}.credit_reservations (
    invoice_id     text PRIMARY KEY,
    reservation_id text NOT NULL UNIQUE,
    customer_id    text NOT NULL,
    amount_cents   bigint NOT NULL,
    reserved_at    timestamptz NOT NULL DEFAULT now(),
    released_at    timestamptz
);

-- The invoicing participant's effects.
CREATE TABLE IF NOT EXISTS {{schema}}.issued_invoices (
    invoice_id     text PRIMARY KEY,
    invoice_number bigserial UNIQUE,
    issued_at      timestamptz NOT NULL DEFAULT now(),
    voided_at      timestamptz
);

-- Saga lifecycle events seen downstream, once per consumer and message.
CREATE TABLE IF NOT EXISTS {{schema}}.saga_events (
    consumer   text NOT NULL,
    message_id text NOT NULL,
    saga_id    text NOT NULL,
    type       text NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS saga_events_saga ON {{schema}}.saga_events (saga_id);
`

// store reads and writes the service's tables in its schema.
type store struct {
	schema string // quoted identifier
}

func newStore(schema string) store {
	return store{schema: pgx.Identifier{schema}.Sanitize()}
}

func (s store) sql(q string) string { return strings.ReplaceAll(q, "{{schema}}", s.schema) }

// setup creates the tables if they do not exist. Two replicas starting at
// once are serialised by an advisory lock.
func (s store) setup(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('billing setup ' || $1))", s.schema); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, s.sql(setupSQL)); err != nil {
			return fmt.Errorf("create the billing tables in schema %s: %w", s.schema, err)
		}
		return nil
	})
}

func (s store) insertInvoice(ctx context.Context, tx pgx.Tx, inv invoice) error {
	_, err := tx.Exec(ctx, s.sql(`INSERT INTO {{schema}}.invoices (id, customer_id, amount_cents, currency) VALUES ($1, $2, $3, $4)`),
		inv.ID, inv.CustomerID, inv.AmountCents, inv.Currency)
	return err
}

// setStatus moves an invoice to status.
func (s store) setStatus(ctx context.Context, tx pgx.Tx, id, status string) error {
	_, err := tx.Exec(ctx, s.sql(`UPDATE {{schema}}.invoices SET status = $2, updated_at = now() WHERE id = $1`), id, status)
	return err
}

// execer is what runs a statement: a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// recordEvent records that consumer saw a lifecycle event; it reports
// false for one it had seen already (a redelivery).
func (s store) recordEvent(ctx context.Context, q execer, consumer, messageID, sagaID, typ string) (bool, error) {
	tag, err := q.Exec(ctx, s.sql(`INSERT INTO {{schema}}.saga_events (consumer, message_id, saga_id, type)
		VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`), consumer, messageID, sagaID, typ)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// invoiceView is what GET /invoices/{id} answers.
type invoiceView struct {
	invoice
	Status        string              `json:"status"`
	InvoiceNumber *int64              `json:"invoice_number,omitempty"`
	CreditHeld    bool                `json:"credit_held"`
	SagaEvents    map[string][]string `json:"saga_events"`
}

// view reads an invoice, its effects and the lifecycle events each
// consumer saw of its saga, in the order they were recorded; ok is false
// when there is no such invoice.
func (s store) view(ctx context.Context, pool *pgxpool.Pool, id string) (v invoiceView, ok bool, err error) {
	err = pool.QueryRow(ctx, s.sql(`
		SELECT i.id, i.customer_id, i.amount_cents, i.currency, i.status, n.invoice_number,
		       c.invoice_id IS NOT NULL AND c.released_at IS NULL
		FROM {{schema}}.invoices i
		LEFT JOIN {{schema}}.issued_invoices n ON n.invoice_id = i.id AND n.voided_at IS NULL
		LEFT JOIN {{schema}}.credit_reservations c ON c.invoice_id = i.id
		WHERE i.id = $1`), id).Scan(&v.ID, &v.CustomerID, &v.AmountCents, &v.Currency, &v.Status, &v.InvoiceNumber, &v.CreditHeld)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, false, nil
	}
	if err != nil {
		return v, false, err
	}
	rows, err := pool.Query(ctx, s.sql(`SELECT consumer, type FROM {{schema}}.saga_events WHERE saga_id = $1 ORDER BY seen_at, type`), id)
	if err != nil {
		return v, false, err
	}
	v.SagaEvents = map[string][]string{}
	var consumer, typ string
	_, err = pgx.ForEachRow(rows, []any{&consumer, &typ}, func() error {
		v.SagaEvents[consumer] = append(v.SagaEvents[consumer], typ)
		return nil
	})
	return v, err == nil, err
}
