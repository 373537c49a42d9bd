package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vextrus/dtx/pkg/messaging/idempotency"
	"github.com/vextrus/dtx/pkg/saga"
)

// ShopParams says what Shop does against a running sales API.
type ShopParams struct {
	// API is the sales API's base URL, such as "http://127.0.0.1:8095".
	API string
	// Token is the bearer token the shop presents; the API keys idempotency
	// per caller, so it names the caller.
	Token string
	// Run names the run; order n is "ord-<Run>-<n>" (see OrderID).
	Run string
	// Orders is how many orders to place; at least 1. Order n's scenario
	// is shopScenario(n): ok, declined, sold-out, undeliverable, in turn.
	Orders int
	// Wait is how long to wait for every order's saga to end.
	Wait time.Duration
	// Client makes the requests. Defaults to a client with a 30s timeout.
	Client *http.Client
}

// ShopOrder is what Shop learnt of one order.
type ShopOrder struct {
	// OrderID and Scenario are the order's.
	OrderID, Scenario string
	// TraceID is the trace the shop started for the order's POST.
	TraceID string
	// View is the order as GET /orders/{id} last answered.
	View OrderView
}

// ShopResult is what Shop did and found.
type ShopResult struct {
	// Orders are the orders placed, in order.
	Orders []ShopOrder
	// Replayed is the order whose POST was sent twice with one key; the
	// second answer was the stored first one.
	Replayed string
	// Problems lists every expectation that did not hold.
	Problems []string
}

// shopScenario is order n's scenario: the four take turns, ok first.
func shopScenario(n int) string {
	return []string{ScenarioOK, ScenarioDeclined, ScenarioSoldOut, ScenarioUndeliverable}[(n-1)%4]
}

// shopOrder is order n of run as a PlaceOrder: the scenario's customer,
// lines and address (as the place subcommand makes them).
func shopOrder(run string, n int) PlaceOrder {
	p := PlaceParams{Run: run}
	switch shopScenario(n) {
	case ScenarioDeclined:
		p.DeclineEvery = 1
	case ScenarioSoldOut:
		p.SoldOutEvery = 1
	case ScenarioUndeliverable:
		p.FailDeliveryEvery = 1
	}
	o := p.order(n)
	cmd := PlaceOrder{OrderID: o.OrderID, CustomerID: o.CustomerID, Currency: o.Currency,
		ShippingAddress: o.ShippingAddress}
	for _, l := range o.Lines {
		cmd.Lines = append(cmd.Lines, OrderLine{SKU: l.SKU, Quantity: l.Quantity, UnitPrice: l.UnitPrice})
	}
	return cmd
}

// Shop is a client of the sales API: it places p.Orders orders with
// POST /orders, each with its own Idempotency-Key and a new sampled W3C
// trace, sends the first one's request a second time with the same key
// (the answer must be the stored one, replayed), then reads every order
// with GET /orders/{id} until its saga has ended, and checks that it ended
// as its scenario says: completed and confirmed, or compensated and
// cancelled. A failed request or an unmet expectation is a problem of the
// result; an error means the API could not be used at all.
func Shop(ctx context.Context, p ShopParams, progress io.Writer) (ShopResult, error) {
	var res ShopResult
	if p.Orders < 1 {
		return res, fmt.Errorf("orders: %d is below 1", p.Orders)
	}
	if !runRE.MatchString(p.Run) {
		return res, fmt.Errorf("run: %q must match %s", p.Run, runRE)
	}
	if _, err := url.ParseRequestURI(p.API); err != nil {
		return res, fmt.Errorf("api: %w", err)
	}
	c := shopClient{api: strings.TrimSuffix(p.API, "/"), token: p.Token, http: p.Client}
	if c.http == nil {
		c.http = &http.Client{Timeout: 30 * time.Second}
	}
	problem := func(format string, args ...any) { res.Problems = append(res.Problems, fmt.Sprintf(format, args...)) }

	for n := 1; n <= p.Orders; n++ {
		cmd := shopOrder(p.Run, n)
		body, err := json.Marshal(cmd)
		if err != nil {
			return res, err
		}
		key := "shop-" + cmd.OrderID
		traceID, traceparent := newTraceparent()
		ans, err := c.post(ctx, key, traceparent, body)
		if err != nil {
			return res, err
		}
		o := ShopOrder{OrderID: cmd.OrderID, Scenario: shopScenario(n), TraceID: traceID}
		if ans.code != http.StatusCreated {
			problem("POST /orders %s: %d %s", cmd.OrderID, ans.code, ans.body)
			continue
		}
		fmt.Fprintf(progress, "POST /orders (Idempotency-Key %s, trace %s): %d %s", key, traceID, ans.code, ans.body)
		if n == 1 {
			// The same request again, as a client whose answer was lost
			// would send it: the stored answer comes back, nothing runs.
			again, err := c.post(ctx, key, "", body)
			if err != nil {
				return res, err
			}
			fmt.Fprintf(progress, "POST /orders again with the same key: %d %s=%s %s", again.code,
				idempotency.HeaderReplayed, again.replayed, again.body)
			if again.code != ans.code || again.body != ans.body || again.replayed != "true" {
				problem("the repeated POST of %s was not the stored answer replayed: %d %q (%s=%q), first %d %q",
					cmd.OrderID, again.code, again.body, idempotency.HeaderReplayed, again.replayed, ans.code, ans.body)
			}
			res.Replayed = cmd.OrderID
		}
		res.Orders = append(res.Orders, o)
	}

	deadline := time.Now().Add(p.Wait)
	for i := range res.Orders {
		o := &res.Orders[i]
		for {
			v, err := c.get(ctx, o.OrderID)
			if err == nil {
				o.View = v
				if v.Saga != nil && v.Saga.Status.Terminal() && v.Status != OrderStatusPlaced {
					break
				}
			}
			if time.Now().After(deadline) {
				if err != nil {
					problem("GET /orders/%s: %v", o.OrderID, err)
				}
				break
			}
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
		wantSaga, wantOrder := saga.StatusCompensated, OrderStatusCancelled
		if o.Scenario == ScenarioOK {
			wantSaga, wantOrder = saga.StatusCompleted, OrderStatusConfirmed
		}
		switch {
		case o.View.Saga == nil:
			problem("%s (%s): no saga after %s", o.OrderID, o.Scenario, p.Wait)
		case o.View.Saga.Status != wantSaga || o.View.Status != wantOrder:
			problem("%s (%s): saga %s and order %s, expected %s and %s", o.OrderID, o.Scenario,
				o.View.Saga.Status, o.View.Status, wantSaga, wantOrder)
		}
	}
	return res, nil
}

// Print writes the orders as a table, with each saga's timeline: every
// answer of a step, in order ("undo" marks a compensation).
func (r ShopResult) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "order\tscenario\torder status\tsaga\ttimeline")
	for _, o := range r.Orders {
		sagaStatus, timeline := "-", "-"
		if s := o.View.Saga; s != nil {
			sagaStatus = string(s.Status)
			var steps []string
			for _, e := range s.Timeline {
				if e.Step == "" || e.Outcome == "sent" {
					continue // the answers tell the story
				}
				entry := e.Step + " " + e.Outcome
				if e.Phase == "compensation" {
					entry = "undo " + entry
				}
				steps = append(steps, entry)
			}
			timeline = strings.Join(steps, " > ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.OrderID, o.Scenario, o.View.Status, sagaStatus, timeline)
	}
	_ = tw.Flush()
}

// newTraceparent returns a new sampled W3C trace context: its trace id and
// its traceparent header.
func newTraceparent() (traceID, header string) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	traceID, span := hex.EncodeToString(b[:16]), hex.EncodeToString(b[16:])
	return traceID, "00-" + traceID + "-" + span + "-01"
}

