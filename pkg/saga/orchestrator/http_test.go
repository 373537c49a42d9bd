package orchestrator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

const (
	aliceToken   = "alice-0123456789abcdef"
	unnamedToken = "unnamed-0123456789abcdef"
)

// apiFixture is an orchestrator with two running sagas (o-1, o-2) behind an
// operator API that accepts aliceToken (named alice) and unnamedToken.
type apiFixture struct {
	t   *testing.T
	o   *orchestrator.Orchestrator
	reg *prometheus.Registry
	url string
}

func setupAPI(t *testing.T) *apiFixture {
	t.Helper()
	schema := pgtest.NewSchema(t)
	defs, err := saga.NewRegistry(shopDefinition(nil))
	require.NoError(t, err)
	promReg := prometheus.NewRegistry()
	o, err := orchestrator.New(schema.Pool, orchestrator.Config{Schema: schema.Name, Definitions: defs, Registerer: promReg})
	require.NoError(t, err)
	for _, id := range []string{"o-1", "o-2"} {
		_, err := o.Start(context.Background(), nil, "shop", id, map[string]any{"order_id": id}, orchestrator.StartParams{})
		require.NoError(t, err)
	}
	file := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(file, []byte("# operators\nalice:"+aliceToken+"\n\n"+unnamedToken+"\n"), 0o600))
	tokens, err := orchestrator.ReadTokenFile(file)
	require.NoError(t, err)
	auth, err := orchestrator.NewTokenAuthenticator(tokens)
	require.NoError(t, err)
	api, err := o.HTTPHandler(orchestrator.HTTPConfig{Authenticator: auth})
	require.NoError(t, err)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &apiFixture{t: t, o: o, reg: promReg, url: srv.URL}
}

type reply struct {
	code   int
	header http.Header
	body   string
}

