package middleware_test

// Integration tests against real Kafka (kafkatest.Brokers(), 127.0.0.1:9092
// by default) and real PostgreSQL (pgtest.URL()), with dtx's Kafka Pub/Sub
// and a Watermill router running the Standard stack.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

// kafkaFixture is one test's topic, dead-letter topic and consumer group on
// the real broker.
type kafkaFixture struct {
	topic string
	dlq   string
	group string
	adm   *kadm.Client
	raw   *kgo.Client // produces records as they are, to a chosen partition
}

// setupKafka creates a topic with the given partitions, its dead-letter
// topic "<topic>.dlq" and a consumer group name, all deleted at cleanup.
func setupKafka(t *testing.T, partitions int32) *kafkaFixture {
	t.Helper()
	f := &kafkaFixture{
		topic: kafkatest.NewTopic(t, partitions),
		adm:   kadm.NewClient(kafkatest.NewClient(t)),
		raw:   kafkatest.NewClient(t, kgo.RecordPartitioner(kgo.ManualPartitioner())),
	}
	f.dlq = f.topic + messaging.DeadLetterSuffix
	f.group = f.topic + "-group"

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	kafkatest.CreateTopic(t, f.dlq, 1) // waited for: dead letters are produced at once
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if _, err := f.adm.DeleteGroup(ctx, f.group); err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
			t.Logf("delete group %s: %v", f.group, err)
		}
		if _, err := f.adm.DeleteTopic(ctx, f.dlq); err != nil {
			t.Logf("delete topic %s: %v", f.dlq, err)
		}
	})
	require.Eventually(t, func() bool {
		offsets, err := f.adm.ListEndOffsets(ctx, f.dlq)
		return err == nil && offsets.Error() == nil
	}, waitFor, 100*time.Millisecond, "dead-letter topic usable")
	return f
}

func (f *kafkaFixture) publisher(t *testing.T) *kafka.Publisher {
	t.Helper()
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: kafka.ClientConfig{Brokers: kafkatest.Brokers()}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	return pub
}

