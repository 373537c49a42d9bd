package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/saga"
)

// buildSagaBinaries builds the orchestrator and the Order-to-Cash example
// (example-o2c) once for the package's tests.
var buildSagaBinaries = sync.OnceValue(func() error {
	for _, b := range []struct{ out, pkg string }{
		{"orchestrator", "../../cmd/orchestrator"},
		{"example-o2c", "../../examples/order-to-cash"},
	} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, b.out), b.pkg).CombinedOutput()
		if err != nil {
			return fmt.Errorf("building %s: %w\n%s", b.out, err, out)
		}
	}
	return nil
})

// sagaRig is one Order-to-Cash installation under test: its schemas, topics
// and definitions.
type sagaRig struct {
	db            *pgtest.Schema
	exampleSchema string
	prefix        string // of every topic
	definitions   string // directory
	brokers       string
	extraEnv      []string // more KEY=value settings of every process
}

func (r *sagaRig) env(name string) []string {
	return append([]string{
		"PATH=" + os.Getenv("PATH"),
		"DTX_DATABASE_URL=" + pgtest.URL(),
		"DTX_KAFKA_BROKERS=" + r.brokers,
		"DTX_SCHEMA=" + r.db.Name,
		"DTX_EXAMPLE_SCHEMA=" + r.exampleSchema,
		"DTX_ADMIN_ADDR=127.0.0.1:0",
		"DTX_LOG_FORMAT=json",
		"DTX_DRAIN_TIMEOUT=15s",
		"DTX_INSTANCE_ID=" + name,
	}, r.extraEnv...)
}

// start runs binary with args and waits until its admin server listens.
func (r *sagaRig) start(t *testing.T, name, binary string, args ...string) *relayProc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, binary), args...)
	cmd.Env = r.env(name)
	return startProcess(t, name, cmd)
}

func (r *sagaRig) orchestrator(t *testing.T, name string) *relayProc {
	t.Helper()
	p := r.start(t, name, "orchestrator",
		"--definitions", r.definitions,
		"--reply-topic", r.prefix+saga.DefaultReplyTopic,
		"--event-topic", r.prefix+saga.DefaultEventTopic,
		"--group", r.prefix+"orchestrator",
		"--session-timeout", "6s",
		"--scan-interval", "100ms",
		"--create-topics")
	p.logs.WaitFor(t, "orchestrator: running", 30*time.Second)
	return p
}

func (r *sagaRig) participants(t *testing.T, name string) *relayProc {
	t.Helper()
	p := r.start(t, name, "example-o2c", "participants",
		"--topic-prefix", r.prefix, "--session-timeout", "6s")
	p.logs.WaitFor(t, "order-to-cash services: running", 30*time.Second)
	return p
}

// run runs an example-o2c subcommand to its end and returns its output.
func (r *sagaRig) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "example-o2c"), args...)
	cmd.Env = r.env("example-o2c-" + args[0])
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// newSagaRig makes a schema, a topic prefix and a copy of the Order-to-Cash
// definition on those topics.
func newSagaRig(t *testing.T) *sagaRig {
	t.Helper()
	require.NoError(t, buildSagaBinaries())
	r := &sagaRig{
		db:            pgtest.NewSchema(t),
		exampleSchema: pgtest.NewSchemaName(t),
		prefix:        strings.ReplaceAll(kafkatest.TopicName(t), "_", "-") + ".",
		definitions:   t.TempDir(),
		brokers:       joinBrokers(kafkatest.Brokers()),
	}
	def, err := os.ReadFile("../../examples/order-to-cash/sagas/order-to-cash.yaml")
	require.NoError(t, err)
	text := string(def)
	for _, topic := range []string{"sales.events", "inventory.commands", "accounting.commands", "delivery.commands", "sales.commands"} {
		text = strings.ReplaceAll(text, "topic: "+topic, "topic: "+r.prefix+topic)
	}
	require.NotEqual(t, string(def), text)
	require.NoError(t, os.WriteFile(filepath.Join(r.definitions, "order-to-cash.yaml"), []byte(text), 0o600))
	t.Cleanup(func() { r.deleteTopics(t) })
	return r
}

// deleteTopics deletes the topics the rig's processes created.
func (r *sagaRig) deleteTopics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(kafkatest.NewClient(t))
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Logf("list topics to delete: %v", err)
		return
	}
	var mine []string
	for _, name := range topics.Names() {
		if strings.HasPrefix(name, r.prefix) {
			mine = append(mine, name)
		}
	}
	if len(mine) > 0 {
		if _, err := adm.DeleteTopics(ctx, mine...); err != nil {
			t.Logf("delete topics %v: %v", mine, err)
		}
	}
}

// earlyCompensation publishes, for each order, the compensation of its
// reserve-stock step as the orchestrator would send it, before the order
// exists: the participant records it, so the action that comes later is
// refused.
func (r *sagaRig) earlyCompensation(t *testing.T, client *kgo.Client, orderIDs []string) {
	t.Helper()
	for _, id := range orderIDs {
		env, err := messaging.NewEnvelope("inventory.stock.release", "/test/fault", map[string]any{
			"order_id": id, "reason": "compensation before action (fault test)",
		})
		require.NoError(t, err)
		env.SagaID, env.PartitionKey, env.Subject = id, id, id
		env.Extensions = map[string]string{
			saga.ExtensionStep: "reserve-stock", saga.ExtensionAttempt: "1",
			saga.ExtensionPhase: string(saga.PhaseCompensation), saga.ExtensionReplyTo: r.prefix + saga.DefaultReplyTopic,
		}
		msg, err := env.ToMessage()
		require.NoError(t, err)
		rec := &kgo.Record{Topic: r.prefix + "inventory.commands", Key: []byte(id), Value: env.Data}
		for k, v := range msg.Metadata {
			if k != messaging.MetadataPartitionKey {
				rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
			}
		}
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: messaging.HeaderID, Value: []byte(msg.UUID)})
		require.NoError(t, client.ProduceSync(context.Background(), rec).FirstErr())
	}
}

