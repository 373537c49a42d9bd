package cqrs_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/pkg/cqrs"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

const (
	waitFor   = 30 * time.Second
	pollEvery = 20 * time.Millisecond
)

// kafkaRig is a topic with its dead-letter topic, a publisher, and a router
// whose CommandProcessor handles the fixture's commands from that topic.
type kafkaRig struct {
	topic string
	pub   *kafka.Publisher
	// delivered counts the deliveries the router's handler finished, and
	// failed those that failed.
	delivered, failed atomic.Int64
}

func newKafkaRig(t *testing.T, f *fixture, bus *cqrs.CommandBus, topic string) *kafkaRig {
	t.Helper()
	rig := &kafkaRig{topic: topic}
	var err error
	rig.pub, err = kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: kafka.ClientConfig{Brokers: kafkatest.Brokers()}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rig.pub.Close() })

	var subs []*kafka.Subscriber
	var mu sync.Mutex
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range subs {
			_ = s.Close()
		}
	})
	proc, err := cqrs.NewCommandProcessor(bus, cqrs.ProcessorConfig{
		Pool:     f.pool,
		Schema:   f.schema.Name,
		Consumer: "billing",
		NewSubscriber: func(name string) (message.Subscriber, error) {
			s, err := kafka.NewSubscriber(kafka.SubscriberConfig{
				ClientConfig:  kafka.ClientConfig{Brokers: kafkatest.Brokers()},
				ConsumerGroup: topic + "-group",
			})
			if err == nil {
				mu.Lock()
				subs = append(subs, s)
				mu.Unlock()
			}
			return s, err
		},
		Stack: middleware.StackConfig{DeadLetterPublisher: rig.pub},
	})
	require.NoError(t, err)

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddMiddleware(func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err != nil {
				rig.failed.Add(1)
			} else {
				rig.delivered.Add(1)
			}
			return out, err
		}
	})
	require.NoError(t, proc.AddHandlersToRouter(router))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- messaging.RunRouter(ctx, router) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case <-router.Running():
	case <-time.After(waitFor):
		t.Fatal("router did not start")
	}
	return rig
}

// publishRecord publishes an outbox row to Kafka as the relay would: key,
// headers and payload as they are.
func (rig *kafkaRig) publishRecord(t *testing.T, row outboxRow) {
	t.Helper()
	msg := message.NewMessage(row.Headers[messaging.HeaderID], row.Payload)
	for k, v := range row.Headers {
		msg.Metadata[k] = v
	}
	if row.Key != nil {
		msg.Metadata[messaging.MetadataPartitionKey] = *row.Key
	}
	require.NoError(t, rig.pub.Publish(row.Topic, msg))
}

// A command sent through the outbox reaches the CommandProcessor through
// Kafka and is handled once although its record is delivered twice: one
// invoice, one event, both committed with the inbox record.
func TestSendHandledOnceAcrossRedelivery(t *testing.T) {
	t.Parallel()
	f := setup(t)
	topic := kafkatest.NewTopic(t, 1)
	dlq := topic + messaging.DeadLetterSuffix
	createTopic(t, dlq)
	bus := f.newCommandBus(t, func(string) string { return topic })
	require.NoError(t, cqrs.HandleCommand(bus, createInvoiceType, f.createInvoice))
	rig := newKafkaRig(t, f, bus, topic)

	ctx := middleware.WithCorrelationID(t.Context(), "corr-7")
	require.NoError(t, cqrs.Send(ctx, bus, createInvoice{OrderID: "o-7", Amount: 70}))
	rows := f.outboxRows(t)
	require.Len(t, rows, 1)
	sent := rows[0]
	require.Equal(t, topic, sent.Topic)
	require.Equal(t, "o-7", *sent.Key, "the command's partition key")
	require.Equal(t, createInvoiceType, sent.Headers[messaging.HeaderType])
	require.Equal(t, "corr-7", sent.Headers[messaging.HeaderCorrelationID])

	rig.publishRecord(t, sent)
	rig.publishRecord(t, sent) // the same record again: a redelivery
	require.Eventually(t, func() bool { return rig.delivered.Load() == 2 }, waitFor, pollEvery)
	require.Zero(t, rig.failed.Load())

	require.Equal(t, 1, f.handled, "the handler ran once")
	require.Equal(t, 1, f.count(t, "invoices"))
	rows = f.outboxRows(t)
	require.Len(t, rows, 2, "the command and one event")
	ev := rows[1]
	require.Equal(t, invoiceCreatedType, ev.Headers[messaging.HeaderType])
	require.Equal(t, sent.Headers[messaging.HeaderID], ev.Headers[messaging.HeaderCausationID])
	require.Equal(t, "corr-7", ev.Headers[messaging.HeaderCorrelationID])
}

// A command of a type the processor has no handler for, and one that breaks
// its schema, are dead-lettered with a reason naming them; nothing happens.
func TestProcessorDeadLettersUnknownAndInvalidCommands(t *testing.T) {
	t.Parallel()
	f := setup(t)
	topic := kafkatest.NewTopic(t, 1)
	dlq := topic + messaging.DeadLetterSuffix
	createTopic(t, dlq)
	bus := f.newCommandBus(t, func(string) string { return topic })
	require.NoError(t, cqrs.HandleCommand(bus, createInvoiceType, f.createInvoice))
	rig := newKafkaRig(t, f, bus, topic)

	unknown, err := messaging.NewEnvelope(getInvoiceType, "/test", map[string]string{"order_id": "o-1"})
	require.NoError(t, err)
	invalid, err := messaging.NewEnvelope(createInvoiceType, "/test", map[string]any{"order_id": "o-1", "amount": 0})
	require.NoError(t, err)
	for _, env := range []messaging.Envelope{unknown, invalid} {
		msg, err := env.ToMessage()
		require.NoError(t, err)
		require.NoError(t, rig.pub.Publish(topic, msg))
	}

	cl := kafkatest.NewClient(t, kgo.ConsumeTopics(dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	reasons := map[string]string{}
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	for len(reasons) < 2 {
		fetches := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "dead letters did not arrive")
		fetches.EachRecord(func(r *kgo.Record) {
			env, err := kafka.DecodeRecord(r)
			require.NoError(t, err)
			for _, h := range r.Headers {
				if h.Key == messaging.HeaderDLQReason {
					reasons[env.ID] = string(h.Value)
				}
			}
		})
	}
	require.Contains(t, reasons[unknown.ID], getInvoiceType)
	require.Contains(t, reasons[unknown.ID], "unknown command")
	require.Contains(t, reasons[invalid.ID], "/amount")
	require.Zero(t, f.handled)
	require.Zero(t, f.count(t, "invoices"))
}

// createTopic creates a topic of one partition, usable at once, deleted at
// cleanup.
func createTopic(t *testing.T, topic string) {
	t.Helper()
	kafkatest.CreateTopic(t, topic, 1)
}
