package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/propagation"

	"github.com/vextrus/dtx/pkg/cqrs"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/idempotency"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/projection"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
	"github.com/vextrus/dtx/schemas"
)

// Names of the sales API's messages, read model and idempotency scope.
const (
	// CommandPlaceOrder is PlaceOrder's message type (schema
	// sales.order.place.v1).
	CommandPlaceOrder = "sales.order.place"
	// QueryGetOrder is GetOrder's query type.
	QueryGetOrder = "sales.order.get"
	// OrderStatusProjection names the order-status read model's projection
	// (its checkpoint).
	OrderStatusProjection = "example-o2c.sales-order-status"
	// SalesAPIScope is the idempotency scope of POST /orders.
	SalesAPIScope = "example-o2c.sales-api"
	// salesSource is the CloudEvents source of the sales events.
	salesSource = "/dtx/examples/order-to-cash/sales"
)

// salesDDL creates the order-status read model; %[1]s is the quoted
// example schema.
const salesDDL = `
CREATE TABLE IF NOT EXISTS %[1]s.sales_order_status (
    order_id     text PRIMARY KEY,
    status       text   NOT NULL CHECK (status IN ('placed', 'confirmed', 'cancelled')),
    customer_id  text   NOT NULL,
    total_amount bigint NOT NULL,
    currency     text   NOT NULL,
    placed_at    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);`

// GetOrder is the query sales.order.get: one order's status and its saga.
type GetOrder struct {
	// OrderID is the order asked for.
	OrderID string `json:"order_id"`
}

// OrderView is what GET /orders/{id} answers: the order's status from the
// order-status read model and, once the saga has started, the saga with its
// timeline.
type OrderView struct {
	// OrderID is the order's id.
	OrderID string `json:"order_id"`
	// Status is placed, confirmed or cancelled.
	Status string `json:"status"`
	// CustomerID, TotalAmount and Currency are the placed order's.
	CustomerID  string `json:"customer_id"`
	TotalAmount int64  `json:"total_amount"`
	Currency    string `json:"currency"`
	// PlacedAt and UpdatedAt are when the order was placed and last changed.
	PlacedAt  time.Time `json:"placed_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Saga is the order's saga, nil until the orchestrator started it.
	Saga *orchestrator.Detail `json:"saga,omitempty"`
	// SagaError says why the saga could not be read, if it could not.
	SagaError string `json:"saga_error,omitempty"`
}

// SalesAPIConfig configures a SalesAPI.
type SalesAPIConfig struct {
	// Pool is the database of dtx's tables and the example's. Required.
	Pool *pgxpool.Pool
	// Schema holds dtx's tables: events, outbox, idempotency keys, sagas.
	// Defaults to "dtx".
	Schema string
	// ExampleSchema holds the example's tables and the order-status read
	// model. Defaults to DefaultExampleSchema.
	ExampleSchema string
	// SalesEventsTopic receives the sales events, the saga's trigger among
	// them. Defaults to DefaultTopics().SalesEvents.
	SalesEventsTopic string
	// Logger logs failed requests and projection batches. Defaults to
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock of the events' times. Defaults to time.Now.
	Now func() time.Time
}

// SalesAPI is the sales service's HTTP API over the event-sourced Order
// aggregate: POST /orders and GET /orders/{id}.
type SalesAPI struct {
	cfg      SalesAPIConfig
	st       store
	events   *postgres.Store
	commands *cqrs.CommandBus
	queries  *cqrs.QueryBus
	keys     *idempotency.Store
	runner   *projection.Runner
	handler  http.Handler
}

// NewSalesAPI wires the API: event store, command and query buses,
// idempotency store, read model. It does not touch the database (Setup
// creates the example's tables).
func NewSalesAPI(cfg SalesAPIConfig) (*SalesAPI, error) {
	if cfg.Pool == nil {
		return nil, errors.New("SalesAPIConfig.Pool: required")
	}
	if cfg.Schema == "" {
		cfg.Schema = "dtx"
	}
	if cfg.ExampleSchema == "" {
		cfg.ExampleSchema = DefaultExampleSchema
	}
	if cfg.SalesEventsTopic == "" {
		cfg.SalesEventsTopic = DefaultTopics().SalesEvents
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	st, err := newStore(cfg.ExampleSchema)
	if err != nil {
		return nil, fmt.Errorf("SalesAPIConfig.ExampleSchema: %w", err)
	}
	strict, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	if err != nil {
		return nil, err
	}
	a := &SalesAPI{cfg: cfg, st: st}
	if a.events, err = newOrderEvents(cfg.Pool, cfg.Schema, cfg.SalesEventsTopic); err != nil {
		return nil, err
	}
	if a.commands, err = cqrs.NewCommandBus(cqrs.CommandBusConfig{Source: salesSource, Schemas: strict, Pool: cfg.Pool, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if err := cqrs.HandleCommand(a.commands, CommandPlaceOrder, a.placeOrder); err != nil {
		return nil, err
	}
	if a.queries, err = cqrs.NewQueryBus(cqrs.QueryBusConfig{Source: salesSource, Pool: cfg.Pool, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if err := cqrs.HandleQuery(a.queries, QueryGetOrder, a.getOrder); err != nil {
		return nil, err
	}
	if a.keys, err = idempotency.NewStore(cfg.Pool, idempotency.Config{Schema: cfg.Schema, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	idem, err := a.keys.Middleware(idempotency.MiddlewareConfig{Scope: SalesAPIScope, RequireKey: true})
	if err != nil {
		return nil, err
	}
	if a.runner, err = projection.New(a.events, cfg.Pool, projection.Config{Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("POST /orders", idem(http.HandlerFunc(a.servePlace)))
	mux.HandleFunc("GET /orders/{id}", a.serveGet)
	a.handler = middleware.HTTP(mux)
	return a, nil
}

// Handler is the API's http.Handler.
func (a *SalesAPI) Handler() http.Handler { return a.handler }

// Setup creates the example's tables and the read model if they do not
// exist.
func (a *SalesAPI) Setup(ctx context.Context) error {
	if err := a.st.setup(ctx, a.cfg.Pool); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, a.cfg.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('dtx example order-to-cash setup', 0))`); err != nil {
			return fmt.Errorf("lock the example's setup: %w", err)
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(salesDDL, a.st.s)); err != nil {
			return fmt.Errorf("create the order-status read model in %s: %w", a.cfg.ExampleSchema, err)
		}
		return nil
	})
}

