package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

// orderPlaced is an event as a cqrs EventBus publishes it.
type orderPlaced struct {
	OrderID string `json:"order_id"`
}

// envelopeMarshaler is a cqrs marshaler producing dtx envelopes: the event's
// name is its type, the order id its partition key.
type envelopeMarshaler struct{}

func (envelopeMarshaler) Marshal(v any) (*message.Message, error) {
	env, err := messaging.NewEnvelope(envelopeMarshaler{}.Name(v), "/test/cqrs", v)
	if err != nil {
		return nil, err
	}
	if e, ok := v.(*orderPlaced); ok {
		env.PartitionKey = e.OrderID
	}
	return env.ToMessage()
}

func (envelopeMarshaler) Unmarshal(msg *message.Message, v any) error {
	return json.Unmarshal(msg.Payload, v)
}

func (envelopeMarshaler) Name(v any) string { return "test." + cqrs.StructName(v) }

func (envelopeMarshaler) NameFromMessage(msg *message.Message) string {
	return msg.Metadata.Get(messaging.HeaderType)
}

func newEventBus(t *testing.T, pub message.Publisher) *cqrs.EventBus {
	t.Helper()
	bus, err := cqrs.NewEventBusWithConfig(pub, cqrs.EventBusConfig{
		GeneratePublishTopic: func(p cqrs.GenerateEventPublishTopicParams) (string, error) {
			return "sales.events", nil
		},
		Marshaler: envelopeMarshaler{},
	})
	require.NoError(t, err)
	return bus
}

func TestEventBusThroughTxPublisher(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})

	tx := f.begin(t)
	bus := newEventBus(t, f.ob.Publisher(tx))
	require.NoError(t, bus.Publish(t.Context(), &orderPlaced{OrderID: "o-1"}))
	require.NoError(t, bus.Publish(t.Context(), &orderPlaced{OrderID: "o-2"}))
	require.NoError(t, tx.Rollback(t.Context()))
	require.Empty(t, f.rows(t), "a rolled-back transaction publishes nothing")

	tx = f.begin(t)
	pub := f.ob.Publisher(tx)
	bus = newEventBus(t, pub)
	ctx := middleware.ContextWithOrigin(t.Context(), middleware.Origin{MessageID: "cmd-1", CorrelationID: "corr-1"})
	require.NoError(t, bus.Publish(ctx, &orderPlaced{OrderID: "o-3"}))
	require.NoError(t, pub.Close())
	require.NoError(t, tx.Commit(t.Context()))

	rows := f.rows(t)
	require.Len(t, rows, 1)
	require.Equal(t, "sales.events", rows[0].Topic)
	require.Equal(t, "o-3", *rows[0].Key)
	require.Equal(t, "test.orderPlaced", rows[0].Headers[messaging.HeaderType])
	require.Equal(t, "cmd-1", rows[0].Headers[messaging.HeaderCausationID], "stamped from the message's context")
	require.Equal(t, "corr-1", rows[0].Headers[messaging.HeaderCorrelationID])
	require.JSONEq(t, `{"order_id":"o-3"}`, string(rows[0].Payload))
}

func TestEventBusThroughContextPublisher(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	bus := newEventBus(t, f.ob.ContextPublisher())

	err := bus.Publish(t.Context(), &orderPlaced{OrderID: "o-1"})
	require.ErrorIs(t, err, outbox.ErrNoTransaction)

	tx := f.begin(t)
	require.NoError(t, bus.Publish(inbox.ContextWithTx(t.Context(), tx), &orderPlaced{OrderID: "o-1"}))
	require.NoError(t, tx.Commit(t.Context()))
	require.Len(t, f.rows(t), 1)
}

func TestContextPublisherRefusesMixedTransactions(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	a, b := f.begin(t), f.begin(t)
	m1, m2 := newMessage(t, 1, ""), newMessage(t, 2, "")
	m1.SetContext(inbox.ContextWithTx(t.Context(), a))
	m2.SetContext(inbox.ContextWithTx(t.Context(), b))
	pub := f.ob.ContextPublisher()
	require.ErrorIs(t, pub.Publish("t1", m1, m2), outbox.ErrNoTransaction)
	require.NoError(t, pub.Publish("t1"))

	m2.SetContext(inbox.ContextWithTx(context.Background(), a))
	require.NoError(t, pub.Publish("t1", m1, m2))
	require.NoError(t, pub.Close())
	require.NoError(t, a.Commit(t.Context()))
	require.Len(t, f.rows(t), 2)
}

// A handler run by inbox.Handler finds its transaction in the context: the
// messages it publishes through ContextPublisher commit with its effect.
func TestContextPublisherInInboxHandler(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	ib, err := inbox.New(f.pool, inbox.Config{Schema: f.schema.Name, Consumer: "test"})
	require.NoError(t, err)
	pub := f.ob.ContextPublisher()
	h := ib.Handler(func(ctx context.Context, _ pgx.Tx, msg *message.Message) ([]*message.Message, error) {
		out := newMessage(t, 7, "k")
		out.SetContext(ctx)
		if err := pub.Publish("replies", out); err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		return nil, nil
	})
	in := newMessage(t, 1, "")
	in.SetContext(t.Context())
	_, err = h(in)
	require.NoError(t, err)
	rows := f.rows(t)
	require.Len(t, rows, 1)
	require.Equal(t, "replies", rows[0].Topic)
}
