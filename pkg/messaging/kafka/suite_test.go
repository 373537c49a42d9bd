package kafka_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/topic"
)

// suitePartitions is how many partitions the universal suite's topics have.
const suitePartitions = 4

// TestPubSub runs Watermill's universal Pub/Sub suite against Apache Kafka.
// TestReconnect is skipped: the broker is shared with every other test of
// the development environment, which a restart would break.
func TestPubSub(t *testing.T) {
	t.Parallel()
	runSuite(t, kafkatest.Brokers())
}

// TestPubSubEmbedded runs Watermill's universal Pub/Sub suite against the
// embedded broker, started in-process, which TestReconnect restarts.
//
// Under the race detector TestReconnect is skipped: the test itself appends
// to its list of published messages from one goroutine and reads it from
// another without synchronization (pubsub/tests/test_pubsub.go lines 1086
// and 1120 of Watermill v1.5.1), which the detector reports as a failure
// whatever the Pub/Sub does.
func TestPubSubEmbedded(t *testing.T) {
	t.Parallel()
	broker, brokers := startRestartableBroker(t)
	runSuite(t, brokers, func(f *tests.Features) {
		if !raceEnabled {
			f.RestartServiceCommand = broker.command()
		}
	})
}

// suiteRun gives the suite's tests topics and groups named with a prefix of
// their own, deleted when the suite ends.
type suiteRun struct {
	brokers    []string
	prefix     string
	partitions int32
}

func newSuiteRun(t *testing.T, brokers []string, partitions int32) *suiteRun {
	r := &suiteRun{brokers: brokers, prefix: "t-" + strings.ReplaceAll(t.Name(), "/", "-") + "-" + randomHex(4) + "-", partitions: partitions}
	t.Cleanup(func() { deleteWithPrefix(t, brokers, r.prefix) })
	return r
}

func (r *suiteRun) features() tests.Features {
	return tests.Features{
		ConsumerGroups:      true,
		ExactlyOnceDelivery: false,
		GuaranteedOrder:     false,
		Persistent:          true,
		GenerateTopicFunc: func(tctx tests.TestContext) string {
			return r.prefix + string(tctx.TestID)
		},
	}
}

// pubSub is the suite's PubSubConstructor: the publisher and subscriber of
// one test share a consumer group named after the test.
func (r *suiteRun) pubSub(t *testing.T) (message.Publisher, message.Subscriber) {
	return r.pubSubWithGroup(t, strings.ReplaceAll(t.Name(), "/", "-"))
}

// pubSubWithGroup is the suite's ConsumerGroupPubSubConstructor.
func (r *suiteRun) pubSubWithGroup(t *testing.T, group string) (message.Publisher, message.Subscriber) {
	pub := newPublisher(t, r.brokers)
	sub := newSubscriber(t, r.brokers, r.prefix+group)
	return pub, provisioning{Subscriber: sub, brokers: r.brokers, partitions: r.partitions}
}

// provisioning gives the suite the SubscribeInitialize it calls before
// using a topic: the Subscriber itself never creates topics, so the test
// provisions them as a deployment would.
type provisioning struct {
	*kafka.Subscriber
	brokers    []string
	partitions int32
}

// SubscribeInitialize creates topic with the suite's partitions unless it
// exists.
func (p provisioning) SubscribeInitialize(name string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = topic.Apply(ctx, kadm.NewClient(cl), []topic.Spec{{Name: name, Partitions: p.partitions, ReplicationFactor: -1}})
	return err
}

func runSuite(t *testing.T, brokers []string, mod ...func(*tests.Features)) {
	r := newSuiteRun(t, brokers, suitePartitions)
	features := r.features()
	for _, m := range mod {
		m(&features)
	}
	tests.TestPubSub(t, features, r.pubSub, r.pubSubWithGroup)
}

// TestPubSubOrdered runs the suite's tests of order on topics of one
// partition, where Kafka keeps the order of every message, against Apache
// Kafka and the embedded broker. (On topics of several partitions, order is
// kept per partition, that is per key: see TestOrderPerKey.)
func TestPubSubOrdered(t *testing.T) {
	t.Parallel()
	for _, target := range []struct {
		name    string
		brokers func(t *testing.T) []string
	}{
		{"Apache", func(*testing.T) []string { return kafkatest.Brokers() }},
		{"Embedded", func(t *testing.T) []string { return startEmbedded(t) }},
	} {
		t.Run(target.name, func(t *testing.T) {
			t.Parallel()
			r := newSuiteRun(t, target.brokers(t), 1)
			features := r.features()
			features.GuaranteedOrder = true
			for _, test := range []struct {
				name string
				fn   func(*testing.T, tests.TestContext, tests.PubSubConstructor)
			}{
				{"TestPublishSubscribeInOrder", tests.TestPublishSubscribeInOrder},
				{"TestNoAck", tests.TestNoAck},
			} {
				t.Run(test.name, func(t *testing.T) {
					t.Parallel()
					test.fn(t, tests.TestContext{TestID: tests.NewTestID(), Features: features}, r.pubSub)
				})
			}
		})
	}
}
