package inbox_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/messaging/inbox"
	"github.com/vextrus/dtx/pkg/migrate"
)

func ExampleInbox_Handler() {
	ctx := context.Background()
	pool, schema, cleanup, err := exampleDatabase(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()

	ib, err := inbox.New(pool, inbox.Config{Schema: schema, Consumer: "billing/order-placed"})
	if err != nil {
		fmt.Println(err)
		return
	}
	// h is what a Watermill router runs: router.AddConsumerHandler(name,
	// topic, subscriber, func(msg) error { _, err := h(msg); return err }).
	h := ib.Handler(func(ctx context.Context, tx pgx.Tx, msg *message.Message) ([]*message.Message, error) {
		// The effect, in the transaction that records the message.
		_, err := tx.Exec(ctx, "INSERT INTO invoices (order_id) VALUES ($1)", string(msg.Payload))
		fmt.Println("invoiced order", string(msg.Payload))
		return nil, err
	})

	msg := message.NewMessage("0b5e7c1e-order-placed-42", []byte("42"))
	for range 3 { // Kafka delivers at least once.
		if _, err := h(msg.Copy()); err != nil {
			fmt.Println(err)
		}
	}
	var invoices int
	_ = pool.QueryRow(ctx, "SELECT count(*) FROM invoices").Scan(&invoices)
	fmt.Println("invoices:", invoices)
	// Output:
	// invoiced order 42
	// invoices: 1
}

// exampleDatabase gives the example a schema of its own in the database
// named by DTX_DATABASE_URL (the development database when unset): a fresh
// name, dtx's tables migrated into it, and the example's own tables. The
// pool's connections use the schema as their search_path; cleanup drops the
// schema and closes the pool.
func exampleDatabase(ctx context.Context) (*pgxpool.Pool, string, func(), error) {
	db, err := migrate.NewTempSchema(ctx, os.Getenv("DTX_DATABASE_URL"), "example_")
	if err != nil {
		return nil, "", nil, err
	}
	pool, schema := db.Pool, db.Name
	cleanup := func() { _ = db.Close(context.WithoutCancel(ctx)) }
	if _, err := pool.Exec(ctx, "CREATE TABLE invoices (order_id text PRIMARY KEY)"); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	return pool, schema, cleanup, nil
}