type shopClient struct {
	api, token string
	http       *http.Client
}

type shopAnswer struct {
	code           int
	body, replayed string
}

func (c shopClient) post(ctx context.Context, key, traceparent string, body []byte) (shopAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.api+"/orders", bytes.NewReader(body))
	if err != nil {
		return shopAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set(idempotency.HeaderKey, key)
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return shopAnswer{}, fmt.Errorf("POST %s/orders: %w", c.api, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return shopAnswer{}, fmt.Errorf("POST %s/orders: %w", c.api, err)
	}
	return shopAnswer{code: res.StatusCode, body: string(b), replayed: res.Header.Get(idempotency.HeaderReplayed)}, nil
}

func (c shopClient) get(ctx context.Context, id string) (OrderView, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.api+"/orders/"+url.PathEscape(id), nil)
	if err != nil {
		return OrderView{}, err
	}
	res, err := c.http.Do(req)
	if err != nil {
		return OrderView{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return OrderView{}, err
	}
	if res.StatusCode != http.StatusOK {
		return OrderView{}, fmt.Errorf("%d %s", res.StatusCode, bytes.TrimSpace(b))
	}
	var v OrderView
	if err := json.Unmarshal(b, &v); err != nil {
		return OrderView{}, fmt.Errorf("decode the answer: %w", err)
	}
	return v, nil
}

func shopCommand(ctx context.Context, fs *flag.FlagSet, args []string, _ *common, out io.Writer) error {
	p := ShopParams{}
	fs.StringVar(&p.API, "api", "http://127.0.0.1:8095", "base URL of the sales API (example-o2c sales-api)")
	fs.StringVar(&p.Token, "token", "shop-frontend", "bearer token the shop presents (it names the caller)")
	fs.IntVar(&p.Orders, "orders", 8, "orders to place: ok, declined, sold-out and undeliverable in turn")
	fs.StringVar(&p.Run, "run", "shop"+time.Now().UTC().Format("150405"), "run id, part of every order id")
	fs.DurationVar(&p.Wait, "wait", 60*time.Second, "how long to wait for every order's saga to end")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := Shop(ctx, p, out)
	if err != nil {
		return err
	}
	fmt.Fprintln(out)
	res.Print(out)
	if len(res.Orders) > 0 {
		o := res.Orders[0]
		fmt.Fprintf(out, "\ntrace of %s (placed twice with one key, run once): %s\n", o.OrderID, o.TraceID)
	}
	if len(res.Problems) > 0 {
		return fmt.Errorf("%w: %d problems (first: %s)", ErrInvariants, len(res.Problems), res.Problems[0])
	}
	fmt.Fprintf(out, "shop OK: %d orders placed over HTTP, one request repeated with its key and answered from the store, every saga ended as its scenario says\n", len(res.Orders))
	return nil
}
