package middleware_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/schemas"
)

// TestMain fails the package's tests if a goroutine outlives them: routers,
// Pub/Subs and Kafka clients must all be closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait of these tests.
const waitFor = 30 * time.Second

// recordingPublisher keeps what it is asked to publish, or fails with err.
type recordingPublisher struct {
	mu     sync.Mutex
	err    error
	topics []string
	msgs   []*message.Message
}

func (p *recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	for _, m := range msgs {
		p.topics = append(p.topics, topic)
		p.msgs = append(p.msgs, m)
	}
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

func (p *recordingPublisher) published() ([]string, []*message.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.topics...), append([]*message.Message(nil), p.msgs...)
}

// newTracer returns a TracerProvider that records every span, shut down at
// cleanup.
func newTracer(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, rec
}

// registry returns the registry of dtx's own schemas.
func registry(t *testing.T) *messaging.SchemaRegistry {
	t.Helper()
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	require.NoError(t, err)
	return reg
}

// placedPayload is a valid sales.order.placed v1 payload, the one the schema
// examples hold.
func placedPayload(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "schemas", "examples", "sales.order.placed.v1", "placed.json"))
	require.NoError(t, err)
	return b
}

// envelopeMessage returns a message of an envelope of typ with payload.
func envelopeMessage(t *testing.T, typ string, payload []byte) *message.Message {
	t.Helper()
	env, err := messaging.NewEnvelope(typ, "/test", nil)
	require.NoError(t, err)
	env.Data = payload
	env.PartitionKey = "ord-1001"
	msg, err := env.ToMessage()
	require.NoError(t, err)
	return msg
}

// runRouter runs r until the test ends and returns once it is running.
func runRouter(t *testing.T, r *message.Router) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, r.Close())
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(waitFor):
			t.Error("router did not stop")
		}
	})
	select {
	case <-r.Running():
	case err := <-done:
		t.Fatalf("router stopped: %v", err)
	case <-time.After(waitFor):
		t.Fatal("router did not start")
	}
}

func newRouter(t *testing.T) *message.Router {
	t.Helper()
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: waitFor}, watermill.NopLogger{})
	require.NoError(t, err)
	return r
}

// receive returns the next message of ch, acked, or fails the test.
func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-ch:
		require.True(t, ok, "channel closed")
		msg.Ack()
		return msg
	case <-time.After(waitFor):
		t.Fatal("no message")
		return nil
	}
}

var errTransient = errors.New("transient failure")

// pollEvery is how often the tests check a condition they wait for.
const pollEvery = 10 * time.Millisecond
