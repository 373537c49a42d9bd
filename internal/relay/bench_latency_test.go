package relay_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/relay"
	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

// The offered load of BenchmarkRelayLatency: latencyRowsPerTx rows
// committed every latencyTick (5,000 rows/s) for latencyDuration, by up to
// latencyWriters transactions at once.
const (
	latencyTick      = 2 * time.Millisecond
	latencyRowsPerTx = 10
	latencyDuration  = 10 * time.Second
	latencyWriters   = 16
)

// Headers of the latency benchmark's rows: the transaction's number and its
// scheduled time (Unix nanoseconds).
const (
	headerBenchBatch = "bench_batch"
	headerBenchSched = "bench_sched"
)

// BenchmarkRelayLatency measures the relay's end-to-end latency at a fixed
// offered rate, open loop: a writer commits latencyRowsPerTx rows every
// latencyTick (5,000 rows/s) for latencyDuration, each transaction on its
// schedule whatever the ones before it took (up to latencyWriters at once),
// and a consumer reads the topic from the broker as the relay publishes.
//
// It reports two latencies per row, as percentiles (p50, p99, p99.9, max):
//
//   - sched→recv (the headline figures): from the time the row's
//     transaction was scheduled, carried in the row's headers, to the
//     moment the consumer's fetch returned it. A writer that falls behind
//     its schedule adds to it, so a stall anywhere is not hidden.
//   - commit→recv (commit_*): from the moment the writer's COMMIT returned
//     to the consumer's fetch: the relay, the broker and one fetch. The
//     relay may read a row before COMMIT has returned to the writer, so this
//     can be slightly under the truth, never over.
//
// It also reports the achieved write rate (rows/s) and the writer's worst
// lag behind its schedule. One sub-benchmark per broker (the Apache broker
// of kafkatest.Brokers, and an in-process kfake cluster started by the
// benchmark) and relay configuration (the defaults, and a shorter
// PollInterval). Every iteration uses a fresh schema and topic and takes
// latencyDuration, longer than the default -benchtime, so `-bench .` runs
// each once; -benchtime=Nx runs it N times and merges the samples.
func BenchmarkRelayLatency(b *testing.B) {
	brokers := []struct {
		name  string
		setup func(b *testing.B) latencyBroker
	}{
		{"broker=apache", apacheBroker},
		{"broker=kfake", kfakeBroker},
	}
	configs := []struct {
		name string
		cfg  relay.Config
	}{
		{"config=default", relay.Config{}},
		{"config=poll10ms", relay.Config{PollInterval: 10 * time.Millisecond}},
	}
	for _, br := range brokers {
		for _, c := range configs {
			b.Run(br.name+"/"+c.name, func(b *testing.B) {
				kb := br.setup(b)
				var res latencyResult
				for b.Loop() {
					res.merge(runLatencyOnce(b, kb, c.cfg))
				}
				res.report(b)
			})
		}
	}
}

// latencyBroker is where a latency run publishes: seed brokers and a way to
// create a fresh topic of three partitions there.
type latencyBroker struct {
	brokers  []string
	newTopic func(b *testing.B) string
}

func apacheBroker(*testing.B) latencyBroker {
	return latencyBroker{
		brokers:  kafkatest.Brokers(),
		newTopic: func(b *testing.B) string { return kafkatest.NewTopic(b, 3) },
	}
}

// kfakeBroker starts a one-broker kfake cluster in the benchmark's process,
// closed at cleanup.
func kfakeBroker(b *testing.B) latencyBroker {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	require.NoError(b, err)
	b.Cleanup(c.Close)
	addrs := c.ListenAddrs()
	return latencyBroker{
		brokers: addrs,
		newTopic: func(b *testing.B) string {
			cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
			require.NoError(b, err)
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			topic := kafkatest.TopicName(b)
			res, err := kadm.NewClient(cl).CreateTopic(ctx, 3, 1, nil, topic)
			require.NoError(b, err)
			require.NoError(b, res.Err)
			return topic
		},
	}
}

// latencySample is one row as the consumer received it.
type latencySample struct {
	batch int
	sched time.Time
	recv  time.Time
}

