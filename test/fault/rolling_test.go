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
func TestRollingDeployOfADefinitionVersionLosesNoReply(t *testing.T) {
	t.Skip("open: in fresh-clone CI runs no saga started within 60 s (the relay published nothing and logged nothing) " +
		"while it passes on a developer machine; until that is understood, pkg/saga/orchestrator's " +
		"TestRollingDeployLosesNoReply covers the rolling deploy in process")
	t.Parallel()
	const orders = 200
	r := newSagaRig(t)
	v1, err := os.ReadFile(filepath.Join(r.definitions, "order-to-cash.yaml"))
	require.NoError(t, err)
	v2 := strings.Replace(string(v1), "\nversion: 1\n", "\nversion: 2\n", 1)
	require.NotEqual(t, string(v1), v2)
	both := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(both, "order-to-cash-v1.yaml"), v1, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(both, "order-to-cash-v2.yaml"), []byte(v2), 0o600))

	startRelay(t, relayOpts{name: "relay", dbURL: pgtest.URL(), schema: r.db.Name, brokers: r.brokers, batchSize: 200})
	old := r.orchestrator(t, "orchestrator-old") // version 1 only
	oneVersion := r.definitions
	r.definitions = both
	recent := r.orchestrator(t, "orchestrator-new")
	r.participants(t, "participants")
	// As a deployment does, the topics exist before the first order.
	old.logs.WaitFor(t, "topics: all exist", 60*time.Second)
	recent.logs.WaitFor(t, "topics: all exist", 60*time.Second)

	run := "r" + strconv.FormatInt(time.Now().UnixMilli()%1e9, 36)
	out, err := r.run(t, "place", "--orders", strconv.Itoa(orders), "--per-tx", "10", "--run", run,
		"--decline-every", "5", "--topic", r.prefix+"sales.events")
	require.NoError(t, err, out)

	// Both versions run, and "old" holds replies of version-2 sagas.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.Eventually(t, func() bool {
		return r.count(t, `SELECT count(*) FROM saga_instances WHERE definition_version = 2`) > 0 &&
			r.count(t, `SELECT count(*) FROM saga_instances WHERE definition_version = 1`) > 0
	}, 60*time.Second, 100*time.Millisecond, "sagas start on both versions")
	old.logs.WaitFor(t, "orchestrator: reply for a saga whose definition version this replica lacks; "+
		"waiting for a replica that holds it (a rolling deploy?)", 60*time.Second)

	// The rollout replaces "old" (SIGTERM: it drains and exits 0) with a
	// replica that knows both versions.
	old.stop(t)
	r.orchestrator(t, "orchestrator-old-replaced")

	out, err = r.run(t, "report", "--run", run, "--wait", "3m")
	t.Logf("report:\n%s", out)
	require.NoError(t, err, "every order ends as its scenario says, and the invariants hold")
	require.Equal(t, orders, r.count(t, `SELECT count(*) FROM saga_instances WHERE status IN ('completed', 'compensated')`))
	require.Zero(t, r.count(t, `SELECT count(*) FROM saga_history WHERE outcome = $1`, string(saga.OutcomeTimedOut)),
		"no step timed out while its reply waited")
	require.Zero(t, deadLetters(ctx, t, r.brokers, r.prefix+saga.DefaultReplyTopic+".dlq"), "no reply was dead-lettered")
	t.Logf("orders %d: version 1 %d, version 2 %d; definitions of the old replica: %s", orders,
		r.count(t, `SELECT count(*) FROM saga_instances WHERE definition_version = 1`),
		r.count(t, `SELECT count(*) FROM saga_instances WHERE definition_version = 2`), oneVersion)
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
