package relay_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	dtxkafka "github.com/vextrus/dtx/pkg/messaging/kafka"
)

// peerRows is the size of the outbox in the comparison with Watermill's
// forwarder: it publishes about one message per round trip, so a run of
// BenchmarkRelay's size would take minutes.
const peerRows = 5_000

// Names of the forwarder's SQL topic (table watermill_<name>) and of the
// topic its envelopes are sent to and read from.
const (
	peerSQLTopic       = "dtx_bench_outbox"
	peerForwarderTopic = "dtx_bench_forwarder"
)

// BenchmarkRelayVsWatermillForwarder publishes the same outbox (peerRows
// rows of 256-byte payloads over benchKeys keys) with the relay and with
// Watermill's SQL-to-Kafka forwarder, in the same run, to the same broker,
// and reports both rates and their ratio.
//
// The peer is Watermill's forwarder (components/forwarder) subscribed to
// watermill-sql v4's PostgreSQL subscriber with its default, gap-safe
// (xid8) schema and offsets adapters, and publishing through dtx's Kafka
// publisher (acks=all, idempotent), so only the outbox side differs. Each
// side is timed from its start until its own acknowledgement of the last
// row: the relay's checkpoint, the forwarder's acked offset, both moved only
// after the broker acknowledged the records. Each side then reads its topic
// back to check that every row is there. Each iteration uses fresh tables
// and topics; one iteration takes several seconds, so the default
// -benchtime runs it once.
func BenchmarkRelayVsWatermillForwarder(b *testing.B) {
	var relayTime, peerTime time.Duration
	for b.Loop() {
		f := &fixture{schema: pgtest.NewSchema(b), topic: kafkatest.NewTopic(b, 3)}
		f.prefill(b, peerRows)
		relayTime += runRelayOnce(b, f, f.lastPosition(b))
		require.Equal(b, peerRows, countRecords(b, f.topic, peerRows))

		p := &fixture{schema: pgtest.NewSchema(b), topic: kafkatest.NewTopic(b, 3)}
		peerTime += runForwarderOnce(b, p, peerRows)
		require.Equal(b, peerRows, countRecords(b, p.topic, peerRows))
	}
	relayRate := float64(peerRows*b.N) / relayTime.Seconds()
	peerRate := float64(peerRows*b.N) / peerTime.Seconds()
	b.ReportMetric(relayRate, "relay_rows/s")
	b.ReportMetric(peerRate, "forwarder_rows/s")
	b.ReportMetric(relayRate/peerRate, "relay/forwarder")
	b.Logf("%d rows: relay %.0f rows/s (%s), watermill forwarder %.0f rows/s (%s): relay/forwarder = %.1fx (goal >= 10x)",
		peerRows, relayRate, relayTime/time.Duration(b.N), peerRate, peerTime/time.Duration(b.N), relayRate/peerRate)
}

// runForwarderOnce fills the forwarder's SQL topic with n enveloped
// messages for f.topic, then runs the forwarder until its acked offset
// reaches the last one, and returns how long that took.
func runForwarderOnce(b *testing.B, f *fixture, n int) time.Duration {
	b.Helper()
	ctx := context.Background()
	logger := watermill.NopLogger{}
	db := wsql.BeginnerFromPgx(f.schema.Pool)
	schema := wsql.DefaultPostgreSQLSchema{}

	sqlPub, err := wsql.NewPublisher(db, wsql.PublisherConfig{SchemaAdapter: schema, AutoInitializeSchema: true}, logger)
	require.NoError(b, err)
	envPub := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: peerSQLTopic})
	const chunk = 500 // three parameters a message: far below PostgreSQL's 65535
	for first := 0; first < n; first += chunk {
		msgs := make([]*message.Message, 0, chunk)
		for i := first + 1; i <= min(first+chunk, n); i++ {
			id := "id-" + strconv.Itoa(i)
			m := message.NewMessage(id, benchPayload(i))
			m.Metadata.Set(messaging.HeaderID, id)
			m.Metadata.Set(messaging.HeaderType, "bench.created")
			m.Metadata.Set(messaging.HeaderContentType, "application/json")
			m.Metadata.Set(messaging.MetadataPartitionKey, "key-"+strconv.Itoa(i%benchKeys))
			msgs = append(msgs, m)
		}
		require.NoError(b, envPub.Publish(f.topic, msgs...))
	}
	require.NoError(b, envPub.Close())
	var lastOffset int64
	require.NoError(b, f.schema.Pool.QueryRow(ctx, `SELECT max("offset") FROM "watermill_`+peerSQLTopic+`"`).Scan(&lastOffset))
	_, err = f.schema.Pool.Exec(ctx, `ANALYZE "watermill_`+peerSQLTopic+`"`)
	require.NoError(b, err)

	sub, err := wsql.NewSubscriber(db, wsql.SubscriberConfig{
		SchemaAdapter: schema, OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{}, InitializeSchema: true,
	}, logger)
	require.NoError(b, err)
	// Creates the offsets table now, so that it can be polled from the start.
	require.NoError(b, sub.SubscribeInitialize(peerSQLTopic))
	kpub, err := dtxkafka.NewPublisher(dtxkafka.PublisherConfig{ClientConfig: dtxkafka.ClientConfig{Brokers: kafkatest.Brokers()}})
	require.NoError(b, err)
	fwd, err := forwarder.NewForwarder(sub, kpub, logger, forwarder.Config{ForwarderTopic: peerSQLTopic})
	require.NoError(b, err)

	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- fwd.Run(ctx) }()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for acked := int64(0); acked < lastOffset; {
		require.Less(b, time.Since(start), 5*time.Minute, "forwarder did not finish: acked offset %d of %d", acked, lastOffset)
		<-tick.C
		// Zero until the subscriber's first batch (its "zero offsets" row).
		require.NoError(b, f.schema.Pool.QueryRow(ctx,
			`SELECT coalesce(max(offset_acked), 0) FROM "watermill_offsets_`+peerSQLTopic+`"`).Scan(&acked))
	}
	took := time.Since(start)
	require.NoError(b, fwd.Close())
	require.NoError(b, <-done)
	require.NoError(b, kpub.Close())
	return took
}

// benchPayload is the payload of row i as the outbox benchmarks' SQL fills
// it: `{"n":<i>,"pad":"` padded to 254 bytes with the MD5 of i in hex, then
// `"}`: 256 bytes.
func benchPayload(i int) []byte {
	sum := md5.Sum([]byte(strconv.Itoa(i)))
	pad := hex.EncodeToString(sum[:])
	head := fmt.Sprintf(`{"n":%d,"pad":"`, i)
	fill := strings.Repeat(pad, 254/len(pad)+1)[:254-len(head)]
	return []byte(head + fill + `"}`)
}

// countRecords reads topic from its start until it has seen want records
// (or waitFor passed) and returns how many it read.
func countRecords(b *testing.B, topic string, want int) int {
	b.Helper()
	cl := kafkatest.NewClient(b, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	n := 0
	for n < want && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachError(func(t string, p int32, err error) {
			require.ErrorIs(b, err, context.DeadlineExceeded, "fetch %s/%d", t, p)
		})
		n += fs.NumRecords()
	}
	cl.Close()
	return n
}