// do sends a request; header values of "" are left out.
func (f *apiFixture) do(method, path string, header map[string]string, body string) reply {
	f.t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	require.NoError(f.t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(f.t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	return reply{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (f *apiFixture) show(id string) orchestrator.Detail {
	f.t.Helper()
	d, err := f.o.Show(context.Background(), id)
	require.NoError(f.t, err)
	return d
}

func bearer(token string) string { return "Bearer " + token }

func TestOperatorAPIRefusesWithoutAValidToken(t *testing.T) {
	t.Parallel()
	f := setupAPI(t)
	before := f.show("o-1")
	for _, tc := range []struct {
		name, method, path, auth string
	}{
		{"list without a token", http.MethodGet, "/sagas", ""},
		{"show without a token", http.MethodGet, "/sagas/o-1", ""},
		{"abort without a token", http.MethodPost, "/sagas/o-1/abort", ""},
		{"unknown path without a token", http.MethodGet, "/sagas/o-1/secrets", ""},
		{"show with a wrong token", http.MethodGet, "/sagas/o-1", bearer("alice-0123456789abcdeX")},
		{"abort with a wrong token", http.MethodPost, "/sagas/o-1/abort", bearer("not-a-token-of-this-api")},
		{"a token as basic credentials", http.MethodGet, "/sagas", "Basic " + aliceToken},
		{"a bearer prefix without a token", http.MethodGet, "/sagas", "Bearer "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"Content-Type": "application/json", "Authorization": tc.auth}
			r := f.do(tc.method, tc.path, h, `{"reason":"let me in"}`)
			require.Equal(t, http.StatusUnauthorized, r.code, r.body)
			require.Contains(t, r.header.Get("WWW-Authenticate"), "Bearer")
			var e struct{ Error string }
			require.NoError(t, json.Unmarshal([]byte(r.body), &e), r.body)
			require.Contains(t, e.Error, "credential")
			require.NotContains(t, r.body, "o-1", "nothing of the saga leaks")
		})
	}
	after := f.show("o-1")
	require.Equal(t, before.Revision, after.Revision, "a refused request changed the saga")
	require.Equal(t, saga.StatusRunning, after.Status)
	require.InDelta(t, 3, operatorRequests(t, f.reg, "list", "401"), 0)
	require.InDelta(t, 2, operatorRequests(t, f.reg, "show", "401"), 0)
	require.InDelta(t, 2, operatorRequests(t, f.reg, "abort", "401"), 0)
	require.InDelta(t, 1, operatorRequests(t, f.reg, "other", "401"), 0)
}

// operatorRequests returns the count of dtx_operator_requests_total{op,
// code}, 0 when it has none.
func operatorRequests(t *testing.T, reg *prometheus.Registry, op, code string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		if mf.GetName() != "dtx_operator_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["op"] == op && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestOperatorAPIRefusesWhatAPageCouldSend(t *testing.T) {
	t.Parallel()
	f := setupAPI(t)
	before := f.show("o-1")
	auth := bearer(aliceToken)
	for _, tc := range []struct {
		name        string
		path        string
		contentType string
		body        string
		code        int
	}{
		{"a form", "/sagas/o-1/abort", "application/x-www-form-urlencoded", "reason=csrf", http.StatusUnsupportedMediaType},
		{"a multipart form", "/sagas/o-1/abort", "multipart/form-data; boundary=x", "--x--", http.StatusUnsupportedMediaType},
		{"text/plain holding JSON", "/sagas/o-1/abort", "text/plain", `{"reason":"csrf"}`, http.StatusUnsupportedMediaType},
		{"the reason in the query only", "/sagas/o-1/abort?reason=csrf", "", "", http.StatusUnsupportedMediaType},
		{"JSON without a reason", "/sagas/o-1/abort", "application/json", `{"by":"mallory"}`, http.StatusBadRequest},
		{"JSON with a blank reason", "/sagas/o-1/abort", "application/json", `{"reason":"  "}`, http.StatusBadRequest},
		{"an empty JSON body", "/sagas/o-1/abort", "application/json", ``, http.StatusBadRequest},
		{"JSON with an unknown field", "/sagas/o-1/abort", "application/json", `{"reason":"x","force":true}`, http.StatusBadRequest},
		{"two JSON values", "/sagas/o-1/abort", "application/json", `{"reason":"x"}{"reason":"y"}`, http.StatusBadRequest},
		{"a reason too long", "/sagas/o-1/abort", "application/json", `{"reason":"` + strings.Repeat("x", orchestrator.MaxReasonLength+1) + `"}`, http.StatusBadRequest},
		{"an unknown operation", "/sagas/o-1/delete", "application/json", `{"reason":"x"}`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(http.MethodPost, tc.path, map[string]string{"Authorization": auth, "Content-Type": tc.contentType}, tc.body)
			require.Equal(t, tc.code, r.code, r.body)
			require.Contains(t, r.body, `"error"`)
		})
	}
	after := f.show("o-1")
	require.Equal(t, before.Revision, after.Revision, "a refused operation changed the saga")
	require.Equal(t, before.Timeline, after.Timeline)
	require.Equal(t, saga.StatusRunning, after.Status)
}

func TestOperatorAPIRecordsWhoAndWhy(t *testing.T) {
	t.Parallel()
	f := setupAPI(t)

	r := f.do(http.MethodGet, "/sagas", map[string]string{"Authorization": bearer(aliceToken)}, "")
	require.Equal(t, http.StatusOK, r.code, r.body)
	var list []orchestrator.Summary
	require.NoError(t, json.Unmarshal([]byte(r.body), &list))
	require.Len(t, list, 2)

	r = f.do(http.MethodPost, "/sagas/o-1/abort", map[string]string{
		"Authorization": bearer(aliceToken), "Content-Type": "application/json; charset=utf-8",
	}, `{"reason":"customer called"}`)
	require.Equal(t, http.StatusOK, r.code, r.body)
	var st saga.State
	require.NoError(t, json.Unmarshal([]byte(r.body), &st))
	require.Equal(t, saga.StatusFailed, st.Status)

	r = f.do(http.MethodGet, "/sagas/o-1", map[string]string{"Authorization": bearer(aliceToken)}, "")
	require.Equal(t, http.StatusOK, r.code, r.body)
	var d orchestrator.Detail
	require.NoError(t, json.Unmarshal([]byte(r.body), &d))
	last := d.Timeline[len(d.Timeline)-1]
	require.Equal(t, string(saga.OutcomeAborted), last.Outcome)
	require.Equal(t, "alice", last.Actor, "who: the token's name")
	require.Contains(t, last.Detail, "customer called", "why")
	for _, e := range d.Timeline[:len(d.Timeline)-1] {
		require.Empty(t, e.Actor, "only the operator's entry names the operator")
	}

	// A token without a name: the timeline records what the caller says.
	r = f.do(http.MethodPost, "/sagas/o-2/compensate", map[string]string{
		"Authorization": bearer(unnamedToken), "Content-Type": "application/json",
	}, `{"reason":"stock count was wrong","by":"bob"}`)
	require.Equal(t, http.StatusOK, r.code, r.body)
	tl := f.show("o-2").Timeline
	var op orchestrator.TimelineEntry
	for _, e := range tl {
		if e.Outcome == string(saga.OutcomeOperator) {
			op = e
		}
	}
	require.Equal(t, "bob", op.Actor)
	require.Contains(t, op.Detail, "stock count was wrong")

	// A named token with a "by": both.
	r = f.do(http.MethodPost, "/sagas/o-2/abort", map[string]string{
		"Authorization": bearer(aliceToken), "Content-Type": "application/json",
	}, `{"reason":"give up","by":"carol"}`)
	require.Equal(t, http.StatusOK, r.code, r.body)
	tl = f.show("o-2").Timeline
	require.Equal(t, "alice (by carol)", tl[len(tl)-1].Actor)

	// An operation that does not apply: 409, and nothing recorded.
	r = f.do(http.MethodPost, "/sagas/o-1/abort", map[string]string{
		"Authorization": bearer(aliceToken), "Content-Type": "application/json",
	}, `{"reason":"again"}`)
	require.Equal(t, http.StatusConflict, r.code, r.body)
	require.Len(t, f.show("o-1").Timeline, len(d.Timeline))
	require.InDelta(t, 2, operatorRequests(t, f.reg, "abort", "200"), 0)
	require.InDelta(t, 1, operatorRequests(t, f.reg, "abort", "409"), 0)
}

func TestLoopbackReadOnly(t *testing.T) {
	t.Parallel()
	schema := pgtest.NewSchema(t)
	defs, err := saga.NewRegistry(shopDefinition(nil))
	require.NoError(t, err)
	o, err := orchestrator.New(schema.Pool, orchestrator.Config{Schema: schema.Name, Definitions: defs})
	require.NoError(t, err)
	_, err = o.Start(context.Background(), nil, "shop", "o-1", map[string]any{"order_id": "o-1"}, orchestrator.StartParams{})
	require.NoError(t, err)
	api, err := o.HTTPHandler(orchestrator.HTTPConfig{Prefix: "/ops/sagas", Authenticator: orchestrator.LoopbackReadOnly()})
	require.NoError(t, err)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	f := &apiFixture{t: t, o: o, url: srv.URL}

	r := f.do(http.MethodGet, "/ops/sagas/o-1", nil, "")
	require.Equal(t, http.StatusOK, r.code, "reads from this host need no token")
	r = f.do(http.MethodPost, "/ops/sagas/o-1/abort", map[string]string{"Content-Type": "application/json"}, `{"reason":"x"}`)
	require.Equal(t, http.StatusForbidden, r.code, r.body)
	require.Contains(t, r.body, "--operator-token-file")
	require.Equal(t, saga.StatusRunning, f.show("o-1").Status)

	// A page whose name resolves to 127.0.0.1 (DNS rebinding) names its own
	// host: refused.
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/ops/sagas/o-1", nil)
	require.NoError(t, err)
	req.Host = "attacker.example:80"
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	_, err = o.HTTPHandler(orchestrator.HTTPConfig{})
	require.ErrorContains(t, err, "HTTPConfig.Authenticator: required")
	_, err = o.HTTPHandler(orchestrator.HTTPConfig{Prefix: "sagas/", Authenticator: orchestrator.LoopbackReadOnly()})
	require.ErrorContains(t, err, "HTTPConfig.Prefix")
}

func TestReadTokenFile(t *testing.T) {
	t.Parallel()
	write := func(text string) string {
		p := filepath.Join(t.TempDir(), "tokens")
		require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	tokens, err := orchestrator.ReadTokenFile(write("  # comment\n\nci: " + aliceToken + "  \r\n" + unnamedToken))
	require.NoError(t, err)
	require.Equal(t, []orchestrator.Token{{Name: "ci", Secret: aliceToken}, {Secret: unnamedToken}}, tokens)

	for _, tc := range []struct{ text, says string }{
		{"", "holds no token"},
		{"# only a comment\n", "holds no token"},
		{"short\n", "line 1: the secret has 5 bytes"},
		{"# c\n:" + aliceToken, "line 2: the name before the colon is empty"},
		{"bad name:" + aliceToken, "holds a space or a colon"},
		{"ok:" + aliceToken + " trailing", "holds a space"},
	} {
		_, err := orchestrator.ReadTokenFile(write(tc.text))
		require.ErrorContains(t, err, tc.says, "%q", tc.text)
	}
	_, err = orchestrator.ReadTokenFile(filepath.Join(t.TempDir(), "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)

	_, err = orchestrator.NewTokenAuthenticator(nil)
	require.Error(t, err)
	_, err = orchestrator.NewTokenAuthenticator([]orchestrator.Token{{Name: "a", Secret: aliceToken}, {Name: "b", Secret: aliceToken}})
	require.ErrorContains(t, err, "the same secret")
	_, err = orchestrator.NewTokenAuthenticator([]orchestrator.Token{{Name: "a", Secret: aliceToken}, {Name: "a", Secret: unnamedToken}})
	require.ErrorContains(t, err, "taken")
}

// The token file is followed: a token added works and a token removed is
// refused without a restart; a bad edit keeps the tokens read before.
func TestTokenFileAuthenticatorFollowsTheFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "tokens")
	write := func(text string, at time.Time) {
		require.NoError(t, os.WriteFile(file, []byte(text), 0o600))
		require.NoError(t, os.Chtimes(file, at, at))
	}
	start := time.Now().Add(-time.Hour)
	write("alice:"+aliceToken+"\n", start)
	var logs bytes.Buffer
	auth, err := orchestrator.NewTokenFileAuthenticator(file, slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	who := func(token string) (string, error) {
		r := httptest.NewRequest(http.MethodGet, "/sagas", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		p, err := auth.Authenticate(r)
		return p.Name, err
	}
	name, err := who(aliceToken)
	require.NoError(t, err)
	require.Equal(t, "alice", name)
	_, err = who(unnamedToken)
	require.ErrorIs(t, err, orchestrator.ErrUnauthenticated)

	// Alice's token is revoked, Bob's added.
	write("bob:"+unnamedToken+"\n", start.Add(time.Minute))
	require.Eventually(t, func() bool {
		name, err := who(unnamedToken)
		return err == nil && name == "bob"
	}, 5*time.Second, 50*time.Millisecond, "the new token is accepted without a restart")
	_, err = who(aliceToken)
	require.ErrorIs(t, err, orchestrator.ErrUnauthenticated, "the removed token is refused")

	// A bad edit: Bob's token stays in force, and the failure is logged once.
	write("short\n", start.Add(2*time.Minute))
	time.Sleep(orchestrator.TokenFileReloadInterval + 100*time.Millisecond)
	for range 3 {
		name, err = who(unnamedToken)
		require.NoError(t, err)
		require.Equal(t, "bob", name)
	}
	time.Sleep(orchestrator.TokenFileReloadInterval + 100*time.Millisecond)
	_, _ = who(unnamedToken)
	require.Equal(t, 1, strings.Count(logs.String(), "cannot be read again"), logs.String())

	_, err = orchestrator.NewTokenFileAuthenticator(file, nil)
	require.ErrorContains(t, err, "line 1", "a bad file at the start is an error")
}
