package middleware_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

// TestStandardOnGoChannel runs the whole stack in a router on a Go channel
// Pub/Sub: poison messages, a panicking one and one that fails for a while
// are handled as the stack promises, and the router keeps going.
func TestStandardOnGoChannel(t *testing.T) {
	t.Parallel()
	tp, rec := newTracer(t)
	pubsub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16}, watermill.NopLogger{})
	t.Cleanup(func() { require.NoError(t, pubsub.Close()) })

	mws, err := middleware.Standard(middleware.StackConfig{
		DeadLetterPublisher: pubsub,
		Schemas:             registry(t),
		TracerProvider:      tp,
		Retry:               middleware.RetryConfig{InitialInterval: time.Millisecond},
	})
	require.NoError(t, err)
	require.Len(t, mws, 7)

	var flaky atomic.Int32
	handled := make(chan string, 16)
	r := newRouter(t)
	r.AddMiddleware(mws...)
	r.AddHandler("orders", "orders", pubsub, "out", pubsub, func(msg *message.Message) ([]*message.Message, error) {
		env, ok := middleware.EnvelopeFromContext(msg.Context())
		require.True(t, ok)
		switch env.Subject {
		case "panic":
			panic("bug: order in no state")
		case "flaky":
			if flaky.Add(1) < 3 {
				return nil, errTransient
			}
		case "refused":
			return nil, messaging.Permanent(errors.New("order refused: customer blocked"))
		}
		handled <- env.Subject
		return []*message.Message{message.NewMessage(watermill.NewUUID(), nil)}, nil
	})
	dlq, err := pubsub.Subscribe(context.Background(), "orders.dlq")
	require.NoError(t, err)
	out, err := pubsub.Subscribe(context.Background(), "out")
	require.NoError(t, err)
	runRouter(t, r)

	withSubject := func(subject string, typ string, payload []byte) *message.Message {
		env, err := messaging.NewEnvelope(typ, "/test", nil)
		require.NoError(t, err)
		env.Subject, env.Data = subject, payload
		msg, err := env.ToMessage()
		require.NoError(t, err)
		return msg
	}
	good := placedPayload(t)
	garbage := message.NewMessage(watermill.NewUUID(), []byte("garbage"))
	poison := []*message.Message{
		garbage,
		withSubject("bad body", "sales.order.placed", []byte(`{"order_id":"o-1"}`)),
		withSubject("unknown", "sales.order.teleported", []byte(`{}`)),
		withSubject("panic", "sales.order.placed", good),
		withSubject("refused", "sales.order.placed", good),
	}
	for _, m := range poison {
		require.NoError(t, pubsub.Publish("orders", m))
	}
	wantReasons := map[string]string{
		poison[0].UUID: "messaging: cannot decode message: ce_specversion: missing",
		poison[1].UUID: "messaging: payload of sales.order.placed v1 violates its schema",
		poison[2].UUID: `messaging: type "sales.order.teleported" version 1: no schema for message type`,
		poison[3].UUID: "handler panicked: bug: order in no state",
		poison[4].UUID: "order refused: customer blocked",
	}
	// A Go channel Pub/Sub delivers concurrently, in no particular order.
	for range poison {
		dl := receive(t, dlq)
		want, ok := wantReasons[dl.UUID]
		require.True(t, ok, "dead letter %s is unexpected or repeated", dl.UUID)
		delete(wantReasons, dl.UUID)
		require.Contains(t, dl.Metadata.Get(messaging.HeaderDLQReason), want)
		require.Equal(t, "orders", dl.Metadata.Get(messaging.HeaderDLQOriginalTopic), "the router's topic")
	}

	flakyMsg := withSubject("flaky", "sales.order.placed", good)
	require.NoError(t, pubsub.Publish("orders", flakyMsg, withSubject("fine", "sales.order.placed", good)))
	got := map[string]bool{}
	for range 2 {
		select {
		case subject := <-handled:
			got[subject] = true
		case <-time.After(waitFor):
			t.Fatalf("handled only %v", got)
		}
	}
	require.Equal(t, map[string]bool{"flaky": true, "fine": true}, got)
	var produced *message.Message
	for range 2 {
		if m := receive(t, out); m.Metadata.Get(messaging.HeaderCausationID) == flakyMsg.UUID {
			produced = m
		}
	}
	require.NotNil(t, produced)
	require.Equal(t, flakyMsg.UUID, produced.Metadata.Get(messaging.HeaderCorrelationID))
	require.NotEmpty(t, produced.Metadata.Get(messaging.HeaderTraceParent))
	require.Equal(t, int32(3), flaky.Load())

	require.Eventually(t, func() bool { return len(rec.Ended()) >= len(poison)+2 }, waitFor, pollEvery)
	var retries int
	for _, s := range rec.Ended() {
		for _, e := range s.Events() {
			if e.Name == "retry" {
				retries++
			}
		}
	}
	require.Equal(t, 2, retries, "two retries, as events of one span")
}

func TestStandardConfig(t *testing.T) {
	t.Parallel()
	_, err := middleware.Standard(middleware.StackConfig{})
	require.ErrorContains(t, err, "DeadLetterPublisher")
	require.ErrorContains(t, err, "Schemas")

	_, err = middleware.Standard(middleware.StackConfig{
		DeadLetterPublisher: &recordingPublisher{},
		Schemas:             registry(t),
		Retry:               middleware.RetryConfig{MaxAttempts: -1},
	})
	require.ErrorContains(t, err, "MaxAttempts")

	_, err = middleware.Standard(middleware.StackConfig{
		DeadLetterPublisher: &recordingPublisher{},
		Schemas:             registry(t),
		DeadLetter:          middleware.DeadLetterConfig{MaxReasonBytes: 1},
	})
	require.ErrorContains(t, err, "MaxReasonBytes")
}
