package outbox_test

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/migrate"
)

func ExampleOutbox_WriteEnvelopes() {
	ctx := context.Background()
	pool, schema, cleanup, err := exampleDatabase(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()

	ob, err := outbox.New(outbox.Config{Schema: schema})
	if err != nil {
		fmt.Println(err)
		return
	}
	placed, err := messaging.NewEnvelope("sales.order.placed", "/sales/api", map[string]any{"order_id": "o-42"})
	if err != nil {
		fmt.Println(err)
		return
	}
	placed.PartitionKey = "o-42"

	// The state change and the message commit together, or neither does.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// First: lock the keys the transaction writes, before any write,
		// so its messages are published in commit order per key.
		if err := ob.Lock(ctx, tx, "sales.orders", placed.PartitionKey); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO orders (id, status) VALUES ($1, 'placed')", "o-42"); err != nil {
			return err
		}
		return ob.WriteEnvelopes(ctx, tx, "sales.orders", placed)
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	// What the relay will publish:
	var topic, key, typ string
	var payload []byte
	_ = pool.QueryRow(ctx, "SELECT topic, key, headers->>'ce_type', payload FROM outbox").Scan(&topic, &key, &typ, &payload)
	fmt.Println(topic, key, typ, string(payload))
	// Output:
	// sales.orders o-42 sales.order.placed {"order_id":"o-42"}
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
	if _, err := pool.Exec(ctx, "CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL)"); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	return pool, schema, cleanup, nil
}
