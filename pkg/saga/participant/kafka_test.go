package participant_test

// End to end against real Kafka (kafkatest.Brokers()) and PostgreSQL: a
// Watermill router on dtx's Kafka subscriber, behind the Standard middleware
// stack, delivers saga commands to Participant.Handle.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/participant"
	"github.com/vextrus/dtx/schemas"
)

// waitFor bounds every wait of the Kafka test.
const waitFor = 30 * time.Second

// TestKafkaRedeliveredCommand publishes a command twice (as a producer retry
// or the orchestrator's outbox relay after a crash would) and then a command
// without saga id to a one-partition topic: the effect and the reply happen
// once, and the malformed command lands in the dead-letter topic.
func TestKafkaRedeliveredCommand(t *testing.T) {
	t.Parallel()
	f := setup(t)
	topic := kafkatest.NewTopic(t, 1)
	dlq := topic + messaging.DeadLetterSuffix
	group := topic + "-group"
	adm := kadm.NewClient(kafkatest.NewClient(t))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	kafkatest.CreateTopic(t, dlq, 1) // waited for: dead letters are produced at once
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if _, err := adm.DeleteGroup(ctx, group); err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
			t.Logf("delete group %s: %v", group, err)
		}
		if _, err := adm.DeleteTopic(ctx, dlq); err != nil {
			t.Logf("delete topic %s: %v", dlq, err)
		}
	})

	client := kafka.ClientConfig{Brokers: kafkatest.Brokers()}
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: client})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{ClientConfig: client, ConsumerGroup: group, CommitInterval: 100 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })

	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS(), UnknownTypes: messaging.AllowUnknownTypes})
	require.NoError(t, err)
	mws, err := middleware.Standard(middleware.StackConfig{DeadLetterPublisher: pub, Schemas: reg})
	require.NoError(t, err)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: waitFor}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddMiddleware(mws...)
	router.AddConsumerHandler("stock", topic, sub, f.p.Handle)
	runRouter(t, router)

	cmd := command(t, cmdOpts{sagaID: "s1"})
	bad := command(t, cmdOpts{sagaID: "s2"})
	delete(bad.Metadata, messaging.HeaderSagaID)
	require.NoError(t, pub.Publish(topic, cmd))
	require.NoError(t, pub.Publish(topic, redeliver(t, cmd), bad))

	// The dead letter comes last in the partition: once it is there, both
	// copies of the command were handled.
	cl := kafkatest.NewClient(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{dlq: {0: kgo.NewOffset().AtStart()}}))
	var dead []*kgo.Record
	for len(dead) == 0 {
		fetches := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "no dead letter in %s", dlq)
		dead = append(dead, fetches.Records()...)
	}
	require.Len(t, dead, 1)
	require.Equal(t, bad.UUID, string(headerOf(dead[0], messaging.HeaderID)))
	require.Contains(t, string(headerOf(dead[0], messaging.HeaderDLQReason)), "no "+messaging.HeaderSagaID)

	require.EqualValues(t, 1, f.actions.Load())
	require.Equal(t, 1, f.reservations(t, "s1"))
	replies := f.replies(t)
	require.Len(t, replies, 1)
	require.Equal(t, saga.DefaultReplyTopic, replies[0].Topic)
	require.Equal(t, cmd.UUID, replies[0].Headers[messaging.HeaderCausationID])
	requireCount(t, f.p, participant.Duplicate, 1)
}

func headerOf(r *kgo.Record, key string) []byte {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	return nil
}

// runRouter runs r until the test ends.
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
