package fault

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/saga"
)

// A rolling deploy of a new definition version: orchestrator "old" knows
// Order-to-Cash version 1 only; orchestrator "new" knows versions 1 and 2,
// and starts the sagas of the triggers it consumes on version 2. Replies of
// version-2 sagas that land on "old" wait there (its partition waits, in
// order) until "old" is replaced by a replica that knows version 2. No reply
// is dead-lettered, no step times out, and every order ends as its scenario
// says.
//
// Which replica a consumer group gives which partitions is the broker's
// choice, so the replicas take turns rather than run side by side: "new"
// alone starts the first orders on version 2 while the participants are
// down; then "old" alone takes over as the participants answer, so the
// replies of those version-2 sagas reach "old", which also starts the next
// orders on version 1; then the rollout replaces "old" with a replica that
// knows both versions.
func TestRollingDeployOfADefinitionVersionLosesNoReply(t *testing.T) {
	t.Parallel()
	const orders = 100 // per phase
	r := newSagaRig(t)
	v1, err := os.ReadFile(filepath.Join(r.definitions, "order-to-cash.yaml"))
	require.NoError(t, err)
	// The steps of the first orders wait while no participant runs and
	// while "old" holds their replies: a minute, not 10s, for each.
	v1 = []byte(strings.ReplaceAll(string(v1), "timeout: 10s", "timeout: 1m"))
	require.NoError(t, os.WriteFile(filepath.Join(r.definitions, "order-to-cash.yaml"), v1, 0o600))
	v2 := strings.Replace(string(v1), "\nversion: 1\n", "\nversion: 2\n", 1)
	require.NotEqual(t, string(v1), v2)
	oneVersion := r.definitions
	both := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(both, "order-to-cash-v1.yaml"), v1, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(both, "order-to-cash-v2.yaml"), []byte(v2), 0o600))

	relay := startRelay(t, relayOpts{name: "relay", dbURL: pgtest.URL(), schema: r.db.Name, brokers: r.brokers, batchSize: 200})
	stamp := strconv.FormatInt(time.Now().UnixMilli()%1e9, 36)
	runs := []string{"a" + stamp, "b" + stamp}
	var placed []string
	place := func(run string) {
		out, err := r.run(t, "place", "--orders", strconv.Itoa(orders), "--per-tx", "10", "--run", run,
			"--decline-every", "5", "--topic", r.prefix+"sales.events")
		require.NoError(t, err, out)
		placed = append(placed, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("place: %s", strings.Join(placed, "\n"))
		t.Logf("outbox rows %d, saga instances %d; relay published %v",
			r.count(t, `SELECT count(*) FROM outbox`), r.count(t, `SELECT count(*) FROM saga_instances`),
			relay.metric(t, "dtx_relay_published_total"))
		lags, err := kadm.NewClient(kafkatest.NewClient(t)).Lag(ctx, r.prefix+"orchestrator")
		if err == nil {
			for _, l := range lags {
				t.Logf("group %s: %s, lag %d", l.Group, l.State, l.Lag.Total())
			}
		}
	})

	// "new" alone: the first orders start on version 2; their first
	// commands wait for the participants.
	r.definitions = both
	recent := r.orchestrator(t, "orchestrator-new")
	recent.logs.WaitFor(t, "topics: all exist", 60*time.Second)
	place(runs[0])
	require.Eventually(t, func() bool {
		return r.count(t, `SELECT count(*) FROM saga_instances WHERE definition_version = 2`) == orders
	}, 60*time.Second, 100*time.Millisecond, "the first orders start on version 2")
	recent.stop(t) // SIGTERM: it drains and exits 0

	// "old" alone, and the participants: the version-2 replies reach "old",
	// which waits for a replica that knows version 2; the next orders start
	// on version 1.
	r.definitions = oneVersion
	old := r.orchestrator(t, "orchestrator-old")
	r.participants(t, "participants")
	old.logs.WaitFor(t, "orchestrator: reply for a saga whose definition version this replica lacks; "+
		"waiting for a replica that holds it (a rolling deploy?)", 90*time.Second)
	place(runs[1])
	require.Eventually(t, func() bool {
		return r.count(t, `SELECT count(*) FROM saga_instances WHERE definition_version = 1`) == orders
	}, 60*time.Second, 100*time.Millisecond, "the next orders start on version 1")

	// The rollout replaces "old" with a replica that knows both versions.
	r.definitions = both
	r.orchestrator(t, "orchestrator-old-replaced")
	old.stop(t)

	for _, run := range runs {
		out, err := r.run(t, "report", "--run", run, "--wait", "3m")
		t.Logf("report of %s:\n%s", run, out)
		require.NoError(t, err, "every order ends as its scenario says, and the invariants hold")
	}
	require.Equal(t, 2*orders, r.count(t, `SELECT count(*) FROM saga_instances WHERE status IN ('completed', 'compensated')`))
	require.Zero(t, r.count(t, `SELECT count(*) FROM saga_history WHERE outcome = $1`, string(saga.OutcomeTimedOut)),
		"no step timed out while its reply waited")
	require.Zero(t, deadLetters(ctx, t, r.brokers, r.prefix+saga.DefaultReplyTopic+".dlq"), "no reply was dead-lettered")
}

// deadLetters returns the number of records on a dead-letter topic; 0 when
// it does not exist.
func deadLetters(ctx context.Context, t *testing.T, brokers, topic string) int64 {
	t.Helper()
	adm := kadm.NewClient(kafkatest.NewClient(t))
	starts, err := adm.ListStartOffsets(ctx, topic)
	require.NoError(t, err)
	ends, err := adm.ListEndOffsets(ctx, topic)
	require.NoError(t, err)
	var n int64
	var missing bool
	ends.Each(func(o kadm.ListedOffset) {
		if errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
			missing = true
			return
		}
		require.NoError(t, o.Err, "end offset of %s/%d", o.Topic, o.Partition)
		s, _ := starts.Lookup(o.Topic, o.Partition)
		n += o.Offset - s.Offset
	})
	if missing {
		t.Logf("%s does not exist: no dead letters (brokers %s)", topic, brokers)
		return 0
	}
	return n
}
