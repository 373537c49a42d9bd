package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/relay"
	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
	"github.com/vextrus/dtx/pkg/saga/participant"
	"github.com/vextrus/dtx/schemas"
)

// The shape of BenchmarkSaga's runs.
const (
	// benchSagas is how many sagas one throughput run starts.
	benchSagas = 2000
	// benchStartBatch is how many trigger messages one Publish call of a
	// throughput run sends.
	benchStartBatch = 100
	// benchStarters is how many such calls run at once.
	benchStarters = 2
	// benchDeclineEvery makes every fifth saga of a mixed run (20 %)
	// declined at its charge step, so that it compensates its reservation.
	benchDeclineEvery = 5
	// benchLatencyDuration is how long the latency run offers its load,
	// benchLatencyTick how often it starts sagas.
	benchLatencyDuration = 5 * time.Second
	benchLatencyTick     = 10 * time.Millisecond
	// benchPartitions is the partition count of every topic.
	benchPartitions = 4
	// benchPoll is how often the benchmark counts the sagas that ended: a
	// count is not free, and it competes with what it measures.
	benchPoll = 20 * time.Millisecond
	// benchWait bounds every wait of the benchmark.
	benchWait = 2 * time.Minute
)

// The configuration under test: the orchestrator's batching, the relay's
// batch, the subscribers' in-flight messages per partition and the pools.
const (
	benchMaxBatch      = 1000
	benchBatchWindow   = 2 * time.Millisecond
	benchWorkers       = 3
	benchRelayBatch    = 2000
	benchInFlight      = 256
	benchPartConns     = 12 // the participants' pool
	benchOrchConns     = benchWorkers + 2
	benchRelayConns    = 3
	benchRawConns      = benchWorkers + benchPartConns + 1 // the busy connections of the end-to-end run
	benchSchedulerScan = 200 * time.Millisecond
)

// benchSteps are the four steps of the benchmark's saga; the second one,
// charge, is declined for benchDeclineEvery's share of a mixed run.
var benchSteps = []string{"reserve", "charge", "ship", "confirm"}

// BenchmarkSaga measures sagas per second end to end, in-process: sagas of
// four steps started by trigger messages published to Kafka, the
// orchestrator (Run, and a Watermill router on dtx's Kafka subscriber with
// the Standard middleware, MaxInFlightPerPartition benchInFlight) handling
// triggers and replies in batches, the outbox relay publishing the
// orchestrator's commands and lifecycle events and the participants' replies,
// and four participants (package participant, behind the same stack, one
// transaction per command) whose handlers insert one row and reply. Every
// step but the last has a compensation. Everything runs on a fresh schema
// and fresh topics.
//
// One sub-benchmark per broker (the Apache broker of kafkatest.Brokers and
// an in-process kfake cluster), each with:
//
//   - happy: benchSagas sagas, all completing; sagas/s from the first
//     trigger published until every saga is terminal.
//   - mixed: the same with every fifth saga declined at its charge step,
//     which compensates the reservation (20 % compensating).
//   - latency: open loop at half the mixed run's throughput for
//     benchLatencyDuration, mixed: triggers published every
//     benchLatencyTick on schedule; p50/p99 of each saga's latency from its
//     start to its end (started_at to updated_at, both the database's
//     clock: the trigger's trip through Kafka is not in it).
//
// Beside each throughput run, in the same run, the raw ceiling: the
// PostgreSQL transactions those sagas stand for, done directly with pgx at
// the end-to-end run's concurrency (benchRawConns connections), each one
// single-row INSERT committed on its own. A saga counts 9 of them (1 start,
// 4 commands handled by participants, 4 replies handled by the
// orchestrator), a compensated one 7 (1 start; reserve, charge, release;
// their 3 replies): the transactions of a saga without batching. ratio is
// sagas/s over the raw ceiling's sagas/s. The log says how many inputs the
// orchestrator handled per transaction.
//
// The figures are bounded by CPU: PostgreSQL, the broker and the
// benchmark share the machine's cores.
func BenchmarkSaga(b *testing.B) {
	brokers := []struct {
		name  string
		setup func(b *testing.B) sagaBroker
	}{
		{"broker=apache", apacheSagaBroker},
		{"broker=kfake", kfakeSagaBroker},
	}
	for _, br := range brokers {
		b.Run(br.name, func(b *testing.B) {
			e := newSagaEnv(b, br.setup(b))
			mixedRate := 0.0
			b.Run("happy", func(b *testing.B) {
				var res throughput
				for b.Loop() {
					res.merge(e.throughputRun(b, 0))
				}
				res.report(b, "happy")
			})
			b.Run("mixed", func(b *testing.B) {
				var res throughput
				for b.Loop() {
					res.merge(e.throughputRun(b, benchDeclineEvery))
				}
				res.report(b, "mixed")
				mixedRate = res.rate()
			})
			b.Run("latency", func(b *testing.B) {
				rate := mixedRate / 2
				if rate == 0 {
					rate = 300 // the mixed run was filtered out
				}
				var lats []time.Duration
				var started int
				for b.Loop() {
					l := e.latencyRun(b, rate)
					lats = append(lats, l...)
					started += len(l)
				}
				slices.Sort(lats)
				ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
				b.ReportMetric(ms(percentile(lats, 0.50)), "p50_ms")
				b.ReportMetric(ms(percentile(lats, 0.99)), "p99_ms")
				b.ReportMetric(ms(lats[len(lats)-1]), "max_ms")
				b.ReportMetric(rate, "offered_sagas/s")
				b.Logf("latency at %.0f sagas/s offered (half the mixed throughput), %d sagas, 20%% compensating: p50 %s  p99 %s  max %s",
					rate, started, fmtMs(percentile(lats, 0.50)), fmtMs(percentile(lats, 0.99)), fmtMs(lats[len(lats)-1]))
			})
		})
	}
}

