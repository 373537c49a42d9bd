package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/participant"
)

// The example's services, in the order of the saga's steps.
const (
	serviceInventory  = "inventory"
	serviceAccounting = "accounting"
	serviceDelivery   = "delivery"
	serviceSales      = "sales"
)

// allServices lists the services `participants` runs without --only.
func allServices() []string {
	return []string{serviceInventory, serviceAccounting, serviceDelivery, serviceSales}
}

// Topics are the Kafka topics of the Order-to-Cash saga. Their defaults are
// those of sagas/order-to-cash.yaml and of the orchestrator.
type Topics struct {
	// SalesEvents carries sales.order.placed, the saga's trigger.
	// Defaults to "sales.events".
	SalesEvents string
	// Inventory, Accounting, Delivery and Sales carry each service's
	// commands. Default to "<service>.commands".
	Inventory, Accounting, Delivery, Sales string
	// Replies is where participants reply (the orchestrator's reply topic);
	// commands name it in ce_sagareplyto. Defaults to saga.DefaultReplyTopic.
	Replies string
	// Events is the orchestrator's lifecycle event topic, which sales
	// consumes to cancel the orders of compensated sagas. Defaults to
	// saga.DefaultEventTopic.
	Events string
}

// DefaultTopics returns the topics of sagas/order-to-cash.yaml.
func DefaultTopics() Topics {
	return Topics{
		SalesEvents: "sales.events",
		Inventory:   "inventory.commands",
		Accounting:  "accounting.commands",
		Delivery:    "delivery.commands",
		Sales:       "sales.commands",
		Replies:     saga.DefaultReplyTopic,
		Events:      saga.DefaultEventTopic,
	}
}

// WithPrefix returns the topics with prefix in front of each.
func (t Topics) WithPrefix(prefix string) Topics {
	return Topics{
		SalesEvents: prefix + t.SalesEvents, Inventory: prefix + t.Inventory, Accounting: prefix + t.Accounting,
		Delivery: prefix + t.Delivery, Sales: prefix + t.Sales, Replies: prefix + t.Replies, Events: prefix + t.Events,
	}
}

// All returns every topic, for creating them.
func (t Topics) All() []string {
	return []string{t.SalesEvents, t.Inventory, t.Accounting, t.Delivery, t.Sales, t.Replies, t.Events}
}

func (t Topics) commands(service string) string {
	switch service {
	case serviceInventory:
		return t.Inventory
	case serviceAccounting:
		return t.Accounting
	case serviceDelivery:
		return t.Delivery
	default:
		return t.Sales
	}
}

// ServicesConfig configures the example's participant services.
type ServicesConfig struct {
	// Pool connects to the database of every schema below. Required.
	Pool *pgxpool.Pool
	// Schema holds dtx's tables: the barrier and the outbox the replies go
	// through. Defaults to "dtx".
	Schema string
	// ExampleSchema holds the services' own tables. Defaults to
	// DefaultExampleSchema ("example_o2c").
	ExampleSchema string
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// Topics are the saga's topics. Zero fields default as DefaultTopics.
	Topics Topics
	// GroupPrefix starts each service's consumer group:
	// "<GroupPrefix>-<service>", and sales's consumer of the lifecycle
	// events, "<GroupPrefix>-sales-outcomes". Defaults to "example-o2c".
	GroupPrefix string
	// Only lists the services to run. Defaults to all four.
	Only []string
	// Slow is how long each command waits before it is handled, to widen
	// the windows of a fault test. Defaults to 0.
	Slow time.Duration
	// Schemas validates what the services receive and write. Required.
	Schemas *messaging.SchemaRegistry
	// SessionTimeout is the Kafka consumer group session timeout. Defaults
	// to franz-go's (45s).
	SessionTimeout time.Duration
	// Logger receives the services' logs. Defaults to slog.Default().
	Logger *slog.Logger
	// Registerer, if set, receives the participants' metrics.
	Registerer prometheus.Registerer
}

