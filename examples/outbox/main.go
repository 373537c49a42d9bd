package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/telemetry"
	dtxtopic "github.com/vextrus/dtx/pkg/topic"
	"github.com/vextrus/dtx/schemas"
)

const topic = "sales.orders"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "outbox example:", err)
		os.Exit(1)
	}
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context) error {
	orders := flag.Int("orders", 1000, "orders to place")
	perTx := flag.Int("per-tx", 10, "orders per transaction")
	timeout := flag.Duration("timeout", 60*time.Second, "how long to wait for every event on Kafka")
	flag.Parse()
	if *orders < 1 || *perTx < 1 {
		return errors.New("--orders and --per-tx must be at least 1")
	}
	// Traces follow the standard OTEL_* variables (none unless set): each
	// transaction is a span, whose context the outbox writes with its rows.
	shutdownTracing, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "example-outbox"})
	if err != nil {
		return err
	}
	defer func() {
		flush, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer done()
		_ = shutdownTracing(flush)
	}()
	schema := env("DTX_SCHEMA", "dtx")
	brokers := strings.Split(env("DTX_KAFKA_BROKERS", "127.0.0.1:9092"), ",")

	pool, err := pgxpool.New(ctx, env("DTX_DATABASE_URL", "postgres://dtx:dtx@127.0.0.1:5432/dtx?sslmode=disable"))
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS example_sales;
		CREATE TABLE IF NOT EXISTS example_sales.orders (
			order_id text PRIMARY KEY, customer_id text NOT NULL, total_amount bigint NOT NULL,
			placed_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create the example's orders table: %w", err)
	}
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	if err != nil {
		return err
	}
	ob, err := outbox.New(outbox.Config{Schema: schema, Registry: reg})
	if err != nil {
		return err
	}

	// Read each partition of the topic from its end as it is now, before
	// anything is written: every event of this run comes after these offsets,
	// however late the consumer starts. The topic must exist (dtxctl topics
	// apply): a consumer reading from the end of a topic that the first
	// write creates would miss what was written before it joined.
	consumer, err := consumeFromEnd(ctx, brokers, topic)
	if err != nil {
		return err
	}
	defer consumer.Close()
	run := fmt.Sprintf("run-%d", time.Now().UnixNano())
	seen := make(chan string, 1024)
	consumeCtx, cancelConsume := context.WithCancel(ctx)
	defer cancelConsume()
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for consumeCtx.Err() == nil {
			consumer.PollFetches(consumeCtx).EachRecord(func(r *kgo.Record) {
				if strings.HasPrefix(string(r.Key), run) {
					seen <- string(r.Key)
				}
			})
		}
	}()
	defer func() { cancelConsume(); <-consumed }()

	fmt.Printf("placing %d orders, %d per transaction, events to topic %s through the outbox\n", *orders, *perTx, topic)
	began := time.Now()
	written, arrived := 0, map[string]bool{}
	progress := time.NewTicker(250 * time.Millisecond)
	defer progress.Stop()
	deadline := time.After(*timeout)
	for len(arrived) < *orders {
		if written < *orders {
			n := min(*perTx, *orders-written)
			if err := placeOrders(ctx, pool, ob, run, written, n); err != nil {
				return err
			}
			written += n
		}
		drain := true
		for drain {
			select {
			case key := <-seen:
				arrived[key] = true
			case <-progress.C:
				fmt.Printf("progress: written %d/%d in transactions, on Kafka %d/%d (%.1fs)\n",
					written, *orders, len(arrived), *orders, time.Since(began).Seconds())
			case <-deadline:
				return fmt.Errorf("after %s only %d of %d events reached Kafka: is the outbox-relay running?",
					*timeout, len(arrived), *orders)
			case <-ctx.Done():
				return ctx.Err()
			default:
				drain = written < *orders
				if !drain {
					select {
					case key := <-seen:
						arrived[key] = true
					case <-time.After(50 * time.Millisecond):
					}
				}
				drain = false
			}
		}
	}
	fmt.Printf("done: %d orders committed, %d events on Kafka, in %.1fs\n", written, len(arrived), time.Since(began).Seconds())
	return nil
}

// consumeFromEnd returns a client that consumes every partition of t from
// its end offset as it is when called.
func consumeFromEnd(ctx context.Context, brokers []string, t string) (*kgo.Client, error) {
	admCl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if err := dtxtopic.Require(ctx, adm, []string{t}); err != nil {
		return nil, fmt.Errorf("kafka at %s: %w (see examples/order-to-cash/topics.yaml)", strings.Join(brokers, ","), err)
	}
	ends, err := adm.ListEndOffsets(ctx, t)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: end offsets of %s: %w", t, err)
	}
	from := map[string]map[int32]kgo.Offset{t: {}}
	ends.Each(func(o kadm.ListedOffset) { from[t][o.Partition] = kgo.NewOffset().At(o.Offset) })
	return kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(from))
}

// placeOrders commits n orders in one transaction: the order rows and their
// events, or neither.
func placeOrders(ctx context.Context, pool *pgxpool.Pool, ob *outbox.Outbox, run string, from, n int) error {
	ctx, span := otel.Tracer("github.com/vextrus/dtx/examples/outbox").Start(ctx, "place orders",
		trace.WithAttributes(attribute.Int("orders", n)))
	defer span.End()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		envs := make([]messaging.Envelope, 0, n)
		for i := from; i < from+n; i++ {
			orderID := fmt.Sprintf("%s-%06d", run, i)
			if _, err := tx.Exec(ctx, `INSERT INTO example_sales.orders (order_id, customer_id, total_amount) VALUES ($1, $2, $3)`,
				orderID, "cus-42", 4348); err != nil {
				return err
			}
			env, err := messaging.NewEnvelope("sales.order.placed", "/dtx/examples/outbox", placed(orderID))
			if err != nil {
				return err
			}
			env.PartitionKey, env.Subject = orderID, orderID
			envs = append(envs, env)
		}
		return ob.WriteEnvelopes(ctx, tx, topic, envs...)
	})
}

func placed(orderID string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"order_id": orderID, "customer_id": "cus-42", "currency": "EUR",
		"lines": []map[string]any{{"sku": "BOOK-0001", "quantity": 2, "unit_price": 1999, "line_total": 3998},
			{"sku": "PEN-0007", "quantity": 1, "unit_price": 350, "line_total": 350}},
		"total_amount": 4348,
		"shipping_address": map[string]any{"name": "Ada Lovelace", "line1": "12 St James's Square",
			"city": "London", "postal_code": "SW1Y 4JH", "country": "GB"},
		"placed_at": time.Now().UTC().Format(time.RFC3339Nano),
	})
	return b
}
