package projection_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/projection"
)

const kafkaWait = 60 * time.Second

// kafkaFixture is a fixture whose store publishes every stream type's
// events to one topic (through the outbox), with its dead-letter topic.
type kafkaFixture struct {
	*fixture
	schema string
	topic  string
	group  string
	raw    *kgo.Client
	pub    *kafka.Publisher
	sent   int // outbox rows produced so far
}

func setupKafka(t *testing.T, partitions int32) *kafkaFixture {
	t.Helper()
	f := &kafkaFixture{fixture: setup(t), topic: kafkatest.NewTopic(t, partitions)}
	require.NoError(t, f.pool.QueryRow(t.Context(), "SELECT current_schema()").Scan(&f.schema))
	store, err := postgres.New(f.pool, postgres.Config{Schema: f.schema, TopicFunc: func(string) string { return f.topic }})
	require.NoError(t, err)
	f.store = store
	f.group = f.topic + "-group"
	f.raw = kafkatest.NewClient(t)
	dlq := f.topic + messaging.DeadLetterSuffix
	kafkatest.CreateTopic(t, dlq, 1) // waited for: dead letters are produced at once
	f.pub, err = kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: kafka.ClientConfig{Brokers: kafkatest.Brokers()}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, f.pub.Close()) })
	return f
}

// runKafka runs RunKafka with a subscriber of its own in f's group until
// the returned stop is called (or the test ends).
func (f *kafkaFixture) runKafka(t *testing.T, r *projection.Runner, ps ...projection.Projection) (stop func() error) {
	t.Helper()
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		ClientConfig:    kafka.ClientConfig{Brokers: kafkatest.Brokers(), Opts: []kgo.Opt{kgo.HeartbeatInterval(500 * time.Millisecond)}},
		ConsumerGroup:   f.group,
		NackResendDelay: 10 * time.Millisecond,
		CommitInterval:  100 * time.Millisecond,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- r.RunKafka(ctx, projection.KafkaParams{
			Subscriber: sub, DeadLetterPublisher: f.pub, Topics: []string{f.topic},
			Retry: middleware.RetryConfig{InitialInterval: 10 * time.Millisecond},
		}, ps...)
	}()
	var once sync.Once
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// outbox returns the records the relay would publish for the outbox rows
// not produced yet, in commit order, and marks them produced.
func (f *kafkaFixture) outbox(t *testing.T) []*kgo.Record {
	t.Helper()
	rows, err := f.pool.Query(t.Context(), "SELECT topic, key, headers, payload FROM outbox ORDER BY tx_id, position OFFSET $1", f.sent)
	require.NoError(t, err)
	var recs []*kgo.Record
	for rows.Next() {
		var (
			topic   string
			key     *string
			headers map[string]string
			payload []byte
		)
		require.NoError(t, rows.Scan(&topic, &key, &headers, &payload))
		rec := &kgo.Record{Topic: topic, Value: payload}
		if key != nil {
			rec.Key = []byte(*key)
		}
		for k, v := range headers {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		slices.SortFunc(rec.Headers, func(a, b kgo.RecordHeader) int { return strings.Compare(a.Key, b.Key) })
		recs = append(recs, rec)
	}
	require.NoError(t, rows.Err())
	f.sent += len(recs)
	return recs
}

func (f *kafkaFixture) produce(t *testing.T, recs ...*kgo.Record) {
	t.Helper()
	if len(recs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), kafkaWait)
	defer cancel()
	// A record is produced once: send copies, so that tests can send one
	// again.
	copies := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		copies[i] = &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
	}
	require.NoError(t, f.raw.ProduceSync(ctx, copies...).FirstErr())
}

// publishAll produces the records of every outbox row not produced yet.
func (f *kafkaFixture) publishAll(t *testing.T) { f.produce(t, f.outbox(t)...) }