func (f *kafkaFixture) subscriber(t *testing.T) *kafka.Subscriber {
	t.Helper()
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		ClientConfig: kafka.ClientConfig{
			Brokers: kafkatest.Brokers(),
			// Group changes show within half a second rather than three.
			Opts: []kgo.Opt{kgo.HeartbeatInterval(500 * time.Millisecond)},
		},
		ConsumerGroup:   f.group,
		NackResendDelay: 10 * time.Millisecond,
		CommitInterval:  100 * time.Millisecond,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// produce writes a record as it is to the topic's partition and returns its
// offset.
func (f *kafkaFixture) produce(t *testing.T, partition int32, r *kgo.Record) int64 {
	t.Helper()
	r.Topic, r.Partition = f.topic, partition
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	res := f.raw.ProduceSync(ctx, r)
	require.NoError(t, res.FirstErr())
	return res[0].Record.Offset
}

// record turns msg into the record dtx's publisher would write.
func record(msg *message.Message) *kgo.Record {
	r := &kgo.Record{Key: []byte(msg.Metadata.Get(messaging.MetadataPartitionKey)), Value: msg.Payload}
	for k, v := range msg.Metadata {
		if k != messaging.MetadataPartitionKey {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
	}
	return r
}

// readAll reads the whole of topic (one partition) from its start: want
// records, then checks that no more are there.
func (f *kafkaFixture) readAll(t *testing.T, topic string, want int) []*kgo.Record {
	t.Helper()
	cl := kafkatest.NewClient(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < want {
		fetches := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d of %d records of %s", len(recs), want, topic)
		fetches.EachError(func(_ string, _ int32, err error) { t.Logf("fetch %s: %v", topic, err) })
		recs = append(recs, fetches.Records()...)
	}
	offsets, err := f.adm.ListEndOffsets(ctx, topic)
	require.NoError(t, err)
	end, ok := offsets.Lookup(topic, 0)
	require.True(t, ok)
	require.Equal(t, int64(want), end.Offset, "records in %s", topic)
	return recs
}

func headers(r *kgo.Record) map[string]string {
	h := make(map[string]string, len(r.Headers))
	for _, rh := range r.Headers {
		h[rh.Key] = string(rh.Value)
	}
	return h
}

// standardRouter returns a router running the Standard stack with dead
// letters published to Kafka.
func standardRouter(t *testing.T, f *kafkaFixture, cfg middleware.StackConfig) *message.Router {
	t.Helper()
	cfg.DeadLetterPublisher = f.publisher(t)
	cfg.Schemas = registry(t)
	if cfg.Retry.InitialInterval == 0 {
		cfg.Retry.InitialInterval = 5 * time.Millisecond
	}
	mws, err := middleware.Standard(cfg)
	require.NoError(t, err)
	r := newRouter(t)
	r.AddMiddleware(mws...)
	return r
}

// TestKafkaPoisonMessages publishes, in this order, to a one-partition topic:
// a record that is no envelope at all (no ce_* headers, garbage payload), a
// sales.order.placed v1 envelope whose payload breaks the schema, an
// envelope of a type without schema, and a valid envelope. Each of the
// first three lands once in <topic>.dlq with the reason and where it came
// from; the valid one is handled after them; the router keeps running.
func TestKafkaPoisonMessages(t *testing.T) {
	t.Parallel()
	f := setupKafka(t, 1)
	handled := make(chan string, 4)
	r := standardRouter(t, f, middleware.StackConfig{})
	r.AddConsumerHandler("orders", f.topic, f.subscriber(t), func(msg *message.Message) error {
		env, ok := middleware.EnvelopeFromContext(msg.Context())
		if !ok {
			return errors.New("no envelope")
		}
		handled <- env.ID
		return nil
	})
	runRouter(t, r)

	garbage := &kgo.Record{Key: []byte("k-garbage"), Value: []byte("\x00\x01 not an envelope \xff")}
	badBody := envelopeMessage(t, "sales.order.placed", []byte(`{"order_id":"ord-1","lines":[]}`))
	unknown := envelopeMessage(t, "sales.order.teleported", []byte(`{"order_id":"ord-1"}`))
	valid := envelopeMessage(t, "sales.order.placed", placedPayload(t))

	offsets := []int64{f.produce(t, 0, garbage)}
	pub := f.publisher(t)
	require.NoError(t, pub.Publish(f.topic, badBody, unknown, valid))
	offsets = append(offsets, offsets[0]+1, offsets[0]+2)

	select {
	case id := <-handled:
		require.Equal(t, valid.UUID, id, "only the valid message reaches the handler")
	case <-time.After(waitFor):
		t.Fatal("the valid message after the poison was not handled")
	}

	dead := f.readAll(t, f.dlq, 3)
	wantReasons := []string{
		"messaging: cannot decode message: ce_specversion: missing",
		"messaging: payload of sales.order.placed v1 violates its schema",
		`messaging: type "sales.order.teleported" version 1: no schema for message type`,
	}
	originals := []*kgo.Record{garbage, record(badBody), record(unknown)}
	for i, dl := range dead {
		h := headers(dl)
		require.Contains(t, h[messaging.HeaderDLQReason], wantReasons[i], "dead letter %d", i)
		require.Equal(t, f.topic, h[messaging.HeaderDLQOriginalTopic])
		require.Equal(t, "0", h[messaging.HeaderDLQOriginalPartition])
		require.Equal(t, strconv.FormatInt(offsets[i], 10), h[messaging.HeaderDLQOriginalOffset])
		require.Equal(t, f.group, h[messaging.HeaderDLQConsumerGroup])
		_, err := time.Parse(time.RFC3339Nano, h[messaging.HeaderDLQTime])
		require.NoError(t, err)

		require.Equal(t, originals[i].Key, dl.Key, "the record key is kept")
		require.Equal(t, originals[i].Value, dl.Value, "the payload is kept")
		for _, oh := range originals[i].Headers {
			require.Equal(t, string(oh.Value), h[oh.Key], "header %s is kept", oh.Key)
		}
		for k := range h {
			require.NotContains(t, k, messaging.ReceiveOnlyPrefix)
		}
	}
	// The record without ce_id is named by its position, on every delivery.
	require.Equal(t, fmt.Sprintf("%s/0/%d", f.topic, offsets[0]), headers(dead[0])[messaging.HeaderID])

	// The process is alive and the partition moves on.
	require.True(t, r.IsRunning())
	next := envelopeMessage(t, "sales.order.placed", placedPayload(t))
	require.NoError(t, pub.Publish(f.topic, next))
	select {
	case id := <-handled:
		require.Equal(t, next.UUID, id)
	case <-time.After(waitFor):
		t.Fatal("the partition does not move on")
	}
	f.readAll(t, f.dlq, 3)
}

// TestKafkaTracingAcrossHop publishes through TracingPublisher on dtx's Kafka
// publisher and consumes with a router running the Standard stack: the
// publish span and the consume span share one trace, and the consume span's
// parent is the publish span.
func TestKafkaTracingAcrossHop(t *testing.T) {
	t.Parallel()
	f := setupKafka(t, 1)
	tp, rec := newTracer(t)
	handled := make(chan trace.SpanContext, 1)
	r := standardRouter(t, f, middleware.StackConfig{TracerProvider: tp})
	r.AddConsumerHandler("orders", f.topic, f.subscriber(t), func(msg *message.Message) error {
		handled <- trace.SpanContextFromContext(msg.Context())
		return nil
	})
	runRouter(t, r)

	pub := middleware.TracingPublisher(f.publisher(t), tp, nil)
	msg := envelopeMessage(t, "sales.order.placed", placedPayload(t))
	require.NoError(t, pub.Publish(f.topic, msg))

	var inHandler trace.SpanContext
	select {
	case inHandler = <-handled:
	case <-time.After(waitFor):
		t.Fatal("not handled")
	}
	require.Eventually(t, func() bool { return len(rec.Ended()) == 2 }, waitFor, pollEvery)
	send := spanNamed(t, rec, "send "+f.topic)
	process := spanNamed(t, rec, "process "+f.topic)
	require.Equal(t, trace.SpanKindProducer, send.SpanKind())
	require.Equal(t, trace.SpanKindConsumer, process.SpanKind())
	require.Equal(t, send.SpanContext().TraceID(), process.SpanContext().TraceID(), "one trace")
	require.Equal(t, send.SpanContext().SpanID(), process.Parent().SpanID(), "the consume span's parent is the publish span")
	require.True(t, process.Parent().IsRemote(), "the context crossed Kafka in the headers")
	require.Equal(t, process.SpanContext().SpanID(), inHandler.SpanID())
	a := attrs(process)
	require.Equal(t, "0", a["messaging.destination.partition.id"].AsString())
	require.Equal(t, f.group, a["messaging.consumer.group.name"].AsString())
	require.Equal(t, int64(0), a["messaging.kafka.offset"].AsInt64())
}

// inboxFixture is a schema with the inbox table and an effects table: the
// stand-in for a handler's business effect.
type inboxFixture struct {
	schema *pgtest.Schema
	inbox  *inbox.Inbox
}

func setupInbox(t *testing.T) *inboxFixture {
	t.Helper()
	s := pgtest.NewSchema(t)
	_, err := s.Pool.Exec(context.Background(), "CREATE TABLE effects (message_id text NOT NULL, partition text NOT NULL)")
	require.NoError(t, err)
	ib, err := inbox.New(s.Pool, inbox.Config{Schema: s.Name, Consumer: "orders-consumer"})
	require.NoError(t, err)
	return &inboxFixture{schema: s, inbox: ib}
}

// handler records the effect of msg in the inbox's transaction.
func (f *inboxFixture) handler() message.HandlerFunc {
	return f.inbox.Handler(func(ctx context.Context, tx pgx.Tx, msg *message.Message) ([]*message.Message, error) {
		_, err := tx.Exec(ctx, "INSERT INTO effects (message_id, partition) VALUES ($1, $2)",
			msg.UUID, msg.Metadata.Get(messaging.MetadataKafkaPartition))
		return nil, err
	})
}

func (f *inboxFixture) count(t *testing.T, query string) int {
	t.Helper()
	var n int
	require.NoError(t, f.schema.Pool.QueryRow(context.Background(), query).Scan(&n))
	return n
}

// TestKafkaInboxRedelivery publishes one envelope three times (the same id)
// to a one-partition topic, consumed by a handler wrapped by inbox.Handler:
// the handler runs for each delivery, the effect happens once.
func TestKafkaInboxRedelivery(t *testing.T) {
	t.Parallel()
	f := setupKafka(t, 1)
	db := setupInbox(t)
	deliveries := make(chan error, 3)
	h := db.handler()
	r := standardRouter(t, f, middleware.StackConfig{})
	r.AddConsumerHandler("orders", f.topic, f.subscriber(t), func(msg *message.Message) error {
		_, err := h(msg)
		deliveries <- err
		return err
	})
	runRouter(t, r)

	msg := envelopeMessage(t, "sales.order.placed", placedPayload(t))
	pub := f.publisher(t)
	for range 3 {
		require.NoError(t, pub.Publish(f.topic, msg.Copy()))
	}
	for i := range 3 {
		select {
		case err := <-deliveries:
			require.NoError(t, err, "delivery %d", i)
		case <-time.After(waitFor):
			t.Fatalf("%d of 3 deliveries", i)
		}
	}
	require.Equal(t, 1, db.count(t, "SELECT count(*) FROM effects"), "effect once")
	require.Equal(t, 1, db.count(t, "SELECT count(*) FROM inbox"))
	f.readAll(t, f.dlq, 0)
}

// TestKafkaInboxRebalance has one message delivered to two consumers of one
// group, across a rebalance, and its effect happen once:
//
//  1. The same envelope (one id) is written to both partitions of a
//     two-partition topic.
//  2. Consumer A joins the group alone, is assigned both partitions and
//     receives both copies. Its handler holds each delivery at a gate before
//     the inbox, without acking, until the message's context ends or the
//     gate opens.
//  3. Consumer B joins the same group. The rebalance takes one partition from
//     A: the subscriber cancels the context of A's delivery of it, A's
//     handler returns the context's error (the message is nacked and not
//     dead-lettered), and B, starting from the uncommitted offset, receives
//     that copy.
//  4. Once B holds a copy, the gate opens: A's remaining delivery and B's
//     run through inbox.Handler concurrently. The inbox's primary key lets
//     one of them record the message and apply the effect; the other waits
//     for that transaction and skips the message.
//  5. Both partitions' copies end acked (handled or skipped). The effects
//     table holds one row, the inbox one record.
func TestKafkaInboxRebalance(t *testing.T) {
	t.Parallel()
	f := setupKafka(t, 2)
	db := setupInbox(t)
	h := db.handler()

	type delivery struct {
		consumer  string
		partition string
	}
	var (
		mu       sync.Mutex
		received []delivery
		acked    = map[string]string{} // partition → consumer whose delivery succeeded
	)
	gate := make(chan struct{})
	seen := func(match func(delivery) bool) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, d := range received {
			if match(d) {
				return true
			}
		}
		return false
	}
	consumer := func(name string) message.NoPublishHandlerFunc {
		return func(msg *message.Message) error {
			d := delivery{consumer: name, partition: msg.Metadata.Get(messaging.MetadataKafkaPartition)}
			mu.Lock()
			received = append(received, d)
			mu.Unlock()
			select {
			case <-gate:
			case <-msg.Context().Done():
				return fmt.Errorf("consumer %s, partition %s: %w", name, d.partition, msg.Context().Err())
			}
			if _, err := h(msg); err != nil {
				return err
			}
			mu.Lock()
			acked[d.partition] = name
			mu.Unlock()
			return nil
		}
	}

	msg := envelopeMessage(t, "sales.order.placed", placedPayload(t))
	f.produce(t, 0, record(msg))
	f.produce(t, 1, record(msg))

	routerA := standardRouter(t, f, middleware.StackConfig{})
	routerA.AddConsumerHandler("orders", f.topic, f.subscriber(t), consumer("A"))
	runRouter(t, routerA)
	require.Eventually(t, func() bool {
		return seen(func(d delivery) bool { return d.consumer == "A" && d.partition == "0" }) &&
			seen(func(d delivery) bool { return d.consumer == "A" && d.partition == "1" })
	}, waitFor, pollEvery, "A receives both copies")

	routerB := standardRouter(t, f, middleware.StackConfig{})
	routerB.AddConsumerHandler("orders", f.topic, f.subscriber(t), consumer("B"))
	runRouter(t, routerB)
	require.Eventually(t, func() bool {
		return seen(func(d delivery) bool { return d.consumer == "B" })
	}, waitFor, pollEvery, "the rebalance hands a copy to B")
	close(gate)

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) == 2
	}, waitFor, pollEvery, "both copies are acked")
	mu.Lock()
	t.Logf("deliveries: %v; acked: %v", received, acked)
	require.ElementsMatch(t, []string{"A", "B"}, []string{acked["0"], acked["1"]}, "each consumer settled one copy")
	mu.Unlock()

	require.Equal(t, 1, db.count(t, "SELECT count(*) FROM effects"), "effect once")
	require.Equal(t, 1, db.count(t, "SELECT count(*) FROM inbox"))
	f.readAll(t, f.dlq, 0)
}
