package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/saga"
)

// stepService names the service of each step of sagas/order-to-cash.yaml.
var stepService = map[string]string{
	"reserve-stock":     serviceInventory,
	"charge-payment":    serviceAccounting,
	"schedule-delivery": serviceDelivery,
	"confirm-order":     serviceSales,
}

// statusMissing counts orders whose saga has not started yet.
const statusMissing = "not started"

// Report is what the verifier found for one run.
type Report struct {
	Run string
	// Orders is how many orders the run placed; Scenarios splits them.
	Orders    int
	Scenarios map[string]int
	// Sagas counts the run's sagas by status (saga.Status, or statusMissing).
	Sagas map[string]int
	// CompletedUnits are the units ordered by completed sagas' orders;
	// ReservedUnits the units the run's orders hold reserved now.
	CompletedUnits, ReservedUnits int64
	// Charged counts payments taken, Refunded those given back.
	Charged, Refunded int
	// Scheduled counts shipments scheduled, Cancelled those cancelled.
	Scheduled, Cancelled int
	// Confirmed counts confirmed orders.
	Confirmed int
	// LedgerRows are the participants' ledger rows of the run;
	// LedgerDuplicates the (service, saga, step, phase) keys with more than
	// one row, in the whole ledger.
	LedgerRows, LedgerDuplicates int
	// Problems lists every invariant that does not hold; empty means OK.
	Problems []string
}

// Terminal reports whether every saga of the run has ended.
func (r Report) Terminal() bool {
	n := 0
	for st, c := range r.Sagas {
		if st != statusMissing && saga.Status(st).Terminal() {
			n += c
		}
	}
	return n == r.Orders
}

// ReportParams says what BuildReport checks.
type ReportParams struct {
	// Schema holds dtx's tables (saga_instances). Required.
	Schema string
	// Run is the run to check. Required.
	Run string
	// CheckOutcomes also requires each order's outcome to be its
	// scenario's: completed for ScenarioOK, compensated otherwise. A fault
	// test that times steps out turns it off.
	CheckOutcomes bool
}

// orderRow is one order of the run with what every service did about it.
type orderRow struct {
	OrderID, Scenario, Status string
	Total                     int64
	SagaStatus, SagaReason    *string
	OrderedUnits              int64
	ReservedUnits             int64
	ReleasedLines             int64
	PaymentStatus             *string
	PaymentAmount             *int64
	ShipmentStatus            *string
}