// waitVersions waits until the projection's version of every stream is the
// stream's last.
func (f *kafkaFixture) waitVersions(t *testing.T, name string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var behind int
		require.NoError(t, f.pool.QueryRow(t.Context(), `SELECT count(*) FROM
			(SELECT stream_id, max(version) AS v FROM events GROUP BY stream_id) e
			LEFT JOIN projection_streams ps ON ps.projection = $1 AND ps.stream_id = e.stream_id
			WHERE coalesce(ps.version, 0) <> e.v`, name).Scan(&behind))
		return behind == 0
	}, kafkaWait, 20*time.Millisecond, "waiting for %s to hold every event", name)
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func TestKafkaAppliesOnceFillsGapsSkipsUnknownAndDeadLetters(t *testing.T) {
	t.Parallel()
	f := setupKafka(t, 3)
	_, orders := f.appendOrders(t, 0, 20)
	// Streams with several appends.
	for i := range 4 {
		_, err := f.store.Append(t.Context(), eventstore.AppendParams{
			StreamID: fmt.Sprintf("order-%d", i), StreamType: "order", Expected: eventstore.Any,
			Events: []eventstore.EventData{{Type: typePlaced, Data: json.RawMessage(`{"customer":"c7"}`)}},
		})
		require.NoError(t, err)
		orders++
	}
	recs := f.outbox(t)
	var send []*kgo.Record
	gaps := 0
	for i, rec := range recs {
		stream, version := string(rec.Key), header(rec, "ce_streamversion")
		// Order-0 and order-3 lose their first events: the next ones fill the gap.
		if (stream == "order-0" || stream == "order-3") && (version == "1" || version == "2") {
			gaps++
			continue
		}
		send = append(send, rec)
		if i%4 == 0 {
			send = append(send, rec) // a duplicate
		}
	}
	require.Equal(t, 4, gaps)
	// A CloudEvent that is not an event-store event, and a record that is
	// no CloudEvent at all: both are dead-lettered.
	foreign, err := messaging.NewEnvelope("order.audited", "/elsewhere", json.RawMessage(`{}`))
	require.NoError(t, err)
	foreign.PartitionKey = "order-1"
	msg, err := foreign.ToMessage()
	require.NoError(t, err)
	bad := &kgo.Record{Topic: f.topic, Key: []byte("order-1"), Value: []byte("{}")}
	for k, v := range msg.Metadata {
		if k != messaging.MetadataPartitionKey {
			bad.Headers = append(bad.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
	}
	garbage := &kgo.Record{Topic: f.topic, Key: []byte("order-2"), Value: []byte("not json")}
	f.produce(t, send[:len(send)/2]...)
	f.produce(t, bad, garbage)
	f.produce(t, send[len(send)/2:]...)

	reg := prometheus.NewRegistry()
	stop := f.runKafka(t, f.runner(t, reg), f.proj)
	f.waitVersions(t, f.proj.name)
	dead := f.readTopic(t, f.topic+messaging.DeadLetterSuffix, 2)
	require.NoError(t, stop())

	f.requireLogOnce(t, "order_log", orders)
	require.Equal(t, f.scratch(t), f.counts(t, "order_counts"))
	labels := map[string]string{"projection": f.proj.name}
	require.InDelta(t, float64(orders), metric(t, reg, "dtx_projection_applied_total", labels), 0)
	require.InDelta(t, 4, metric(t, reg, "dtx_projection_skipped_total",
		map[string]string{"projection": f.proj.name, "type": typeUnknown}), 0)
	require.GreaterOrEqual(t, metric(t, reg, "dtx_projection_duplicates_total", labels), float64(len(send)-len(recs)+gaps))
	require.GreaterOrEqual(t, metric(t, reg, "dtx_projection_lag_seconds", labels), 0.0)
	var reasons []string
	for _, r := range dead {
		reasons = append(reasons, header(r, messaging.HeaderDLQReason))
	}
	require.Len(t, reasons, 2)
	require.Contains(t, strings.Join(reasons, "\n"), "not an event-store event")
}

// readTopic reads want records of topic's partition 0 from its start.
func (f *kafkaFixture) readTopic(t *testing.T, topic string, want int) []*kgo.Record {
	t.Helper()
	cl := kafkatest.NewClient(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	ctx, cancel := context.WithTimeout(t.Context(), kafkaWait)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < want {
		fetches := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d of %d records of %s", len(recs), want, topic)
		recs = append(recs, fetches.Records()...)
	}
	return recs
}

func TestKafkaTwoInstancesInOneGroup(t *testing.T) {
	t.Parallel()
	f := setupKafka(t, 4)
	p := projection.StreamSummaries(f.schema)
	stop1 := f.runKafka(t, f.runner(t, nil), p)
	stop2 := f.runKafka(t, f.runner(t, nil), p)
	for round := range 3 {
		f.appendOrders(t, round*7, 30)
		recs := f.outbox(t)
		f.produce(t, recs...)
		f.produce(t, recs[:len(recs)/3]...) // redelivered
	}
	f.waitVersions(t, projection.StreamSummariesName)
	require.NoError(t, stop1())
	require.NoError(t, stop2())
	require.Equal(t, f.expectedSummaries(t, typePlaced, typeCancelled, typeUnknown), f.summaries(t))
}

// Catch up from the log, then go live from Kafka (whose records repeat the
// events caught up), and rebuild while the Kafka source runs and events
// arrive: nothing is applied twice, and the rebuilt tables equal the live
// ones.
func TestKafkaAfterCatchUpAndRebuildWhileLive(t *testing.T) {
	t.Parallel()
	f := setupKafka(t, 2)
	_, orders := f.appendOrders(t, 0, 30)
	r := f.runner(t, nil)
	require.NoError(t, r.CatchUp(t.Context(), f.proj))
	f.requireLogOnce(t, "order_log", orders)

	stop := f.runKafka(t, r, f.proj)
	// Kafka gets every record, those caught up included, and then more.
	_, more := f.appendOrders(t, 100, 10)
	orders += more
	f.publishAll(t)
	f.waitVersions(t, f.proj.name)
	f.requireLogOnce(t, "order_log", orders)

	// Rebuild while events are appended and published. Some of them the
	// rebuild's log read sees first, some Kafka applies first.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Go(func() {
		for i := 1000; ctx.Err() == nil; i++ {
			_, n := f.appendOrders(t, i, 1)
			mu.Lock()
			orders += n
			if i%2 == 0 {
				f.publishAll(t)
			}
			mu.Unlock()
		}
	})
	_, err := f.pool.Exec(t.Context(), "INSERT INTO order_counts VALUES ('bogus', 99) ON CONFLICT DO NOTHING")
	require.NoError(t, err)
	require.NoError(t, r.Rebuild(t.Context(), f.proj))
	cancel()
	wg.Wait()
	f.publishAll(t)
	f.waitVersions(t, f.proj.name)

	// The live projection goes on, on the new tables, from Kafka.
	_, more = f.appendOrders(t, 2000, 10)
	orders += more
	recs := f.outbox(t)
	f.produce(t, recs...)
	f.produce(t, recs...) // all again
	f.waitVersions(t, f.proj.name)
	require.NoError(t, stop())

	f.requireLogOnce(t, "order_log", orders)
	want := f.scratch(t)
	require.Equal(t, want, f.counts(t, "order_counts"))
	require.NotContains(t, want, countRow{Customer: "bogus", Orders: 99})
	var rebuildRows int
	require.NoError(t, f.pool.QueryRow(t.Context(),
		"SELECT count(*) FROM projection_streams WHERE projection LIKE '%.rebuild-%'").Scan(&rebuildRows))
	require.Zero(t, rebuildRows, "rebuild versions left")

	// And the log source, run again, applies nothing twice either.
	stopLog := run(t, r, f.proj)
	last, more := f.appendOrders(t, 3000, 5)
	orders += more
	f.waitCheckpoint(t, f.proj.name, last)
	require.NoError(t, stopLog())
	f.requireLogOnce(t, "order_log", orders)
	require.Equal(t, f.scratch2(t), f.counts(t, "order_counts"))
}

// scratch2 is scratch into fresh tables of another suffix.
func (f *kafkaFixture) scratch2(t *testing.T) []countRow {
	t.Helper()
	_, err := f.pool.Exec(t.Context(), "DROP TABLE order_counts_scratch, order_log_scratch")
	require.NoError(t, err)
	return f.scratch(t)
}

func TestRunKafkaValidates(t *testing.T) {
	t.Parallel()
	f := setup(t)
	err := f.runner(t, nil).RunKafka(t.Context(), projection.KafkaParams{Topics: []string{"a", "a", ""}}, f.proj)
	require.ErrorContains(t, err, "Subscriber")
	require.ErrorContains(t, err, "DeadLetterPublisher")
	require.ErrorContains(t, err, "repeated")
	require.ErrorContains(t, err, "Topics[2]: empty")
}

func TestEventFromEnvelope(t *testing.T) {
	t.Parallel()
	env, err := messaging.NewEnvelope("order.placed", "/dtx/eventstore", json.RawMessage(`{"a":1}`))
	require.NoError(t, err)
	env.Subject, env.CorrelationID = "order-1", "corr"
	env.Extensions = map[string]string{eventstore.ExtensionStreamType: "order", eventstore.ExtensionStreamVersion: "7"}
	ev, err := projection.EventFromEnvelope(env)
	require.NoError(t, err)
	require.Equal(t, eventstore.RecordedEvent{StreamID: "order-1", StreamType: "order", Version: 7, ID: env.ID,
		Type: "order.placed", SchemaVersion: 1, Data: env.Data, Metadata: eventstore.Metadata{CorrelationID: "corr"},
		RecordedAt: env.Time}, ev)
	env.Extensions[eventstore.ExtensionStreamVersion] = "0"
	_, err = projection.EventFromEnvelope(env)
	require.ErrorIs(t, err, projection.ErrNotAnEvent)

}
