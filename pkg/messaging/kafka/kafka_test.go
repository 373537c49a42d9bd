package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
)

const waitFor = 30 * time.Second

// newGroup returns a consumer group name of its own for t, deleted at
// cleanup, after the subscribers created later are closed.
func newGroup(t *testing.T) string {
	t.Helper()
	group := "t-" + t.Name() + "-" + randomHex(8)
	t.Cleanup(func() {
		adm := kadm.NewClient(kafkatest.NewClient(t))
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, err := adm.DeleteGroup(ctx, group); err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
			t.Logf("delete group %s: %v", group, err)
		}
	})
	return group
}

func subscribe(t testing.TB, sub message.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ch, err := sub.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	return ch
}

func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-ch:
		require.True(t, ok, "channel closed")
		return msg
	case <-time.After(waitFor):
		t.Fatalf("no message within %s", waitFor)
		return nil
	}
}

func receiveN(t *testing.T, ch <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	msgs := make([]*message.Message, 0, n)
	for range n {
		msgs = append(msgs, receive(t, ch))
	}
	return msgs
}

// receiveAcked receives n messages, acking each before receiving the next.
func receiveAcked(t *testing.T, ch <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	msgs := make([]*message.Message, 0, n)
	for range n {
		msg := receive(t, ch)
		require.True(t, msg.Ack())
		msgs = append(msgs, msg)
	}
	return msgs
}

func uuids(msgs []*message.Message) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.UUID
	}
	return ids
}

// newMessages returns n messages with key as their partition key and
// "<i>" as payload.
func newMessages(n int, key string) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
		if key != "" {
			msgs[i].Metadata.Set(messaging.MetadataPartitionKey, key)
		}
	}
	return msgs
}

// murmur2Partition is the partition the Java client's default partitioner
// gives key among n partitions.
func murmur2Partition(key string, n int) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic("").Partition(&kgo.Record{Key: []byte(key)}, n))
}

// keyFor returns a key that murmur2 maps to partition p of n.
func keyFor(t *testing.T, p int32, n int) string {
	t.Helper()
	for i := range 10_000 {
		if k := fmt.Sprintf("key-%d", i); murmur2Partition(k, n) == p {
			return k
		}
	}
	t.Fatalf("no key for partition %d", p)
	return ""
}

// readRaw reads n records of topic from its start, without a group.
func readRaw(t *testing.T, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := kafkatest.NewClient(t, kgo.ConsumeTopics(topic))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fetches := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d of %d records", len(recs), n)
		fetches.EachError(func(_ string, _ int32, err error) { t.Logf("fetch: %v", err) })
		recs = append(recs, fetches.Records()...)
	}
	return recs
}

func TestPublishPartitionsByKey(t *testing.T) {
	t.Parallel()
	const partitions = 8
	brokers := kafkatest.Brokers()

	// Kafka's murmur2 golden vectors (UtilsTest.testMurmur2): the Java client
	// puts a key in partition (murmur2(key) & 0x7fffffff) % partitions.
	golden := map[string]int32{
		"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
		"a-little-bit-longer-string": -1486304829, "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	keys := make([]string, 0, 64+len(golden))
	for k := range golden {
		keys = append(keys, k)
	}
	for i := range 64 {
		keys = append(keys, fmt.Sprintf("order-%d", i))
	}

	saramaPartitioner := sarama.NewHashPartitioner("")
	saramaPartition := func(key string) int32 {
		p, err := saramaPartitioner.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, partitions)
		require.NoError(t, err)
		return p
	}

	for _, tc := range []struct {
		name   string
		sarama bool
		want   func(key string) int32
	}{
		{"murmur2", false, func(key string) int32 { return murmur2Partition(key, partitions) }},
		{"sarama", true, saramaPartition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic := kafkatest.NewTopic(t, partitions)
			pub := newPublisher(t, brokers, func(c *kafka.PublisherConfig) { c.SaramaCompatibleHashing = tc.sarama })
			var msgs []*message.Message
			for _, k := range keys {
				msgs = append(msgs, newMessages(1, k)...)
			}
			require.NoError(t, pub.Publish(topic, msgs...))

			differ := 0
			for _, r := range readRaw(t, topic, len(keys)) {
				key := string(r.Key)
				require.Equal(t, tc.want(key), r.Partition, "key %q", key)
				if murmur2Partition(key, partitions) != saramaPartition(key) {
					differ++
				}
				if h, ok := golden[key]; ok && !tc.sarama {
					require.Equal(t, (h&0x7fffffff)%partitions, r.Partition, "key %q", key)
				}
			}
			require.Greater(t, differ, len(keys)/2, "the two hashes must place most keys differently")
		})
	}
}