// latencyResult is what one or more latency runs measured.
type latencyResult struct {
	schedToRecv  []time.Duration
	commitToRecv []time.Duration
	rows         int
	writeTime    time.Duration   // from the first scheduled time to the last commit
	writerLag    []time.Duration // per transaction: commit returned − scheduled
}

func (r *latencyResult) merge(o latencyResult) {
	r.schedToRecv = append(r.schedToRecv, o.schedToRecv...)
	r.commitToRecv = append(r.commitToRecv, o.commitToRecv...)
	r.rows += o.rows
	r.writeTime += o.writeTime
	r.writerLag = append(r.writerLag, o.writerLag...)
}

func (r *latencyResult) report(b *testing.B) {
	slices.Sort(r.schedToRecv)
	slices.Sort(r.commitToRecv)
	slices.Sort(r.writerLag)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	s, c, w := r.schedToRecv, r.commitToRecv, r.writerLag
	rate := float64(r.rows) / r.writeTime.Seconds()
	b.ReportMetric(ms(percentile(s, 0.50)), "p50_ms")
	b.ReportMetric(ms(percentile(s, 0.99)), "p99_ms")
	b.ReportMetric(ms(percentile(s, 0.999)), "p99.9_ms")
	b.ReportMetric(ms(s[len(s)-1]), "max_ms")
	b.ReportMetric(ms(percentile(c, 0.99)), "commit_p99_ms")
	b.ReportMetric(rate, "rows/s")
	b.ReportMetric(ms(percentile(w, 0.99)), "writer_lag_p99_ms")
	b.Logf("offered %d rows/s (%d rows every %s), achieved %.0f rows/s; %d rows",
		int(latencyRowsPerTx*time.Second/latencyTick), latencyRowsPerTx, latencyTick, rate, r.rows)
	b.Logf("writer lag (commit returned − scheduled) p50 %s  p99 %s  p99.9 %s  max %s", fmtMs(percentile(w, 0.50)),
		fmtMs(percentile(w, 0.99)), fmtMs(percentile(w, 0.999)), fmtMs(w[len(w)-1]))
	b.Logf("sched→recv  p50 %s  p99 %s  p99.9 %s  max %s  (goal p99 <= 5ms)", fmtMs(percentile(s, 0.50)),
		fmtMs(percentile(s, 0.99)), fmtMs(percentile(s, 0.999)), fmtMs(s[len(s)-1]))
	b.Logf("commit→recv p50 %s  p99 %s  p99.9 %s  max %s", fmtMs(percentile(c, 0.50)),
		fmtMs(percentile(c, 0.99)), fmtMs(percentile(c, 0.999)), fmtMs(c[len(c)-1]))
}

func fmtMs(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + "ms"
}

