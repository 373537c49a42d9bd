package kafka_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/messaging/kafka"
)

// testLogger logs to stderr when DTX_TEST_VERBOSE is set.
func testLogger() watermill.LoggerAdapter {
	if os.Getenv("DTX_TEST_VERBOSE") != "" {
		return watermill.NewStdLogger(true, false)
	}
	return watermill.NopLogger{}
}

// groupOpts make group membership changes show within half a second
// instead of the default three (heartbeat interval), which keeps tests that
// join and leave groups often short.
func groupOpts() []kgo.Opt {
	return []kgo.Opt{kgo.HeartbeatInterval(500 * time.Millisecond)}
}

// startEmbedded starts an in-process embedded broker (kfake) that is closed
// at cleanup and returns its address.
func startEmbedded(t testing.TB, opts ...kfake.Opt) []string {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(1),
	}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newPublisher returns a publisher of brokers, closed at cleanup.
func newPublisher(t testing.TB, brokers []string, mod ...func(*kafka.PublisherConfig)) *kafka.Publisher {
	t.Helper()
	cfg := kafka.PublisherConfig{ClientConfig: kafka.ClientConfig{Brokers: brokers, Logger: testLogger()}}
	for _, m := range mod {
		m(&cfg)
	}
	pub, err := kafka.NewPublisher(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	return pub
}

// newSubscriber returns a subscriber of brokers in group, closed at cleanup.
func newSubscriber(t testing.TB, brokers []string, group string, mod ...func(*kafka.SubscriberConfig)) *kafka.Subscriber {
	t.Helper()
	cfg := kafka.SubscriberConfig{
		ClientConfig:  kafka.ClientConfig{Brokers: brokers, Logger: testLogger(), Opts: groupOpts()},
		ConsumerGroup: group,
	}
	for _, m := range mod {
		m(&cfg)
	}
	sub, err := kafka.NewSubscriber(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// deleteWithPrefix deletes the topics and consumer groups of brokers whose
// names start with prefix.
func deleteWithPrefix(t testing.TB, brokers []string, prefix string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Errorf("cleanup client: %v", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if groups, err := adm.ListGroups(ctx); err == nil {
		var names []string
		for _, g := range groups.Groups() {
			if strings.HasPrefix(g, prefix) {
				names = append(names, g)
			}
		}
		if len(names) > 0 {
			if _, err := adm.DeleteGroups(ctx, names...); err != nil {
				t.Logf("delete %d consumer groups: %v", len(names), err)
			}
		}
	}
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Errorf("list topics: %v", err)
		return
	}
	var names []string
	for _, name := range topics.Names() {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	if len(names) > 0 {
		if _, err := adm.DeleteTopics(ctx, names...); err != nil {
			t.Errorf("delete %d topics: %v", len(names), err)
		}
	}
}
