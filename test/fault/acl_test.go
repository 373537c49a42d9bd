package fault

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

// aclUser and aclPassword are the SCRAM credentials of the relay in the
// tests of missing ACLs; aclRefused is the broker's answer to a principal
// that may not describe a topic.
const (
	aclUser     = "relay"
	aclPassword = "relay-acl-test-secret"
	aclRefused  = "TOPIC_AUTHORIZATION_FAILED"
)

// aclRig is a private broker that enforces ACLs, a topic no ACL opens to
// User:relay yet, and the relay binary authenticating as relay over SCRAM.
type aclRig struct {
	broker *kafkatest.Broker
	admin  []string // the PLAINTEXT listener: a super user
	db     *outboxDB
	topic  string
	relay  *relayProc
}

func newACLRig(t *testing.T, name string) *aclRig {
	t.Helper()
	broker := kafkatest.StartBroker(t, kafkatest.WithSCRAMUser(aclUser, aclPassword), kafkatest.WithAuthorizer())
	// The PLAINTEXT listener's principal (User:ANONYMOUS) is a super user:
	// the test creates the topic, grants the ACLs and verifies through it.
	// A private PostgreSQL too: the relay publishes in commit order, so a
	// long transaction of another test on the shared server would hold it
	// up for as long, and the refusals this test waits for would not come.
	db := clusterDB(t, pgtest.NewCluster(t))
	r := &aclRig{broker: broker, admin: []string{broker.Addr()}, db: db, topic: kafkatest.TopicName(t)}
	createTopic(t, r.admin, r.topic, nil)
	passwordFile := filepath.Join(t.TempDir(), "kafka-password")
	require.NoError(t, os.WriteFile(passwordFile, []byte(aclPassword+"\n"), 0o600))
	r.relay = startRelay(t, relayOpts{name: name, dbURL: r.db.url, schema: r.db.schema, brokers: broker.SASLAddr(),
		env: []string{
			"DTX_KAFKA_SASL_MECHANISM=SCRAM-SHA-256",
			"DTX_KAFKA_SASL_USERNAME=" + aclUser,
			"DTX_KAFKA_SASL_PASSWORD_FILE=" + passwordFile,
		}})
	r.relay.logs.WaitFor(t, msgAcquired, 30*time.Second)
	return r
}

// retries returns the relay's dtx_relay_publish_retries_total for reason.
func (r *aclRig) retries(t *testing.T, reason string) float64 {
	t.Helper()
	return labelledMetric(t, r.relay, "dtx_relay_publish_retries_total", `reason="`+reason+`"`)
}

// rejected counts the rows in outbox_rejected.
func (r *aclRig) rejected(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	require.NoError(t, r.db.pool.QueryRow(ctx, "SELECT count(*) FROM "+r.db.qualified("outbox_rejected")).Scan(&n))
	return n
}

// requireRefused waits until the relay has retried the topic's rows for
// reason at least twice, and requires that it runs still, set no row aside,
// and that /readyz is 503 with the relay's check naming the topic and the
// reason while the Kafka check passes (the relay authenticated; only the
// topic is refused).
func (r *aclRig) requireRefused(t *testing.T, reason string) {
	t.Helper()
	require.Eventually(t, func() bool { return r.retries(t, reason) >= 2 }, 60*time.Second, 100*time.Millisecond,
		"the relay retries the rows of a topic it is not authorised to write, with reason %s", reason)
	require.Zero(t, r.rejected(t), "a missing ACL sets no row aside")
	require.True(t, r.relay.running(), "the relay keeps running without the ACL")
	var ready readyBody
	require.Eventually(t, func() bool {
		ready = readyz(t, r.relay)
		return !ready.Ready && strings.Contains(ready.Checks["relay"], r.topic) && strings.Contains(ready.Checks["relay"], reason)
	}, 30*time.Second, 100*time.Millisecond, "/readyz names the topic the relay may not write, and %s", reason)
	t.Logf("/readyz: %+v", ready)
	require.Equal(t, "ok", ready.Checks["kafka"], "the relay authenticates; only its topic is refused")
}

// requireAllPublished verifies that every row committed with j is on the
// topic once, in per-key order, that none was set aside, and that /readyz
// turns 200; then stops the relay.
func (r *aclRig) requireAllPublished(t *testing.T, j *journal) {
	t.Helper()
	rep := verify(t, r.admin, r.topic, expect(j.snapshot(), r.db.committedIDs(t)), 90*time.Second)
	requireClean(t, rep, 0)
	require.Zero(t, r.rejected(t), "no row set aside")
	require.InDelta(t, 0, r.relay.metric(t, "dtx_relay_rejected_total"), 0)
	require.Eventually(t, func() bool {
		code, _ := r.relay.get("/readyz")
		return code == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond, "/readyz turns 200 once the relay may write its topic")
	r.relay.stop(t)
}

// grant creates ACLs allowing User:relay ops on the rig's topic.
func (r *aclRig) grant(t *testing.T, ops ...kadm.ACLOperation) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	grantACLs(ctx, t, r.broker.Addr(), kadm.NewACLs().Allow("User:"+aclUser).
		ResourcePatternType(kadm.ACLPatternLiteral).Topics(r.topic).Operations(ops...))
}

