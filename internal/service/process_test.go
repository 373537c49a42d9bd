package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/service"
	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/internal/testkit/proctest"
)

// binDir holds the binaries built once for this package's tests.
var binDir string

// exampleDefinitions holds the saga definitions the orchestrator runs in tests.
var exampleDefinitions, _ = filepath.Abs("../../examples/order-to-cash/sagas")

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dtx-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator),
		"../../cmd/orchestrator", "../../cmd/outbox-relay", "../../cmd/projector")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

type proc struct {
	cmd   *exec.Cmd
	logs  *proctest.Logs
	admin string
	done  chan error
}

// start runs a built binary with the given environment (on top of a
// minimal one) and waits until its admin server listens.
func start(t *testing.T, binary string, env map[string]string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, binary), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &proc{cmd: cmd, logs: proctest.NewLogs(), done: make(chan error, 1)}
	readDone := make(chan struct{})
	go func() { p.logs.Consume(stderr); close(readDone) }()
	go func() { <-readDone; p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			if err := <-p.done; err != nil {
				t.Logf("%s killed at cleanup: %v", binary, err)
			}
		}
	})
	rec := p.logs.WaitFor(t, "admin server listening", 30*time.Second)
	p.admin = "http://" + rec["addr"].(string)
	return p
}

// stop sends SIGTERM and returns the exit code and how long the exit took.
func (p *proc) stop(t *testing.T, within time.Duration) (int, time.Duration) {
	t.Helper()
	began := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("waiting for the process: %v", err)
		}
	case <-time.After(within):
		t.Fatalf("process did not exit within %s of SIGTERM; logs:\n%s", within, p.logs.String())
	}
	return p.cmd.ProcessState.ExitCode(), time.Since(began)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func baseEnv(dbURL, schema string) map[string]string {
	return map[string]string{
		"DTX_DATABASE_URL":  dbURL,
		"DTX_KAFKA_BROKERS": strings.Join(kafkatest.Brokers(), ","),
		"DTX_SCHEMA":        schema,
		"DTX_ADMIN_ADDR":    "127.0.0.1:0",
		"DTX_DRAIN_TIMEOUT": "10s",
		// The orchestrator's saga definitions; the other binaries ignore it.
		"DTX_DEFINITIONS": exampleDefinitions,
	}
}

// Each binary migrates, becomes ready against the real PostgreSQL and Kafka,
// serves its admin endpoints and drains on SIGTERM with exit code 0.
func TestBinariesStartReadyAndDrain(t *testing.T) {
	t.Parallel()
	for _, binary := range []string{"orchestrator", "outbox-relay", "projector"} {
		t.Run(binary, func(t *testing.T) {
			t.Parallel()
			env := baseEnv(pgtest.URL(), pgtest.NewSchemaName(t))
			env["DTX_MIGRATE"] = "true"
			var want string
			switch binary {
			case "outbox-relay":
				want = `{"ready":true,"checks":{"postgres":"ok","kafka":"ok","relay":"ok","horizon":"ok"}}`
			case "projector":
				want = `{"ready":true,"checks":{"postgres":"ok","kafka":"ok","horizon":"ok"}}`
			case "orchestrator":
				// It is not ready until its topics exist: it creates them.
				env["DTX_CREATE_TOPICS"] = "true"
				want = `{"ready":true,"checks":{"postgres":"ok","kafka":"ok","topics":"ok"}}`
			}
			p := start(t, binary, env)
			p.logs.WaitFor(t, "ready", 60*time.Second)

			code, body := get(t, p.admin+"/healthz")
			require.Equal(t, http.StatusOK, code, body)
			code, body = get(t, p.admin+"/readyz")
			require.Equal(t, http.StatusOK, code, body)
			require.JSONEq(t, want, body)
			code, body = get(t, p.admin+"/metrics")
			require.Equal(t, http.StatusOK, code)
			require.Contains(t, body, `dtx_build_info{binary="`+binary+`"`)
			require.Contains(t, body, `dtx_dependency_up{dependency="postgres"} 1`)

			exit, took := p.stop(t, 15*time.Second)
			require.Equal(t, 0, exit, p.logs.String())
			require.Less(t, took, 10*time.Second, "exit within the drain timeout")
			p.logs.WaitFor(t, "stopped cleanly", time.Second)
		})
	}
}

// /readyz follows PostgreSQL: 503 while the server is stopped, 200 once it
// is back, without restarting the binary.
func TestReadyzFollowsPostgres(t *testing.T) {
	t.Parallel()
	cluster := pgtest.NewCluster(t)
	p := start(t, "outbox-relay", baseEnv(cluster.URL(), "dtx"))
	p.logs.WaitFor(t, "ready", 60*time.Second)
	code, body := get(t, p.admin+"/readyz")
	require.Equal(t, http.StatusOK, code, body)

	cluster.Stop()
	require.Eventually(t, func() bool {
		code, body = get(t, p.admin+"/readyz")
		return code == http.StatusServiceUnavailable
	}, 30*time.Second, 200*time.Millisecond)
	var rep struct {
		Ready  bool
		Checks map[string]string
	}
	require.NoError(t, json.Unmarshal([]byte(body), &rep))
	require.False(t, rep.Ready)
	require.NotEqual(t, "ok", rep.Checks["postgres"])
	require.Equal(t, "ok", rep.Checks["kafka"])
	code, _ = get(t, p.admin+"/healthz")
	require.Equal(t, http.StatusOK, code, "liveness does not depend on PostgreSQL")

	cluster.Start()
	require.Eventually(t, func() bool {
		code, _ = get(t, p.admin+"/readyz")
		return code == http.StatusOK
	}, 30*time.Second, 200*time.Millisecond)

	exit, _ := p.stop(t, 15*time.Second)
	require.Equal(t, 0, exit, p.logs.String())
}

// Invalid configuration exits 2 before connecting anywhere, naming each
// offending setting and never echoing a password.
func TestInvalidConfigExitsNonZero(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want []string
	}{
		"bad duration": {
			env:  map[string]string{"DTX_DRAIN_TIMEOUT": "forever"},
			want: []string{"drain-timeout (DTX_DRAIN_TIMEOUT)"},
		},
		"several fields": {
			env:  map[string]string{"DTX_DATABASE_URL": "postgres://u:hunter2@h/db"},
			args: []string{"--schema", "Not-An-Identifier", "--log-format", "xml"},
			want: []string{"schema (DTX_SCHEMA)", "log-format (DTX_LOG_FORMAT)"},
		},
		"unknown flag": {
			args: []string{"--no-such-setting"},
			want: []string{"no-such-setting"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(filepath.Join(binDir, "projector"), tc.args...)
			cmd.Env = []string{}
			for k, v := range tc.env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			out, err := cmd.CombinedOutput()
			require.Error(t, err)
			require.Equal(t, service.ExitUsage, cmd.ProcessState.ExitCode(), string(out))
			for _, w := range tc.want {
				require.Contains(t, string(out), w)
			}
			require.NotContains(t, string(out), "hunter2")
		})
	}
}

// --help lists every setting with its environment variable and default.
func TestHelp(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(filepath.Join(binDir, "orchestrator"), "--help").CombinedOutput()
	require.NoError(t, err, string(out))
	for _, name := range []string{"admin-addr", "database-url", "drain-timeout", "instance-id", "kafka-brokers",
		"log-format", "log-level", "migrate", "ready-timeout", "schema"} {
		require.Contains(t, string(out), "--"+name+"  (env "+service.EnvName(name)+", default ")
	}
	require.Contains(t, string(out), "default :8081")
}
