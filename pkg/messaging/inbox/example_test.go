package inbox_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/internal/migrate"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
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

// exampleDatabase migrates a fresh schema, with an invoices table, in the
// test database and returns a pool on it and a function that drops it.
func exampleDatabase(ctx context.Context) (*pgxpool.Pool, string, func(), error) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "example_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, pgtest.URL())
	if err != nil {
		return nil, "", nil, err
	}
	drop := func() {
		_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		_ = conn.Close(ctx)
	}
	if err := migrate.Up(ctx, conn, migrate.Config{Schema: schema}); err != nil {
		drop()
		return nil, "", nil, err
	}
	cfg, err := pgxpool.ParseConfig(pgtest.URL())
	if err != nil {
		drop()
		return nil, "", nil, err
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		drop()
		return nil, "", nil, err
	}
	cleanup := func() { pool.Close(); drop() }
	if _, err := pool.Exec(ctx, "CREATE TABLE invoices (order_id text PRIMARY KEY)"); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	return pool, schema, cleanup, nil
}
