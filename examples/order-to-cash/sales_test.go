package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/idempotency"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/schemas"
)

// decideAndApply runs decide on s and applies what it returns, as Update
// would.
func decideAndApply(t *testing.T, s OrderState, version *int64, decide eventstore.DecideFunc[OrderState]) (OrderState, []eventstore.EventData, error) {
	t.Helper()
	evs, err := decide(s)
	if err != nil {
		return s, nil, err
	}
	for _, e := range evs {
		*version++
		s, err = OrderAggregate.ApplyFunc(s, eventstore.RecordedEvent{StreamID: "ord-1", StreamType: OrderStreamType,
			Version: *version, Type: e.Type, Data: e.Data})
		require.NoError(t, err)
	}
	return s, evs, nil
}

func testOrder(id string) PlaceOrder {
	return PlaceOrder{OrderID: id, CustomerID: "cus-0001", Currency: "EUR",
		Lines: []OrderLine{{SKU: "BOOK-0001", Quantity: 2, UnitPrice: 1999}, {SKU: "PEN-0007", Quantity: 1, UnitPrice: 350}},
		ShippingAddress: map[string]any{"name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London",
			"postal_code": "SW1Y 4JH", "country": "GB"}}
}

func TestOrderAggregateInvariants(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	require.NoError(t, err)

	t.Run("place prices the lines and emits the saga's trigger", func(t *testing.T) {
		var v int64
		s, evs, err := decideAndApply(t, OrderState{}, &v, DecidePlace(testOrder("ord-1"), now, eventstore.Metadata{}))
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.Equal(t, EventOrderPlaced, evs[0].Type)
		require.NoError(t, reg.Validate(EventOrderPlaced, 1, evs[0].Data), "the trigger's schema")
		var p map[string]any
		require.NoError(t, json.Unmarshal(evs[0].Data, &p))
		require.EqualValues(t, 2*1999+350, p["total_amount"])
		require.Equal(t, OrderState{OrderID: "ord-1", Status: OrderStatusPlaced, CustomerID: "cus-0001", Currency: "EUR", TotalAmount: 4348}, s)

		_, _, err = decideAndApply(t, s, &v, DecidePlace(testOrder("ord-1"), now, eventstore.Metadata{}))
		require.ErrorIs(t, err, ErrOrderExists)
	})
	t.Run("an order without lines is refused", func(t *testing.T) {
		o := testOrder("ord-1")
		o.Lines = nil
		_, err := DecidePlace(o, now, eventstore.Metadata{})(OrderState{})
		require.ErrorIs(t, err, ErrInvalidOrder)
	})
	t.Run("confirm", func(t *testing.T) {
		var v int64
		_, _, err := decideAndApply(t, OrderState{}, &v, DecideConfirm("ord-1", now, eventstore.Metadata{}))
		require.ErrorIs(t, err, ErrOrderNotFound)
		s, _, err := decideAndApply(t, OrderState{}, &v, DecidePlace(testOrder("ord-1"), now, eventstore.Metadata{}))
		require.NoError(t, err)
		s, evs, err := decideAndApply(t, s, &v, DecideConfirm("ord-1", now, eventstore.Metadata{}))
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.NoError(t, reg.Validate(EventOrderConfirmed, 1, evs[0].Data))
		require.Equal(t, OrderStatusConfirmed, s.Status)
		// Confirming again (a redelivered command) changes nothing.
		s, evs, err = decideAndApply(t, s, &v, DecideConfirm("ord-1", now, eventstore.Metadata{}))
		require.NoError(t, err)
		require.Empty(t, evs)
		// A confirmed order cannot be cancelled.
		_, _, err = decideAndApply(t, s, &v, DecideCancel("ord-1", "too late", now, eventstore.Metadata{}))
		require.ErrorIs(t, err, ErrOrderConfirmed)
	})
	t.Run("cancel", func(t *testing.T) {
		var v int64
		_, _, err := decideAndApply(t, OrderState{}, &v, DecideCancel("ord-1", "", now, eventstore.Metadata{}))
		require.ErrorIs(t, err, ErrOrderNotFound)
		s, _, err := decideAndApply(t, OrderState{}, &v, DecidePlace(testOrder("ord-1"), now, eventstore.Metadata{}))
		require.NoError(t, err)
		s, evs, err := decideAndApply(t, s, &v, DecideCancel("ord-1", "customer asked", now, eventstore.Metadata{}))
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.Equal(t, OrderStatusCancelled, s.Status)
		s, evs, err = decideAndApply(t, s, &v, DecideCancel("ord-1", "again", now, eventstore.Metadata{}))
		require.NoError(t, err)
		require.Empty(t, evs)
		// A cancelled order cannot be confirmed.
		_, _, err = decideAndApply(t, s, &v, DecideConfirm("ord-1", now, eventstore.Metadata{}))
		require.ErrorIs(t, err, ErrOrderCancelled)
	})
	t.Run("an unknown event makes the stream unloadable", func(t *testing.T) {
		_, err := OrderAggregate.ApplyFunc(OrderState{}, eventstore.RecordedEvent{Type: "sales.order.lost"})
		require.Error(t, err)
	})
}

