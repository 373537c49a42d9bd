package main

import (
	"context"
	"encoding/json"
	"maps"
	"net/http/httptest"
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
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

const exampleSagas = "../../examples/order-to-cash/sagas"

func TestSagaListShowAndOperate(t *testing.T) {
	t.Parallel()
	schema := pgtest.NewSchema(t)
	reg, err := loadDefinitions(exampleSagas)
	require.NoError(t, err)
	o, err := orchestrator.New(schema.Pool, orchestrator.Config{Schema: schema.Name, Definitions: reg})
	require.NoError(t, err)
	data := map[string]any{"order_id": "ord-1", "lines": []any{map[string]any{"sku": "A", "quantity": 1}}}
	for _, id := range []string{"ord-1", "ord-2"} {
		data["order_id"] = id
		_, err := o.Start(context.Background(), nil, "order-to-cash", id, data, orchestrator.StartParams{})
		require.NoError(t, err)
	}
	env := map[string]string{"DTX_DATABASE_URL": pgtest.URL(), "DTX_SCHEMA": schema.Name, "DTX_DEFINITIONS": exampleSagas}

	r := dtxctl(t, env, "saga", "list")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "ord-1")
	require.Contains(t, r.stdout, "order-to-cash@1")
	require.Contains(t, r.stdout, "reserve-stock")

	r = dtxctl(t, env, "saga", "show", "ord-1")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "status      running")
	require.Contains(t, r.stdout, "waiting for a reply to the action of step reserve-stock (attempt 1)")
	require.Contains(t, r.stdout, "reserve-stock  action")

	r = dtxctl(t, env, "saga", "abort", "ord-1")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "--reason is required")
	r = dtxctl(t, env, "saga", "abort", "ord-1", "--reason", "customer called", "--by", "carol")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "saga ord-1: abort, now failed")
	r = dtxctl(t, env, "saga", "show", "ord-1")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Regexp(t, `aborted\s+-\s+carol\s+aborted: customer called`, r.stdout, "the timeline says who and why")
	r = dtxctl(t, env, "saga", "list", "--status", "failed", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, `"id": "ord-1"`)
	require.NotContains(t, r.stdout, "ord-2")

	r = dtxctl(t, env, "saga", "retry", "ord-1", "--reason", "try again")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "does not apply")
	prefixed := maps.Clone(env)
	prefixed["DTX_TOPIC_PREFIX"] = "team-a."
	r = dtxctl(t, prefixed, "saga", "compensate", "ord-2", "--reason", "stock count was wrong")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "now "+string(saga.StatusCompensating))
	// What the operation wrote names the prefixed deployment's topics: the
	// compensation's reply comes back to its orchestrator, and the
	// lifecycle event goes to its event topic, not to a shared one.
	var replyTo []string
	var eventTopics []string
	rows, err := schema.Pool.Query(context.Background(),
		"SELECT topic, coalesce(headers->>'"+saga.HeaderReplyTo+"', '') FROM "+schema.Name+".outbox WHERE key = 'ord-2'")
	require.NoError(t, err)
	for rows.Next() {
		var topic, rt string
		require.NoError(t, rows.Scan(&topic, &rt))
		if rt != "" {
			replyTo = append(replyTo, rt)
		}
		if strings.HasSuffix(topic, saga.DefaultEventTopic) {
			eventTopics = append(eventTopics, topic)
		}
	}
	require.NoError(t, rows.Err())
	require.Contains(t, replyTo, "team-a."+saga.DefaultReplyTopic, "the compensation command names the prefixed reply topic")
	require.Contains(t, eventTopics, "team-a."+saga.DefaultEventTopic, "the compensating event goes to the prefixed event topic")

	r = dtxctl(t, env, "saga", "show", "nope")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "no such saga")
	r = dtxctl(t, env, "saga", "show")
	require.Equal(t, exitUsage, r.code)
	r = dtxctl(t, map[string]string{"DTX_DATABASE_URL": pgtest.URL(), "DTX_SCHEMA": schema.Name}, "saga", "retry", "ord-2", "--reason", "x")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "--definitions (DTX_DEFINITIONS) is required")
	r = dtxctl(t, env, "saga", "list", "--status", "sideways")
	require.Equal(t, exitUsage, r.code)
	r = dtxctl(t, map[string]string{"DTX_DATABASE_URL": pgtest.URL(), "DTX_SCHEMA": "no_dtx_tables_here"}, "saga", "list")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "Run dtxctl migrate up", "a schema without dtx's tables says what to do")
}

