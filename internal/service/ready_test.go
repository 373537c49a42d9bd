package service

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// readyz returns /readyz's status and report.
func readyz(t *testing.T, base string) (int, readyReport) {
	t.Helper()
	resp, err := http.Get(base + "/readyz") //nolint:noctx // test helper with a local server
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var rep readyReport
	require.NoError(t, json.Unmarshal(body, &rep), string(body))
	return resp.StatusCode, rep
}

// A check the work loop declares keeps the process not ready until the loop
// adds it, then while it fails; the process becomes ready once it passes.
func TestAddReadyCheck(t *testing.T) {
	t.Parallel()
	add, failing := make(chan struct{}), atomic.Bool{}
	failing.Store(true)
	app := App{
		Name: "ready-check-test", DefaultAdminAddr: ":0",
		ReadyChecksFunc: func() []string { return []string{"widgets"} },
		RunFunc: func(ctx context.Context, env *Env) error {
			<-add
			env.AddReadyCheck("widgets", func(context.Context) error {
				if failing.Load() {
					return errors.New("widget W is missing")
				}
				return nil
			})
			<-ctx.Done()
			return nil
		},
	}
	r := runApp(t, app, "5s")

	// Declared but not added: not ready, though PostgreSQL and Kafka are up.
	require.Eventually(t, func() bool {
		_, rep := readyz(t, r.admin)
		return rep.Checks["postgres"] == "ok" && rep.Checks["kafka"] == "ok"
	}, 30*time.Second, 50*time.Millisecond)
	code, rep := readyz(t, r.admin)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, rep.Checks["widgets"], "not checked yet")
	require.NotContains(t, r.logs.String(), `"msg":"ready"`)

	close(add)
	require.Eventually(t, func() bool {
		_, rep := readyz(t, r.admin)
		return rep.Checks["widgets"] == "widget W is missing"
	}, 10*time.Second, 20*time.Millisecond)
	code, _ = readyz(t, r.admin)
	require.Equal(t, http.StatusServiceUnavailable, code)

	failing.Store(false)
	code, rep = readyz(t, r.admin)
	require.Equal(t, http.StatusOK, code, rep)
	require.Equal(t, "ok", rep.Checks["widgets"])
}