// percentile returns the q-quantile of sorted (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// runLatencyOnce runs the relay with cfg on a fresh schema and topic, writes
// the offered load and returns what the consumer measured.
func runLatencyOnce(b *testing.B, kb latencyBroker, cfg relay.Config) latencyResult {
	b.Helper()
	ticks := int(latencyDuration / latencyTick)
	total := ticks * latencyRowsPerTx
	schema := pgtest.NewSchema(b)
	topic := kb.newTopic(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The writers get a pool of their own, so that they never wait for a
	// connection the relay holds.
	pcfg := schema.Config()
	pcfg.MaxConns = latencyWriters + 1
	pcfg.MinConns = latencyWriters + 1
	wpool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(b, err)
	defer wpool.Close()
	const insertSQL = `
			INSERT INTO outbox (topic, key, headers, payload)
			SELECT $1, 'key-' || (($2::bigint * $4 + j) % $5),
			       jsonb_build_object('ce_id', 'lat-' || $2::bigint || '-' || j, 'ce_type', 'bench.created',
			                          'content-type', 'application/json',
			                          $6::text, $2::bigint::text, $7::text, $3::text),
			       convert_to(rpad('{"n":' || ($2::bigint * $4 + j) || ',"pad":"', 254, md5(j::text)) || '"}', 'UTF8')
			FROM generate_series(1, $4::int) AS j`
	insertArgs := func(batch int, sched time.Time) []any {
		return []any{topic, batch, strconv.FormatInt(sched.UnixNano(), 10), latencyRowsPerTx, benchKeys,
			headerBenchBatch, headerBenchSched}
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(kb.brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(b, err)
	defer cl.Close()
	var (
		samples  []latencySample // owned by the consumer until consumed is closed
		warm     = make(chan struct{})
		consumed = make(chan struct{})
		fetchErr error
	)
	go func() {
		defer close(consumed)
		warmed := false
		for len(samples) < total {
			fs := cl.PollFetches(ctx)
			recv := time.Now()
			if ctx.Err() != nil {
				return
			}
			fs.EachError(func(t string, p int32, err error) {
				fetchErr = fmt.Errorf("fetch %s/%d: %w", t, p, err)
			})
			fs.EachRecord(func(r *kgo.Record) {
				batch, sched := -1, int64(0)
				for _, h := range r.Headers {
					switch h.Key {
					case headerBenchBatch:
						batch, _ = strconv.Atoi(string(h.Value))
					case headerBenchSched:
						sched, _ = strconv.ParseInt(string(h.Value), 10, 64)
					}
				}
				if batch < 0 {
					if !warmed {
						warmed = true
						close(warm)
					}
					return
				}
				samples = append(samples, latencySample{batch: batch, sched: time.Unix(0, sched), recv: recv})
			})
		}
	}()

	r, err := relay.New(schema.Pool, []kgo.Opt{kgo.SeedBrokers(kb.brokers...)}, relay.Config{
		Schema: schema.Name, Holder: "bench", BatchSize: cfg.BatchSize, PollInterval: cfg.PollInterval,
	})
	require.NoError(b, err)
	rctx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- r.Run(rctx) }()
	defer func() {
		stopRelay()
		require.NoError(b, <-relayDone)
	}()

	// Warm up before the clock starts: every writer connection is open and
	// has prepared the INSERT, the relay holds its lease and the consumer
	// reads. Warm-up rows have negative batch numbers.
	conns := make([]*pgxpool.Conn, latencyWriters)
	for i := range conns {
		conns[i], err = wpool.Acquire(ctx)
		require.NoError(b, err)
	}
	for i, c := range conns {
		_, err := c.Exec(ctx, insertSQL, insertArgs(-1-i, time.Now())...)
		require.NoError(b, err)
		c.Release()
	}
	select {
	case <-warm:
	case <-consumed:
		require.NoError(b, fetchErr)
		b.Fatal("consumer stopped before the warm-up row")
	case <-time.After(waitFor):
		b.Fatal("the warm-up row did not reach the consumer")
	}

	commits := make([]time.Time, ticks) // each index written by one writer
	jobs := make(chan int, ticks)
	start := time.Now().Add(latencyTick)
	schedOf := func(i int) time.Time { return start.Add(time.Duration(i) * latencyTick) }
	var wg sync.WaitGroup
	for range latencyWriters {
		wg.Go(func() {
			for i := range jobs {
				if _, err := wpool.Exec(ctx, insertSQL, insertArgs(i, schedOf(i))...); err != nil {
					b.Errorf("insert batch %d: %v", i, err)
					return
				}
				commits[i] = time.Now()
			}
		})
	}
	timer := time.NewTimer(time.Until(start))
	for i := range ticks {
		if d := time.Until(schedOf(i)); d > 0 {
			timer.Reset(d)
			<-timer.C
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	timer.Stop()
	require.False(b, b.Failed())

	select {
	case <-consumed:
	case <-time.After(waitFor):
		cancel()
		<-consumed
	}
	require.NoError(b, fetchErr)
	require.Len(b, samples, total, "the consumer read every row")

	res := latencyResult{rows: total}
	for i, c := range commits {
		res.writeTime = max(res.writeTime, c.Sub(start))
		res.writerLag = append(res.writerLag, c.Sub(schedOf(i)))
	}
	for _, s := range samples {
		res.schedToRecv = append(res.schedToRecv, s.recv.Sub(s.sched))
		res.commitToRecv = append(res.commitToRecv, s.recv.Sub(commits[s.batch]))
	}
	return res
}