// The saga commands talk to the orchestrator's operator API with the token
// of the token file, and say clearly when it refuses them.
func TestSagaCommandsThroughTheOperatorAPI(t *testing.T) {
	t.Parallel()
	schema := pgtest.NewSchema(t)
	reg, err := loadDefinitions(exampleSagas)
	require.NoError(t, err)
	o, err := orchestrator.New(schema.Pool, orchestrator.Config{Schema: schema.Name, Definitions: reg})
	require.NoError(t, err)
	data := map[string]any{"order_id": "ord-1", "lines": []any{map[string]any{"sku": "A", "quantity": 1}}}
	_, err = o.Start(context.Background(), nil, "order-to-cash", "ord-1", data, orchestrator.StartParams{})
	require.NoError(t, err)
	const token = "ops-0123456789abcdef0123"
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("ops:"+token+"\n"), 0o600))
	auth, err := orchestrator.NewTokenAuthenticator([]orchestrator.Token{{Name: "ops", Secret: token}})
	require.NoError(t, err)
	api, err := o.HTTPHandler(orchestrator.HTTPConfig{Authenticator: auth})
	require.NoError(t, err)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	// No database settings: everything goes through the API.
	env := map[string]string{"DTX_OPERATOR_URL": srv.URL, "DTX_OPERATOR_TOKEN_FILE": tokenFile, "USER": "alice",
		"DTX_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}

	r := dtxctl(t, env, "saga", "list", "--status", "running")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "ord-1")
	r = dtxctl(t, env, "saga", "abort", "ord-1", "--reason", "customer called")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "saga ord-1: abort, now failed (aborted: customer called)")
	r = dtxctl(t, env, "saga", "show", "ord-1")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "status      failed")
	require.Regexp(t, `aborted\s+-\s+ops \(by alice\)\s+aborted: customer called`, r.stdout, "who (the token's name, then --by) and why")
	d, err := o.Show(context.Background(), "ord-1")
	require.NoError(t, err)
	require.Equal(t, "ops (by alice)", d.Timeline[len(d.Timeline)-1].Actor)

	r = dtxctl(t, env, "saga", "retry", "ord-1", "--reason", "again")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "does not apply")
	r = dtxctl(t, env, "saga", "show", "nope")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "no such saga")

	noToken := maps.Clone(env)
	delete(noToken, "DTX_OPERATOR_TOKEN_FILE")
	r = dtxctl(t, noToken, "saga", "list")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "needs a token (401)")
	require.Contains(t, r.stderr, "--operator-token-file (DTX_OPERATOR_TOKEN_FILE)")
	wrong := filepath.Join(dir, "wrong")
	require.NoError(t, os.WriteFile(wrong, []byte("ops-0123456789abcdef9999\n"), 0o600))
	r = dtxctl(t, env, "saga", "compensate", "ord-1", "--reason", "x", "--operator-token-file", wrong)
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "refused the token of --operator-token-file (DTX_OPERATOR_TOKEN_FILE) (401)")
	r = dtxctl(t, env, "saga", "list", "--operator-url", "127.0.0.1:8084")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "--operator-url (DTX_OPERATOR_URL)")
	after, err := o.Show(context.Background(), "ord-1")
	require.NoError(t, err)
	require.Equal(t, d.Revision, after.Revision, "refused commands changed nothing")
}

const (
	billingSagas     = "../../examples/billing/sagas"
	billingContracts = "../../examples/billing/contracts"
)

// billingDefinitions copies the billing example's saga definition into a
// directory of the test with its trigger on triggerTopic.
func billingDefinitions(t *testing.T, triggerTopic string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(billingSagas, "billing-invoice.yaml"))
	require.NoError(t, err)
	text := strings.ReplaceAll(string(b), "topic: billing.events", "topic: "+triggerTopic)
	require.NotEqual(t, string(b), text)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "billing-invoice.yaml"), []byte(text), 0o600))
	return dir
}

