package cqrs_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/cqrs"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

// Append stores the events in the caller's transaction, stamped with the
// Origin of the context, and refuses a stale expected version.
func TestAppendToEventStore(t *testing.T) {
	t.Parallel()
	f := setup(t)
	store, err := postgres.New(f.pool, postgres.Config{Schema: f.schema.Name})
	require.NoError(t, err)
	bus, err := cqrs.NewEventBus(cqrs.EventBusConfig{Source: "/test/billing", Schemas: f.reg, Store: store})
	require.NoError(t, err)
	require.NoError(t, cqrs.RegisterEvent[invoiceCreated](bus, invoiceCreatedType))
	stream := cqrs.Stream{Type: "invoice", ID: "invoice-1"}

	_, err = cqrs.Append(t.Context(), bus, stream, invoiceCreated{OrderID: "o-1"})
	require.ErrorIs(t, err, outbox.ErrNoTransaction)

	tx := pgtest.Tx(t, f.pool)
	ctx := middleware.ContextWithOrigin(inbox.ContextWithTx(t.Context(), tx), middleware.Origin{MessageID: "cmd-1", CorrelationID: "corr-1"})
	_, err = cqrs.Append(ctx, bus, stream, invoiceCreated{})
	require.ErrorIs(t, err, messaging.ErrSchemaViolation)
	res, err := cqrs.Append(ctx, bus, stream, invoiceCreated{OrderID: "o-1"}, invoiceCreated{OrderID: "o-1"})
	require.NoError(t, err)
	require.EqualValues(t, 2, res.Version)
	_, err = cqrs.Append(ctx, bus, stream, invoiceCreated{OrderID: "o-1"}) // expects no stream
	require.ErrorIs(t, err, eventstore.ErrConcurrencyConflict)
	require.NoError(t, tx.Commit(t.Context()))

	evs, err := store.ReadStream(t.Context(), eventstore.ReadStreamParams{StreamID: "invoice-1"})
	require.NoError(t, err)
	require.Len(t, evs, 2)
	require.Equal(t, invoiceCreatedType, evs[0].Type)
	require.Equal(t, "cmd-1", evs[0].Metadata.CausationID)
	require.Equal(t, "corr-1", evs[0].Metadata.CorrelationID)
	require.Len(t, f.outboxRows(t), 2, "each event goes to the outbox too")
}

// An event published through the outbox reaches each EventProcessor
// handler through Kafka once, although its record is delivered twice.
func TestEventProcessorHandlesOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	topic := kafkatest.NewTopic(t, 1)
	createTopic(t, topic+messaging.DeadLetterSuffix)
	events, err := cqrs.NewEventBus(cqrs.EventBusConfig{Source: "/test/billing", Schemas: f.reg, Outbox: f.ob,
		TopicFunc: func(string) string { return topic }})
	require.NoError(t, err)
	require.NoError(t, cqrs.RegisterEvent[invoiceCreated](events, invoiceCreatedType))

	tx := pgtest.Tx(t, f.pool)
	require.NoError(t, cqrs.Publish(inbox.ContextWithTx(t.Context(), tx), events, invoiceCreated{OrderID: "o-1"}))
	require.NoError(t, tx.Commit(t.Context()))
	rows := f.outboxRows(t)
	require.Len(t, rows, 1)

	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: kafka.ClientConfig{Brokers: kafkatest.Brokers()}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	var mu sync.Mutex
	var subs []*kafka.Subscriber
	t.Cleanup(func() {
		for _, s := range subs {
			_ = s.Close()
		}
	})
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	var delivered atomic.Int64
	router.AddMiddleware(func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err == nil {
				delivered.Add(1)
			}
			return out, err
		}
	})
	proc, err := cqrs.NewEventProcessor(router, cqrs.EventProcessorConfig{
		ProcessorConfig: cqrs.ProcessorConfig{
			Pool: f.pool, Schema: f.schema.Name, Consumer: "billing",
			NewSubscriber: func(name string) (message.Subscriber, error) {
				s, err := kafka.NewSubscriber(kafka.SubscriberConfig{
					ClientConfig: kafka.ClientConfig{Brokers: kafkatest.Brokers()}, ConsumerGroup: topic + "-" + name,
				})
				if err == nil {
					mu.Lock()
					subs = append(subs, s)
					mu.Unlock()
				}
				return s, err
			},
			Stack: middleware.StackConfig{DeadLetterPublisher: pub},
		},
		Schemas:   f.reg,
		TopicFunc: func(string) string { return topic },
	})
	require.NoError(t, err)
	var ledger, mailer atomic.Int64
	for name, n := range map[string]*atomic.Int64{"ledger": &ledger, "mailer": &mailer} {
		require.NoError(t, cqrs.HandleEvent(proc, name, invoiceCreatedType, func(ctx context.Context, tx pgx.Tx, ev invoiceCreated) error {
			if ev.OrderID != "o-1" {
				return fmt.Errorf("event %+v: want order o-1", ev)
			}
			n.Add(1)
			return nil
		}))
	}
	err = cqrs.HandleEvent(proc, "ledger", invoiceCreatedType, func(context.Context, pgx.Tx, invoiceCreated) error { return nil })
	require.ErrorIs(t, err, cqrs.ErrDuplicateHandler)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- messaging.RunRouter(ctx, router) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	<-router.Running()

	rig := &kafkaRig{topic: topic, pub: pub}
	rig.publishRecord(t, rows[0])
	rig.publishRecord(t, rows[0])
	require.Eventually(t, func() bool { return delivered.Load() == 4 }, waitFor, pollEvery, "two handlers, two deliveries each")
	require.EqualValues(t, 1, ledger.Load())
	require.EqualValues(t, 1, mailer.Load())
}
