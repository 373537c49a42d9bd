package txlog_test

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/internal/txlog"
)

// A writer appends to a log and notifies in its transaction; a reader tails
// the log, woken by the notification, and moves its checkpoint.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, schema, cleanup, err := exampleDatabase(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()

	type message struct {
		Topic   string
		Payload []byte
	}
	reader, err := txlog.NewReader(txlog.Config{
		Schema: schema, Log: "messages", Reader: "example",
		Columns: []string{"topic", "payload"},
	}, func(m *message) []any { return []any{&m.Topic, &m.Payload} })
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := reader.CheckTable(ctx, pool); err != nil {
		fmt.Println(err)
		return
	}
	listener, err := txlog.NewListener(pool, txlog.ListenerConfig{Channel: "example_messages"})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := listener.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer listener.Stop()
	sub := listener.Subscribe()
	defer sub.Close()

	// The writer: rows and notification commit together.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, topic := range []string{"orders", "payments"} {
			if _, err := tx.Exec(ctx, "INSERT INTO messages (topic, payload) VALUES ($1, '{}')", topic); err != nil {
				return err
			}
		}
		return txlog.Notify(ctx, tx, "example_messages")
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	// The reader.
	after, err := reader.LoadCheckpoint(ctx, pool)
	if err != nil {
		fmt.Println(err)
		return
	}
	for read := 0; read < 2; {
		b, err := reader.ReadBatch(ctx, pool, after)
		if err != nil {
			fmt.Println(err)
			return
		}
		for _, row := range b.Rows {
			fmt.Println("read", row.Value.Topic)
		}
		if len(b.Rows) > 0 {
			moved, err := reader.SaveCheckpoint(ctx, pool, b.End)
			if err != nil {
				fmt.Println(err)
				return
			}
			fmt.Println("checkpoint moved:", moved)
		}
		read += len(b.Rows)
		after = b.End
		if !b.Full && read < 2 {
			if _, err := sub.Wait(ctx, b.HorizonBlocked); err != nil {
				fmt.Println(err)
				return
			}
		}
	}
	// Output:
	// read orders
	// read payments
	// checkpoint moved: true
}

// exampleDatabase migrates a fresh schema with the example's tables.
func exampleDatabase(ctx context.Context) (*pgxpool.Pool, string, func(), error) {
	return pgtest.ExampleSchema(ctx, `CREATE TABLE messages (
		tx_id      xid8        NOT NULL DEFAULT pg_current_xact_id(),
		position   bigint      GENERATED ALWAYS AS IDENTITY,
		topic      text        NOT NULL,
		payload    jsonb       NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (tx_id, position))`)
}