func TestSagaStartPublishesTheTrigger(t *testing.T) {
	t.Parallel()
	triggerTopic := kafkatest.NewTopic(t, 3)
	defs := billingDefinitions(t, triggerTopic)
	env := map[string]string{
		"DTX_KAFKA_BROKERS": strings.Join(kafkatest.Brokers(), ","),
		"DTX_DEFINITIONS":   defs,
		"DTX_SCHEMAS":       billingContracts,
	}
	data := `{"invoice_id":"inv-42","customer_id":"c-1","amount_cents":1200,"currency":"EUR"}`
	dataFile := filepath.Join(t.TempDir(), "trigger.json")
	require.NoError(t, os.WriteFile(dataFile, []byte(data), 0o600))

	// The name may come before, between or after the flags.
	r := dtxctl(t, env, "saga", "start", "--data", data, "billing-invoice", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var printed startResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &printed), r.stdout)
	require.Equal(t, startResult{Saga: "billing-invoice@1", Topic: triggerTopic, Type: "billing.invoice.requested",
		MessageID: printed.MessageID, SagaID: "inv-42"}, printed)
	r = dtxctl(t, env, "saga", "start", "billing-invoice", "--data-file", dataFile, "--message-id", "m-2", "--version", "1",
		"--trigger-type", "billing.invoice.requested")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "topic      "+triggerTopic+"\n")
	require.Contains(t, r.stdout, "message id m-2\n")
	require.Contains(t, r.stdout, "saga id    inv-42\n")

	// What the orchestrator reads: a dtx envelope of the trigger's type,
	// keyed by the saga id, with the payload as given.
	cl := kafkatest.NewClient(t, kgo.ConsumeTopics(triggerTopic))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var envs []messaging.Envelope
	for len(envs) < 2 {
		fetches := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d of 2 records", len(envs))
		for _, rec := range fetches.Records() {
			e, err := kafka.DecodeRecord(rec)
			require.NoError(t, err)
			require.Equal(t, "inv-42", string(rec.Key))
			envs = append(envs, e)
		}
	}
	ids := []string{envs[0].ID, envs[1].ID}
	require.ElementsMatch(t, []string{printed.MessageID, "m-2"}, ids)
	for _, e := range envs {
		require.Equal(t, "billing.invoice.requested", e.Type)
		require.Equal(t, "/dtxctl", e.Source)
		require.Equal(t, 1, e.SchemaVersion)
		require.JSONEq(t, data, string(e.Data))
	}
}

func TestSagaStartRefuses(t *testing.T) {
	t.Parallel()
	triggerTopic := kafkatest.NewTopic(t, 1)
	defs := billingDefinitions(t, triggerTopic)
	missingDefs := billingDefinitions(t, kafkatest.TopicName(t))
	env := map[string]string{
		"DTX_KAFKA_BROKERS": strings.Join(kafkatest.Brokers(), ","),
		"DTX_DEFINITIONS":   defs,
		"DTX_SCHEMAS":       billingContracts,
	}
	good := `{"invoice_id":"inv-1","customer_id":"c-1","amount_cents":1200,"currency":"EUR"}`
	withoutSchemas := map[string]string{"DTX_KAFKA_BROKERS": env["DTX_KAFKA_BROKERS"], "DTX_DEFINITIONS": defs}
	for _, tc := range []struct {
		name string
		env  map[string]string // nil: env
		args []string
		code int
		says string
	}{
		{"no name", nil, []string{"--data", good}, exitUsage, "want exactly one SAGA_NAME"},
		{"no payload", nil, []string{"billing-invoice"}, exitUsage, "exactly one of --data and --data-file"},
		{"two payloads", nil, []string{"billing-invoice", "--data", good, "--data-file", "x.json"}, exitUsage, "exactly one of --data and --data-file"},
		{"unknown saga", nil, []string{"payroll", "--data", good}, exitFailure, `no saga definition "payroll"`},
		{"other version", nil, []string{"billing-invoice", "--data", good, "--version", "2"}, exitFailure, "the latest version of billing-invoice is 1"},
		{"unknown trigger", nil, []string{"billing-invoice", "--data", good, "--trigger-type", "x.y"}, exitFailure, `--trigger-type "x.y"`},
		{"not an object", nil, []string{"billing-invoice", "--data", `[1]`}, exitFailure, "not one JSON object"},
		{"no saga id", nil, []string{"billing-invoice", "--data", `{"customer_id":"c-1"}`}, exitFailure, "the saga id of billing-invoice@1"},
		{"schema", nil, []string{"billing-invoice", "--data", `{"invoice_id":"inv-1","customer_id":"c-1","amount_cents":-5,"currency":"EUR"}`},
			exitFailure, "does not follow its schema"},
		{"own types unknown without --schemas", withoutSchemas, []string{"billing-invoice", "--data", good}, exitFailure, "billing.invoice.requested"},
		{"missing topic", nil, []string{"billing-invoice", "--data", good, "--definitions", missingDefs}, exitFailure, "run dtxctl topics apply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := env
			if tc.env != nil {
				e = tc.env
			}
			r := dtxctl(t, e, append([]string{"saga", "start"}, tc.args...)...)
			require.Equal(t, tc.code, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
			require.Contains(t, r.stderr, tc.says)
			require.Empty(t, r.stdout)
		})
	}

	// Nothing refused was published.
	adm := kadm.NewClient(kafkatest.NewClient(t))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	offsets, err := adm.ListEndOffsets(ctx, triggerTopic)
	require.NoError(t, err)
	end, ok := offsets.Lookup(triggerTopic, 0)
	require.True(t, ok)
	require.Zero(t, end.Offset, "a refused start published a record")
}