// BuildReport reads the run's orders, sagas, participants' tables and
// ledger, and checks the invariants.
func BuildReport(ctx context.Context, pool *pgxpool.Pool, st store, p ReportParams) (Report, error) {
	r := Report{Run: p.Run, Scenarios: map[string]int{}, Sagas: map[string]int{}}
	dtx := pgx.Identifier{p.Schema}.Sanitize()
	rows, err := pool.Query(ctx, st.sql(`
		SELECT o.order_id, o.scenario, o.status, o.total_amount, s.status, s.reason,
		       (SELECT coalesce(sum(quantity), 0) FROM {s}.order_lines l WHERE l.order_id = o.order_id),
		       (SELECT coalesce(sum(quantity), 0) FROM {s}.reservations v WHERE v.order_id = o.order_id AND v.status = 'reserved'),
		       (SELECT count(*) FROM {s}.reservations v WHERE v.order_id = o.order_id AND v.status = 'released'),
		       p.status, p.amount, h.status
		FROM {s}.orders o
		LEFT JOIN `+dtx+`.saga_instances s ON s.id = o.order_id
		LEFT JOIN {s}.payments p ON p.order_id = o.order_id
		LEFT JOIN {s}.shipments h ON h.order_id = o.order_id
		WHERE o.run_id = $1
		ORDER BY o.order_id`), p.Run)
	if err != nil {
		return r, fmt.Errorf("read the run's orders: %w", err)
	}
	orders, err := pgx.CollectRows(rows, pgx.RowToStructByPos[orderRow])
	if err != nil {
		return r, fmt.Errorf("read the run's orders: %w", err)
	}
	if len(orders) == 0 {
		return r, fmt.Errorf("run %q placed no orders", p.Run)
	}
	type ledgerKey struct{ saga, step, phase string }
	ledger := map[ledgerKey]bool{}
	perService := map[string]int{}
	lrows, err := pool.Query(ctx, st.sql(`SELECT g.saga_id, g.step, g.phase, g.service FROM {s}.ledger g
		JOIN {s}.orders o ON o.order_id = g.saga_id WHERE o.run_id = $1`), p.Run)
	if err != nil {
		return r, fmt.Errorf("read the ledger: %w", err)
	}
	for lrows.Next() {
		var k ledgerKey
		var svc string
		if err := lrows.Scan(&k.saga, &k.step, &k.phase, &svc); err != nil {
			lrows.Close()
			return r, fmt.Errorf("read the ledger: %w", err)
		}
		ledger[k] = true
		perService[svc+"/"+k.phase]++
		r.LedgerRows++
	}
	if err := lrows.Err(); err != nil {
		return r, fmt.Errorf("read the ledger: %w", err)
	}

	problem := func(format string, args ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, args...)) }
	var reservedOrders, releasedOrders int
	for _, o := range orders {
		r.Orders++
		r.Scenarios[o.Scenario]++
		status := statusMissing
		if o.SagaStatus != nil {
			status = *o.SagaStatus
		}
		r.Sagas[status]++
		r.ReservedUnits += o.ReservedUnits
		if o.ReservedUnits > 0 {
			reservedOrders++
		}
		if o.ReleasedLines > 0 {
			releasedOrders++
		}
		if o.PaymentStatus != nil {
			r.Charged++
			if *o.PaymentStatus == "refunded" {
				r.Refunded++
			}
		}
		if o.ShipmentStatus != nil {
			r.Scheduled++
			if *o.ShipmentStatus == "cancelled" {
				r.Cancelled++
			}
		}
		if o.Status == "confirmed" {
			r.Confirmed++
		}
		has := func(step, phase string) bool { return ledger[ledgerKey{o.OrderID, step, phase}] }
		switch saga.Status(status) {
		case saga.StatusCompleted:
			r.CompletedUnits += o.OrderedUnits
			if o.ReservedUnits != o.OrderedUnits {
				problem("%s completed but holds %d units reserved for %d ordered", o.OrderID, o.ReservedUnits, o.OrderedUnits)
			}
			if o.PaymentStatus == nil || *o.PaymentStatus != "charged" || *o.PaymentAmount != o.Total {
				problem("%s completed but its payment is not charged in full (%v)", o.OrderID, deref(o.PaymentStatus))
			}
			if o.ShipmentStatus == nil || *o.ShipmentStatus != "scheduled" {
				problem("%s completed but has no scheduled shipment (%v)", o.OrderID, deref(o.ShipmentStatus))
			}
			if o.Status != "confirmed" {
				problem("%s completed but the order is %s", o.OrderID, o.Status)
			}
			for step := range stepService {
				if !has(step, "action") || has(step, "compensation") {
					problem("%s completed but the ledger does not show step %s's action once and no compensation", o.OrderID, step)
				}
			}
		case saga.StatusCompensated:
			if o.ReservedUnits != 0 {
				problem("%s compensated but still holds %d units reserved", o.OrderID, o.ReservedUnits)
			}
			if o.PaymentStatus != nil && *o.PaymentStatus != "refunded" {
				problem("%s compensated but its payment is %s", o.OrderID, *o.PaymentStatus)
			}
			if o.ShipmentStatus != nil && *o.ShipmentStatus != "cancelled" {
				problem("%s compensated but its shipment is %s", o.OrderID, *o.ShipmentStatus)
			}
			if o.Status != "placed" {
				problem("%s compensated but the order is %s", o.OrderID, o.Status)
			}
			for step := range stepService {
				if has(step, "action") != has(step, "compensation") || (step == "confirm-order" && has(step, "action")) {
					problem("%s compensated but step %s's action and compensation do not match in the ledger", o.OrderID, step)
				}
			}
		case saga.StatusFailed:
			problem("%s failed (parked): %s", o.OrderID, deref(o.SagaReason))
		default:
			problem("%s is not terminal: %s", o.OrderID, status)
		}
		if p.CheckOutcomes && saga.Status(status).Terminal() {
			want := saga.StatusCompensated
			if o.Scenario == ScenarioOK {
				want = saga.StatusCompleted
			}
			if saga.Status(status) != want {
				problem("%s (%s) ended %s, expected %s", o.OrderID, o.Scenario, status, want)
			}
		}
	}

	// Figures against each other: the net effects are the completed ones'.
	completed := r.Sagas[string(saga.StatusCompleted)]
	if r.ReservedUnits != r.CompletedUnits {
		problem("stock reserved net %d units, completed orders' quantities %d", r.ReservedUnits, r.CompletedUnits)
	}
	if r.Charged-r.Refunded != completed {
		problem("payments charged %d - refunded %d != completed %d", r.Charged, r.Refunded, completed)
	}
	if r.Scheduled-r.Cancelled != completed {
		problem("shipments scheduled %d - cancelled %d != completed %d", r.Scheduled, r.Cancelled, completed)
	}
	if r.Confirmed != completed {
		problem("orders confirmed %d != completed %d", r.Confirmed, completed)
	}
	// Each effect once: one ledger row per effect the tables show.
	for _, c := range []struct {
		key  string
		want int
		what string
	}{
		{serviceInventory + "/action", reservedOrders + releasedOrders, "reservations"},
		{serviceInventory + "/compensation", releasedOrders, "released reservations"},
		{serviceAccounting + "/action", r.Charged, "payments"},
		{serviceAccounting + "/compensation", r.Refunded, "refunds"},
		{serviceDelivery + "/action", r.Scheduled, "shipments"},
		{serviceDelivery + "/compensation", r.Cancelled, "cancelled shipments"},
		{serviceSales + "/action", r.Confirmed, "confirmations"},
	} {
		if perService[c.key] != c.want {
			problem("ledger: %d %s rows for %d %s", perService[c.key], c.key, c.want, c.what)
		}
	}
	// The whole example's tables, every run: no duplicate ledger key, and the
	// stock's reserved counters equal the reservations held.
	if err := pool.QueryRow(ctx, st.sql(`SELECT count(*) FROM (SELECT 1 FROM {s}.ledger
		GROUP BY service, saga_id, step, phase HAVING count(*) > 1) d`)).Scan(&r.LedgerDuplicates); err != nil {
		return r, fmt.Errorf("check the ledger: %w", err)
	}
	if r.LedgerDuplicates > 0 {
		problem("ledger: %d effects recorded more than once", r.LedgerDuplicates)
	}
	var drift int
	if err := pool.QueryRow(ctx, st.sql(`SELECT count(*) FROM {s}.stock k WHERE k.reserved <>
		(SELECT coalesce(sum(quantity), 0) FROM {s}.reservations v WHERE v.sku = k.sku AND v.status = 'reserved')`)).Scan(&drift); err != nil {
		return r, fmt.Errorf("check the stock: %w", err)
	}
	if drift > 0 {
		problem("stock: %d SKUs' reserved counters differ from the reservations held", drift)
	}
	return r, nil
}

