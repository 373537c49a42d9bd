package idempotency_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging/idempotency"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait of these tests.
const waitFor = 10 * time.Second

type fixture struct {
	schema *pgtest.Schema
	store  *idempotency.Store
}

// setup gives a test its own migrated schema, a Store on it and an orders
// table: the effect of the handler under test.
func setup(t *testing.T, cfg idempotency.Config) *fixture {
	t.Helper()
	s := pgtest.NewSchema(t)
	_, err := s.Pool.Exec(t.Context(), "CREATE TABLE orders (id bigserial PRIMARY KEY, request text NOT NULL)")
	require.NoError(t, err)
	cfg.Schema = s.Name
	store, err := idempotency.NewStore(s.Pool, cfg)
	require.NoError(t, err)
	return &fixture{schema: s, store: store}
}

func (f *fixture) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, f.schema.Pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func (f *fixture) orders(t *testing.T) int { return f.count(t, "SELECT count(*) FROM orders") }

func (f *fixture) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	_, err := f.schema.Pool.Exec(context.Background(), query, args...)
	require.NoError(t, err)
}

// serve starts a server of h behind the middleware configured by cfg.
func (f *fixture) serve(t *testing.T, cfg idempotency.MiddlewareConfig, h http.Handler) *client {
	t.Helper()
	mw, err := f.store.Middleware(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(mw(h))
	t.Cleanup(srv.Close)
	return &client{url: srv.URL, http: srv.Client()}
}

// app is the handler under test: it creates an order in the request's
// transaction and answers 201 with the order's id and the run's number.
type app struct {
	t    *testing.T
	runs atomic.Int32
	// after, if set, runs once the order is inserted; a status other than 0
	// becomes the response, without body.
	after func(r *http.Request, tx pgx.Tx, run int32) int
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	run := a.runs.Add(1)
	tx, ok := idempotency.TxFromRequest(r)
	if !ok {
		w.Header().Set("X-Tx", "none")
		_, _ = io.WriteString(w, "passed through")
		return
	}
	if got, ok := inbox.TxFromContext(r.Context()); !ok || got != tx {
		a.t.Error("inbox.TxFromContext does not return the request's transaction")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		a.t.Errorf("read body: %v", err)
	}
	var id int64
	if err := tx.QueryRow(r.Context(), "INSERT INTO orders (request) VALUES ($1) RETURNING id", string(body)).Scan(&id); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if a.after != nil {
		if status := a.after(r, tx, run); status != 0 {
			w.WriteHeader(status)
			return
		}
	}
	w.Header().Set("Location", fmt.Sprintf("/orders/%d", id))
	w.Header().Add("X-Trace", "a")
	w.Header().Add("X-Trace", "b")
	http.SetCookie(w, &http.Cookie{Name: "session", Value: "s1"})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = fmt.Fprintf(w, `{"id":%d,"run":%d}`, id, run)
}

type client struct {
	url  string
	http *http.Client
}

type reply struct {
	status int
	header http.Header
	body   string
	err    error
}

// do sends a request; an empty key sends none. It does not fail the test,
// so goroutines may use it; check reply.err.
func (c *client) do(method, path, key, body string, header ...string) reply {
	req, err := http.NewRequest(method, c.url+path, strings.NewReader(body))
	if err != nil {
		return reply{err: err}
	}
	if key != "" {
		req.Header.Set(idempotency.HeaderKey, key)
	}
	// The caller: keys are kept per caller (AuthorizationPrincipal).
	req.Header.Set("Authorization", "Bearer test-caller")
	for i := 0; i+1 < len(header); i += 2 {
		if http.CanonicalHeaderKey(header[i]) == "Authorization" {
			req.Header.Del("Authorization")
		}
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
}

// post sends POST /orders with key and body and fails the test on a
// transport error.
func (c *client) post(t *testing.T, key, body string, header ...string) reply {
	t.Helper()
	r := c.do(http.MethodPost, "/orders", key, body, header...)
	require.NoError(t, r.err)
	return r
}

func requireProblem(t *testing.T, r reply, status int) {
	t.Helper()
	require.Equal(t, status, r.status, r.body)
	require.Equal(t, "application/problem+json", r.header.Get("Content-Type"))
	var p struct {
		Title  string `json:"title"`
		Status int    `json:"status"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &p))
	require.Equal(t, status, p.Status)
	require.NotEmpty(t, p.Title)
}

func requireReplayOf(t *testing.T, first, again reply) {
	t.Helper()
	require.Equal(t, "true", again.header.Get(idempotency.HeaderReplayed))
	require.Equal(t, first.status, again.status)
	require.Equal(t, first.body, again.body)
	for name, values := range first.header {
		if name != "Date" && name != "Set-Cookie" {
			require.Equal(t, values, again.header[name], "header %s", name)
		}
	}
	require.Empty(t, again.header.Values("Set-Cookie"), "a per-caller header is never replayed")
}

func TestReplay(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	a := &app{t: t}
	c := f.serve(t, idempotency.MiddlewareConfig{}, a)

	first := c.post(t, "key-1", `{"item":"book"}`)
	require.Equal(t, http.StatusCreated, first.status)
	require.JSONEq(t, `{"id":1,"run":1}`, first.body)
	require.Empty(t, first.header.Get(idempotency.HeaderReplayed))
	require.Equal(t, "/orders/1", first.header.Get("Location"))
	require.Equal(t, []string{"a", "b"}, first.header.Values("X-Trace"))
	require.Equal(t, "session=s1", first.header.Get("Set-Cookie"))

	for range 2 {
		requireReplayOf(t, first, c.post(t, "key-1", `{"item":"book"}`))
	}
	require.EqualValues(t, 1, a.runs.Load())
	require.Equal(t, 1, f.orders(t))

	other := c.post(t, "key-2", `{"item":"book"}`)
	require.Equal(t, http.StatusCreated, other.status, "another key is another request")
	require.Empty(t, other.header.Get(idempotency.HeaderReplayed))
	require.Equal(t, 2, f.orders(t))
}

func TestSameKeyDifferentRequest(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	a := &app{t: t}
	c := f.serve(t, idempotency.MiddlewareConfig{FingerprintHeaders: []string{"content-type"}}, a)

	require.Equal(t, http.StatusCreated, c.post(t, "k", `{"item":"book"}`, "Content-Type", "application/json").status)
	requireProblem(t, c.post(t, "k", `{"item":"pen"}`, "Content-Type", "application/json"), http.StatusUnprocessableEntity)
	requireProblem(t, c.post(t, "k", `{"item":"book"}`, "Content-Type", "text/plain"), http.StatusUnprocessableEntity)
	r := c.do(http.MethodPost, "/refunds", "k", `{"item":"book"}`, "Content-Type", "application/json")
	require.NoError(t, r.err)
	requireProblem(t, r, http.StatusUnprocessableEntity)
	r = c.do(http.MethodPatch, "/orders", "k", `{"item":"book"}`, "Content-Type", "application/json")
	require.NoError(t, r.err)
	requireProblem(t, r, http.StatusUnprocessableEntity)

	require.EqualValues(t, 1, a.runs.Load())
	require.Equal(t, 1, f.orders(t))
}

func TestRetryWhileRunningIsConflict(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	entered, release := make(chan struct{}), make(chan struct{})
	a := &app{t: t, after: func(_ *http.Request, _ pgx.Tx, run int32) int {
		if run == 1 {
			close(entered)
			<-release
		}
		return 0
	}}
	c := f.serve(t, idempotency.MiddlewareConfig{}, a)

	firstDone := make(chan reply, 1)
	go func() { firstDone <- c.do(http.MethodPost, "/orders", "k", "one") }()
	select {
	case <-entered:
	case <-time.After(waitFor):
		t.Fatal("the first request did not reach its handler")
	}

	busy := c.post(t, "k", "one")
	requireProblem(t, busy, http.StatusConflict)
	require.Equal(t, "1", busy.header.Get("Retry-After"))
	requireProblem(t, c.post(t, "k", "two"), http.StatusUnprocessableEntity)

	close(release)
	first := <-firstDone
	require.NoError(t, first.err)
	require.Equal(t, http.StatusCreated, first.status)
	requireReplayOf(t, first, c.post(t, "k", "one"))
	require.EqualValues(t, 1, a.runs.Load())
	require.Equal(t, 1, f.orders(t))
}

func TestConcurrentRequestsRunOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	a := &app{t: t}
	c := f.serve(t, idempotency.MiddlewareConfig{}, a)

	const n = 8
	start := make(chan struct{})
	replies := make([]reply, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			replies[i] = c.do(http.MethodPost, "/orders", "k", "same")
		})
	}
	close(start)
	wg.Wait()

	created := 0
	for _, r := range replies {
		require.NoError(t, r.err)
		switch r.status {
		case http.StatusCreated:
			created++
			require.JSONEq(t, `{"id":1,"run":1}`, r.body, "a replay of the one run")
		case http.StatusConflict:
		default:
			t.Fatalf("unexpected status %d: %s", r.status, r.body)
		}
	}
	require.Positive(t, created)
	require.EqualValues(t, 1, a.runs.Load())
	require.Equal(t, 1, f.orders(t))
}

func TestExpiredKeyRunsAgain(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{TTL: time.Hour})
	a := &app{t: t}
	c := f.serve(t, idempotency.MiddlewareConfig{}, a)

	require.Equal(t, http.StatusCreated, c.post(t, "k", "one").status)
	require.Equal(t, 1, f.count(t, "SELECT count(*) FROM idempotency_keys WHERE expires_at - created_at = interval '1 hour'"),
		"a key expires TTL after it was claimed")
	f.exec(t, "UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")

	again := c.post(t, "k", "one")
	require.Equal(t, http.StatusCreated, again.status)
	require.Empty(t, again.header.Get(idempotency.HeaderReplayed))
	require.JSONEq(t, `{"id":2,"run":2}`, again.body)
	requireReplayOf(t, again, c.post(t, "k", "one"))

	// Once expired, the key may even carry another request.
	f.exec(t, "UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
	require.Equal(t, http.StatusCreated, c.post(t, "k", "two").status)
	require.EqualValues(t, 3, a.runs.Load())
	require.Equal(t, 3, f.orders(t))
}

func TestServerErrorIsNotStored(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	a := &app{t: t, after: func(_ *http.Request, _ pgx.Tx, run int32) int {
		if run == 1 {
			return http.StatusServiceUnavailable
		}
		return 0
	}}
	c := f.serve(t, idempotency.MiddlewareConfig{}, a)

	require.Equal(t, http.StatusServiceUnavailable, c.post(t, "k", "one").status)
	require.Zero(t, f.orders(t), "the effect of a failed request is rolled back")
	require.Zero(t, f.count(t, "SELECT count(*) FROM idempotency_keys"), "and its key released")

	require.Equal(t, http.StatusCreated, c.post(t, "k", "one").status, "the retry runs at once")
	require.EqualValues(t, 2, a.runs.Load())
	require.Equal(t, 1, f.orders(t))
}

// A "try again later" client error is not the request's answer: like a 5xx
// it is not stored, and the retry it asks for runs.
func TestRetryLaterIsNotStored(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			f := setup(t, idempotency.Config{})
			a := &app{t: t, after: func(_ *http.Request, _ pgx.Tx, run int32) int {
				if run == 1 {
					return status
				}
				return 0
			}}
			c := f.serve(t, idempotency.MiddlewareConfig{}, a)

			require.Equal(t, status, c.post(t, "k", "one").status)
			require.Zero(t, f.orders(t))
			require.Zero(t, f.count(t, "SELECT count(*) FROM idempotency_keys"), "the key is released")
			again := c.post(t, "k", "one")
			require.Equal(t, http.StatusCreated, again.status, "the retry runs")
			require.Empty(t, again.header.Get(idempotency.HeaderReplayed))
			require.Equal(t, 1, f.orders(t))
		})
	}
}

// A 4xx answer is stored and replayed, but nothing the handler wrote
// stays: an invoice must not commit without the event whose refusal made
// the handler answer 422.
func TestClientErrorIsStoredWithoutTheHandlersWrites(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	a := &app{t: t, after: func(*http.Request, pgx.Tx, int32) int { return http.StatusUnprocessableEntity }}
	c := f.serve(t, idempotency.MiddlewareConfig{}, a)

	first := c.post(t, "k", "one")
	require.Equal(t, http.StatusUnprocessableEntity, first.status)
	requireReplayOf(t, first, c.post(t, "k", "one"))
	require.EqualValues(t, 1, a.runs.Load())
	require.Zero(t, f.orders(t), "a 4xx answer keeps none of the handler's writes")
	require.Equal(t, 1, f.count(t, "SELECT count(*) FROM idempotency_keys WHERE state = 'completed' AND response_status = 422"),
		"the answer is stored")
}

// Two callers that happen to send the same key and body each get their own
// response: by default a caller is its Authorization header.
func TestCallersNeverShareAResponse(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	a := &app{t: t}
	c := f.serve(t, idempotency.MiddlewareConfig{}, a)

	alice := c.post(t, "k", "one", "Authorization", "Bearer alice")
	bob := c.post(t, "k", "one", "Authorization", "Bearer bob")
	require.Equal(t, http.StatusCreated, alice.status)
	require.Equal(t, http.StatusCreated, bob.status)
	require.NotEqual(t, alice.body, bob.body, "each caller gets its own response")
	require.Empty(t, bob.header.Get(idempotency.HeaderReplayed))
	requireReplayOf(t, alice, c.post(t, "k", "one", "Authorization", "Bearer alice"))
	require.Equal(t, 2, f.orders(t))

	// A request that names no caller is refused, and runs nothing.
	anonymous := c.post(t, "k", "one", "Authorization", "")
	requireProblem(t, anonymous, http.StatusBadRequest)
	require.Contains(t, anonymous.body, "Caller unknown")
	require.EqualValues(t, 2, a.runs.Load())

	// A mount that shares its keys says so.
	shared := f.serve(t, idempotency.MiddlewareConfig{Scope: "one-client", ScopeFunc: idempotency.SharedKeys}, a)
	first := shared.post(t, "s", "one", "Authorization", "")
	require.Equal(t, http.StatusCreated, first.status)
	requireReplayOf(t, first, shared.post(t, "s", "one", "Authorization", "Bearer someone"))
}

// The first response carries the cookie the handler set; its replay does not.
func TestSetCookieIsNeverReplayed(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	c := f.serve(t, idempotency.MiddlewareConfig{}, &app{t: t})
	first := c.post(t, "k", "one")
	require.Equal(t, []string{"session=s1"}, first.header.Values("Set-Cookie"), "the caller gets its cookie")
	again := c.post(t, "k", "one")
	require.Equal(t, "true", again.header.Get(idempotency.HeaderReplayed))
	require.Empty(t, again.header.Values("Set-Cookie"), "the replay carries no cookie")
	require.Zero(t, f.count(t, "SELECT count(*) FROM idempotency_keys WHERE response_headers ? 'Set-Cookie'"),
		"nor is it stored")
}

// TestCrashBetweenEffectAndResponse covers the ways a request can die after
// its handler's effect and before its response reaches the client. In each,
// a retry must not produce a second effect.
func TestCrashBetweenEffectAndResponse(t *testing.T) {
	t.Parallel()

	t.Run("handler panics after its effect", func(t *testing.T) {
		t.Parallel()
		f := setup(t, idempotency.Config{})
		a := &app{t: t, after: func(_ *http.Request, _ pgx.Tx, run int32) int {
			if run == 1 {
				panic(http.ErrAbortHandler) // The server drops the connection.
			}
			return 0
		}}
		c := f.serve(t, idempotency.MiddlewareConfig{}, a)

		require.Error(t, c.do(http.MethodPost, "/orders", "k", "one").err)
		require.Zero(t, f.orders(t), "the effect rolled back with the request")

		first := c.post(t, "k", "one")
		require.Equal(t, http.StatusCreated, first.status)
		requireReplayOf(t, first, c.post(t, "k", "one"))
		require.Equal(t, 1, f.orders(t))
	})

	t.Run("connection killed before commit", func(t *testing.T) {
		t.Parallel()
		f := setup(t, idempotency.Config{})
		a := &app{t: t, after: func(r *http.Request, tx pgx.Tx, run int32) int {
			if run == 1 {
				terminate(t, f, tx.Conn().PgConn().PID())
			}
			return 0
		}}
		c := f.serve(t, idempotency.MiddlewareConfig{}, a)

		lost := c.post(t, "k", "one")
		requireProblem(t, lost, http.StatusServiceUnavailable)
		require.Zero(t, f.orders(t), "the server rolled the effect back with the response")

		first := c.post(t, "k", "one")
		require.Equal(t, http.StatusCreated, first.status)
		requireReplayOf(t, first, c.post(t, "k", "one"))
		require.EqualValues(t, 2, a.runs.Load())
		require.Equal(t, 1, f.orders(t))
	})

	t.Run("response lost after commit", func(t *testing.T) {
		t.Parallel()
		f := setup(t, idempotency.Config{})
		a := &app{t: t}
		mw, err := f.store.Middleware(idempotency.MiddlewareConfig{})
		require.NoError(t, err)
		h := mw(a)

		// The response is written to a recorder nobody reads: the client
		// never learns that the request succeeded.
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/orders", strings.NewReader("one"))
		req.Header.Set(idempotency.HeaderKey, "k")
		req.Header.Set("Authorization", "Bearer test-caller")
		h.ServeHTTP(httptest.NewRecorder(), req)
		require.Equal(t, 1, f.orders(t))

		req = httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/orders", strings.NewReader("one"))
		req.Header.Set(idempotency.HeaderKey, "k")
		req.Header.Set("Authorization", "Bearer test-caller")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusCreated, rec.Code)
		require.Equal(t, "true", rec.Header().Get(idempotency.HeaderReplayed))
		require.JSONEq(t, `{"id":1,"run":1}`, rec.Body.String())
		require.EqualValues(t, 1, a.runs.Load())
		require.Equal(t, 1, f.orders(t))
	})

	t.Run("process dies while running", func(t *testing.T) {
		// The first request's process dies: its database session ends, so
		// its transaction rolls back, but its key stays claimed (running)
		// because nobody is left to release it. A retry is refused while the
		// claim's lease runs and takes the key over once it has run out.
		t.Parallel()
		f := setup(t, idempotency.Config{})
		pids, release := make(chan uint32, 1), make(chan struct{})
		wake := sync.OnceFunc(func() { close(release) })
		t.Cleanup(wake) // A failed test must not leave the handler (and the server's Close) waiting.
		a := &app{t: t, after: func(_ *http.Request, tx pgx.Tx, run int32) int {
			if run == 1 {
				pids <- tx.Conn().PgConn().PID()
				<-release
			}
			return 0
		}}
		c := f.serve(t, idempotency.MiddlewareConfig{}, a)

		dead := make(chan reply, 1)
		go func() { dead <- c.do(http.MethodPost, "/orders", "k", "one") }()
		var pid uint32
		select {
		case pid = <-pids:
		case <-time.After(waitFor):
			t.Fatal("the first request did not reach its handler")
		}
		terminate(t, f, pid)
		require.Zero(t, f.orders(t))
		require.Equal(t, 1, f.count(t, "SELECT count(*) FROM idempotency_keys WHERE state = 'running'"))

		requireProblem(t, c.post(t, "k", "one"), http.StatusConflict)
		f.exec(t, "UPDATE idempotency_keys SET created_at = created_at - interval '2 minutes'") // Lease run out.

		retry := c.post(t, "k", "one")
		require.Equal(t, http.StatusCreated, retry.status)
		require.JSONEq(t, `{"id":2,"run":2}`, retry.body)

		// The zombie request wakes up: it can commit nothing, and it does
		// not release the key it no longer holds.
		wake()
		zombie := <-dead
		require.NoError(t, zombie.err)
		requireProblem(t, zombie, http.StatusServiceUnavailable)

		requireReplayOf(t, retry, c.post(t, "k", "one"))
		require.EqualValues(t, 2, a.runs.Load())
		require.Equal(t, 1, f.orders(t))
	})
}

// terminate ends the database session pid and waits until it is gone, as
// when the process that owns it dies.
func terminate(t *testing.T, f *fixture, pid uint32) {
	var ok bool
	err := f.schema.Pool.QueryRow(context.Background(), "SELECT pg_terminate_backend($1, 5000)", int32(pid)).Scan(&ok)
	if err != nil || !ok {
		t.Errorf("terminate backend %d: %v, %v", pid, ok, err)
	}
}

func TestTakenOverClaimIsFenced(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{RunningTimeout: time.Second})
	ctx := t.Context()
	fp := []byte("fingerprint")

	first, ok, err := f.store.Claim(ctx, "s", "k", fp)
	require.NoError(t, err)
	require.True(t, ok)
	_, ok, err = f.store.Claim(ctx, "s", "k", fp)
	require.NoError(t, err)
	require.False(t, ok, "a running claim is not taken over within its lease")

	// The first claimant stalls (before locking its row) past its lease.
	var second uint32
	require.Eventually(t, func() bool {
		var err error
		second, ok, err = f.store.Claim(ctx, "s", "k", fp)
		require.NoError(t, err)
		return ok
	}, waitFor, 20*time.Millisecond)
	require.NotEqual(t, first, second)

	ok, err = f.store.Lock(ctx, "s", "k", first)
	require.NoError(t, err)
	require.False(t, ok, "the stalled claimant finds its claim taken over")
	ok, err = f.store.Lock(ctx, "s", "k", second)
	require.NoError(t, err)
	require.True(t, ok)
}

func TestSupersededRequestDoesNotRun(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	a := &app{t: t}
	c := f.serve(t, idempotency.MiddlewareConfig{}, a)

	seconds := make(chan reply, 1)
	var hooked atomic.Bool
	f.store.SetHookAfterClaim(func() {
		if hooked.Swap(true) {
			return
		}
		// The first request stalls after its claim; its lease runs out and
		// a retry takes the key over and completes.
		if _, err := f.schema.Pool.Exec(context.Background(),
			"UPDATE idempotency_keys SET created_at = created_at - interval '2 minutes'"); err != nil {
			t.Errorf("age the claim: %v", err)
		}
		seconds <- c.do(http.MethodPost, "/orders", "k", "one")
	})

	first := c.post(t, "k", "one")
	requireProblem(t, first, http.StatusConflict)
	second := <-seconds
	require.NoError(t, second.err)
	require.Equal(t, http.StatusCreated, second.status)
	require.EqualValues(t, 1, a.runs.Load())
	require.Equal(t, 1, f.orders(t))
}

func TestMissingKey(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	a := &app{t: t}

	required := f.serve(t, idempotency.MiddlewareConfig{RequireKey: true}, a)
	requireProblem(t, required.post(t, "", "one"), http.StatusBadRequest)
	require.Zero(t, a.runs.Load())

	optional := f.serve(t, idempotency.MiddlewareConfig{}, a)
	for range 2 {
		r := optional.post(t, "", "one")
		require.Equal(t, http.StatusOK, r.status)
		require.Equal(t, "none", r.header.Get("X-Tx"), "passed through, without a transaction")
	}
	require.EqualValues(t, 2, a.runs.Load())
	require.Zero(t, f.count(t, "SELECT count(*) FROM idempotency_keys"))
}

func TestOtherMethodsPassThrough(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	a := &app{t: t}
	c := f.serve(t, idempotency.MiddlewareConfig{RequireKey: true}, a)

	for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete} {
		for range 2 {
			r := c.do(method, "/orders", "k", "")
			require.NoError(t, r.err)
			require.Equal(t, http.StatusOK, r.status, method)
			require.Equal(t, "none", r.header.Get("X-Tx"))
		}
	}
	require.EqualValues(t, 8, a.runs.Load())
	require.Zero(t, f.count(t, "SELECT count(*) FROM idempotency_keys"))

	put := f.serve(t, idempotency.MiddlewareConfig{Methods: []string{http.MethodPut}}, a)
	first := put.do(http.MethodPut, "/orders/7", "k", "one")
	require.NoError(t, first.err)
	require.Equal(t, http.StatusCreated, first.status)
	again := put.do(http.MethodPut, "/orders/7", "k", "one")
	require.NoError(t, again.err)
	requireReplayOf(t, first, again)
	post := put.post(t, "k", "one")
	require.Equal(t, "none", post.header.Get("X-Tx"), "POST is not configured there")
}

func TestInvalidKey(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	a := &app{t: t}
	c := f.serve(t, idempotency.MiddlewareConfig{}, a)

	for _, key := range []string{strings.Repeat("k", 256), "tab\tkey", "clé"} {
		requireProblem(t, c.post(t, key, "one"), http.StatusBadRequest)
	}
	r := c.do(http.MethodPost, "/orders", "", "one", idempotency.HeaderKey, "a", idempotency.HeaderKey, "b")
	require.NoError(t, r.err)
	requireProblem(t, r, http.StatusBadRequest)

	require.Equal(t, http.StatusCreated, c.post(t, strings.Repeat("k", 255), "one").status)
	require.Equal(t, http.StatusCreated, c.post(t, "with space ~!", "one").status)
	require.EqualValues(t, 2, a.runs.Load())
}

func TestBodyLimits(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	a := &app{t: t}
	c := f.serve(t, idempotency.MiddlewareConfig{MaxRequestBytes: 10, MaxResponseBytes: 20}, a)

	requireProblem(t, c.post(t, "k", "eleven byte"), http.StatusRequestEntityTooLarge)
	require.Zero(t, a.runs.Load())
	require.Zero(t, f.count(t, "SELECT count(*) FROM idempotency_keys"))

	// The response, {"id":1,"run":1}, is 16 bytes: it fits.
	require.Equal(t, http.StatusCreated, c.post(t, "k", "ten bytes!").status)

	// A request built by hand may have no body at all.
	mw, err := f.store.Middleware(idempotency.MiddlewareConfig{Scope: "direct"})
	require.NoError(t, err)
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/orders", nil)
	req.Body = nil
	req.Header.Set(idempotency.HeaderKey, "k")
	req.Header.Set("Authorization", "Bearer direct")
	rec := httptest.NewRecorder()
	mw(a).ServeHTTP(rec, req)
	require.Equal(t, http.StatusCreated, rec.Code)

	small := f.serve(t, idempotency.MiddlewareConfig{Scope: "small", MaxResponseBytes: 10}, a)
	requireProblem(t, small.post(t, "k", "one"), http.StatusInternalServerError)
	require.Equal(t, 2, f.orders(t), "the effect of a response too large to store is rolled back")
	require.Zero(t, f.count(t, "SELECT count(*) FROM idempotency_keys WHERE scope = 'small'"), "and its key released")
}

func TestScopes(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	a := &app{t: t}
	user := func(r *http.Request) string { return r.Header.Get("X-User") }
	c := f.serve(t, idempotency.MiddlewareConfig{Scope: "orders-api", ScopeFunc: user}, a)
	other := f.serve(t, idempotency.MiddlewareConfig{Scope: "billing-api"}, a)

	alice := c.post(t, "k", "one", "X-User", "alice")
	bob := c.post(t, "k", "one", "X-User", "bob")
	require.Equal(t, http.StatusCreated, alice.status)
	require.Equal(t, http.StatusCreated, bob.status)
	require.NotEqual(t, alice.body, bob.body, "each principal has its own keys")
	requireReplayOf(t, alice, c.post(t, "k", "one", "X-User", "alice"))
	requireProblem(t, c.post(t, "k", "one"), http.StatusBadRequest) // no principal
	require.Equal(t, http.StatusCreated, other.post(t, "k", "one").status, "another mount")

	long := strings.Repeat("p", 300)
	require.Equal(t, http.StatusCreated, c.post(t, "k", "one", "X-User", long).status)
	require.Equal(t, http.StatusCreated, c.post(t, "k", "one", "X-User", long[:299]).status)

	var scopes []string
	rows, err := f.schema.Pool.Query(t.Context(), "SELECT scope FROM idempotency_keys ORDER BY scope")
	require.NoError(t, err)
	scopes, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Len(t, scopes, 5)
	require.Regexp(t, `^billing-api authorization:[0-9a-f]{64}$`, scopes[0])
	require.Equal(t, []string{"orders-api alice", "orders-api bob"}, scopes[1:3])
	require.Regexp(t, `^orders-api sha256:[0-9a-f]{64}$`, scopes[3])
	require.Regexp(t, `^orders-api sha256:[0-9a-f]{64}$`, scopes[4])
	require.EqualValues(t, 5, a.runs.Load())
}

func TestMiddlewareConfig(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	for _, tc := range []struct {
		name string
		cfg  idempotency.MiddlewareConfig
		want []string
	}{
		{"scope with space", idempotency.MiddlewareConfig{Scope: "a b"}, []string{"Scope:"}},
		{"long scope", idempotency.MiddlewareConfig{Scope: strings.Repeat("s", 129)}, []string{"Scope:"}},
		{"several", idempotency.MiddlewareConfig{
			Methods:            []string{"PO ST"},
			MaxRequestBytes:    -1,
			MaxResponseBytes:   idempotency.MaxMaxBodyBytes + 1,
			FingerprintHeaders: []string{""},
			TxOptions:          pgx.TxOptions{AccessMode: pgx.ReadOnly},
		}, []string{"Methods:", "MaxRequestBytes:", "MaxResponseBytes:", "FingerprintHeaders:", "TxOptions:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.store.Middleware(tc.cfg)
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}