func (c *ServicesConfig) setDefaults() {
	if c.Schema == "" {
		c.Schema = participant.DefaultSchema
	}
	if c.ExampleSchema == "" {
		c.ExampleSchema = DefaultExampleSchema
	}
	def := DefaultTopics()
	for _, f := range []struct {
		p *string
		d string
	}{
		{&c.Topics.SalesEvents, def.SalesEvents}, {&c.Topics.Inventory, def.Inventory},
		{&c.Topics.Accounting, def.Accounting}, {&c.Topics.Delivery, def.Delivery},
		{&c.Topics.Sales, def.Sales}, {&c.Topics.Replies, def.Replies}, {&c.Topics.Events, def.Events},
	} {
		if *f.p == "" {
			*f.p = f.d
		}
	}
	if c.GroupPrefix == "" {
		c.GroupPrefix = "example-o2c"
	}
	if len(c.Only) == 0 {
		c.Only = allServices()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *ServicesConfig) validate() error {
	var errs []error
	if c.Pool == nil {
		errs = append(errs, errors.New("ServicesConfig.Pool: required"))
	}
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("ServicesConfig.Brokers: required"))
	}
	if c.Schemas == nil {
		errs = append(errs, errors.New("ServicesConfig.Schemas: required"))
	}
	for _, s := range c.Only {
		if !slices.Contains(allServices(), s) {
			errs = append(errs, fmt.Errorf("ServicesConfig.Only: %q is not one of %s", s, strings.Join(allServices(), ", ")))
		}
	}
	if c.Slow < 0 {
		errs = append(errs, fmt.Errorf("ServicesConfig.Slow: %s is negative", c.Slow))
	}
	return errors.Join(errs...)
}

// RunServices runs the services of cfg.Only until ctx ends, then drains:
// it stops consuming, waits for the commands in flight and returns nil. It
// creates the example's tables first if they do not exist. With sales, it
// also consumes the saga lifecycle events (cfg.Topics.Events, consumer group
// "<GroupPrefix>-sales-outcomes") and cancels the order of every
// order-to-cash saga that compensated.
func RunServices(ctx context.Context, cfg ServicesConfig) error {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	st, err := newStore(cfg.ExampleSchema)
	if err != nil {
		return err
	}
	if err := st.setup(ctx, cfg.Pool); err != nil {
		return err
	}
	replies, err := outbox.New(outbox.Config{Schema: cfg.Schema, Registry: cfg.Schemas})
	if err != nil {
		return err
	}

	wlog := watermill.NewSlogLogger(cfg.Logger)
	client := kafka.ClientConfig{Brokers: cfg.Brokers, ClientID: "dtx-example-o2c", Logger: wlog}
	if cfg.SessionTimeout > 0 {
		client.Opts = append(client.Opts, kgo.SessionTimeout(cfg.SessionTimeout), kgo.HeartbeatInterval(min(3*time.Second, cfg.SessionTimeout/3)))
	}
	// Dead letters go to "<topic>.dlq", which the broker creates on first use.
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: client, AutoCreateTopics: true})
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	mws, err := middleware.Standard(middleware.StackConfig{DeadLetterPublisher: pub, Schemas: cfg.Schemas})
	if err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return err
	}
	router.AddMiddleware(mws...)

	orders, err := newOrderEvents(cfg.Pool, cfg.Schema, cfg.Topics.SalesEvents)
	if err != nil {
		return err
	}
	h := handlers{st: st, orders: orders}
	for _, name := range cfg.Only {
		svc, err := newService(cfg, name, replies, h)
		if err != nil {
			return err
		}
		sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
			ClientConfig:            client,
			ConsumerGroup:           cfg.GroupPrefix + "-" + name,
			MaxInFlightPerPartition: 8,
		})
		if err != nil {
			return err
		}
		defer func() { _ = sub.Close() }()
		handle := svc.Handle
		if cfg.Slow > 0 {
			handle = slowly(cfg.Slow, handle)
		}
		router.AddConsumerHandler("example-o2c-"+name, cfg.Topics.commands(name), sub, handle)
	}
	if slices.Contains(cfg.Only, serviceSales) {
		// Choreography after the orchestration: sales cancels the order of
		// a compensated saga, in a consumer group of its own.
		sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
			ClientConfig:            client,
			ConsumerGroup:           cfg.GroupPrefix + "-" + salesOutcomes,
			MaxInFlightPerPartition: 8,
		})
		if err != nil {
			return err
		}
		defer func() { _ = sub.Close() }()
		outcomes := orderOutcomes{pool: cfg.Pool, events: orders, logger: cfg.Logger, now: time.Now}
		router.AddConsumerHandler("example-o2c-"+salesOutcomes, cfg.Topics.Events, sub, outcomes.Handle)
	}
	cfg.Logger.InfoContext(ctx, "order-to-cash services: running", "services", cfg.Only,
		"schema", cfg.Schema, "example_schema", cfg.ExampleSchema, "slow", cfg.Slow.String())

	if err := messaging.RunRouter(ctx, router); err != nil {
		if ctx.Err() == nil {
			return fmt.Errorf("order-to-cash services: %w", err)
		}
		cfg.Logger.WarnContext(ctx, "order-to-cash services: drain", "err", err)
	}
	cfg.Logger.InfoContext(ctx, "order-to-cash services: stopped")
	return nil
}