func deref[T any](p *T) any {
	if p == nil {
		return "none"
	}
	return *p
}

// WaitTerminal builds the report until every saga of the run is terminal or
// wait has passed, printing progress to out, and returns the last report.
func WaitTerminal(ctx context.Context, pool *pgxpool.Pool, st store, p ReportParams, wait time.Duration, out io.Writer) (Report, error) {
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var lastPrint time.Time
	for {
		r, err := BuildReport(ctx, pool, st, p)
		if err != nil {
			return r, err
		}
		if r.Terminal() || time.Now().After(deadline) {
			return r, nil
		}
		if out != nil && time.Since(lastPrint) >= 2*time.Second {
			lastPrint = time.Now()
			fmt.Fprintf(out, "waiting: %s\n", r.statusLine())
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-tick.C:
		}
	}
}

var statusOrder = []string{string(saga.StatusCompleted), string(saga.StatusCompensated), string(saga.StatusFailed),
	string(saga.StatusRunning), string(saga.StatusCompensating), statusMissing}

func (r Report) statusLine() string {
	parts := make([]string, 0, len(statusOrder))
	for _, s := range statusOrder {
		parts = append(parts, fmt.Sprintf("%s %d", s, r.Sagas[s]))
	}
	return fmt.Sprintf("%d sagas: %s", r.Orders, strings.Join(parts, ", "))
}

