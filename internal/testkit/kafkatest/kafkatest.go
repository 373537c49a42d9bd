package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// EnvBrokers is the environment variable that overrides DefaultBrokers: a
// comma-separated list of host:port.
const EnvBrokers = "DTX_KAFKA_BROKERS"

// DefaultBrokers is the broker tests use when EnvBrokers is not set: the one
// the development environment (`make deps`) provides.
const DefaultBrokers = "127.0.0.1:9092"

// Time limits of the helpers. Topic creation on a busy broker may take a few
// seconds; nothing here should take longer than these when the broker is up.
const (
	reachTimeout = 15 * time.Second
	topicTimeout = 30 * time.Second
)

// maxTopicLength is Kafka's limit on topic names.
const maxTopicLength = 249

// Brokers returns the seed brokers tests use: $DTX_KAFKA_BROKERS split at
// commas, or DefaultBrokers if it is unset or empty.
func Brokers() []string {
	var brokers []string
	for _, b := range strings.Split(os.Getenv(EnvBrokers), ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	if len(brokers) == 0 {
		return []string{DefaultBrokers}
	}
	return brokers
}

// NewClient returns a client of the brokers of Brokers(), closed at cleanup.
// opts come after the seed brokers, so they may replace them. It pings the
// cluster first and fails the test, saying how to start Kafka, if it does not
// answer.
func NewClient(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(Brokers()...)}, opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: new client: %v", err)
	}
	t.Cleanup(cl.Close)
	// A connection the broker dropped fails one ping; the client dials a
	// new one on the next. Only a broker that answers no ping within
	// reachTimeout is unreachable.
	ctx, cancel := context.WithTimeout(context.Background(), reachTimeout)
	defer cancel()
	for {
		err := cl.Ping(ctx)
		if err == nil {
			return cl
		}
		select {
		case <-ctx.Done():
			t.Fatal(unreachable(err))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// NewTopic creates a topic with the given number of partitions and
// replication factor 1, named after the test ("t-<test name>-<random>"), so
// no two tests share one. It returns once every partition has a leader that
// answers, so producing and consuming work at once. The topic is deleted at
// cleanup. It fails the test, saying how to start Kafka, if the cluster does
// not answer.
func NewTopic(t testing.TB, partitions int32) string {
	t.Helper()
	if partitions < 1 {
		t.Fatalf("kafkatest: NewTopic: partitions is %d, must be at least 1", partitions)
	}
	topic := TopicName(t)
	CreateTopic(t, topic, partitions)
	return topic
}

// CreateTopic creates the topic name with the given number of partitions
// and replication factor 1, and returns once every partition has a leader
// that answers, as NewTopic does; the topic is deleted at cleanup. For a
// topic whose name a test must choose (such as "<topic>.dlq"); otherwise use
// NewTopic.
func CreateTopic(t testing.TB, name string, partitions int32) {
	t.Helper()
	if partitions < 1 {
		t.Fatalf("kafkatest: CreateTopic: partitions is %d, must be at least 1", partitions)
	}
	adm := kadm.NewClient(NewClient(t))
	ctx, cancel := context.WithTimeout(context.Background(), topicTimeout)
	defer cancel()
	res, err := adm.CreateTopic(ctx, partitions, 1, nil, name)
	if err == nil {
		err = res.Err
	}
	if err != nil {
		t.Fatalf("kafkatest: create topic %s: %v", name, err)
	}
	// Registered after the client's Close, so it runs before it.
	t.Cleanup(func() { deleteTopic(t, adm, name) })

	if err := waitUsable(ctx, adm, name, partitions); err != nil {
		t.Fatalf("kafkatest: topic %s: %v", name, err)
	}
}

// TopicName returns a fresh topic name for t, without creating the topic:
// "t-", the test's name with characters Kafka does not allow (and '.' and
// '_', which Kafka treats as colliding) replaced by '-', then '-' and 16
// random hex digits, at most 249 characters in all.
func TopicName(t testing.TB) string {
	const prefix = "t-"
	suffix := "-" + randomHex(8)
	name := sanitize(t.Name())
	if room := maxTopicLength - len(prefix) - len(suffix); len(name) > room {
		name = name[:room]
	}
	return prefix + name + suffix
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return b.String()
}

// waitUsable polls until the metadata shows a leader for each partition and
// every leader answers a ListOffsets request for it.
func waitUsable(ctx context.Context, adm *kadm.Client, topic string, partitions int32) error {
	var last error
	for {
		last = checkUsable(ctx, adm, topic, partitions)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not usable after %s: %w", topicTimeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func checkUsable(ctx context.Context, adm *kadm.Client, topic string, partitions int32) error {
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return err
	}
	td, ok := md.Topics[topic]
	switch {
	case !ok:
		return errors.New("not in metadata yet")
	case td.Err != nil:
		return td.Err
	case int32(len(td.Partitions)) != partitions:
		return fmt.Errorf("metadata shows %d of %d partitions", len(td.Partitions), partitions)
	}
	for _, p := range td.Partitions {
		if p.Err != nil {
			return fmt.Errorf("partition %d: %w", p.Partition, p.Err)
		}
		if p.Leader < 0 {
			return fmt.Errorf("partition %d has no leader yet", p.Partition)
		}
	}
	offsets, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return err
	}
	if err := offsets.Error(); err != nil {
		return err
	}
	return nil
}

func deleteTopic(t testing.TB, adm *kadm.Client, topic string) {
	ctx, cancel := context.WithTimeout(context.Background(), topicTimeout)
	defer cancel()
	res, err := adm.DeleteTopic(ctx, topic)
	if err == nil {
		err = res.Err
	}
	if err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Errorf("kafkatest: delete topic %s: %v", topic, err)
	}
}

func unreachable(err error) error {
	return fmt.Errorf("kafkatest: Kafka at %s does not answer (start the development services with `make deps`, or point %s at a Kafka cluster): %w",
		strings.Join(Brokers(), ","), EnvBrokers, err)
}

// randomHex returns n random bytes in hex. crypto/rand.Read does not fail: it
// crashes the program if the system's source does.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