// salesClient calls the API at url as caller.
type salesClient struct {
	t      *testing.T
	url    string
	caller string
}

// salesReply is what a test reads of a response, its body read and closed.
type salesReply struct {
	StatusCode int
	Header     http.Header
}

func (c salesClient) post(key, body string) (salesReply, string) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.url+"/orders", strings.NewReader(body))
	require.NoError(c.t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.caller)
	if key != "" {
		req.Header.Set(idempotency.HeaderKey, key)
	}
	return c.do(req)
}

func (c salesClient) get(id string) (salesReply, string) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.url+"/orders/"+id, nil)
	require.NoError(c.t, err)
	return c.do(req)
}

func (c salesClient) do(req *http.Request) (salesReply, string) {
	c.t.Helper()
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	require.NoError(c.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(c.t, err)
	return salesReply{StatusCode: res.StatusCode, Header: res.Header}, string(b)
}

// view waits until GET /orders/{id} answers 200 and cond holds.
func (c salesClient) view(id string, wait time.Duration, cond func(OrderView) bool) OrderView {
	c.t.Helper()
	var v OrderView
	require.EventuallyWithT(c.t, func(ct *assert.CollectT) {
		res, body := c.get(id)
		if !assert.Equal(ct, http.StatusOK, res.StatusCode, body) {
			return
		}
		v = OrderView{}
		assert.NoError(ct, json.Unmarshal([]byte(body), &v))
		assert.True(ct, cond(v), "order %s: %s", id, body)
	}, wait, 50*time.Millisecond)
	return v
}

func orderBody(id string) string {
	o := testOrder(id)
	b, _ := json.Marshal(o)
	return string(b)
}

func newTestSalesAPI(t *testing.T, db *pgtest.Schema, exampleSchema, topic string) (*SalesAPI, salesClient) {
	t.Helper()
	api, err := NewSalesAPI(SalesAPIConfig{Pool: db.Pool, Schema: db.Name, ExampleSchema: exampleSchema,
		SalesEventsTopic: topic, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, api.Setup(ctx))
	background(t, "order-status projection", api.RunProjection)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return api, salesClient{t: t, url: srv.URL, caller: "alice"}
}

func TestSalesAPIPlaceOrder(t *testing.T) {
	t.Parallel()
	db := pgtest.NewSchema(t)
	exampleSchema := pgtest.NewSchemaName(t)
	topic := DefaultTopics().SalesEvents
	api, c := newTestSalesAPI(t, db, exampleSchema, topic)
	ctx := context.Background()
	count := func(sql string, args ...any) int {
		t.Helper()
		var n int
		require.NoError(t, db.Pool.QueryRow(ctx, sql, args...).Scan(&n))
		return n
	}

	// The same POST twice with one key: one order, one event, the first
	// response replayed.
	res1, body1 := c.post("key-1", orderBody("ord-api-1"))
	require.Equal(t, http.StatusCreated, res1.StatusCode, body1)
	require.Equal(t, "/orders/ord-api-1", res1.Header.Get("Location"))
	require.JSONEq(t, `{"order_id":"ord-api-1","status":"placed"}`, body1)
	require.NotEmpty(t, res1.Header.Get("X-Correlation-ID"))
	res2, body2 := c.post("key-1", orderBody("ord-api-1"))
	require.Equal(t, http.StatusCreated, res2.StatusCode, body2)
	require.Equal(t, body1, body2)
	require.Equal(t, "true", res2.Header.Get(idempotency.HeaderReplayed))
	require.Equal(t, "/orders/ord-api-1", res2.Header.Get("Location"))
	require.Equal(t, 1, count(`SELECT count(*) FROM events WHERE stream_id = $1`, "ord-api-1"))
	require.Equal(t, 1, count(api.st.sql(`SELECT count(*) FROM {s}.orders WHERE order_id = $1`), "ord-api-1"))

	// The event's outbox record is the saga's trigger: its topic and type,
	// keyed by the order id, with a payload of the trigger's schema and the
	// request's correlation id.
	def, err := saga.LoadFile("sagas/order-to-cash.yaml")
	require.NoError(t, err)
	require.Equal(t, topic, def.Triggers[0].Topic)
	var (
		key, typ, subject, corr string
		payload                 []byte
	)
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT key, headers->>'ce_type', headers->>'ce_subject', coalesce(headers->>'ce_correlationid', ''), payload
		FROM outbox WHERE topic = $1`, topic).Scan(&key, &typ, &subject, &corr, &payload))
	require.Equal(t, def.Triggers[0].Type, typ)
	require.Equal(t, "ord-api-1", key)
	require.Equal(t, "ord-api-1", subject)
	require.Equal(t, res1.Header.Get("X-Correlation-ID"), corr)
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	require.NoError(t, err)
	require.NoError(t, reg.Validate(typ, 1, payload))

	// Without a key: 400, nothing placed.
	res, body := c.post("", orderBody("ord-api-2"))
	require.Equal(t, http.StatusBadRequest, res.StatusCode, body)
	require.Equal(t, 0, count(`SELECT count(*) FROM events WHERE stream_id = $1`, "ord-api-2"))

	// The same order id under another key: refused, nothing more appended.
	res, body = c.post("key-2", orderBody("ord-api-1"))
	require.Equal(t, http.StatusConflict, res.StatusCode, body)
	require.Equal(t, 1, count(`SELECT count(*) FROM events WHERE stream_id = $1`, "ord-api-1"))

	// A body that breaks the command's schema: 422, nothing placed.
	res, body = c.post("key-3", `{"order_id":"ord-api-3","customer_id":"cus-1","currency":"euro","lines":[],"shipping_address":{}}`)
	require.Equal(t, http.StatusUnprocessableEntity, res.StatusCode, body)
	require.Equal(t, 0, count(`SELECT count(*) FROM events WHERE stream_id = $1`, "ord-api-3"))

	// Without order_id, the API chooses one.
	o := testOrder("")
	b, err := json.Marshal(o)
	require.NoError(t, err)
	res, body = c.post("key-4", string(b))
	require.Equal(t, http.StatusCreated, res.StatusCode, body)
	var placed struct {
		OrderID string `json:"order_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &placed))
	require.True(t, strings.HasPrefix(placed.OrderID, "ord-"), placed.OrderID)

	// GET shows the read model's status; no saga runs in this test.
	v := c.view("ord-api-1", 30*time.Second, func(v OrderView) bool { return v.Status == OrderStatusPlaced })
	require.Equal(t, int64(4348), v.TotalAmount)
	require.Nil(t, v.Saga)
	require.Empty(t, v.SagaError)
	res, body = c.get("ord-unknown")
	require.Equal(t, http.StatusNotFound, res.StatusCode, body)

	// Confirming through the aggregate (what the sales participant does)
	// moves the read model; confirming again appends nothing.
	for range 2 {
		require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			return confirmOrder(ctx, api.events, tx, "ord-api-1")
		}))
	}
	require.Equal(t, 2, count(`SELECT count(*) FROM events WHERE stream_id = $1`, "ord-api-1"))
	c.view("ord-api-1", 30*time.Second, func(v OrderView) bool { return v.Status == OrderStatusConfirmed })
	// An order placed outside the aggregate has no stream: left as it is.
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		return confirmOrder(ctx, api.events, tx, "ord-placed-elsewhere")
	}))
}