// RunProjection keeps the order-status read model up to date from the
// event store until ctx ends.
func (a *SalesAPI) RunProjection(ctx context.Context) error {
	return a.runner.Run(ctx, a.orderStatus())
}

// metadata are the correlation and trace context of ctx, for the events a
// command appends.
func metadata(ctx context.Context) eventstore.Metadata {
	var m eventstore.Metadata
	if o, ok := middleware.OriginFromContext(ctx); ok {
		m.CorrelationID, m.CausationID = o.CorrelationID, o.MessageID
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	m.TraceParent, m.TraceState = c["traceparent"], c["tracestate"]
	return m
}

// orderEventStore is the Order aggregate's event store.
type orderEventStore = postgres.Store

// newOrderEvents is the event store of the Order aggregate, in schema:
// orders' events go to topic, the saga's trigger topic, through the outbox.
// Every event type of the aggregate has a schema, which the outbox checks
// its data against as it writes them: an event without one is refused.
func newOrderEvents(pool *pgxpool.Pool, schema, topic string) (*postgres.Store, error) {
	strict, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	if err != nil {
		return nil, err
	}
	return postgres.New(pool, postgres.Config{
		Schema: schema, Source: salesSource, Registry: strict,
		TopicFunc: func(streamType string) string {
			if streamType == OrderStreamType {
				return topic
			}
			return postgres.DefaultTopic(streamType)
		},
	})
}

// confirmOrder appends OrderConfirmed to the order's stream in tx, for
// the sales participant's sales.order.confirm. An order without stream
// (placed by the place subcommand, outside the aggregate) is left as it
// is; a cancelled order is refused for good (ErrOrderCancelled, permanent).
func confirmOrder(ctx context.Context, events *postgres.Store, tx pgx.Tx, orderID string) error {
	if events == nil {
		return nil
	}
	_, err := eventstore.Update(ctx, events.WithTx(tx), OrderAggregate, orderID, DecideConfirm(orderID, time.Now(), metadata(ctx)))
	switch {
	case errors.Is(err, ErrOrderNotFound):
		return nil
	case errors.Is(err, ErrOrderCancelled):
		return messaging.Permanent(err)
	}
	return err
}

// placeOrder handles PlaceOrder in tx: the Order aggregate appends
// OrderPlaced (its outbox record is the saga's trigger), then the order and
// its lines go into the example's tables, where the sales participant
// confirms it. The append comes first: its stream lock must be the
// transaction's first lock.
func (a *SalesAPI) placeOrder(ctx context.Context, tx pgx.Tx, cmd PlaceOrder) error {
	l, err := eventstore.Update(ctx, a.events.WithTx(tx), OrderAggregate, cmd.OrderID, DecidePlace(cmd, a.cfg.Now(), metadata(ctx)))
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, a.st.sql(`INSERT INTO {s}.orders (order_id, run_id, customer_id, total_amount, currency, scenario, status)
		VALUES ($1, 'sales-api', $2, $3, $4, 'api', 'placed')`), cmd.OrderID, cmd.CustomerID, l.State.TotalAmount, cmd.Currency); err != nil {
		return fmt.Errorf("insert order %q: %w", cmd.OrderID, err)
	}
	for i, ln := range cmd.Lines {
		if _, err := tx.Exec(ctx, a.st.sql(`INSERT INTO {s}.order_lines (order_id, line_no, sku, quantity, unit_price) VALUES ($1, $2, $3, $4, $5)`),
			cmd.OrderID, i+1, ln.SKU, ln.Quantity, ln.UnitPrice); err != nil {
			return fmt.Errorf("insert order %q line %d: %w", cmd.OrderID, i+1, err)
		}
	}
	return nil
}

