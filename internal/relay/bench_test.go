package relay_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/internal/relay"
	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/internal/txlog"
)

// benchRows is the size of the pre-filled outbox: 256-byte payloads over
// benchKeys keys, three headers each.
const (
	benchRows = 50_000
	benchKeys = 100
)

// BenchmarkRelay measures rows per second from PostgreSQL to Kafka: the
// relay, from its start until its checkpoint reaches the last row of a
// pre-filled outbox, beside a raw baseline in the same run: a loop that
// reads the same rows with a plain keyset SELECT of 500 rows and
// ProduceSyncs them with franz-go (no horizon, no checkpoint, no lease).
// Run it with -benchtime=1x; each iteration publishes the outbox twice.
func BenchmarkRelay(b *testing.B) {
	f := &fixture{schema: pgtest.NewSchema(b), topic: kafkatest.NewTopic(b, 3)}
	ctx := context.Background()
	f.prefill(b, benchRows)
	last := f.lastPosition(b)

	var relayTime, rawTime time.Duration
	for b.Loop() {
		_, err := f.schema.Pool.Exec(ctx, "DELETE FROM txlog_checkpoints")
		require.NoError(b, err)
		relayTime += runRelayOnce(b, f, last)
		rawTime += runRawOnce(b, f, benchRows)
	}
	relayRate := float64(benchRows*b.N) / relayTime.Seconds()
	rawRate := float64(benchRows*b.N) / rawTime.Seconds()
	b.ReportMetric(relayRate, "relay_rows/s")
	b.ReportMetric(rawRate, "raw_rows/s")
	b.ReportMetric(relayRate/rawRate, "relay/raw")
}

func runRelayOnce(b *testing.B, f *fixture, last txlog.Position) time.Duration {
	b.Helper()
	return runRelayWith(b, f, last, nil)
}

// runRelayWith runs a relay with tp (nil: the global provider) until its
// checkpoint reaches last, and returns how long it took.
func runRelayWith(b *testing.B, f *fixture, last txlog.Position, tp trace.TracerProvider) time.Duration {
	b.Helper()
	r, err := relay.New(f.schema.Pool, []kgo.Opt{kgo.SeedBrokers(kafkatest.Brokers()...)}, relay.Config{
		Schema: f.schema.Name, Holder: "bench", LeaseDuration: 5 * time.Second, TracerProvider: tp,
	})
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- r.Run(ctx) }()
	// The measured interval ends when the checkpoint is seen at the last row.
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for f.checkpoint(b) != last {
		require.Less(b, time.Since(start), 5*time.Minute, "relay did not finish")
		<-tick.C
	}
	took := time.Since(start)
	cancel()
	require.NoError(b, <-done)
	return took
}

// prefill writes n outbox rows for f's topic in one transaction, as every
// relay benchmark has them: 256-byte payloads over benchKeys keys, three
// headers each.
func (f *fixture) prefill(b *testing.B, n int) {
	b.Helper()
	ctx := context.Background()
	_, err := f.schema.Pool.Exec(ctx, `
		INSERT INTO outbox (topic, key, headers, payload)
		SELECT $1, 'key-' || (i % $3),
		       jsonb_build_object('ce_id', 'id-' || i, 'ce_type', 'bench.created', 'content-type', 'application/json'),
		       convert_to(rpad('{"n":' || i || ',"pad":"', 254, md5(i::text)) || '"}', 'UTF8')
		FROM generate_series(1, $2) AS i`, f.topic, n, benchKeys)
	require.NoError(b, err)
	_, err = f.schema.Pool.Exec(ctx, "ANALYZE outbox")
	require.NoError(b, err)
}

// runRawOnce publishes the n rows of the outbox with plain reads and
// ProduceSync.
func runRawOnce(b *testing.B, f *fixture, n int) time.Duration {
	b.Helper()
	ctx := context.Background()
	cl := kafkatest.NewClient(b, kgo.ProducerLinger(0))
	start := time.Now()
	var txID uint64
	var pos int64
	sent := 0
	for {
		rows, err := f.schema.Pool.Query(ctx, `
			SELECT tx_id, position, topic, key, headers, payload FROM outbox
			WHERE (tx_id, position) > ($1::xid8, $2::bigint)
			ORDER BY tx_id, position LIMIT 500`, txID, pos)
		require.NoError(b, err)
		var recs []*kgo.Record
		for rows.Next() {
			var (
				topic   string
				key     *string
				headers []byte
				payload []byte
			)
			require.NoError(b, rows.Scan(&txID, &pos, &topic, &key, &headers, &payload))
			rec := &kgo.Record{Topic: topic, Value: payload}
			if key != nil {
				rec.Key = []byte(*key)
			}
			var hs map[string]string
			require.NoError(b, json.Unmarshal(headers, &hs))
			for k, v := range hs {
				rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
			}
			slices.SortFunc(rec.Headers, func(a, b kgo.RecordHeader) int { return strings.Compare(a.Key, b.Key) })
			recs = append(recs, rec)
		}
		require.NoError(b, rows.Err())
		if len(recs) == 0 {
			break
		}
		require.NoError(b, cl.ProduceSync(ctx, recs...).FirstErr())
		sent += len(recs)
	}
	took := time.Since(start)
	require.Equal(b, n, sent)
	return took
}