// duplicateReplies re-publishes every nth participant reply, verbatim (the
// same ce_id), until ctx ends, and counts them.
func (r *sagaRig) duplicateReplies(ctx context.Context, t *testing.T, every int, count *atomic.Int64) {
	client := kafkatest.NewClient(t, kgo.ConsumeTopics(r.prefix+saga.DefaultReplyTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var seen int
	for ctx.Err() == nil {
		fetches := client.PollFetches(ctx)
		fetches.EachRecord(func(rec *kgo.Record) {
			seen++
			if seen%every != 0 {
				return
			}
			dup := &kgo.Record{Topic: rec.Topic, Key: rec.Key, Value: rec.Value, Headers: rec.Headers}
			if err := client.ProduceSync(ctx, dup).FirstErr(); err == nil {
				count.Add(1)
			}
		})
	}
}

func (r *sagaRig) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, r.db.Pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

// 1,000 Order-to-Cash sagas through the real binaries (two orchestrator
// replicas, the outbox relay, the participant services) while one
// orchestrator is killed with -9 again and again and restarted, the
// participants are down for a while, replies are delivered twice and some
// compensations arrive before their actions. Every saga must end, each
// step's effect must happen once (the participants' ledgers), and
// compensated sagas must leave stock and payments net zero: the example's
// report checks all of that and fails otherwise.
func TestSagasSurviveKillsOutagesDuplicatesAndEarlyCompensations(t *testing.T) {
	t.Parallel()
	const orders = 1000
	r := newSagaRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	startRelay(t, relayOpts{name: "relay", dbURL: pgtest.URL(), schema: r.db.Name, brokers: r.brokers, batchSize: 200})
	orchA := r.orchestrator(t, "orchestrator-a")
	r.orchestrator(t, "orchestrator-b")
	parts := r.participants(t, "participants-1")

	// Compensations before their actions, for ten orders that would
	// otherwise complete (not a multiple of 5, 17 or 23).
	run := "f" + strconv.FormatInt(time.Now().UnixMilli()%1e9, 36)
	early := []int{1, 2, 3, 4, 6, 7, 8, 9, 11, 12}
	earlyIDs := make([]string, len(early))
	for i, n := range early {
		earlyIDs[i] = fmt.Sprintf("ord-%s-%05d", run, n)
	}
	client := kafkatest.NewClient(t)
	r.earlyCompensation(t, client, earlyIDs)
	require.Eventually(t, func() bool {
		return r.count(t, `SELECT count(*) FROM saga_barrier WHERE phase = 'compensation' AND outcome = 'empty' AND saga_id = ANY ($1)`, earlyIDs) == len(early)
	}, 60*time.Second, 100*time.Millisecond, "the early compensations are recorded")

	var dups atomic.Int64
	dupDone := make(chan struct{})
	dupCtx, stopDups := context.WithCancel(ctx)
	go func() { defer close(dupDone); r.duplicateReplies(dupCtx, t, 7, &dups) }()
	defer func() { stopDups(); <-dupDone }()

	placed := make(chan error, 1)
	go func() {
		out, err := r.run(t, "place", "--orders", strconv.Itoa(orders), "--per-tx", "20", "--run", run,
			"--decline-every", "5", "--fail-delivery-every", "17", "--sold-out-every", "23",
			"--topic", r.prefix+"sales.events")
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		placed <- err
	}()

	// Faults while the sagas run: kill -9 one orchestrator four times; take
	// the participants down for 4 s once.
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kills := 0
	for i := range 4 {
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		orchA.kill9(t)
		kills++
		if i == 1 {
			parts.kill9(t)
			time.Sleep(4 * time.Second)
			parts = r.participants(t, "participants-2")
		}
		orchA = r.orchestrator(t, fmt.Sprintf("orchestrator-a%d", i+1))
	}
	require.NoError(t, <-placed)
	_, err := r.db.Pool.Exec(ctx, `UPDATE `+r.exampleSchema+`.orders SET scenario = 'early-compensation' WHERE order_id = ANY ($1)`, earlyIDs)
	require.NoError(t, err)

	// Under these faults a step may time out and its saga compensate though
	// its order could have completed: outcomes are not checked, the
	// invariants are.
	out, err := r.run(t, "report", "--run", run, "--wait", "5m", "--check-outcomes=false")
	t.Logf("report:\n%s", out)
	require.NoError(t, err, "the report's invariants must hold")

	terminal := r.count(t, `SELECT count(*) FROM saga_instances WHERE status IN ('completed', 'compensated')`)
	require.Equal(t, orders, terminal, "every saga completed or compensated")
	require.Equal(t, len(early), r.count(t,
		`SELECT count(*) FROM saga_instances WHERE status = 'compensated' AND id = ANY ($1)`, earlyIDs))
	require.Equal(t, len(early), r.count(t,
		`SELECT count(*) FROM saga_barrier WHERE phase = 'action' AND outcome = 'refused' AND saga_id = ANY ($1)`, earlyIDs),
		"the actions that came after their compensation were refused")
	require.Zero(t, r.count(t, `SELECT count(*) FROM `+r.exampleSchema+`.ledger WHERE saga_id = ANY ($1)`, earlyIDs),
		"no effect for sagas whose compensation came first")
	t.Logf("orders %d, orchestrator kills %d, participants down once, replies delivered twice %d, early compensations %d",
		orders, kills, dups.Load(), len(early))
	require.Positive(t, dups.Load(), "some replies were delivered twice")
}
