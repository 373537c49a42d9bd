package gettingstarted

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging/idempotency"
	"github.com/vextrus/dtx/pkg/saga"
)

const (
	example   = "../../examples/billing"
	sagaWait  = 90 * time.Second
	startWait = 60 * time.Second
)

// TestGettingStarted follows docs/getting-started.md with the shipped
// binaries and the billing example.
func TestGettingStarted(t *testing.T) {
	began := time.Now()
	defer func() { t.Logf("getting started took %s", time.Since(began).Round(time.Millisecond)) }()

	dtxSchema := pgtest.NewSchemaName(t)
	billingSchema := pgtest.NewSchemaName(t)
	// Topics and consumer groups of their own, so that runs never meet.
	prefix := strings.ReplaceAll(kafkatest.TopicName(t), "_", "-") + "."
	t.Cleanup(func() { deleteKafkaState(t, prefix) })
	definitions, topicsFile := prefixedCopy(t, prefix)
	contracts, err := filepath.Abs(filepath.Join(example, "contracts"))
	require.NoError(t, err)

	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"DTX_DATABASE_URL=" + pgtest.URL(),
		"DTX_KAFKA_BROKERS=" + strings.Join(kafkatest.Brokers(), ","),
		"DTX_SCHEMA=" + dtxSchema,
		"DTX_ADMIN_ADDR=127.0.0.1:0",
		"DTX_LOG_FORMAT=json",
		"DTX_DRAIN_TIMEOUT=15s",
	}

	// 1. dtx's tables, then the topics of the definitions and the topics file.
	runCmd(t, env, "dtxctl", "migrate", "up")
	out := runCmd(t, env, "dtxctl", "topics", "apply", "--definitions", definitions,
		"--file", topicsFile, "--topic-prefix", prefix)
	require.Contains(t, out, prefix+"billing.events")

	// 2. The relay, the orchestrator with the example's schemas and
	// definitions and its operator API with a token, and the service.
	const operatorToken = "getting-started-0123456789abcdef"
	tokenFile := filepath.Join(t.TempDir(), "operator-tokens")
	require.NoError(t, os.WriteFile(tokenFile, []byte("guide:"+operatorToken+"\n"), 0o600))
	relay := start(t, env, "outbox-relay", "--poll-interval", "100ms")
	orch := start(t, env, "orchestrator",
		"--schemas", contracts,
		"--definitions", definitions,
		"--reply-topic", prefix+saga.DefaultReplyTopic,
		"--event-topic", prefix+saga.DefaultEventTopic,
		"--group", prefix+"orchestrator",
		"--scan-interval", "100ms",
		"--operator-addr", "127.0.0.1:0",
		"--operator-token-file", tokenFile)
	billing := start(t, env, "billing", "--billing-schema", billingSchema,
		"--http-addr", "127.0.0.1:0", "--topic-prefix", prefix, "--group-prefix", prefix+"billing")
	relay.logs.WaitFor(t, "admin server listening", startWait)
	orch.logs.WaitFor(t, "admin server listening", startWait)
	operator := "http://" + orch.logs.WaitFor(t, "operator API listening", startWait)["addr"].(string)
	orch.logs.WaitFor(t, "orchestrator: running", startWait)
	api := "http://" + billing.logs.WaitFor(t, "billing: running", startWait)["http_addr"].(string)

	// 3. Two invoice requests, one replayed with its key.
	post := func(key, body string) response {
		return do(http.MethodPost, api+"/invoices",
			map[string]string{idempotency.HeaderKey: key, "Content-Type": "application/json",
				"Authorization": "Bearer shop-frontend"}, []byte(body))
	}
	okBody := `{"customer_id":"c-100","amount_cents":12500,"currency":"EUR"}`
	first := post(prefix+"ok", okBody)
	require.Equal(t, http.StatusAccepted, first.code, string(first.body))
	replay := post(prefix+"ok", okBody)
	require.Equal(t, http.StatusAccepted, replay.code, string(replay.body))
	require.JSONEq(t, string(first.body), string(replay.body), "a replay must get the stored response")
	require.Equal(t, "true", replay.header.Get(idempotency.HeaderReplayed))
	blocked := post(prefix+"blocked", `{"customer_id":"blocked-7","amount_cents":900,"currency":"EUR"}`)
	require.Equal(t, http.StatusAccepted, blocked.code, string(blocked.body))
	without := do(http.MethodPost, api+"/invoices", nil, []byte(okBody))
	require.Equal(t, http.StatusBadRequest, without.code, "the API requires an Idempotency-Key")
	anonymous := do(http.MethodPost, api+"/invoices", map[string]string{idempotency.HeaderKey: prefix + "ok"}, []byte(okBody))
	require.Equal(t, http.StatusBadRequest, anonymous.code, "a key is kept per caller: a request naming none is refused")

	// A request the API's own checks accept but whose trigger event fails its
	// schema (customer_id is at most 100 characters): 422, and no invoice
	// row without its event. The middleware commits a 4xx answer with
	// whatever the handler wrote, so the API must refuse before writing.
	longCustomer := "c-" + strings.Repeat("x", 99)
	refusedBody := `{"customer_id":"` + longCustomer + `","amount_cents":500,"currency":"EUR"}`
	refused := post(prefix+"refused", refusedBody)
	require.Equal(t, http.StatusUnprocessableEntity, refused.code, string(refused.body))
	require.Contains(t, string(refused.body), "billing.invoice.requested", "the answer names the schema that refused the event")
	refusedAgain := post(prefix+"refused", refusedBody)
	require.Equal(t, http.StatusUnprocessableEntity, refusedAgain.code, string(refusedAgain.body))
	require.Equal(t, "true", refusedAgain.header.Get(idempotency.HeaderReplayed), "a 4xx is stored with its key and replayed")
	db := pgtest.Connect(t)
	var rows int
	require.NoError(t, db.QueryRow(context.Background(),
		"SELECT count(*) FROM "+pgx.Identifier{billingSchema, "invoices"}.Sanitize()+" WHERE customer_id = $1", longCustomer).Scan(&rows))
	require.Zero(t, rows, "a refused request must leave no invoice row")

	okID, blockedID := sagaIDOf(t, first), sagaIDOf(t, blocked)

	// 4. dtxctl saga start publishes a trigger as operators and tests do.
	started := runCmd(t, env, "dtxctl", "saga", "start", "billing-invoice",
		"--definitions", definitions, "--schemas", contracts,
		"--data", `{"invoice_id":"`+prefix+`cli-1","customer_id":"c-200","amount_cents":300,"currency":"USD"}`)
	require.Contains(t, started, "topic      "+prefix+"billing.events")
	require.Contains(t, started, "type       billing.invoice.requested")
	require.Contains(t, started, "saga id    "+prefix+"cli-1")
	cliID := prefix + "cli-1"

	// 5. The orchestrator's operator API (with its token): one saga per
	// invoice, each ending as its input wants.
	require.Equal(t, http.StatusUnauthorized, do(http.MethodGet, operator+"/sagas", nil, nil).code, "the operator API needs the token")
	getSagas := func(path string, v any) bool {
		r := do(http.MethodGet, operator+path, map[string]string{"Authorization": "Bearer " + operatorToken}, nil)
		return r.code == http.StatusOK && json.Unmarshal(r.body, v) == nil
	}
	want := map[string]saga.Status{okID: saga.StatusCompleted, blockedID: saga.StatusCompensated, cliID: saga.StatusCompleted}
	for id, status := range want {
		var d struct {
			Status saga.Status `json:"status"`
		}
		require.Eventually(t, func() bool {
			return getSagas("/sagas/"+id, &d) && d.Status == status
		}, sagaWait, 100*time.Millisecond, "saga %s: want status %q; last seen: %+v", id, status, &d)
	}
	var list []struct {
		ID string `json:"id"`
	}
	require.True(t, getSagas("/sagas?definition=billing-invoice", &list))
	var ids []string
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	require.ElementsMatch(t, []string{okID, blockedID, cliID}, ids, "one saga per invoice, none for the replay")

	show := runCmd(t, env, "dtxctl", "saga", "show", blockedID, "--definitions", definitions)
	require.Contains(t, show, "status      compensated")
	require.Contains(t, show, "billing.invoice.rejected")
	show = runCmd(t, env, "dtxctl", "saga", "show", blockedID, "--operator-url", operator, "--operator-token-file", tokenFile)
	require.Contains(t, show, "status      compensated", "dtxctl reads the same through the operator API")

	// 6. The service: effects, and the lifecycle events both downstream
	// consumers saw.
	type view struct {
		Status        string              `json:"status"`
		InvoiceNumber *int64              `json:"invoice_number"`
		CreditHeld    bool                `json:"credit_held"`
		SagaEvents    map[string][]string `json:"saga_events"`
	}
	seen := func(id string, status string, events ...string) view {
		var v view
		require.Eventually(t, func() bool {
			if !getJSON(api+"/invoices/"+id, &v) || v.Status != status {
				return false
			}
			for _, consumer := range []string{"watermill", "franz-go"} {
				for _, e := range events {
					if !contains(v.SagaEvents[consumer], e) {
						return false
					}
				}
			}
			return true
		}, sagaWait, 100*time.Millisecond, "invoice %s: want status %s and events %v seen by both consumers; last seen: %+v", id, status, events, &v)
		return v
	}
	okView := seen(okID, "issued", saga.EventStarted, saga.EventStepCompleted, saga.EventCompleted)
	require.NotNil(t, okView.InvoiceNumber)
	require.True(t, okView.CreditHeld)
	blockedView := seen(blockedID, "cancelled", saga.EventStarted, saga.EventStepFailed, saga.EventCompensating, saga.EventCompensated)
	require.Nil(t, blockedView.InvoiceNumber)
	require.False(t, blockedView.CreditHeld, "the compensation must release the credit")
	for _, v := range []view{okView, blockedView} {
		require.NotContains(t, v.SagaEvents["watermill"], saga.EventFailed)
	}

	// 7. Every process stops cleanly on SIGTERM.
	billing.stop(t)
	orch.stop(t)
	relay.stop(t)
}

