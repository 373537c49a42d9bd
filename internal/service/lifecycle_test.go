package service

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

// syncBuffer is a log sink safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// field returns the value of key in the first JSON log line whose msg is msg.
func (s *syncBuffer) field(msg, key string) (string, bool) {
	for _, line := range strings.Split(s.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			v, _ := rec[key].(string)
			return v, true
		}
	}
	return "", false
}

type running struct {
	logs   *syncBuffer
	admin  string
	cancel context.CancelFunc
	done   chan struct{}
	code   int
}

// wait returns Run's exit code once it returned.
func (r *running) wait() int {
	<-r.done
	return r.code
}

func runApp(t *testing.T, app App, drain string) *running {
	t.Helper()
	return runAppEnv(t, app, drain, nil)
}

// runAppEnv is runApp with extra environment variables.
func runAppEnv(t *testing.T, app App, drain string, extra map[string]string) *running {
	t.Helper()
	vars := map[string]string{
		"DTX_DATABASE_URL":  pgtest.URL(),
		"DTX_KAFKA_BROKERS": strings.Join(kafkatest.Brokers(), ","),
		"DTX_ADMIN_ADDR":    "127.0.0.1:0",
		"DTX_DRAIN_TIMEOUT": drain,
	}
	maps.Copy(vars, extra)
	env := envOf(vars)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{logs: &syncBuffer{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.code = Run(ctx, app, nil, env, &bytes.Buffer{}, r.logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(time.Minute):
			t.Error("Run did not return")
		}
	})
	require.Eventually(t, func() bool {
		addr, ok := r.logs.field("admin server listening", "addr")
		r.admin = "http://" + addr
		return ok
	}, 30*time.Second, 10*time.Millisecond, "admin server did not start: %s", r.logs)
	return r
}

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url) //nolint:noctx // test helper with a local server
	require.NoError(t, err)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// While the work loop drains, /readyz says 503 so that traffic moves away,
// and a loop that finishes within the drain timeout exits 0.
func TestDrainTurnsNotReadyThenExitsZero(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	app := App{Name: "drain-test", DefaultAdminAddr: ":0", RunFunc: func(ctx context.Context, env *Env) error {
		<-env.Ready
		close(entered)
		<-ctx.Done()
		<-release // work in flight
		return nil
	}}
	r := runApp(t, app, "30s")
	<-entered
	require.Equal(t, http.StatusOK, status(t, r.admin+"/readyz"))

	r.cancel() // the shutdown signal
	require.Eventually(t, func() bool { return status(t, r.admin+"/readyz") == http.StatusServiceUnavailable },
		10*time.Second, 10*time.Millisecond)
	require.Equal(t, http.StatusOK, status(t, r.admin+"/healthz"))
	close(release)
	require.Equal(t, ExitOK, r.wait(), r.logs.String())
}

// A work loop that does not return within the drain timeout makes the
// process exit 1 instead of hanging.
func TestDrainOverrunExitsOne(t *testing.T) {
	t.Parallel()
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	app := App{Name: "overrun-test", DefaultAdminAddr: ":0", RunFunc: func(ctx context.Context, env *Env) error {
		<-stuck
		return nil
	}}
	r := runApp(t, app, "1s")
	began := time.Now()
	r.cancel()
	require.Equal(t, ExitFailure, r.wait())
	require.GreaterOrEqual(t, time.Since(began), time.Second)
	require.Contains(t, r.logs.String(), "drain did not finish within 1s")
}

// A work loop that fails stops the process with exit code 1.
func TestWorkLoopFailureExitsOne(t *testing.T) {
	t.Parallel()
	app := App{Name: "fail-test", DefaultAdminAddr: ":0", RunFunc: func(context.Context, *Env) error {
		return errSentinel
	}}
	r := runApp(t, app, "5s")
	require.Equal(t, ExitFailure, r.wait())
	require.Contains(t, r.logs.String(), errSentinel.Error())
}

var errSentinel = sentinelError("relay loop failed")

type sentinelError string

func (e sentinelError) Error() string { return string(e) }