// slowly delays each message by d (or until its context ends) before h.
func slowly(d time.Duration, h message.NoPublishHandlerFunc) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-msg.Context().Done():
			return msg.Context().Err()
		}
		return h(msg)
	}
}

// newService is one participant service with its handlers: actions, and
// compensations whose reply names the order, what was undone (when the
// command names it) and when.
func newService(cfg ServicesConfig, name string, replies *outbox.Outbox, h handlers) (*participant.Participant, error) {
	p, err := participant.New(cfg.Pool, participant.Config{
		Name: name, Schema: cfg.Schema, Outbox: replies, Source: "/dtx/examples/order-to-cash/" + name, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	switch name {
	case serviceInventory:
		p.Action("inventory.stock.reserve", h.reserve)
		p.Compensation("inventory.stock.release", "inventory.stock.released", h.release, undone("reservation_id", "released_at"))
	case serviceAccounting:
		p.Action("accounting.payment.charge", h.charge)
		p.Compensation("accounting.payment.refund", "accounting.payment.refunded", h.refund, undone("payment_id", "refunded_at"))
	case serviceDelivery:
		p.Action("delivery.shipment.schedule", h.schedule)
		p.Compensation("delivery.shipment.cancel", "delivery.shipment.cancelled", h.cancel, undone("shipment_id", "cancelled_at"))
	case serviceSales:
		p.Action("sales.order.confirm", h.confirm)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(p.Collector()); err != nil {
			return nil, fmt.Errorf("register the metrics of %s: %w", name, err)
		}
	}
	return p, nil
}

// undone builds a compensation's success reply from its command: the order
// id, idField when the command names what was undone, and atField = now.
func undone(idField, atField string) participant.ReplyDataFunc {
	return func(cmd participant.Command) any {
		var in map[string]any
		_ = json.Unmarshal(cmd.Data, &in) // the command passed its schema
		out := map[string]any{"order_id": in["order_id"], atField: now()}
		if id, ok := in[idField]; ok {
			out[idField] = id
		}
		return out
	}
}

// handlers are the services' command handlers. Each runs in the command's
// transaction, behind the barrier, and records its effect in the ledger.
type handlers struct {
	st store
	// orders is the Order aggregate's event store: confirm appends
	// OrderConfirmed to the orders placed through the sales API.
	orders *orderEventStore
}

type item struct {
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}

// decode reads a command's payload; one that does not decode is permanent.
func decode(cmd participant.Command, v any) error {
	if err := json.Unmarshal(cmd.Data, v); err != nil {
		return messaging.Permanent(fmt.Errorf("%s %q: payload: %w", cmd.Type, cmd.Envelope.ID, err))
	}
	return nil
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// reserve reserves every line of the order or none: a line short of stock
// (or of an unknown SKU) rejects the command, and the barrier discards the
// lines reserved before it.
func (h handlers) reserve(ctx context.Context, tx pgx.Tx, cmd participant.Command) (participant.Reply, error) {
	var in struct {
		OrderID string `json:"order_id"`
		Items   []item `json:"items"`
	}
	if err := decode(cmd, &in); err != nil {
		return participant.Reply{}, err
	}
	// One row per SKU, locked in SKU order so that concurrent orders do not
	// deadlock.
	qty := map[string]int64{}
	for _, it := range in.Items {
		qty[it.SKU] += it.Quantity
	}
	skus := slices.Sorted(func(yield func(string) bool) {
		for s := range qty {
			if !yield(s) {
				return
			}
		}
	})
	reservationID := "rsv-" + in.OrderID
	type shortage struct {
		SKU       string `json:"sku"`
		Requested int64  `json:"requested"`
		Available int64  `json:"available"`
	}
	var short []shortage
	reason := "out_of_stock"
	var units int64
	items := make([]map[string]any, 0, len(skus))
	for _, sku := range skus {
		var available int64
		err := tx.QueryRow(ctx, h.st.sql(`SELECT on_hand - reserved FROM {s}.stock WHERE sku = $1 FOR UPDATE`), sku).Scan(&available)
		if errors.Is(err, pgx.ErrNoRows) {
			reason = "unknown_sku"
			short = append(short, shortage{SKU: sku, Requested: qty[sku]})
			continue
		}
		if err != nil {
			return participant.Reply{}, err
		}
		if available < qty[sku] {
			short = append(short, shortage{SKU: sku, Requested: qty[sku], Available: available})
			continue
		}
		if _, err := tx.Exec(ctx, h.st.sql(`UPDATE {s}.stock SET reserved = reserved + $2 WHERE sku = $1`), sku, qty[sku]); err != nil {
			return participant.Reply{}, err
		}
		if _, err := tx.Exec(ctx, h.st.sql(`INSERT INTO {s}.reservations (order_id, reservation_id, sku, quantity, status)
			VALUES ($1, $2, $3, $4, 'reserved')`), in.OrderID, reservationID, sku, qty[sku]); err != nil {
			return participant.Reply{}, err
		}
		units += qty[sku]
		items = append(items, map[string]any{"sku": sku, "quantity": qty[sku], "warehouse_id": "wh-1"})
	}
	if len(short) > 0 {
		return participant.Reply{}, participant.Reject("inventory.stock.reservation_failed", map[string]any{
			"order_id": in.OrderID, "reason": reason, "shortages": short,
			"message": fmt.Sprintf("%d of %d SKUs short", len(short), len(skus)),
		})
	}
	if err := h.st.ledger(ctx, tx, serviceInventory, cmd.SagaID, cmd.Step, string(cmd.Phase),
		fmt.Sprintf("reserved %d units of %d SKUs", units, len(skus))); err != nil {
		return participant.Reply{}, err
	}
	return participant.Reply{Type: "inventory.stock.reserved", Data: map[string]any{
		"order_id": in.OrderID, "reservation_id": reservationID, "items": items, "reserved_at": now(),
	}}, nil
}

// release gives back what the order reserved, found by order id.
func (h handlers) release(ctx context.Context, tx pgx.Tx, cmd participant.Command) (any, error) {
	var in struct {
		OrderID string `json:"order_id"`
	}
	if err := decode(cmd, &in); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, h.st.sql(`UPDATE {s}.reservations SET status = 'released'
		WHERE order_id = $1 AND status = 'reserved' RETURNING sku, quantity`), in.OrderID)
	if err != nil {
		return nil, err
	}
	released, err := pgx.CollectRows(rows, pgx.RowToStructByPos[item])
	if err != nil {
		return nil, err
	}
	slices.SortFunc(released, func(a, b item) int { return strings.Compare(a.SKU, b.SKU) })
	var units int64
	for _, it := range released {
		if _, err := tx.Exec(ctx, h.st.sql(`UPDATE {s}.stock SET reserved = reserved - $2 WHERE sku = $1`), it.SKU, it.Quantity); err != nil {
			return nil, err
		}
		units += it.Quantity
	}
	if err := h.st.ledger(ctx, tx, serviceInventory, cmd.SagaID, cmd.Step, string(cmd.Phase),
		fmt.Sprintf("released %d units of %d SKUs", units, len(released))); err != nil {
		return nil, err
	}
	return undone("reservation_id", "released_at")(cmd), nil
}

// charge charges the customer, unless the customer id starts with
// "cus-declined": then the payment is declined.
func (h handlers) charge(ctx context.Context, tx pgx.Tx, cmd participant.Command) (participant.Reply, error) {
	var in struct {
		OrderID    string `json:"order_id"`
		CustomerID string `json:"customer_id"`
		Amount     int64  `json:"amount"`
		Currency   string `json:"currency"`
	}
	if err := decode(cmd, &in); err != nil {
		return participant.Reply{}, err
	}
	if strings.HasPrefix(in.CustomerID, "cus-declined") {
		return participant.Reply{}, participant.Reject("accounting.payment.declined", map[string]any{
			"order_id": in.OrderID, "reason": "card declined for customer " + in.CustomerID, "declined_at": now(),
		})
	}
	paymentID := "pay-" + in.OrderID
	if _, err := tx.Exec(ctx, h.st.sql(`INSERT INTO {s}.payments (order_id, payment_id, amount, currency, status)
		VALUES ($1, $2, $3, $4, 'charged')`), in.OrderID, paymentID, in.Amount, in.Currency); err != nil {
		return participant.Reply{}, err
	}
	if err := h.st.ledger(ctx, tx, serviceAccounting, cmd.SagaID, cmd.Step, string(cmd.Phase),
		fmt.Sprintf("charged %d %s", in.Amount, in.Currency)); err != nil {
		return participant.Reply{}, err
	}
	return participant.Reply{Type: "accounting.payment.charged", Data: map[string]any{
		"order_id": in.OrderID, "payment_id": paymentID, "amount": in.Amount, "currency": in.Currency, "charged_at": now(),
	}}, nil
}

// refund refunds the order's payment, found by order id.
func (h handlers) refund(ctx context.Context, tx pgx.Tx, cmd participant.Command) (any, error) {
	var in struct {
		OrderID string `json:"order_id"`
	}
	if err := decode(cmd, &in); err != nil {
		return nil, err
	}
	tag, err := tx.Exec(ctx, h.st.sql(`UPDATE {s}.payments SET status = 'refunded', refunded_at = now()
		WHERE order_id = $1 AND status = 'charged'`), in.OrderID)
	if err != nil {
		return nil, err
	}
	if err := h.st.ledger(ctx, tx, serviceAccounting, cmd.SagaID, cmd.Step, string(cmd.Phase),
		fmt.Sprintf("refunded %d payments", tag.RowsAffected())); err != nil {
		return nil, err
	}
	return undone("payment_id", "refunded_at")(cmd), nil
}

// schedule schedules the shipment, unless it goes to Antarctica ("AQ"): no
// carrier delivers there.
func (h handlers) schedule(ctx context.Context, tx pgx.Tx, cmd participant.Command) (participant.Reply, error) {
	var in struct {
		OrderID string `json:"order_id"`
		Address struct {
			Country string `json:"country"`
		} `json:"shipping_address"`
	}
	if err := decode(cmd, &in); err != nil {
		return participant.Reply{}, err
	}
	if in.Address.Country == "AQ" {
		return participant.Reply{}, participant.Reject("delivery.shipment.failed", map[string]any{
			"order_id": in.OrderID, "reason": "address_undeliverable", "message": "no carrier delivers to AQ",
		})
	}
	shipmentID := "shp-" + in.OrderID
	if _, err := tx.Exec(ctx, h.st.sql(`INSERT INTO {s}.shipments (order_id, shipment_id, status) VALUES ($1, $2, 'scheduled')`),
		in.OrderID, shipmentID); err != nil {
		return participant.Reply{}, err
	}
	if err := h.st.ledger(ctx, tx, serviceDelivery, cmd.SagaID, cmd.Step, string(cmd.Phase), "scheduled "+shipmentID); err != nil {
		return participant.Reply{}, err
	}
	return participant.Reply{Type: "delivery.shipment.scheduled", Data: map[string]any{
		"order_id": in.OrderID, "shipment_id": shipmentID, "carrier": "example-post",
		"scheduled_date": time.Now().UTC().AddDate(0, 0, 1).Format(time.DateOnly),
	}}, nil
}

// cancel cancels the order's shipment, found by order id.
func (h handlers) cancel(ctx context.Context, tx pgx.Tx, cmd participant.Command) (any, error) {
	var in struct {
		OrderID string `json:"order_id"`
	}
	if err := decode(cmd, &in); err != nil {
		return nil, err
	}
	tag, err := tx.Exec(ctx, h.st.sql(`UPDATE {s}.shipments SET status = 'cancelled', cancelled_at = now()
		WHERE order_id = $1 AND status = 'scheduled'`), in.OrderID)
	if err != nil {
		return nil, err
	}
	if err := h.st.ledger(ctx, tx, serviceDelivery, cmd.SagaID, cmd.Step, string(cmd.Phase),
		fmt.Sprintf("cancelled %d shipments", tag.RowsAffected())); err != nil {
		return nil, err
	}
	return undone("shipment_id", "cancelled_at")(cmd), nil
}

// confirm confirms the order. An order this service never placed is a
// permanent error: the command is dead-lettered.
func (h handlers) confirm(ctx context.Context, tx pgx.Tx, cmd participant.Command) (participant.Reply, error) {
	var in struct {
		OrderID string `json:"order_id"`
	}
	if err := decode(cmd, &in); err != nil {
		return participant.Reply{}, err
	}
	var status string
	err := tx.QueryRow(ctx, h.st.sql(`UPDATE {s}.orders SET status = 'confirmed', confirmed_at = now()
		WHERE order_id = $1 RETURNING status`), in.OrderID).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return participant.Reply{}, messaging.Permanent(fmt.Errorf("sales.order.confirm: order %q unknown", in.OrderID))
	}
	if err != nil {
		return participant.Reply{}, err
	}
	if err := confirmOrder(ctx, h.orders, tx, in.OrderID); err != nil {
		return participant.Reply{}, err
	}
	if err := h.st.ledger(ctx, tx, serviceSales, cmd.SagaID, cmd.Step, string(cmd.Phase), "confirmed "+in.OrderID); err != nil {
		return participant.Reply{}, err
	}
	return participant.Reply{Type: "sales.order.confirmed", Data: map[string]any{"order_id": in.OrderID, "confirmed_at": now()}}, nil
}
