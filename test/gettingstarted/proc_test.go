package gettingstarted

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/proctest"
)

// proc is a running binary.
type proc struct {
	name string
	cmd  *exec.Cmd
	logs *proctest.Logs
	done chan struct{} // closed once the process has exited and its log is read
}

// start runs binary with args and env, reading its JSON log from standard
// error. Cleanup kills it if it still runs, waits for it, and logs its log
// if the test failed.
func start(t *testing.T, env []string, binary string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, binary), args...)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &proc{name: binary, cmd: cmd, logs: proctest.NewLogs(), done: make(chan struct{})}
	go func() {
		p.logs.Consume(stderr)
		_ = cmd.Wait() // The exit status is read from cmd.ProcessState.
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("log of %s:\n%s", p.name, p.logs.String())
		}
	})
	return p
}

// stop sends SIGTERM and requires exit status 0 within 30s.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit within 30s of SIGTERM", p.name)
	}
	require.Equal(t, 0, p.cmd.ProcessState.ExitCode(), "%s exit status; log:\n%s", p.name, p.logs.String())
}

// runCmd runs a binary to its end and returns its standard output; it
// fails the test, with both outputs, unless the exit status is 0.
func runCmd(t *testing.T, env []string, binary string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, binary), args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, err, "%s %v\nstdout:\n%s\nstderr:\n%s", binary, args, stdout.String(), stderr.String())
	return stdout.String()
}

// client keeps no idle connections, so that no goroutine outlives a test.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// response is an HTTP response read in full.
type response struct {
	code   int
	header http.Header
	body   []byte
}

// do sends one request; code 0 means no answer.
func do(method, url string, header map[string]string, body []byte) response {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: b}
}

// getJSON fetches url and decodes its JSON body into v; it reports whether
// the answer was 200 and decoded.
func getJSON(url string, v any) bool {
	r := do(http.MethodGet, url, nil, nil)
	return r.code == http.StatusOK && json.Unmarshal(r.body, v) == nil
}