func TestOrderPerKey(t *testing.T) {
	t.Parallel()
	const partitions, keys, perKey = 4, 8, 25
	brokers := kafkatest.Brokers()
	topic := kafkatest.NewTopic(t, partitions)
	pub := newPublisher(t, brokers)

	// Several publishers at once, each one key; one message per call.
	var wg sync.WaitGroup
	for k := range keys {
		wg.Go(func() {
			for _, msg := range newMessages(perKey, fmt.Sprintf("k%d", k)) {
				if err := pub.Publish(topic, msg); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()

	sub := newSubscriber(t, brokers, newGroup(t))
	ch := subscribe(t, sub, topic)
	next := map[string]int{}
	for _, msg := range receiveAcked(t, ch, keys*perKey) {
		key := msg.Metadata.Get(messaging.MetadataPartitionKey)
		require.Equal(t, strconv.Itoa(next[key]), string(msg.Payload), "key %s out of order", key)
		require.Equal(t, strconv.Itoa(int(murmur2Partition(key, partitions))), msg.Metadata.Get(messaging.MetadataKafkaPartition))
		next[key]++
	}
	require.Len(t, next, keys)
}

func committedOffset(t *testing.T, group, topic string, partition int32) int64 {
	t.Helper()
	adm := kadm.NewClient(kafkatest.NewClient(t))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	offsets, err := adm.FetchOffsets(ctx, group)
	require.NoError(t, err)
	o, ok := offsets.Lookup(topic, partition)
	if !ok {
		return -1
	}
	require.NoError(t, o.Err)
	return o.At
}

func TestCommitsOnlyAfterEveryEarlierAck(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers()
	topic := kafkatest.NewTopic(t, 1)
	pub := newPublisher(t, brokers)
	published := newMessages(10, "")
	require.NoError(t, pub.Publish(topic, published...))

	t.Run("window of 10", func(t *testing.T) {
		t.Parallel()
		group := newGroup(t)
		window := func(c *kafka.SubscriberConfig) { c.MaxInFlightPerPartition = 10 }
		sub := newSubscriber(t, brokers, group, window)
		got := receiveN(t, subscribe(t, sub, topic), 10)
		require.Equal(t, uuids(published), uuids(got))
		// Messages 1..5 and 7.
		for _, i := range []int{0, 1, 2, 3, 4, 6} {
			require.True(t, got[i].Ack())
		}
		require.NoError(t, sub.Close())
		require.Equal(t, int64(5), committedOffset(t, group, topic, 0))

		again := newSubscriber(t, brokers, group, window)
		require.Equal(t, uuids(published[5:]), uuids(receiveAcked(t, subscribe(t, again, topic), 5)),
			"delivery must restart at message 6")
	})

	t.Run("one at a time", func(t *testing.T) {
		t.Parallel()
		group := newGroup(t)
		sub := newSubscriber(t, brokers, group)
		ch := subscribe(t, sub, topic)
		receiveAcked(t, ch, 5)
		sixth := receive(t, ch)
		require.Equal(t, published[5].UUID, sixth.UUID)
		require.NoError(t, sub.Close())
		select {
		case <-sixth.Context().Done():
		default:
			t.Fatal("context of an unacked message not canceled by Close")
		}
		require.Equal(t, int64(5), committedOffset(t, group, topic, 0))

		again := newSubscriber(t, brokers, group)
		require.Equal(t, published[5].UUID, receive(t, subscribe(t, again, topic)).UUID)
	})
}

func TestNackDoesNotBlockOtherPartitions(t *testing.T) {
	t.Parallel()
	const delay = 2 * time.Second
	brokers := kafkatest.Brokers()
	topic := kafkatest.NewTopic(t, 2)
	pub := newPublisher(t, brokers)
	a := newMessages(1, keyFor(t, 0, 2))
	b := newMessages(5, keyFor(t, 1, 2))
	require.NoError(t, pub.Publish(topic, append(a, b...)...))

	sub := newSubscriber(t, brokers, newGroup(t), func(c *kafka.SubscriberConfig) { c.NackResendDelay = delay })
	ch := subscribe(t, sub, topic)

	var (
		nackedAt time.Time
		gotB     []string
	)
	for {
		msg := receive(t, ch)
		if msg.UUID != a[0].UUID {
			gotB = append(gotB, msg.UUID)
			require.True(t, msg.Ack())
			continue
		}
		if nackedAt.IsZero() {
			nackedAt = time.Now()
			require.True(t, msg.Nack())
			continue
		}
		// The redelivery of the nacked message.
		require.GreaterOrEqual(t, time.Since(nackedAt), delay-100*time.Millisecond)
		require.Equal(t, a[0].Payload, msg.Payload)
		require.True(t, msg.Ack())
		break
	}
	require.Equal(t, uuids(b), gotB, "the other partition must be delivered, in order, while the nacked message waits")
}

func TestRevokeCommitsAckedAndRedeliversUnacked(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers()
	topic := kafkatest.NewTopic(t, 2)
	group := newGroup(t)
	pub := newPublisher(t, brokers)
	a := newMessages(2, keyFor(t, 0, 2))
	b := newMessages(2, keyFor(t, 1, 2))
	require.NoError(t, pub.Publish(topic, append(a, b...)...))

	// The first member owns both partitions: it acks the first message of
	// each and holds the second.
	first := newSubscriber(t, brokers, group)
	ch := subscribe(t, first, topic)
	held := map[string]*message.Message{}
	for len(held) < 2 {
		msg := receive(t, ch)
		switch msg.UUID {
		case a[0].UUID, b[0].UUID:
			require.True(t, msg.Ack())
		default:
			held[msg.UUID] = msg
		}
	}

	// A second member takes one partition over.
	second := newSubscriber(t, brokers, group)
	taken := receive(t, subscribe(t, second, topic))
	require.Contains(t, held, taken.UUID, "the new owner must start after what was acked, at the message held")
	select {
	case <-held[taken.UUID].Context().Done():
	case <-time.After(waitFor):
		t.Fatal("context of a message of a revoked partition not canceled")
	}
	for id, msg := range held {
		if id != taken.UUID {
			require.NoError(t, msg.Context().Err(), "context of a message of a kept partition canceled")
			require.True(t, msg.Ack())
		}
	}
	require.True(t, taken.Ack())
	// The acked message of the revoked partition stays acked.
	select {
	case msg := <-ch:
		t.Fatalf("old owner delivered %s after the revocation", msg.UUID)
	default:
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers()
	topic := kafkatest.NewTopic(t, 3)
	group := newGroup(t)
	pub := newPublisher(t, brokers)

	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"total":42}`))
	msg.Metadata.Set(messaging.HeaderID, msg.UUID)
	msg.Metadata.Set(messaging.HeaderType, "sales.order.placed")
	msg.Metadata.Set(messaging.HeaderSource, "/dtx/test")
	msg.Metadata.Set("x-custom", "value")
	msg.Metadata.Set(messaging.MetadataPartitionKey, "order-42")
	msg.Metadata.Set(messaging.MetadataKafkaOffset, "999")
	require.NoError(t, pub.Publish(topic, msg))

	// Without a ce_id header, the id is where the record is.
	raw := kafkatest.NewClient(t)
	require.NoError(t, raw.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: []byte("foreign")}).FirstErr())

	recs := readRaw(t, topic, 2)
	var rec *kgo.Record
	for _, r := range recs {
		if string(r.Value) != "foreign" {
			rec = r
		}
	}
	require.NotNil(t, rec)
	require.Equal(t, "order-42", string(rec.Key))
	headers := map[string]string{}
	for _, h := range rec.Headers {
		headers[h.Key] = string(h.Value)
	}
	require.Equal(t, map[string]string{
		messaging.HeaderID:     msg.UUID,
		messaging.HeaderType:   "sales.order.placed",
		messaging.HeaderSource: "/dtx/test",
		"x-custom":             "value",
	}, headers)

	sub := newSubscriber(t, brokers, group)
	ch := subscribe(t, sub, topic)
	var foreignID string
	seen := map[string]bool{}
	for len(seen) < 2 {
		got := receive(t, ch)
		if string(got.Payload) == "foreign" {
			if foreignID == "" {
				foreignID = got.UUID
				require.Equal(t, topic+"/"+got.Metadata.Get(messaging.MetadataKafkaPartition)+"/"+got.Metadata.Get(messaging.MetadataKafkaOffset), got.UUID)
				require.NotContains(t, got.Metadata, messaging.MetadataPartitionKey)
				require.True(t, got.Nack())
				continue
			}
			require.Equal(t, foreignID, got.UUID, "a redelivery must keep the id")
			seen["foreign"] = true
			require.True(t, got.Ack())
			continue
		}
		require.Equal(t, msg.UUID, got.UUID)
		require.Equal(t, msg.Payload, got.Payload)
		require.Equal(t, message.Metadata{
			messaging.HeaderID:                   msg.UUID,
			messaging.HeaderType:                 "sales.order.placed",
			messaging.HeaderSource:               "/dtx/test",
			"x-custom":                           "value",
			messaging.MetadataPartitionKey:       "order-42",
			messaging.MetadataKafkaTopic:         topic,
			messaging.MetadataKafkaPartition:     strconv.Itoa(int(rec.Partition)),
			messaging.MetadataKafkaOffset:        strconv.FormatInt(rec.Offset, 10),
			messaging.MetadataKafkaConsumerGroup: group,
		}, got.Metadata)
		seen["published"] = true
		require.True(t, got.Ack())
	}
}

func TestCloseTwice(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers()
	topic := kafkatest.NewTopic(t, 1)
	pub := newPublisher(t, brokers)
	require.NoError(t, pub.Publish(topic, newMessages(1, "")...))
	sub := newSubscriber(t, brokers, newGroup(t))
	ch := subscribe(t, sub, topic)
	msg := receive(t, ch)

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			require.NoError(t, pub.Close())
			require.NoError(t, sub.Close())
		})
	}
	wg.Wait()
	require.NoError(t, pub.Close())
	require.NoError(t, sub.Close())

	_, open := <-ch
	require.False(t, open, "channel open after Close")
	require.Error(t, msg.Context().Err())
	require.ErrorIs(t, pub.Publish(topic, newMessages(1, "")...), kafka.ErrPublisherClosed)
	_, err := sub.Subscribe(context.Background(), topic)
	require.ErrorIs(t, err, kafka.ErrSubscriberClosed)
}

func TestSubscribeContextEndsSubscription(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers()
	topic := kafkatest.NewTopic(t, 1)
	group := newGroup(t)
	pub := newPublisher(t, brokers)
	published := newMessages(3, "")
	require.NoError(t, pub.Publish(topic, published...))

	sub := newSubscriber(t, brokers, group)
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	ch, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)
	msg := receive(t, ch)
	require.Equal(t, "v", msg.Context().Value(ctxKey{}))
	require.True(t, msg.Ack())
	cancel()
	for range ch { // closed once the subscription has ended
	}
	require.Equal(t, int64(1), committedOffset(t, group, topic, 0))

	// The Subscriber still works.
	again := receiveAcked(t, subscribe(t, sub, topic), 2)
	require.Equal(t, uuids(published[1:]), uuids(again))
}

type ctxKey struct{}

func TestPublishFailures(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers()
	pub := newPublisher(t, brokers)
	missing := kafkatest.TopicName(t)

	msgs := newMessages(2, "")
	err := pub.Publish(missing, msgs...)
	var perr *kafka.PublishError
	require.ErrorAs(t, err, &perr)
	require.Equal(t, missing, perr.Topic)
	require.Equal(t, msgs[perr.Index].UUID, perr.UUID)
	require.ErrorIs(t, err, kerr.UnknownTopicOrPartition)
	require.Len(t, err.(interface{ Unwrap() []error }).Unwrap(), 2, "one error per message")

	bad := newMessages(1, "")
	bad[0].Metadata.Set(messaging.HeaderID, "other")
	err = pub.Publish(kafkatest.NewTopic(t, 1), append(newMessages(1, ""), bad...)...)
	require.ErrorIs(t, err, kafka.ErrInvalidMessage)
	require.ErrorContains(t, err, "message #1")
}

func TestReadCommitted(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers()
	topic := kafkatest.NewTopic(t, 1)
	txn := kafkatest.NewClient(t, kgo.TransactionalID("t-"+randomHex(8)), kgo.DefaultProduceTopic(topic))
	ctx := context.Background()
	for _, tc := range []struct {
		value  string
		commit kgo.TransactionEndTry
	}{{"aborted", kgo.TryAbort}, {"committed", kgo.TryCommit}} {
		require.NoError(t, txn.BeginTransaction())
		require.NoError(t, txn.ProduceSync(ctx, &kgo.Record{Value: []byte(tc.value)}).FirstErr())
		require.NoError(t, txn.EndTransaction(ctx, tc.commit))
	}

	for _, tc := range []struct {
		readCommitted bool
		want          string
	}{{true, "committed"}, {false, "aborted"}} {
		sub := newSubscriber(t, brokers, newGroup(t), func(c *kafka.SubscriberConfig) { c.ReadCommitted = tc.readCommitted })
		msg := receive(t, subscribe(t, sub, topic))
		require.Equal(t, tc.want, string(msg.Payload), "ReadCommitted %v", tc.readCommitted)
		require.True(t, msg.Ack())
	}
}

func TestInitialOffsetLatest(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers()
	topic := kafkatest.NewTopic(t, 1)
	pub := newPublisher(t, brokers)
	old := newMessages(1, "")
	require.NoError(t, pub.Publish(topic, old...))

	sub := newSubscriber(t, brokers, newGroup(t), func(c *kafka.SubscriberConfig) { c.InitialOffset = kafka.InitialOffsetLatest })
	ch := subscribe(t, sub, topic)
	// The group starts at the end once it has joined; publish until a message
	// arrives.
	sent := map[string]bool{}
	var got *message.Message
	deadline := time.Now().Add(waitFor)
	for got == nil {
		require.True(t, time.Now().Before(deadline), "nothing received")
		msgs := newMessages(1, "")
		require.NoError(t, pub.Publish(topic, msgs...))
		sent[msgs[0].UUID] = true
		select {
		case got = <-ch:
		case <-time.After(200 * time.Millisecond):
		}
	}
	require.NotEqual(t, old[0].UUID, got.UUID)
	require.True(t, sent[got.UUID])
	require.True(t, got.Ack())
}

func TestSlowRecordDoesNotHoldUpOtherCalls(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers()
	topic := kafkatest.NewTopic(t, 1)
	pub := newPublisher(t, brokers)
	require.NoError(t, pub.Publish(topic, newMessages(1, "")...)) // connected

	// A record for a missing topic waits for the topic's metadata until
	// franz-go gives up on it.
	type result struct {
		err  error
		took time.Duration
	}
	missing := make(chan result, 1)
	go func() {
		start := time.Now()
		err := pub.Publish(kafkatest.TopicName(t), newMessages(1, "")...)
		missing <- result{err, time.Since(start)}
	}()
	start := time.Now()
	for range 20 {
		require.NoError(t, pub.Publish(topic, newMessages(1, "")...))
	}
	others := time.Since(start)
	slow := <-missing
	require.ErrorIs(t, slow.err, kerr.UnknownTopicOrPartition)
	t.Logf("20 calls took %s while the failing call took %s", others, slow.took)
	require.Less(t, others, slow.took, "calls waited for another call's slow record")
}
