package fault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/proctest"
)

// Log messages of the relay the tests wait for.
const (
	msgAdminListening = "admin server listening"
	msgAcquired       = "relay: acquired the lease; publishing"
	msgLost           = "relay: lost the lease; standing by"
	msgRejected       = "relay: the broker refused a row for good; moved it to outbox_rejected"
)

// relayOpts configures one outbox-relay process.
type relayOpts struct {
	name          string // DTX_INSTANCE_ID, and the prefix of its log in failures
	dbURL, schema string
	brokers       string
	batchSize     int
	leaseDuration time.Duration
	env           []string // more KEY=value settings
}

// relayProc is a running outbox-relay binary.
type relayProc struct {
	name  string
	cmd   *exec.Cmd
	logs  *proctest.Logs
	admin string
	done  chan struct{} // closed once the process has exited and its log is read
}

// startRelay runs the outbox-relay binary and waits until its admin server
// listens. Cleanup kills it if it still runs and waits for it.
func startRelay(t *testing.T, o relayOpts) *relayProc {
	t.Helper()
	if o.batchSize == 0 {
		o.batchSize = 50
	}
	if o.leaseDuration == 0 {
		o.leaseDuration = time.Second
	}
	cmd := exec.Command(filepath.Join(binDir, "outbox-relay"),
		"--batch-size", strconv.Itoa(o.batchSize),
		"--poll-interval", "100ms",
		"--lease-duration", o.leaseDuration.String())
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"DTX_DATABASE_URL=" + o.dbURL,
		"DTX_KAFKA_BROKERS=" + o.brokers,
		"DTX_SCHEMA=" + o.schema,
		"DTX_ADMIN_ADDR=127.0.0.1:0",
		"DTX_LOG_FORMAT=json",
		"DTX_DRAIN_TIMEOUT=15s",
		"DTX_INSTANCE_ID=" + o.name,
	}
	cmd.Env = append(cmd.Env, o.env...)
	return startProcess(t, o.name, cmd)
}

// startProcess starts cmd (a dtx binary), reads its JSON log, and waits
// until its admin server listens. Cleanup kills it if it still runs, waits
// for it, and logs its log if the test failed.
func startProcess(t *testing.T, name string, cmd *exec.Cmd) *relayProc {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &relayProc{name: name, cmd: cmd, logs: proctest.NewLogs(), done: make(chan struct{})}
	go func() {
		p.logs.Consume(stderr)
		_ = cmd.Wait() // The exit status is read from cmd.ProcessState.
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT) // A paused process cannot die.
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("log of %s:\n%s", p.name, p.logs.String())
		}
	})
	rec := p.logs.WaitFor(t, msgAdminListening, 60*time.Second)
	p.admin = "http://" + rec["addr"].(string)
	return p
}

// running reports whether the process has not exited.
func (p *relayProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill9 kills the process with SIGKILL and waits for it.
func (p *relayProc) kill9(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Kill())
	<-p.done
}

// state returns the process state letter of /proc/<pid>/stat: "T" while
// stopped by SIGSTOP, "S" or "R" while running.
func (p *relayProc) state(t *testing.T) string {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	require.NoError(t, err)
	// pid (comm) state ...: comm may hold spaces, so split after its ')'.
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	fields := strings.Fields(string(rest))
	require.NotEmpty(t, fields)
	return fields[0]
}

func (p *relayProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
}

// stop sends SIGTERM and requires a clean exit (code 0) within 30s.
func (p *relayProc) stop(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("relay %s did not exit within 30s of SIGTERM", p.name)
	}
	require.Equal(t, 0, p.cmd.ProcessState.ExitCode(), "relay %s exit code; logs:\n%s", p.name, p.logs.String())
}

// get fetches an admin URL; code 0 means no answer.
func (p *relayProc) get(path string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.admin+path, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metric returns the value of an unlabelled metric on /metrics.
func (p *relayProc) metric(t *testing.T, name string) float64 {
	t.Helper()
	code, body := p.get("/metrics")
	require.Equal(t, http.StatusOK, code, body)
	v, err := metricValue(body, name)
	require.NoError(t, err)
	return v
}

func metricValue(body, name string) (float64, error) {
	for line := range strings.SplitSeq(body, "\n") {
		rest, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			continue
		}
		return strconv.ParseFloat(strings.TrimSpace(rest), 64)
	}
	return 0, errors.New("metric " + name + " not found")
}

// waitMetric polls a metric until ok accepts it.
func (p *relayProc) waitMetric(t *testing.T, name string, timeout time.Duration, ok func(float64) bool) float64 {
	t.Helper()
	var v float64
	require.Eventually(t, func() bool {
		v = p.metric(t, name)
		return ok(v)
	}, timeout, 50*time.Millisecond, "relay %s: %s never reached the value wanted", p.name, name)
	return v
}