// TestSalesAPIEndToEnd places an order through the API with the relay, the
// orchestrator and the services running: the saga starts from the
// aggregate's OrderPlaced, completes, and the order reads as confirmed with
// the saga's timeline.
func TestSalesAPIEndToEnd(t *testing.T) {
	t.Parallel()
	db := pgtest.NewSchema(t)
	exampleSchema := pgtest.NewSchemaName(t)
	topics := newTestTopics(t)
	groupPrefix, reg, logger := startSagaSide(t, db, topics)
	_, c := newTestSalesAPI(t, db, exampleSchema, topics.SalesEvents)
	background(t, "services", func(ctx context.Context) error {
		return RunServices(ctx, ServicesConfig{
			Pool: db.Pool, Schema: db.Name, ExampleSchema: exampleSchema,
			Brokers: kafkatest.Brokers(), Topics: topics, GroupPrefix: groupPrefix, Schemas: reg, Logger: logger,
		})
	})

	res, body := c.post("key-e2e", orderBody("ord-e2e-1"))
	require.Equal(t, http.StatusCreated, res.StatusCode, body)
	v := c.view("ord-e2e-1", waitFor, func(v OrderView) bool {
		return v.Status == OrderStatusConfirmed && v.Saga != nil && v.Saga.Status == saga.StatusCompleted
	})
	require.Equal(t, "order-to-cash", v.Saga.Definition)
	require.NotEmpty(t, v.Saga.Timeline)
	require.Equal(t, res.Header.Get("X-Correlation-ID"), v.Saga.CorrelationID)
}