// sagaBroker is where a run publishes: seed brokers, a way to create a
// fresh topic and to remove consumer groups at cleanup.
type sagaBroker struct {
	name     string
	brokers  []string
	newTopic func(b *testing.B) string
	// groups are deleted at cleanup (the Apache broker keeps them).
	deleteGroups func(b *testing.B, groups ...string)
}

// BenchmarkSagaFinishedHistory measures BenchmarkSaga's happy run on Apache
// Kafka twice in one run: on tables that hold only a warm-up run's sagas
// (finished=0), and on tables that also hold 1,000,000 finished sagas with
// their history (finished=1000000), as a deployment does that keeps 30 days
// of them. Both environments do the same warm-up run first; the second then
// copies the warm-up's sagas and history 500 times under new ids (recent
// enough not to be pruned during the run) and analyses the tables. The
// figure to watch is the ratio of the two sagas/s (goal: at least 0.9).
// Seeding takes a few minutes.
func BenchmarkSagaFinishedHistory(b *testing.B) {
	for _, seeded := range []int{0, 1_000_000} {
		b.Run("finished="+strconv.Itoa(seeded), func(b *testing.B) {
			e := newSagaEnv(b, apacheSagaBroker(b))
			e.perRun = true
			e.throughputRun(b, 0) // warm-up, and the sagas the seed copies
			if seeded > 0 {
				e.seedFinished(b, seeded)
			}
			var res throughput
			for b.Loop() {
				res.merge(e.throughputRun(b, 0))
			}
			res.report(b, fmt.Sprintf("happy with %d finished sagas kept", seeded))
		})
	}
}