// Print writes the report as tables.
func (r Report) Print(out io.Writer) {
	scen := slices.Sorted(maps.Keys(r.Scenarios))
	parts := make([]string, 0, len(scen))
	for _, s := range scen {
		parts = append(parts, fmt.Sprintf("%s %d", s, r.Scenarios[s]))
	}
	fmt.Fprintf(out, "Order-to-Cash run %s: %d orders (%s)\n\n", r.Run, r.Orders, strings.Join(parts, ", "))
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "sagas\tcount\t")
	for _, s := range []struct{ label, key string }{
		{"completed", string(saga.StatusCompleted)}, {"compensated", string(saga.StatusCompensated)},
		{"failed", string(saga.StatusFailed)},
	} {
		fmt.Fprintf(w, "%s\t%d\t\n", s.label, r.Sagas[s.key])
	}
	fmt.Fprintf(w, "still running\t%d\t\n", r.Sagas[string(saga.StatusRunning)]+r.Sagas[string(saga.StatusCompensating)]+r.Sagas[statusMissing])
	_ = w.Flush()
	fmt.Fprintln(out)
	completed := r.Sagas[string(saga.StatusCompleted)]
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "participant\teffect\tdone\tundone\tnet\texpected net")
	fmt.Fprintf(w, "inventory\tunits reserved\t\t\t%d\t%d (units of completed orders)\n", r.ReservedUnits, r.CompletedUnits)
	fmt.Fprintf(w, "accounting\tpayments charged\t%d\t%d refunded\t%d\t%d (completed)\n", r.Charged, r.Refunded, r.Charged-r.Refunded, completed)
	fmt.Fprintf(w, "delivery\tshipments scheduled\t%d\t%d cancelled\t%d\t%d (completed)\n", r.Scheduled, r.Cancelled, r.Scheduled-r.Cancelled, completed)
	fmt.Fprintf(w, "sales\torders confirmed\t%d\t\t%d\t%d (completed)\n", r.Confirmed, r.Confirmed, completed)
	fmt.Fprintf(w, "ledger\trows\t%d\t\t\t%d duplicates\n", r.LedgerRows, r.LedgerDuplicates)
	_ = w.Flush()
	fmt.Fprintln(out)
	if len(r.Problems) == 0 {
		fmt.Fprintln(out, "invariants hold: every saga terminal; completed ones reserved, charged, scheduled and confirmed once;")
		fmt.Fprintln(out, "compensated ones net zero in stock and payment with no active shipment; no effect recorded twice")
		return
	}
	fmt.Fprintf(out, "INVARIANTS VIOLATED (%d):\n", len(r.Problems))
	for i, p := range r.Problems {
		if i == 20 {
			fmt.Fprintf(out, "  ... and %d more\n", len(r.Problems)-i)
			break
		}
		fmt.Fprintln(out, "  - "+p)
	}
}

// ErrInvariants is returned by report when an invariant does not hold.
var ErrInvariants = errors.New("order-to-cash: invariants violated")