// TestSalesAPICommand runs the sales-api subcommand: it serves the API,
// keeps the read model up to date and stops cleanly when its context ends.
func TestSalesAPICommand(t *testing.T) {
	t.Parallel()
	db := pgtest.NewSchema(t)
	exampleSchema := pgtest.NewSchemaName(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	ctx, cancel := context.WithCancel(context.Background())
	var out strings.Builder
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"sales-api", "--addr", addr, "--database-url", pgtest.URL(), "--schema", db.Name,
			"--example-schema", exampleSchema, "--topic", "sales.events"}, io.Discard, &out)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			require.Equal(t, 0, code, out.String())
		case <-time.After(30 * time.Second):
			t.Error("sales-api did not stop")
		}
	})
	c := salesClient{t: t, url: "http://" + addr, caller: "bob"}
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		res, err := http.Get("http://" + addr + "/orders/none")
		if assert.NoError(ct, err) {
			_ = res.Body.Close()
			assert.Equal(ct, http.StatusNotFound, res.StatusCode)
		}
	}, 30*time.Second, 50*time.Millisecond)
	res, body := c.post("key-cmd", orderBody("ord-cmd-1"))
	require.Equal(t, http.StatusCreated, res.StatusCode, body)
	c.view("ord-cmd-1", 30*time.Second, func(v OrderView) bool { return v.Status == OrderStatusPlaced })
}
