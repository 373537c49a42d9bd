package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/internal/testkit/proctest"
)

const operatorToken = "ops-0123456789abcdef0123"

func writeTokenFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "operator-tokens")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
	return p
}

// An operator API that would be reachable beyond this host without tokens,
// or whose token file is unusable, stops the orchestrator at start (exit 2)
// naming the setting.
func TestOperatorAPISettingsStopAtStart(t *testing.T) {
	t.Parallel()
	good := writeTokenFile(t, "ops:"+operatorToken+"\n")
	for _, tc := range []struct {
		name string
		env  []string
		says []string
	}{
		{"all interfaces without tokens", []string{"DTX_OPERATOR_ADDR=:8084"},
			[]string{"operator-addr (DTX_OPERATOR_ADDR)", `":8084" is not a loopback address`, "operator-token-file (DTX_OPERATOR_TOKEN_FILE)"}},
		{"a public address without tokens", []string{"DTX_OPERATOR_ADDR=0.0.0.0:0"},
			[]string{"operator-addr (DTX_OPERATOR_ADDR)", "not a loopback address"}},
		{"a host name without tokens", []string{"DTX_OPERATOR_ADDR=orchestrator.internal:8084"},
			[]string{"not a loopback address"}},
		{"no port", []string{"DTX_OPERATOR_ADDR=127.0.0.1"},
			[]string{"operator-addr (DTX_OPERATOR_ADDR)", "not [host]:port"}},
		{"a short token", []string{"DTX_OPERATOR_ADDR=:0", "DTX_OPERATOR_TOKEN_FILE=" + writeTokenFile(t, "# ops\nops:short\n")},
			[]string{"operator-token-file (DTX_OPERATOR_TOKEN_FILE)", "line 2", "fewer than 16"}},
		{"a missing token file", []string{"DTX_OPERATOR_ADDR=:0", "DTX_OPERATOR_TOKEN_FILE=/nonexistent/tokens"},
			[]string{"operator-token-file (DTX_OPERATOR_TOKEN_FILE)", "/nonexistent/tokens"}},
		{"tokens without an address", []string{"DTX_OPERATOR_TOKEN_FILE=" + good},
			[]string{"operator-token-file (DTX_OPERATOR_TOKEN_FILE) is set but operator-addr (DTX_OPERATOR_ADDR) is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binary, "--definitions", "../../examples/billing/sagas", "--schemas", "../../examples/billing/contracts")
			cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			// An unreachable database: the check comes before any connection.
			cmd.Env = append([]string{"DTX_DATABASE_URL=postgres://dtx:dtx@127.0.0.1:1/dtx", "DTX_ADMIN_ADDR=127.0.0.1:0"}, tc.env...)
			err := cmd.Run()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "want exit 2; stderr: %s", stderr.String())
			require.Equal(t, 2, exit.ExitCode(), stderr.String())
			for _, s := range tc.says {
				require.Contains(t, stderr.String(), s)
			}
		})
	}
}

// The operator API has its own listener: it needs a token there, and the
// admin address (metrics, probes) does not serve it at all.
func TestOperatorAPIServedApartWithTokens(t *testing.T) {
	t.Parallel()
	prefix := kafkatest.TopicName(t) + "."
	cmd := exec.Command(binary, "--definitions", "../../examples/billing/sagas", "--schemas", "../../examples/billing/contracts")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"DTX_DATABASE_URL=" + pgtest.URL(),
		"DTX_SCHEMA=" + pgtest.NewSchemaName(t),
		"DTX_MIGRATE=true",
		"DTX_KAFKA_BROKERS=" + strings.Join(kafkatest.Brokers(), ","),
		"DTX_ADMIN_ADDR=127.0.0.1:0",
		"DTX_DRAIN_TIMEOUT=10s",
		"DTX_TOPIC_PREFIX=" + prefix,
		"DTX_OPERATOR_ADDR=127.0.0.1:0",
		"DTX_OPERATOR_TOKEN_FILE=" + writeTokenFile(t, "ops:"+operatorToken+"\n"),
	}
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	logs := proctest.NewLogs()
	done := make(chan struct{})
	go func() { logs.Consume(stderr); _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	})
	admin := "http://" + logs.WaitFor(t, "admin server listening", 30*time.Second)["addr"].(string)
	operator := "http://" + logs.WaitFor(t, "operator API listening", 60*time.Second)["addr"].(string)

	do := func(method, url, token, contentType, body string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, resp.Header, string(b)
	}
	code, header, body := do(http.MethodGet, operator+"/sagas", "", "", "")
	require.Equal(t, http.StatusUnauthorized, code, body)
	require.Contains(t, header.Get("WWW-Authenticate"), "Bearer")
	code, _, body = do(http.MethodPost, operator+"/sagas/inv-1/abort", "", "application/json", `{"reason":"x"}`)
	require.Equal(t, http.StatusUnauthorized, code, body)
	code, _, body = do(http.MethodGet, operator+"/sagas", "wrong-0123456789abcdef", "", "")
	require.Equal(t, http.StatusUnauthorized, code, body)
	code, _, body = do(http.MethodGet, operator+"/sagas", operatorToken, "", "")
	require.Equal(t, http.StatusOK, code, body)
	require.JSONEq(t, `[]`, body)
	code, _, body = do(http.MethodPost, operator+"/sagas/inv-1/abort?reason=x", operatorToken, "application/x-www-form-urlencoded", "reason=x")
	require.Equal(t, http.StatusUnsupportedMediaType, code, body)
	code, _, body = do(http.MethodPost, operator+"/sagas/inv-1/abort", operatorToken, "application/json", `{"reason":"x"}`)
	require.Equal(t, http.StatusNotFound, code, body)

	code, _, body = do(http.MethodGet, admin+"/sagas", operatorToken, "", "")
	require.Equal(t, http.StatusNotFound, code, "the admin address serves no operator API: %s", body)
	code, _, _ = do(http.MethodGet, admin+"/healthz", "", "", "")
	require.Equal(t, http.StatusOK, code, "probes need no token")
	code, _, body = do(http.MethodGet, admin+"/metrics", "", "", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `dtx_operator_requests_total{code="401",op="list"} 2`)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the orchestrator did not stop within 30s of SIGTERM")
	}
	require.Equal(t, 0, cmd.ProcessState.ExitCode(), "a clean drain, operator API included")
}
