package kafka_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/pkg/messaging"
)

// The benchmarks measure this package beside watermill-kafka v3 (sarama) in
// the same run, on the same broker, with the same guarantees: idempotent
// producers waiting for every in-sync replica (acks=all). b.N is the number
// of messages each side handles; run them with a fixed count, e.g.
//
//	go test -run '^$' -bench . -benchtime 20000x ./pkg/messaging/kafka/
//
// Each reports msgs/s of both sides and their ratio (dtx / watermill-kafka).
const (
	benchPayloadSize = 256
	benchPartitions  = 4
)

// benchMessages returns n messages with a 256-byte payload, spread over 16
// keys.
func benchMessages(n int) []*message.Message {
	payload := make([]byte, benchPayloadSize)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), payload)
		msgs[i].Metadata.Set(messaging.MetadataPartitionKey, "key-"+strconv.Itoa(i%16))
	}
	return msgs
}

// saramaConfig is watermill-kafka's publisher configuration with the
// guarantees of this package's publisher: idempotence and acks=all.
func saramaConfig() *sarama.Config {
	c := wmkafka.DefaultSaramaSyncPublisherConfig()
	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Net.MaxOpenRequests = 1
	return c
}

func newWatermillKafkaPublisher(b *testing.B) *wmkafka.Publisher {
	b.Helper()
	pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{
		Brokers:               kafkatest.Brokers(),
		Marshaler:             wmkafka.DefaultMarshaler{},
		OverwriteSaramaConfig: saramaConfig(),
	}, watermill.NopLogger{})
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, pub.Close()) })
	return pub
}

// publishTime publishes msgs to topic in calls of batch messages from
// goroutines goroutines and returns how long that took.
func publishTime(b *testing.B, pub message.Publisher, topic string, msgs []*message.Message, batch, goroutines int) time.Duration {
	b.Helper()
	if len(msgs) == 0 {
		return 0
	}
	calls := make(chan []*message.Message, len(msgs)/batch+1)
	for i := 0; i < len(msgs); i += batch {
		calls <- msgs[i:min(i+batch, len(msgs))]
	}
	close(calls)
	var (
		wg   sync.WaitGroup
		errs = make(chan error, goroutines)
	)
	start := time.Now()
	for range goroutines {
		wg.Go(func() {
			for call := range calls {
				if err := pub.Publish(topic, call...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	require.NoError(b, <-errs)
	return elapsed
}

func reportRatio(b *testing.B, what string, dtx, wm float64) {
	b.Helper()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(dtx, "dtx_msgs/s")
	b.ReportMetric(wm, "wmkafka_msgs/s")
	b.ReportMetric(dtx/wm, "ratio")
	b.Logf("%s of %d messages: dtx %.0f msgs/s, watermill-kafka %.0f msgs/s, ratio %.2f", what, b.N, dtx, wm, dtx/wm)
}

// BenchmarkPublishVsWatermillKafka publishes b.N messages through each side's
// Publisher, batch messages per Publish call, which returns once the broker
// has acknowledged them all, from one goroutine or from several at once.
func BenchmarkPublishVsWatermillKafka(b *testing.B) {
	brokers := kafkatest.Brokers()
	for _, tc := range []struct{ batch, goroutines int }{{100, 1}, {1, 1}, {1, 16}} {
		b.Run(fmt.Sprintf("batch=%d/goroutines=%d", tc.batch, tc.goroutines), func(b *testing.B) {
			topic := kafkatest.NewTopic(b, benchPartitions)
			dtxPub := newPublisher(b, brokers)
			wmPub := newWatermillKafkaPublisher(b)
			// Connections, metadata and producer ids are set up before timing.
			require.NoError(b, dtxPub.Publish(topic, benchMessages(1)...))
			require.NoError(b, wmPub.Publish(topic, benchMessages(1)...))
			msgs := benchMessages(b.N)

			// The two sides take turns, a quarter of the messages at a time,
			// so that a change in the broker's load weighs on both alike.
			b.ResetTimer()
			var wmTime, dtxTime time.Duration
			for part := range 4 {
				chunk := msgs[part*len(msgs)/4 : (part+1)*len(msgs)/4]
				wmTime += publishTime(b, wmPub, topic, chunk, tc.batch, tc.goroutines)
				dtxTime += publishTime(b, dtxPub, topic, chunk, tc.batch, tc.goroutines)
			}
			b.StopTimer()
			wm := float64(len(msgs)) / wmTime.Seconds()
			dtx := float64(len(msgs)) / dtxTime.Seconds()
			reportRatio(b, fmt.Sprintf("publish, %d per call from %d goroutines,", tc.batch, tc.goroutines), dtx, wm)
		})
	}
}

// consumeRate reads n messages from ch, acking each, and returns messages
// per second from the first message to the last (group joins are not
// counted). Messages are counted, not told apart: watermill-kafka reads a
// message's UUID from a header of its own, which this package does not
// write.
func consumeRate(b *testing.B, name string, ch <-chan *message.Message, n int) float64 {
	b.Helper()
	var start time.Time
	timeout := time.After(time.Minute)
	for got := 0; got < n; got++ {
		select {
		case msg := <-ch:
			if start.IsZero() {
				start = time.Now()
			}
			msg.Ack()
		case <-timeout:
			b.Fatalf("%s consumed %d of %d messages", name, got, n)
		}
	}
	return float64(n-1) / time.Since(start).Seconds()
}

// BenchmarkConsumeVsWatermillKafka reads b.N messages, spread over four
// partitions, through each side's Subscriber in a new consumer group,
// acking each as Watermill's router does. The two sides run one after the
// other.
func BenchmarkConsumeVsWatermillKafka(b *testing.B) {
	brokers := kafkatest.Brokers()
	topic := kafkatest.NewTopic(b, benchPartitions)
	pub := newPublisher(b, brokers)
	msgs := benchMessages(max(b.N, 2))
	for i := 0; i < len(msgs); i += 1000 {
		require.NoError(b, pub.Publish(topic, msgs[i:min(i+1000, len(msgs))]...))
	}
	b.ResetTimer()

	saramaSub := wmkafka.DefaultSaramaSubscriberConfig()
	saramaSub.Consumer.Offsets.Initial = sarama.OffsetOldest
	wmSub, err := wmkafka.NewSubscriber(wmkafka.SubscriberConfig{
		Brokers:               brokers,
		Unmarshaler:           wmkafka.DefaultMarshaler{},
		OverwriteSaramaConfig: saramaSub,
		ConsumerGroup:         "t-bench-wmkafka-" + randomHex(8),
	}, watermill.NopLogger{})
	require.NoError(b, err)
	wmCh, err := wmSub.Subscribe(context.Background(), topic)
	require.NoError(b, err)
	wm := consumeRate(b, "watermill-kafka", wmCh, len(msgs))
	require.NoError(b, wmSub.Close())

	dtxSub := newSubscriber(b, brokers, "t-bench-dtx-"+randomHex(8))
	dtx := consumeRate(b, "dtx", subscribe(b, dtxSub, topic), len(msgs))
	require.NoError(b, dtxSub.Close())

	b.StopTimer()
	reportRatio(b, "consume", dtx, wm)
}
