package middleware_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

// TestCorrelationChain runs edge → first hop → second hop through a router on
// a Go channel Pub/Sub: the correlation id stays the edge's, each causation
// id is the predecessor's id, the saga id is inherited.
func TestCorrelationChain(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		edgeCorr string // correlation id given at the edge; "" for none
	}{
		{"edge with correlation id", "req-42"},
		{"edge without correlation id", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
			t.Cleanup(func() { require.NoError(t, pubsub.Close()) })

			var firstOrigin, secondOrigin middleware.Origin
			var firstSeen *message.Message
			r := newRouter(t)
			r.AddMiddleware(middleware.Correlation)
			r.AddHandler("first", "commands", pubsub, "events", pubsub, func(msg *message.Message) ([]*message.Message, error) {
				firstOrigin, _ = middleware.OriginFromContext(msg.Context())
				return []*message.Message{message.NewMessage(watermill.NewUUID(), nil)}, nil
			})
			r.AddHandler("second", "events", pubsub, "replies", pubsub, func(msg *message.Message) ([]*message.Message, error) {
				firstSeen = msg
				secondOrigin, _ = middleware.OriginFromContext(msg.Context())
				reply := message.NewMessage(watermill.NewUUID(), nil)
				reply.Metadata.Set(messaging.HeaderCausationID, "handler-chosen")
				return []*message.Message{reply}, nil
			})
			replies, err := pubsub.Subscribe(context.Background(), "replies")
			require.NoError(t, err)
			runRouter(t, r)

			// The edge: an HTTP handler with the request's correlation id.
			ctx := context.Background()
			if tt.edgeCorr != "" {
				ctx = middleware.WithCorrelationID(ctx, tt.edgeCorr)
				require.Equal(t, tt.edgeCorr, middleware.CorrelationIDFromContext(ctx))
			}
			edge := message.NewMessage(watermill.NewUUID(), nil)
			edge.Metadata.Set(messaging.HeaderSagaID, "saga-7")
			middleware.StampContext(ctx, edge)
			_, ok := edge.Metadata[messaging.HeaderCausationID]
			require.False(t, ok, "an HTTP request is no message: no causation id")
			wantCorr := tt.edgeCorr
			if wantCorr == "" {
				wantCorr = edge.UUID // the first message starts the transaction
				_, ok := edge.Metadata[messaging.HeaderCorrelationID]
				require.False(t, ok)
			} else {
				require.Equal(t, wantCorr, edge.Metadata.Get(messaging.HeaderCorrelationID))
			}
			require.NoError(t, pubsub.Publish("commands", edge))

			second := receive(t, replies)
			require.Equal(t, middleware.Origin{MessageID: edge.UUID, CorrelationID: wantCorr, SagaID: "saga-7"}, firstOrigin)

			first := firstSeen
			require.Equal(t, edge.UUID, first.Metadata.Get(messaging.HeaderCausationID))
			require.Equal(t, wantCorr, first.Metadata.Get(messaging.HeaderCorrelationID))
			require.Equal(t, "saga-7", first.Metadata.Get(messaging.HeaderSagaID))
			require.Equal(t, middleware.Origin{MessageID: first.UUID, CorrelationID: wantCorr, SagaID: "saga-7"}, secondOrigin)

			require.Equal(t, first.UUID, second.Metadata.Get(messaging.HeaderCausationID), "causation is a fact, not the handler's choice")
			require.Equal(t, wantCorr, second.Metadata.Get(messaging.HeaderCorrelationID))
			require.Equal(t, "saga-7", second.Metadata.Get(messaging.HeaderSagaID))
		})
	}
}

func TestOriginStamp(t *testing.T) {
	t.Parallel()
	o := middleware.Origin{MessageID: "m-1", CorrelationID: "c-1", SagaID: "s-1"}

	msg := message.NewMessage("m-2", nil)
	msg.Metadata.Set(messaging.HeaderCorrelationID, "c-own")
	msg.Metadata.Set(messaging.HeaderSagaID, "s-own")
	o.Stamp(msg)
	require.Equal(t, "m-1", msg.Metadata.Get(messaging.HeaderCausationID))
	require.Equal(t, "c-own", msg.Metadata.Get(messaging.HeaderCorrelationID), "a handler may start a new transaction")
	require.Equal(t, "s-own", msg.Metadata.Get(messaging.HeaderSagaID))

	self := message.NewMessage("m-1", nil)
	o.Stamp(self)
	require.Empty(t, self.Metadata, "a forwarded message is not its own cause")

	bare := &message.Message{UUID: "m-3"}
	middleware.Origin{MessageID: "m-1"}.Stamp(bare)
	require.Equal(t, message.Metadata{messaging.HeaderCausationID: "m-1", messaging.HeaderCorrelationID: "m-1"}, bare.Metadata)

	middleware.StampContext(context.Background(), msg) // no origin: nothing happens

	env, err := messaging.NewEnvelope("sales.order.placed", "/sales", nil)
	require.NoError(t, err)
	stamped := o.StampEnvelope(env)
	require.Equal(t, "m-1", stamped.CausationID)
	require.Equal(t, "c-1", stamped.CorrelationID)
	require.Equal(t, "s-1", stamped.SagaID)
	require.Empty(t, env.CausationID, "a copy")
	cause := messaging.Envelope{ID: "m-1", CorrelationID: "c-1", SagaID: "s-1"}
	require.Equal(t, env.CausedBy(cause).CorrelationID, stamped.CorrelationID, "the same rule as Envelope.CausedBy")
}

func TestOriginOf(t *testing.T) {
	t.Parallel()
	msg := message.NewMessage("m-1", nil)
	require.Equal(t, middleware.Origin{MessageID: "m-1", CorrelationID: "m-1"}, middleware.OriginOf(msg))
	msg.Metadata.Set(messaging.HeaderCorrelationID, "c-1")
	msg.Metadata.Set(messaging.HeaderSagaID, "s-1")
	require.Equal(t, middleware.Origin{MessageID: "m-1", CorrelationID: "c-1", SagaID: "s-1"}, middleware.OriginOf(msg))

	ctx := middleware.ContextWithOrigin(context.Background(), middleware.OriginOf(msg))
	ctx = middleware.WithCorrelationID(ctx, "c-2")
	o, ok := middleware.OriginFromContext(ctx)
	require.True(t, ok)
	require.Equal(t, middleware.Origin{MessageID: "m-1", CorrelationID: "c-2", SagaID: "s-1"}, o)
	_, ok = middleware.OriginFromContext(context.Background())
	require.False(t, ok)
	require.Empty(t, middleware.CorrelationIDFromContext(context.Background()))
}