// seedFinished copies the schema's finished sagas and their history until
// it holds at least n more, each copy under a new id.
func (e *sagaEnv) seedFinished(b *testing.B, n int) {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	var have int
	require.NoError(b, e.pool.QueryRow(ctx, `SELECT count(*) FROM saga_instances WHERE status IN ('completed', 'compensated')`).Scan(&have))
	require.Positive(b, have)
	copies := (n + have - 1) / have
	// The history's foreign key is checked once, when it is added back,
	// instead of once per row.
	for _, stmt := range []string{
		`ALTER TABLE saga_history DROP CONSTRAINT saga_history_saga_fkey`,
		`INSERT INTO saga_instances (id, definition, definition_version, status, step, attempt, correlation_id, state,
		     reason, trace_parent, trace_state, due_at, revision, started_at, updated_at)
		 SELECT s.id || '~' || g, definition, definition_version, status, step, attempt, correlation_id, state,
		     reason, trace_parent, trace_state, due_at, revision, started_at, updated_at
		 FROM saga_instances AS s, generate_series(1, $1::int) AS g
		 WHERE s.status IN ('completed', 'compensated')`,
		`INSERT INTO saga_history (saga_id, seq, at, step, phase, attempt, outcome, reply_type, detail, actor) OVERRIDING SYSTEM VALUE
		 SELECT h.saga_id || '~' || g, h.seq, h.at, h.step, h.phase, h.attempt, h.outcome, h.reply_type, h.detail, h.actor
		 FROM saga_history AS h, generate_series(1, $1::int) AS g
		 WHERE h.saga_id IN (SELECT id FROM saga_instances WHERE status IN ('completed', 'compensated') AND id NOT LIKE '%~%')`,
		`ALTER TABLE saga_history ADD CONSTRAINT saga_history_saga_fkey FOREIGN KEY (saga_id) REFERENCES saga_instances (id) ON DELETE CASCADE`,
		`VACUUM ANALYZE saga_instances`,
		`VACUUM ANALYZE saga_history`,
	} {
		var args []any
		if strings.Contains(stmt, "$1") {
			args = append(args, copies)
		}
		_, err := e.pool.Exec(ctx, stmt, args...)
		require.NoError(b, err, stmt)
	}
	var sagas, history int
	require.NoError(b, e.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM saga_instances), (SELECT count(*) FROM saga_history)`).Scan(&sagas, &history))
	b.Logf("seeded: %d sagas and %d history rows in the tables (%d copies of %d finished sagas) in %s",
		sagas, history, copies, have, time.Since(start).Round(time.Second))
}

func apacheSagaBroker(*testing.B) sagaBroker {
	return sagaBroker{
		name:     "apache",
		brokers:  kafkatest.Brokers(),
		newTopic: func(b *testing.B) string { return kafkatest.NewTopic(b, benchPartitions) },
		deleteGroups: func(b *testing.B, groups ...string) {
			adm := kadm.NewClient(kafkatest.NewClient(b))
			b.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), benchWait)
				defer cancel()
				res, err := adm.DeleteGroups(ctx, groups...)
				if err != nil {
					b.Logf("delete groups: %v", err)
					return
				}
				for _, r := range res {
					if r.Err != nil && !errors.Is(r.Err, kerr.GroupIDNotFound) {
						b.Logf("delete group %s: %v", r.Group, r.Err)
					}
				}
			})
		},
	}
}

// kfakeSagaBroker starts a one-broker kfake cluster in the benchmark's
// process, closed at cleanup.
func kfakeSagaBroker(b *testing.B) sagaBroker {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	require.NoError(b, err)
	b.Cleanup(c.Close)
	addrs := c.ListenAddrs()
	return sagaBroker{
		name:    "kfake",
		brokers: addrs,
		newTopic: func(b *testing.B) string {
			cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
			require.NoError(b, err)
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), benchWait)
			defer cancel()
			topic := kafkatest.TopicName(b)
			res, err := kadm.NewClient(cl).CreateTopic(ctx, benchPartitions, 1, nil, topic)
			require.NoError(b, err)
			require.NoError(b, res.Err)
			return topic
		},
		deleteGroups: func(*testing.B, ...string) {},
	}
}

// sagaEnv is everything a run needs, running: a schema, the orchestrator,
// the participants, the relay and the router, on one broker.
type sagaEnv struct {
	schema  *pgtest.Schema
	pool    *pgxpool.Pool // the benchmark's own: polls and reads the results
	pub     *kafka.Publisher
	trigger string // the trigger topic
	metrics *prometheus.Registry
	runs    int
	// perRun makes ended count the current run's sagas by id, so that its
	// cost does not grow with the sagas the tables already hold
	// (BenchmarkSagaFinishedHistory).
	perRun bool
	runIDs []string
}

// batches returns how many transactions the orchestrator's workers ran and
// how many inputs they handled, so far.
func (e *sagaEnv) batches(b *testing.B) (txs, inputs float64) {
	b.Helper()
	mfs, err := e.metrics.Gather()
	require.NoError(b, err)
	for _, mf := range mfs {
		if mf.GetName() == "dtx_saga_batch_size" {
			h := mf.GetMetric()[0].GetHistogram()
			return float64(h.GetSampleCount()), h.GetSampleSum()
		}
	}
	b.Fatal("no dtx_saga_batch_size metric")
	return 0, 0
}

// newSagaEnv builds and starts the benchmark's processes on br; all of it
// stops at cleanup. It returns once a few sagas went through.
func newSagaEnv(b *testing.B, br sagaBroker) *sagaEnv {
	b.Helper()
	ctx := context.Background()
	schema := pgtest.NewSchema(b)
	_, err := schema.Pool.Exec(ctx, `
		CREATE TABLE bench_effects (saga_id text NOT NULL, step text NOT NULL, PRIMARY KEY (saga_id, step));
		CREATE TABLE bench_raw (id bigserial PRIMARY KEY, saga_id text NOT NULL, step int NOT NULL, data jsonb NOT NULL)`)
	require.NoError(b, err)
	newPool := func(conns int32, app string) *pgxpool.Pool {
		cfg := schema.Config()
		cfg.ConnConfig.RuntimeParams["application_name"] = app
		cfg.MaxConns, cfg.MinConns = conns, conns
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		require.NoError(b, err)
		b.Cleanup(p.Close)
		return p
	}
	opool, ppool, rpool := newPool(benchOrchConns, "bench-orchestrator"), newPool(benchPartConns, "bench-participants"), newPool(benchRelayConns, "bench-relay")

	stepTopics := make([]string, len(benchSteps))
	for i := range stepTopics {
		stepTopics[i] = br.newTopic(b)
	}
	replyTopic, eventTopic := br.newTopic(b), br.newTopic(b)

	triggerTopic := br.newTopic(b)
	def := benchDefinition(triggerTopic, stepTopics)
	reg, err := saga.NewRegistry(def)
	require.NoError(b, err)
	quiet := slog.New(slog.DiscardHandler)
	metrics := prometheus.NewRegistry()
	o, err := orchestrator.New(opool, orchestrator.Config{
		Schema: schema.Name, Definitions: reg, ReplyTopic: replyTopic, EventTopic: eventTopic,
		MaxBatch: benchMaxBatch, BatchWindow: benchBatchWindow, Workers: benchWorkers,
		ScanInterval: benchSchedulerScan, Logger: quiet, Registerer: metrics,
	})
	require.NoError(b, err)
	ob, err := outbox.New(outbox.Config{Schema: schema.Name})
	require.NoError(b, err)
	r, err := relay.New(rpool, []kgo.Opt{kgo.SeedBrokers(br.brokers...)}, relay.Config{
		Schema: schema.Name, Holder: "bench", BatchSize: benchRelayBatch, LeaseDuration: 5 * time.Second,
	})
	require.NoError(b, err)

	client := kafka.ClientConfig{Brokers: br.brokers}
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: client})
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, pub.Close()) })
	schemaReg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS(), UnknownTypes: messaging.AllowUnknownTypes})
	require.NoError(b, err)
	mws, err := middleware.Standard(middleware.StackConfig{DeadLetterPublisher: pub, Schemas: schemaReg})
	require.NoError(b, err)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: benchWait}, watermill.NopLogger{})
	require.NoError(b, err)
	router.AddMiddleware(mws...)

	var groups []string
	subscriber := func(group string) *kafka.Subscriber {
		groups = append(groups, group)
		sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
			ClientConfig: client, ConsumerGroup: group,
			MaxInFlightPerPartition: benchInFlight, ReadAheadPerPartition: 2 * benchInFlight,
			CommitInterval: time.Second,
		})
		require.NoError(b, err)
		b.Cleanup(func() { _ = sub.Close() })
		return sub
	}
	for _, topic := range o.Topics() {
		router.AddConsumerHandler("saga:"+topic, topic, subscriber(replyTopic+"-orchestrator"), o.Handle)
	}
	for i, step := range benchSteps {
		p := benchParticipant(b, ppool, schema.Name, ob, i)
		router.AddConsumerHandler("participant:"+step, stepTopics[i], subscriber(stepTopics[i]+"-"+step), p.Handle)
	}
	br.deleteGroups(b, groups...)

	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { require.NoError(b, o.Run(runCtx)) })
	wg.Go(func() { require.NoError(b, r.Run(runCtx)) })
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(runCtx) }()
	b.Cleanup(func() {
		// Stop consuming first, then the workers and the relay.
		require.NoError(b, router.Close())
		cancel()
		require.NoError(b, <-routerDone)
		wg.Wait()
	})
	select {
	case <-router.Running():
	case err := <-routerDone:
		b.Fatalf("router stopped: %v", err)
	case <-time.After(benchWait):
		b.Fatal("router did not start")
	}

	e := &sagaEnv{schema: schema, pool: newPool(1, "bench-poll"), pub: pub, trigger: triggerTopic, metrics: metrics}
	// Warm up: the consumer groups joined, every connection is open and
	// every statement prepared before the clock starts.
	ids := e.ids("warm", 50)
	require.NoError(b, e.start(ids, benchDeclineEvery))
	e.waitEnded(b, len(ids))
	return e
}

// benchTriggerType is the type of the messages that start the benchmark's
// sagas.
const benchTriggerType = "bench.order.place"

// benchDefinition is the benchmark's saga: started by a benchTriggerType
// message on triggerTopic (saga id: its order_id), four steps, step i on
// topics[i]; each but the last has a compensation. The trigger's payload is
// the saga data, and the whole saga data goes into every command.
func benchDefinition(triggerTopic string, topics []string) *saga.Definition {
	def := &saga.Definition{
		Name: "bench", Version: 1,
		Triggers: []saga.Trigger{{Topic: triggerTopic, Type: benchTriggerType, SagaID: "$.order_id"}},
	}
	for i, step := range benchSteps {
		s := saga.Step{
			Name:    step,
			Action:  saga.Command{Topic: topics[i], Type: "bench." + step},
			Success: []string{"bench." + step + ".done"},
			Failure: []string{"bench." + step + ".declined"},
		}
		if i < len(benchSteps)-1 {
			s.Compensation = &saga.Compensation{
				Command: saga.Command{Topic: topics[i], Type: "bench." + step + ".undo"},
				Success: []string{"bench." + step + ".undone"},
			}
		}
		def.Steps = append(def.Steps, s)
	}
	return def
}

// benchParticipant is the participant of step i: its action inserts one
// row and replies; the charge step declines the sagas whose data says
// "decline"; a compensation deletes the row.
func benchParticipant(b *testing.B, pool *pgxpool.Pool, schema string, ob *outbox.Outbox, i int) *participant.Participant {
	step := benchSteps[i]
	p, err := participant.New(pool, participant.Config{Name: step, Schema: schema, Outbox: ob})
	require.NoError(b, err)
	p.Action("bench."+step, func(ctx context.Context, tx pgx.Tx, cmd participant.Command) (participant.Reply, error) {
		if step == "charge" {
			var in struct{ Decline bool }
			if err := json.Unmarshal(cmd.Data, &in); err != nil {
				return participant.Reply{}, messaging.Permanent(err)
			}
			if in.Decline {
				return participant.Reply{}, participant.Reject("bench.charge.declined", nil)
			}
		}
		_, err := tx.Exec(ctx, "INSERT INTO bench_effects (saga_id, step) VALUES ($1, $2)", cmd.SagaID, step)
		return participant.Reply{Type: "bench." + step + ".done"}, err
	})
	if i < len(benchSteps)-1 {
		p.Compensation("bench."+step+".undo", "bench."+step+".undone", func(ctx context.Context, tx pgx.Tx, cmd participant.Command) (any, error) {
			_, err := tx.Exec(ctx, "DELETE FROM bench_effects WHERE saga_id = $1 AND step = $2", cmd.SagaID, step)
			return nil, err
		}, nil)
	}
	return p
}

// ids returns n fresh saga ids of a new run.
func (e *sagaEnv) ids(kind string, n int) []string {
	e.runs++
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%d-%06d", kind, e.runs, i)
	}
	return ids
}

// declined says whether saga i of a run with declineEvery is declined.
func declined(i, declineEvery int) bool { return declineEvery > 0 && i%declineEvery == declineEvery-1 }

// start publishes the trigger messages of the sagas ids (keyed by saga id)
// and returns once the broker has them all; a saga is declined as
// declined(n, declineEvery) says, n being the id's number in its run.
func (e *sagaEnv) start(ids []string, declineEvery int) error {
	msgs := make([]*message.Message, len(ids))
	for i, id := range ids {
		n, _ := strconv.Atoi(id[len(id)-6:])
		env, err := messaging.NewEnvelope(benchTriggerType, "/bench/client", map[string]any{"order_id": id, "decline": declined(n, declineEvery)})
		if err != nil {
			return err
		}
		env.PartitionKey = id
		if msgs[i], err = env.ToMessage(); err != nil {
			return err
		}
	}
	return e.pub.Publish(e.trigger, msgs...)
}

// ended counts the schema's sagas that ended.
func (e *sagaEnv) ended(b *testing.B) int {
	b.Helper()
	var n int
	if e.perRun {
		require.NoError(b, e.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM saga_instances WHERE id = ANY($1::text[]) AND status IN ('completed', 'compensated', 'failed')`,
			e.runIDs).Scan(&n))
		return n
	}
	require.NoError(b, e.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM saga_instances WHERE status IN ('completed', 'compensated', 'failed')`).Scan(&n))
	return n
}

// waitEnded polls until n sagas of the schema ended.
func (e *sagaEnv) waitEnded(b *testing.B, n int) {
	b.Helper()
	deadline := time.Now().Add(benchWait)
	tick := time.NewTicker(benchPoll)
	defer tick.Stop()
	for {
		got := e.ended(b)
		if got >= n {
			return
		}
		require.True(b, time.Now().Before(deadline), "%d of %d sagas ended after %s", got, n, benchWait)
		<-tick.C
	}
}

// outcome counts a run's sagas by status.
func (e *sagaEnv) outcome(b *testing.B, prefix string) map[string]int {
	b.Helper()
	rows, err := e.pool.Query(context.Background(),
		`SELECT status, count(*) FROM saga_instances WHERE starts_with(id, $1) GROUP BY status`, prefix)
	require.NoError(b, err)
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		require.NoError(b, rows.Scan(&s, &n))
		out[s] = n
	}
	require.NoError(b, rows.Err())
	return out
}

// throughput is what throughput runs measured.
type throughput struct {
	sagas, txs int
	took, raw  time.Duration
}

func (t *throughput) merge(o throughput) {
	t.sagas += o.sagas
	t.txs += o.txs
	t.took += o.took
	t.raw += o.raw
}

func (t *throughput) rate() float64    { return float64(t.sagas) / t.took.Seconds() }
func (t *throughput) rawRate() float64 { return float64(t.sagas) / t.raw.Seconds() }

func (t *throughput) report(b *testing.B, name string) {
	b.ReportMetric(t.rate(), "sagas/s")
	b.ReportMetric(t.rawRate(), "raw_sagas/s")
	b.ReportMetric(t.rate()/t.rawRate(), "ratio")
	b.ReportMetric(float64(t.txs)/t.raw.Seconds(), "raw_tx/s")
	b.Logf("%s: %d sagas in %s: %.0f sagas/s end to end; raw ceiling %d single-row transactions in %s: %.0f tx/s = %.0f sagas/s; ratio %.2f",
		name, t.sagas, t.took.Round(time.Millisecond), t.rate(), t.txs, t.raw.Round(time.Millisecond),
		float64(t.txs)/t.raw.Seconds(), t.rawRate(), t.rate()/t.rawRate())
}

// throughputRun starts benchSagas sagas (declined as declineEvery says) as
// fast as benchStarters transactions at once allow, and measures until
// every one ended; then runs the raw ceiling for the same sagas.
func (e *sagaEnv) throughputRun(b *testing.B, declineEvery int) throughput {
	b.Helper()
	ids := e.ids("t", benchSagas)
	e.runIDs = ids
	target := e.ended(b) + len(ids)
	txs0, inputs0 := e.batches(b)
	prefix := ids[0][:len(ids[0])-6]
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range benchStarters {
		wg.Go(func() {
			for {
				lo := int(next.Add(benchStartBatch)) - benchStartBatch
				if lo >= len(ids) {
					return
				}
				if err := e.start(ids[lo:min(lo+benchStartBatch, len(ids))], declineEvery); err != nil {
					b.Errorf("start sagas: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.False(b, b.Failed())
	startTook := time.Since(start)
	e.waitEnded(b, target)
	took := time.Since(start)
	txs1, inputs1 := e.batches(b)

	nDeclined := 0
	for i := range ids {
		if declined(i, declineEvery) {
			nDeclined++
		}
	}
	require.Equal(b, withoutZero(map[string]int{"completed": len(ids) - nDeclined, "compensated": nDeclined}), e.outcome(b, prefix))
	b.Logf("published the triggers of %d sagas in %s (%d per call, %d calls at once); the orchestrator handled %.0f inputs in %.0f transactions (%.1f per transaction)",
		len(ids), startTook.Round(time.Millisecond), benchStartBatch, benchStarters, inputs1-inputs0, txs1-txs0, (inputs1-inputs0)/(txs1-txs0))

	txs := 9*(len(ids)-nDeclined) + 7*nDeclined
	raw := e.rawRun(b, txs)
	return throughput{sagas: len(ids), txs: txs, took: took, raw: raw}
}

func withoutZero(m map[string]int) map[string]int {
	for k, v := range m {
		if v == 0 {
			delete(m, k)
		}
	}
	return m
}

// rawRun runs the raw ceiling: txs single-row INSERTs, each committed on
// its own, by benchRawConns connections at once, and returns how long they
// took.
func (e *sagaEnv) rawRun(b *testing.B, txs int) time.Duration {
	b.Helper()
	ctx := context.Background()
	cfg := e.schema.Config()
	cfg.MaxConns, cfg.MinConns = benchRawConns, benchRawConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(b, err)
	defer pool.Close()
	const insert = `INSERT INTO bench_raw (saga_id, step, data) VALUES ($1, $2, $3)`
	data := []byte(`{"decline":false}`)
	// Warm up: every connection open, the INSERT prepared on each.
	conns := make([]*pgxpool.Conn, benchRawConns)
	for i := range conns {
		conns[i], err = pool.Acquire(ctx)
		require.NoError(b, err)
		_, err = conns[i].Exec(ctx, insert, "warm", -1, data)
		require.NoError(b, err)
	}
	for _, c := range conns {
		c.Release()
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range benchRawConns {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(txs) {
					return
				}
				if _, err := pool.Exec(ctx, insert, "raw-"+strconv.FormatInt(i/9, 10), i%9, data); err != nil {
					b.Errorf("raw insert: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	require.False(b, b.Failed())
	return took
}

// latencyRun offers rate sagas/s, open loop, for benchLatencyDuration: every
// benchLatencyTick a transaction starts the sagas due by then, on its
// schedule whatever the ones before it took (up to 8 at once); every fifth
// saga is declined. It returns each saga's latency from its start to its
// end, by the database's clock.
func (e *sagaEnv) latencyRun(b *testing.B, rate float64) []time.Duration {
	b.Helper()
	ctx := context.Background()
	ticks := int(benchLatencyDuration / benchLatencyTick)
	n := int(rate * benchLatencyDuration.Seconds())
	ids := e.ids("l", n)
	prefix := ids[0][:len(ids[0])-6]
	target := e.ended(b) + n
	type job struct{ lo, hi, tick int }
	jobs := make(chan job, ticks)
	var lagMu sync.Mutex
	var lags []time.Duration
	var wg sync.WaitGroup
	start := time.Now().Add(benchLatencyTick)
	schedOf := func(t int) time.Time { return start.Add(time.Duration(t) * benchLatencyTick) }
	for range 8 {
		wg.Go(func() {
			for j := range jobs {
				if err := e.start(ids[j.lo:j.hi], benchDeclineEvery); err != nil {
					b.Errorf("start sagas: %v", err)
					return
				}
				lagMu.Lock()
				lags = append(lags, time.Since(schedOf(j.tick)))
				lagMu.Unlock()
			}
		})
	}
	timer := time.NewTimer(time.Until(start))
	lo := 0
	for t := range ticks {
		if d := time.Until(schedOf(t)); d > 0 {
			timer.Reset(d)
			<-timer.C
		}
		hi := (t + 1) * n / ticks
		if hi > lo {
			jobs <- job{lo, hi, t}
			lo = hi
		}
	}
	close(jobs)
	wg.Wait()
	timer.Stop()
	require.False(b, b.Failed())
	e.waitEnded(b, target)
	slices.Sort(lags)
	b.Logf("trigger publishing behind its schedule: p50 %s  p99 %s", fmtMs(percentile(lags, 0.5)), fmtMs(percentile(lags, 0.99)))

	rows, err := e.pool.Query(ctx, `SELECT updated_at - started_at FROM saga_instances WHERE starts_with(id, $1)`, prefix)
	require.NoError(b, err)
	lats, err := pgx.CollectRows(rows, pgx.RowTo[time.Duration])
	require.NoError(b, err)
	require.Len(b, lats, n)
	return lats
}

func fmtMs(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
}

// percentile returns the q-quantile of sorted (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
