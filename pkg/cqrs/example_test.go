package cqrs_test

import (
	"context"
	"fmt"
	"os"
	"testing/fstest"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/pkg/cqrs"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/migrate"
)

// Example schemas: one JSON Schema per message type, version 1.
var exampleSchemas = fstest.MapFS{
	"shop.order.place.v1.json": {Data: []byte(`{"type": "object", "required": ["order_id", "total"],
		"properties": {"order_id": {"type": "string"}, "total": {"type": "integer", "minimum": 1}}}`)},
	"shop.order.placed.v1.json": {Data: []byte(`{"type": "object", "required": ["order_id"]}`)},
	"shop.order.get.v1.json":    {Data: []byte(`{"type": "object", "required": ["order_id"]}`)},
}

// PlaceOrder is a command.
type PlaceOrder struct {
	OrderID string `json:"order_id"`
	Total   int    `json:"total"`
}

// PartitionKey keeps the messages of one order in order.
func (c PlaceOrder) PartitionKey() string { return c.OrderID }

// OrderPlaced is an event.
type OrderPlaced struct {
	OrderID string `json:"order_id"`
}

// GetOrder is a query; Order its result.
type GetOrder struct {
	OrderID string `json:"order_id"`
}

// Order is what GetOrder returns.
type Order struct {
	ID    string
	Total int
}

// A command handled in process: its effect and the event it publishes
// commit in one transaction; then a query reads the effect back.
func Example() {
	ctx := context.Background()
	db, err := migrate.NewTempSchema(ctx, os.Getenv("DTX_DATABASE_URL"), "example_")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = db.Close(context.WithoutCancel(ctx)) }()
	if _, err := db.Pool.Exec(ctx, "CREATE TABLE orders (id text PRIMARY KEY, total int)"); err != nil {
		fmt.Println(err)
		return
	}

	schemas, _ := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: exampleSchemas})
	ob, _ := outbox.New(outbox.Config{Schema: db.Name, Registry: schemas})
	events, _ := cqrs.NewEventBus(cqrs.EventBusConfig{Source: "/shop", Schemas: schemas, Outbox: ob})
	commands, _ := cqrs.NewCommandBus(cqrs.CommandBusConfig{Source: "/shop", Schemas: schemas, Pool: db.Pool, Outbox: ob})
	queries, _ := cqrs.NewQueryBus(cqrs.QueryBusConfig{Pool: db.Pool})

	_ = cqrs.RegisterEvent[OrderPlaced](events, "shop.order.placed")
	_ = cqrs.HandleCommand(commands, "shop.order.place", func(ctx context.Context, tx pgx.Tx, c PlaceOrder) error {
		if _, err := tx.Exec(ctx, "INSERT INTO orders VALUES ($1, $2)", c.OrderID, c.Total); err != nil {
			return err
		}
		return cqrs.Publish(ctx, events, OrderPlaced{OrderID: c.OrderID})
	})
	_ = cqrs.HandleQuery(queries, "shop.order.get", func(ctx context.Context, q GetOrder) (Order, error) {
		tx, _ := inbox.TxFromContext(ctx) // read-only
		o := Order{ID: q.OrderID}
		err := tx.QueryRow(ctx, "SELECT total FROM orders WHERE id = $1", q.OrderID).Scan(&o.Total)
		return o, err
	})

	fmt.Println(cqrs.Dispatch(ctx, commands, PlaceOrder{OrderID: "o-1", Total: 30}))
	fmt.Println(cqrs.Dispatch(ctx, commands, PlaceOrder{OrderID: "o-2", Total: 0}))
	order, err := cqrs.Query[GetOrder, Order](ctx, queries, GetOrder{OrderID: "o-1"})
	fmt.Println(order, err)

	var topic, typ string
	_ = db.Pool.QueryRow(ctx, "SELECT topic, headers->>'ce_type' FROM outbox").Scan(&topic, &typ)
	fmt.Println("outbox:", topic, typ)
	// Output:
	// <nil>
	// cqrs: command "shop.order.place": messaging: payload of shop.order.place v1 violates its schema: at '/total': minimum: got 0, want 1
	// {o-1 30} <nil>
	// outbox: shop.events shop.order.placed
}

// Send writes a command to the outbox in the caller's transaction; the
// service that handles it runs a CommandProcessor on its topic.
func ExampleSend() {
	ctx := context.Background()
	db, err := migrate.NewTempSchema(ctx, os.Getenv("DTX_DATABASE_URL"), "example_")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = db.Close(context.WithoutCancel(ctx)) }()

	schemas, _ := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: exampleSchemas})
	ob, _ := outbox.New(outbox.Config{Schema: db.Name})
	commands, _ := cqrs.NewCommandBus(cqrs.CommandBusConfig{Source: "/checkout", Schemas: schemas, Outbox: ob})
	_ = cqrs.RegisterCommand[PlaceOrder](commands, "shop.order.place")

	tx, _ := db.Pool.Begin(ctx)
	// ... the caller's own writes in tx ...
	err = cqrs.Send(inbox.ContextWithTx(ctx, tx), commands, PlaceOrder{OrderID: "o-1", Total: 30})
	fmt.Println(err, tx.Commit(ctx))

	var topic, key string
	_ = db.Pool.QueryRow(ctx, "SELECT topic, key FROM outbox").Scan(&topic, &key)
	fmt.Println(topic, key)
	// Output:
	// <nil> <nil>
	// shop.commands o-1
}

// The Marshaler makes Watermill's cqrs buses write dtx envelopes.
func ExampleMarshaler() {
	m := cqrs.Marshaler{Source: "/shop", NameFunc: func(any) string { return "shop.order.place" }}
	msg, err := m.Marshal(PlaceOrder{OrderID: "o-1", Total: 30})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(msg.Metadata[messaging.HeaderSpecVersion], msg.Metadata[messaging.HeaderType],
		msg.Metadata[messaging.HeaderSource], msg.Metadata[messaging.MetadataPartitionKey], string(msg.Payload))
	// Output:
	// 1.0 shop.order.place /shop o-1 {"order_id":"o-1","total":30}
}
