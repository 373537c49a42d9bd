package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/migrate"
)

// DefaultExampleSchema holds the example services' own tables.
const DefaultExampleSchema = "example_o2c"

// SoldOutSKU is seeded with nothing on hand: every order with it is refused.
const SoldOutSKU = "SOLD-OUT"

// catalog is what the inventory is seeded with and what orders are made of:
// a handful of SKUs with plenty on hand, and SoldOutSKU with none.
var catalog = []struct {
	SKU       string
	UnitPrice int64
	OnHand    int64
}{
	{"BOOK-0001", 1999, 50_000_000},
	{"PEN-0007", 350, 50_000_000},
	{"MUG-0042", 1200, 50_000_000},
	{"LAMP-0100", 4599, 50_000_000},
	{"DESK-0200", 24900, 50_000_000},
	{SoldOutSKU, 999, 0},
}

// ddl creates the example's tables; every statement is idempotent. %[1]s is
// the quoted schema name.
const ddl = `
CREATE SCHEMA IF NOT EXISTS %[1]s;
CREATE TABLE IF NOT EXISTS %[1]s.stock (
    sku      text PRIMARY KEY,
    on_hand  bigint NOT NULL CHECK (on_hand >= 0),
    reserved bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand)
);
CREATE TABLE IF NOT EXISTS %[1]s.reservations (
    order_id       text   NOT NULL,
    reservation_id text   NOT NULL,
    sku            text   NOT NULL REFERENCES %[1]s.stock (sku),
    quantity       bigint NOT NULL CHECK (quantity > 0),
    status         text   NOT NULL CHECK (status IN ('reserved', 'released')),
    PRIMARY KEY (order_id, sku)
);
CREATE TABLE IF NOT EXISTS %[1]s.payments (
    order_id    text PRIMARY KEY,
    payment_id  text   NOT NULL UNIQUE,
    amount      bigint NOT NULL,
    currency    text   NOT NULL,
    status      text   NOT NULL CHECK (status IN ('charged', 'refunded')),
    charged_at  timestamptz NOT NULL DEFAULT now(),
    refunded_at timestamptz
);
CREATE TABLE IF NOT EXISTS %[1]s.shipments (
    order_id     text PRIMARY KEY,
    shipment_id  text NOT NULL UNIQUE,
    status       text NOT NULL CHECK (status IN ('scheduled', 'cancelled')),
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz
);
CREATE TABLE IF NOT EXISTS %[1]s.orders (
    order_id     text PRIMARY KEY,
    run_id       text   NOT NULL,
    customer_id  text   NOT NULL,
    total_amount bigint NOT NULL,
    currency     text   NOT NULL,
    scenario     text   NOT NULL,
    status       text   NOT NULL CHECK (status IN ('placed', 'confirmed')),
    placed_at    timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz
);
CREATE INDEX IF NOT EXISTS orders_run_idx ON %[1]s.orders (run_id, placed_at);
CREATE TABLE IF NOT EXISTS %[1]s.order_lines (
    order_id   text   NOT NULL REFERENCES %[1]s.orders (order_id),
    line_no    int    NOT NULL,
    sku        text   NOT NULL,
    quantity   bigint NOT NULL,
    unit_price bigint NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE IF NOT EXISTS %[1]s.ledger (
    service text NOT NULL,
    saga_id text NOT NULL,
    step    text NOT NULL,
    phase   text NOT NULL,
    effect  text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_once UNIQUE (service, saga_id, step, phase)
);
`

// store names the example's tables in one schema.
type store struct {
	// s is the quoted schema name, safe to splice into SQL.
	s string
}

func newStore(schema string) (store, error) {
	if err := migrate.ValidateSchemaName(schema); err != nil {
		return store{}, fmt.Errorf("example schema: %w", err)
	}
	return store{s: pgx.Identifier{schema}.Sanitize()}, nil
}

// sql returns query with every "{s}" replaced by the schema.
func (st store) sql(query string) string { return strings.ReplaceAll(query, "{s}", st.s) }

// setup creates the schema and its tables if they do not exist and seeds the
// stock if it is empty. Concurrent callers are serialised by an advisory lock.
func (st store) setup(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('dtx example order-to-cash setup', 0))`); err != nil {
			return fmt.Errorf("lock the example's setup: %w", err)
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(ddl, st.s)); err != nil {
			return fmt.Errorf("create the example's tables: %w", err)
		}
		for _, c := range catalog {
			if _, err := tx.Exec(ctx, st.sql(`INSERT INTO {s}.stock (sku, on_hand) VALUES ($1, $2) ON CONFLICT (sku) DO NOTHING`),
				c.SKU, c.OnHand); err != nil {
				return fmt.Errorf("seed the stock: %w", err)
			}
		}
		return nil
	})
}

// ledger records, in tx, that service applied phase of step of saga: each
// step's effect happens once, which the unique constraint enforces too.
func (st store) ledger(ctx context.Context, tx pgx.Tx, service, sagaID, step, phase, effect string) error {
	if _, err := tx.Exec(ctx, st.sql(`INSERT INTO {s}.ledger (service, saga_id, step, phase, effect) VALUES ($1, $2, $3, $4, $5)`),
		service, sagaID, step, phase, effect); err != nil {
		return fmt.Errorf("ledger %s %s/%s/%s: %w", service, sagaID, step, phase, err)
	}
	return nil
}