// The relay authenticates (SASL SCRAM-SHA-256, as user relay) to a broker
// that enforces ACLs, and no ACL lets it write its topic yet: a
// misconfiguration of the environment, not a fault of the rows. The relay
// retries, counts dtx_relay_publish_retries_total{reason=...}, keeps
// running, sets no row aside, and /readyz (check "relay") names the topic
// and the reason, while its Kafka check passes: authentication succeeds,
// only the topic is refused. Once an operator grants the ACLs, every
// committed row is published, once, in per-key order.
//
// Without DESCRIBE on the topic the broker answers the relay's metadata
// request for it with TOPIC_AUTHORIZATION_FAILED (it does not say whether a
// topic it will not describe exists, so never UNKNOWN_TOPIC_OR_PARTITION),
// and franz-go fails the topic's records with that error before it asks
// for a producer id: that is the reason the relay reports.
//
// WRITE is granted first, alone: it implies DESCRIBE, and lets the relay's
// idempotent producer get its producer id (the broker grants InitProducerId
// to a principal that may write some topic, so IDEMPOTENT_WRITE on the
// cluster is not needed). DESCRIBE is granted after it, as an operator
// would, but never before it: see TestTopicAuthorizationDescribeOnlyThenWrite.
func TestTopicAuthorizationMissingThenGranted(t *testing.T) {
	t.Parallel()
	r := newACLRig(t, "relay-acl")
	j := newJournal("acl")
	for range 5 {
		commitTx(t, r.db, r.topic, j, 100, "a", "b", "a")
	}
	r.requireRefused(t, aclRefused)

	// More rows, on the same keys, while the topic is still refused.
	for range 3 {
		commitTx(t, r.db, r.topic, j, 100, "a", "b")
	}
	require.Zero(t, r.rejected(t))

	r.grant(t, kadm.OpWrite)
	r.grant(t, kadm.OpDescribe)
	r.requireAllPublished(t, j)
}

// An operator grants the relay DESCRIBE on its topic first and WRITE only
// later. With DESCRIBE the relay's producer finds the topic's partition, and
// asks the broker for a producer id; the broker refuses it with
// CLUSTER_AUTHORIZATION_FAILED (the principal may write no topic, nor has
// IDEMPOTENT_WRITE). The relay retries, sets no row aside, and /readyz says
// so. Once WRITE is granted, every committed row must be published, once, in
// per-key order, without restarting the relay.
//
// franz-go keeps a refused InitProducerId as the client's producer id error
// for good (it is not a retriable Kafka error), so a relay that kept its
// Kafka client after that answer would fail every later record with it:
// this test would then fail with every row missing. The relay replaces the
// client instead, and counts it in dtx_relay_errors_total{kind="client"}.
func TestTopicAuthorizationDescribeOnlyThenWrite(t *testing.T) {
	t.Parallel()
	r := newACLRig(t, "relay-acl-describe")
	j := newJournal("acld")
	for range 5 {
		commitTx(t, r.db, r.topic, j, 100, "a", "b", "a")
	}
	r.requireRefused(t, aclRefused)

	r.grant(t, kadm.OpDescribe)
	r.requireRefused(t, "CLUSTER_AUTHORIZATION_FAILED")
	require.Eventually(t, func() bool {
		return labelledMetric(t, r.relay, "dtx_relay_errors_total", `kind="client"`) > 0
	}, 30*time.Second, 100*time.Millisecond, "the relay replaces the client the broker refused a producer id")
	for range 3 {
		commitTx(t, r.db, r.topic, j, 100, "a", "b")
	}

	r.grant(t, kadm.OpWrite)
	r.requireAllPublished(t, j)
}

// readyBody is the JSON report of /readyz.
type readyBody struct {
	Ready  bool              `json:"ready"`
	Checks map[string]string `json:"checks"`
}

// readyz fetches and decodes the process's /readyz.
func readyz(t *testing.T, p *relayProc) readyBody {
	t.Helper()
	code, body := p.get("/readyz")
	require.Contains(t, []int{http.StatusOK, http.StatusServiceUnavailable}, code, body)
	var rb readyBody
	require.NoError(t, json.Unmarshal([]byte(body), &rb), "/readyz body %q", body)
	return rb
}

// grantACLs creates acl through the broker at addr, whose principal must
// be allowed to (a super user).
func grantACLs(ctx context.Context, t *testing.T, addr string, acl *kadm.ACLBuilder) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	require.NoError(t, err)
	defer cl.Close()
	res, err := kadm.NewClient(cl).CreateACLs(ctx, acl)
	require.NoError(t, err)
	require.NotEmpty(t, res)
	for _, r := range res {
		require.NoError(t, r.Err, "create ACL %s %s on %s %s", r.Principal, r.Operation, r.Type, r.Name)
	}
}
