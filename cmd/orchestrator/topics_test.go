package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/service"
	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/internal/testkit/proctest"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/topic"
)

// binary is the orchestrator built once for this package's tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dtx-orchestrator-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "orchestrator")
	cmd := exec.Command("go", "build", "-o", binary, ".")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the orchestrator:", err)
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

type readyReport struct {
	Ready  bool              `json:"ready"`
	Checks map[string]string `json:"checks"`
}

func readyz(t *testing.T, url string) (int, readyReport, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var rep readyReport
	require.NoError(t, json.Unmarshal(body, &rep), string(body))
	return resp.StatusCode, rep, string(body)
}

// An orchestrator started before its topics exist says which one is missing
// on /readyz (503) and in a warning, and does not report ready; once
// `dtxctl topics apply` (here topic.Apply) created them, it becomes ready
// without a restart.
func TestReadyzReportsMissingTopic(t *testing.T) {
	t.Parallel()
	prefix := kafkatest.TopicName(t) + "."
	defs := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(defs, "pay.yaml"), fmt.Appendf(nil, `
name: pay
version: 1
triggers:
  - {topic: %[1]sorders, type: sales.order.placed, saga_id: $.order_id}
steps:
  - name: charge
    action: {topic: %[1]spayments, type: accounting.payment.charge}
    success: [accounting.payment.charged]
`, prefix), 0o600))
	defs2, err := saga.LoadDir(defs)
	require.NoError(t, err)
	reg, err := saga.NewRegistry(defs2...)
	require.NoError(t, err)
	names := topic.ForSagas(reg, topic.SagaParams{Prefix: prefix}).All()
	adm := kadm.NewClient(kafkatest.NewClient(t))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, names...)
	})

	cmd := exec.Command(binary)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"DTX_DATABASE_URL=" + pgtest.URL(),
		"DTX_SCHEMA=" + pgtest.NewSchemaName(t),
		"DTX_MIGRATE=true",
		"DTX_KAFKA_BROKERS=" + strings.Join(kafkatest.Brokers(), ","),
		"DTX_ADMIN_ADDR=127.0.0.1:0",
		"DTX_DRAIN_TIMEOUT=10s",
		"DTX_DEFINITIONS=" + defs,
		"DTX_REPLY_TOPIC=" + prefix + saga.DefaultReplyTopic,
		"DTX_EVENT_TOPIC=" + prefix + saga.DefaultEventTopic,
	}
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	logs := proctest.NewLogs()
	done := make(chan struct{}) // closed once the process has been waited for
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

	warn := logs.WaitFor(t, service.MissingTopicsMsg, 60*time.Second)
	require.Equal(t, "WARN", warn["level"])
	require.Contains(t, warn["missing"], prefix+saga.DefaultReplyTopic)
	code, rep, body := readyz(t, admin)
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.False(t, rep.Ready)
	require.Equal(t, "ok", rep.Checks["postgres"], body)
	require.Equal(t, "ok", rep.Checks["kafka"], body)
	require.Contains(t, rep.Checks["topics"], "missing: run dtxctl topics apply", body)
	require.Contains(t, rep.Checks["topics"], prefix+"orders", body)
	require.Contains(t, rep.Checks["topics"], prefix+"payments", body)
	require.NotContains(t, logs.String(), `"msg":"ready"`, "reported ready with topics missing")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	created, err := topic.Apply(ctx, adm, topic.Defaults{Partitions: 1, ReplicationFactor: 1}.Apply(topic.FromNames("test", names...)))
	require.NoError(t, err)
	require.Len(t, created.Created, len(names))

	logs.WaitFor(t, "ready", 60*time.Second)
	code, rep, body = readyz(t, admin)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "ok", rep.Checks["topics"])
	require.Equal(t, 1, strings.Count(logs.String(), `"msg":"`+service.MissingTopicsMsg+`"`), "the warning is rate-limited")

	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit within 20s of SIGINT; logs:\n%s", logs.String())
	}
	require.Equal(t, 0, cmd.ProcessState.ExitCode(), logs.String())
}