// getOrder reads the order-status read model and the order's saga, in the
// query's read-only transaction.
func (a *SalesAPI) getOrder(ctx context.Context, q GetOrder) (OrderView, error) {
	tx, ok := messaging.TxFromContext(ctx)
	if !ok {
		return OrderView{}, errors.New("sales.order.get: no transaction")
	}
	v := OrderView{OrderID: q.OrderID}
	err := tx.QueryRow(ctx, a.st.sql(`SELECT status, customer_id, total_amount, currency, placed_at, updated_at
		FROM {s}.sales_order_status WHERE order_id = $1`), q.OrderID).
		Scan(&v.Status, &v.CustomerID, &v.TotalAmount, &v.Currency, &v.PlacedAt, &v.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return OrderView{}, fmt.Errorf("%w: %q", ErrOrderNotFound, q.OrderID)
	}
	if err != nil {
		return OrderView{}, fmt.Errorf("read order %q: %w", q.OrderID, err)
	}
	// The saga's id is the order id (the trigger's saga_id: $.order_id).
	// Show reads in a savepoint, so that a missing saga table leaves the
	// query's transaction usable.
	sp, err := tx.Begin(ctx)
	if err != nil {
		return OrderView{}, err
	}
	d, err := orchestrator.Show(ctx, sp, a.cfg.Schema, nil, q.OrderID)
	_ = sp.Rollback(ctx)
	switch {
	case err == nil:
		v.Saga = &d
	case !errors.Is(err, orchestrator.ErrUnknownSaga):
		v.SagaError = err.Error()
	}
	return v, nil
}

// orderStatus is the order-status read model's projection.
func (a *SalesAPI) orderStatus() projection.Handlers {
	status := func(s string) projection.ApplyFunc {
		return func(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
			_, err := tx.Exec(ctx, a.st.sql(`UPDATE {s}.sales_order_status SET status = $2, updated_at = $3 WHERE order_id = $1`),
				ev.StreamID, s, ev.RecordedAt)
			return err
		}
	}
	return projection.Handlers{ProjectionName: OrderStatusProjection, Funcs: map[string]projection.ApplyFunc{
		EventOrderPlaced: func(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
			if ev.StreamType != OrderStreamType {
				return nil // the trigger placed outside the aggregate (place)
			}
			var p placedOrder
			if err := json.Unmarshal(ev.Data, &p); err != nil {
				return messaging.Permanent(fmt.Errorf("%s %s: %w", ev.Type, ev.ID, err))
			}
			_, err := tx.Exec(ctx, a.st.sql(`INSERT INTO {s}.sales_order_status
				(order_id, status, customer_id, total_amount, currency, placed_at, updated_at)
				VALUES ($1, 'placed', $2, $3, $4, $5, $5) ON CONFLICT (order_id) DO NOTHING`),
				ev.StreamID, p.CustomerID, p.TotalAmount, p.Currency, ev.RecordedAt)
			return err
		},
		EventOrderConfirmed: status(OrderStatusConfirmed),
		EventOrderCancelled: status(OrderStatusCancelled),
	}}
}

// servePlace is POST /orders: the body is a PlaceOrder whose order_id is
// optional (a new one is chosen).
func (a *SalesAPI) servePlace(w http.ResponseWriter, r *http.Request) {
	var cmd PlaceOrder
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cmd); err != nil {
		writeProblem(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
		return
	}
	if cmd.OrderID == "" {
		cmd.OrderID = "ord-" + uuid.Must(uuid.NewV7()).String()
	}
	err := cqrs.Dispatch(r.Context(), a.commands, cmd)
	switch {
	case err == nil:
	case errors.Is(err, messaging.ErrSchemaViolation), errors.Is(err, ErrInvalidOrder):
		writeProblem(w, http.StatusUnprocessableEntity, err)
		return
	case errors.Is(err, ErrOrderExists), errors.Is(err, eventstore.ErrConcurrencyConflict):
		writeProblem(w, http.StatusConflict, err)
		return
	default:
		a.cfg.Logger.ErrorContext(r.Context(), "sales api: place order", "order_id", cmd.OrderID, "err", err)
		writeProblem(w, http.StatusInternalServerError, errors.New("cannot place the order"))
		return
	}
	w.Header().Set("Location", "/orders/"+cmd.OrderID)
	writeJSON(w, http.StatusCreated, map[string]string{"order_id": cmd.OrderID, "status": OrderStatusPlaced})
}

func (a *SalesAPI) serveGet(w http.ResponseWriter, r *http.Request) {
	v, err := cqrs.Query[GetOrder, OrderView](r.Context(), a.queries, GetOrder{OrderID: r.PathValue("id")})
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, v)
	case errors.Is(err, ErrOrderNotFound):
		writeProblem(w, http.StatusNotFound, err)
	default:
		a.cfg.Logger.ErrorContext(r.Context(), "sales api: get order", "err", err)
		writeProblem(w, http.StatusInternalServerError, errors.New("cannot read the order"))
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeProblem(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