func sagaIDOf(t *testing.T, r response) string {
	t.Helper()
	var body struct {
		SagaID string `json:"saga_id"`
	}
	require.NoError(t, json.Unmarshal(r.body, &body), string(r.body))
	require.NotEmpty(t, body.SagaID)
	return body.SagaID
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// prefixedCopy copies the example's saga definitions (into a directory of
// their own) and its topics file, with prefix in front of every topic name.
func prefixedCopy(t *testing.T, prefix string) (definitions, topicsFile string) {
	t.Helper()
	definitions, topicsFile = t.TempDir(), filepath.Join(t.TempDir(), "topics.yaml")
	files, err := filepath.Glob(filepath.Join(example, "sagas", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range append(files, filepath.Join(example, "topics.yaml")) {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		text := string(b)
		for _, from := range []string{"topic: billing.", "name: billing.", "name: dtx."} {
			key, rest, _ := strings.Cut(from, " ")
			text = strings.ReplaceAll(text, from, key+" "+prefix+rest)
		}
		require.NotEqual(t, string(b), text, "no topic of %s was renamed", f)
		to := filepath.Join(definitions, filepath.Base(f))
		if filepath.Base(f) == "topics.yaml" {
			to = topicsFile
		}
		require.NoError(t, os.WriteFile(to, []byte(text), 0o600))
	}
	return definitions, topicsFile
}

// deleteKafkaState deletes the consumer groups and topics whose names
// start with prefix.
func deleteKafkaState(t *testing.T, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(kafkatest.NewClient(t))
	if groups, err := adm.ListGroups(ctx); err == nil {
		var mine []string
		for _, g := range groups.Groups() {
			if strings.HasPrefix(g, prefix) {
				mine = append(mine, g)
			}
		}
		if len(mine) > 0 {
			if _, err := adm.DeleteGroups(ctx, mine...); err != nil {
				t.Logf("delete groups %v: %v", mine, err)
			}
		}
	}
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Logf("list topics to delete: %v", err)
		return
	}
	var mine []string
	for _, name := range topics.Names() {
		if strings.HasPrefix(name, prefix) {
			mine = append(mine, name)
		}
	}
	if len(mine) > 0 {
		if _, err := adm.DeleteTopics(ctx, mine...); err != nil {
			t.Logf("delete topics %v: %v", mine, err)
		}
	}
}
