package kafkatest_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestBrokers(t *testing.T) {
	t.Setenv(kafkatest.EnvBrokers, "")
	require.Equal(t, []string{kafkatest.DefaultBrokers}, kafkatest.Brokers())

	t.Setenv(kafkatest.EnvBrokers, " k1:9092, ,k2:9093 ")
	require.Equal(t, []string{"k1:9092", "k2:9093"}, kafkatest.Brokers())
}

func TestTopicName(t *testing.T) {
	t.Parallel()
	legal := `^[a-zA-Z0-9-]+$`

	a, b := kafkatest.TopicName(t), kafkatest.TopicName(t)
	require.NotEqual(t, a, b)
	require.Regexp(t, `^t-TestTopicName-[0-9a-f]{16}$`, a)

	odd := kafkatest.TopicName(named{t, "TestX/sub test.with_odd:chars/é"})
	require.Regexp(t, legal, odd)
	require.True(t, strings.HasPrefix(odd, "t-TestX-sub-test-with-odd-chars--"), odd)

	long := kafkatest.TopicName(named{t, "TestLong/" + strings.Repeat("x", 400)})
	require.Len(t, long, 249)
	require.Regexp(t, legal, long)
	require.Regexp(t, `-[0-9a-f]{16}$`, long)
}

func TestNewTopic(t *testing.T) {
	t.Parallel()
	const partitions = 3
	var topic string

	t.Run("usable", func(t *testing.T) {
		topic = kafkatest.NewTopic(t, partitions)
		require.True(t, strings.HasPrefix(topic, "t-TestNewTopic-usable-"), topic)

		cl := kafkatest.NewClient(t,
			kgo.DefaultProduceTopic(topic),
			kgo.ConsumeTopics(topic),
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
		)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()

		// One record per partition, produced at once: no unknown-topic retries.
		for p := range int32(partitions) {
			r := &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "record %d", p)}
			require.NoError(t, cl.ProduceSync(ctx, r).FirstErr())
		}
		got := map[int32]string{}
		for len(got) < partitions {
			fetches := cl.PollFetches(ctx)
			require.NoError(t, ctx.Err(), "records not consumed in time")
			for _, fe := range fetches.Errors() {
				require.NoError(t, fe.Err, "fetch from %s/%d", fe.Topic, fe.Partition)
			}
			fetches.EachRecord(func(r *kgo.Record) { got[r.Partition] = string(r.Value) })
		}
		require.Equal(t, map[int32]string{0: "record 0", 1: "record 1", 2: "record 2"}, got)
	})
	require.NotEmpty(t, topic)

	adm := kadm.NewClient(kafkatest.NewClient(t))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.Eventually(t, func() bool {
		topics, err := adm.ListTopics(ctx)
		return err == nil && !topics.Has(topic)
	}, 30*time.Second, 100*time.Millisecond, "topic %s survived its test", topic)
}

func TestNewTopicDeletedByTheTest(t *testing.T) {
	t.Parallel()
	topic := kafkatest.NewTopic(t, 1)
	adm := kadm.NewClient(kafkatest.NewClient(t))
	res, err := adm.DeleteTopic(t.Context(), topic)
	require.NoError(t, err)
	require.NoError(t, res.Err)
	// The cleanup must not report the topic missing.
}

func TestUnreachableSaysWhatToDo(t *testing.T) {
	// Not parallel: it changes the environment.
	t.Setenv(kafkatest.EnvBrokers, "127.0.0.1:1")
	r := runRecorded(t, func(tb testing.TB) { kafkatest.NewClient(tb) })
	require.True(t, r.failed)
	require.Contains(t, r.msg, "127.0.0.1:1")
	require.Contains(t, r.msg, "make deps")
	require.Contains(t, r.msg, kafkatest.EnvBrokers)
}

// named overrides the name of a test.
type named struct {
	testing.TB
	name string
}

func (n named) Name() string { return n.name }

// recorder records a Fatal instead of failing the real test. Like testing's,
// its Fatal ends the calling goroutine, so fn runs in one of its own.
type recorder struct {
	testing.TB
	failed bool
	msg    string
}

func runRecorded(t *testing.T, fn func(testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}

func (r *recorder) Fatal(args ...any) {
	r.failed, r.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) { r.Fatal(fmt.Sprintf(format, args...)) }
