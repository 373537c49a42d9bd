package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

// Scenarios: what placing an order should lead to.
const (
	// ScenarioOK orders complete.
	ScenarioOK = "ok"
	// ScenarioSoldOut orders have a SoldOutSKU line: the reservation fails.
	ScenarioSoldOut = "sold-out"
	// ScenarioDeclined orders are paid by a "cus-declined..." customer: the
	// payment is declined and the stock released.
	ScenarioDeclined = "declined"
	// ScenarioUndeliverable orders ship to Antarctica: the shipment fails,
	// the payment is refunded and the stock released.
	ScenarioUndeliverable = "undeliverable"
)

// runRE is what a run id must match, so that order ids fit the schemas.
var runRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,39}$`)

// PlaceParams says which orders Place writes.
type PlaceParams struct {
	// Run names the run; order n is "ord-<Run>-<n>". Required; at most 40
	// letters, digits, '.', '_', ':' and '-'.
	Run string
	// Orders is how many orders to place; at least 1.
	Orders int
	// PerTx is how many orders one transaction commits; at least 1.
	PerTx int
	// SoldOutEvery, DeclineEvery and FailDeliveryEvery make every k-th
	// order (k > 0; 0 means none) fail at the reservation, the payment or
	// the delivery; the earliest step wins when several apply.
	SoldOutEvery, DeclineEvery, FailDeliveryEvery int
	// Topic receives the sales.order.placed events. Required.
	Topic string
	// Progress receives a line per transaction batch. Optional.
	Progress io.Writer
}

func (p PlaceParams) validate() error {
	var errs []error
	if !runRE.MatchString(p.Run) {
		errs = append(errs, fmt.Errorf("run: %q must match %s", p.Run, runRE))
	}
	if p.Orders < 1 {
		errs = append(errs, fmt.Errorf("orders: %d is below 1", p.Orders))
	}
	if p.PerTx < 1 {
		errs = append(errs, fmt.Errorf("per-tx: %d is below 1", p.PerTx))
	}
	if p.SoldOutEvery < 0 || p.DeclineEvery < 0 || p.FailDeliveryEvery < 0 {
		errs = append(errs, errors.New("sold-out-every, decline-every, fail-delivery-every: must not be negative"))
	}
	if p.Topic == "" {
		errs = append(errs, errors.New("topic: required"))
	}
	return errors.Join(errs...)
}

func (p PlaceParams) scenario(n int) string {
	every := func(k int) bool { return k > 0 && n%k == 0 }
	switch {
	case every(p.SoldOutEvery):
		return ScenarioSoldOut
	case every(p.DeclineEvery):
		return ScenarioDeclined
	case every(p.FailDeliveryEvery):
		return ScenarioUndeliverable
	}
	return ScenarioOK
}

// OrderID is the id of order n of run.
func OrderID(run string, n int) string { return fmt.Sprintf("ord-%s-%05d", run, n) }

type line struct {
	SKU       string `json:"sku"`
	Quantity  int64  `json:"quantity"`
	UnitPrice int64  `json:"unit_price"`
	LineTotal int64  `json:"line_total"`
}

type placedOrder struct {
	OrderID         string         `json:"order_id"`
	CustomerID      string         `json:"customer_id"`
	Currency        string         `json:"currency"`
	Lines           []line         `json:"lines"`
	TotalAmount     int64          `json:"total_amount"`
	ShippingAddress map[string]any `json:"shipping_address"`
	PlacedAt        string         `json:"placed_at"`

	scenario string
}

// order builds order n (from 1) of the run, deterministically.
func (p PlaceParams) order(n int) placedOrder {
	sc := p.scenario(n)
	o := placedOrder{OrderID: OrderID(p.Run, n), CustomerID: fmt.Sprintf("cus-%04d", n%97), Currency: "EUR",
		PlacedAt: time.Now().UTC().Format(time.RFC3339Nano), scenario: sc}
	const regular = 5 // the catalog's SKUs with stock
	for i := range 1 + n%3 {
		c := catalog[(n+i)%regular]
		q := int64(1 + (n+i)%3)
		o.Lines = append(o.Lines, line{SKU: c.SKU, Quantity: q, UnitPrice: c.UnitPrice, LineTotal: q * c.UnitPrice})
	}
	country := "GB"
	switch sc {
	case ScenarioSoldOut:
		c := catalog[len(catalog)-1]
		o.Lines = append(o.Lines, line{SKU: c.SKU, Quantity: 1, UnitPrice: c.UnitPrice, LineTotal: c.UnitPrice})
	case ScenarioDeclined:
		o.CustomerID = fmt.Sprintf("cus-declined-%04d", n)
	case ScenarioUndeliverable:
		country = "AQ"
	}
	for _, l := range o.Lines {
		o.TotalAmount += l.LineTotal
	}
	o.ShippingAddress = map[string]any{"name": "Ada Lovelace", "line1": "12 St James's Square",
		"city": "London", "postal_code": "SW1Y 4JH", "country": country}
	if country == "AQ" {
		o.ShippingAddress["city"], o.ShippingAddress["postal_code"] = "McMurdo Station", "BIQQ 1ZZ"
	}
	return o
}

// Place commits p.Orders orders, p.PerTx per transaction: each transaction
// inserts the orders and their lines into the example's tables and writes
// their sales.order.placed events to the outbox, or does neither. It
// returns how many orders of each scenario it placed.
func Place(ctx context.Context, pool *pgxpool.Pool, ob *outbox.Outbox, st store, p PlaceParams) (map[string]int, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	counts := map[string]int{}
	began := time.Now()
	var printed time.Time
	for from := 1; from <= p.Orders; from += p.PerTx {
		n := min(p.PerTx, p.Orders-from+1)
		orders := make([]placedOrder, n)
		ids := make([]string, n)
		for i := range orders {
			orders[i] = p.order(from + i)
			ids[i] = orders[i].OrderID
		}
		// Each transaction is a span: the outbox writes its context with
		// the rows, so every saga of the batch joins its trace.
		txCtx, span := otel.Tracer("github.com/vextrus/dtx/examples/order-to-cash").Start(ctx, "place orders",
			trace.WithAttributes(attribute.Int("orders", n)))
		err := pgx.BeginFunc(txCtx, pool, func(tx pgx.Tx) error {
			ctx := txCtx
			// First: the events' keys, so that they leave in commit order.
			if err := ob.Lock(ctx, tx, p.Topic, ids...); err != nil {
				return err
			}
			var b pgx.Batch
			envs := make([]messaging.Envelope, 0, n)
			for _, o := range orders {
				b.Queue(st.sql(`INSERT INTO {s}.orders (order_id, run_id, customer_id, total_amount, currency, scenario, status)
					VALUES ($1, $2, $3, $4, $5, $6, 'placed')`), o.OrderID, p.Run, o.CustomerID, o.TotalAmount, o.Currency, o.scenario)
				for i, l := range o.Lines {
					b.Queue(st.sql(`INSERT INTO {s}.order_lines (order_id, line_no, sku, quantity, unit_price) VALUES ($1, $2, $3, $4, $5)`),
						o.OrderID, i+1, l.SKU, l.Quantity, l.UnitPrice)
				}
				env, err := messaging.NewEnvelope("sales.order.placed", "/dtx/examples/order-to-cash/sales", o)
				if err != nil {
					return err
				}
				env.PartitionKey, env.Subject = o.OrderID, o.OrderID
				envs = append(envs, env)
			}
			if err := tx.SendBatch(ctx, &b).Close(); err != nil {
				return fmt.Errorf("insert orders: %w", err)
			}
			return ob.WriteEnvelopes(ctx, tx, p.Topic, envs...)
		})
		span.End()
		if err != nil {
			return counts, fmt.Errorf("place orders %s..%s: %w", ids[0], ids[n-1], err)
		}
		for _, o := range orders {
			counts[o.scenario]++
		}
		if last := from+n > p.Orders; p.Progress != nil && (last || time.Since(printed) >= time.Second) {
			printed = time.Now()
			fmt.Fprintf(p.Progress, "placed %d/%d orders (%.1fs)\n", from+n-1, p.Orders, time.Since(began).Seconds())
		}
	}
	return counts, nil
}
