package main

import (
	"bytes"
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// --finished-retention takes a duration of at least the inbox's retention,
// or "off" (keep forever); the default is 30 days.
func TestFinishedRetentionSetting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value string
		want  time.Duration
		keep  bool
	}{
		{"720h", 720 * time.Hour, false},
		{"168h", 168 * time.Hour, false},
		{"off", 0, true},
		{" OFF ", 0, true},
	} {
		st := settings{definitions: "x", maxBatch: 1, workers: 1, scanInterval: time.Second, inFlight: 1, session: time.Minute, retention: tc.value}
		require.NoError(t, st.validate(), tc.value)
		require.Equal(t, tc.want, st.finishedRetention, tc.value)
		require.Equal(t, tc.keep, st.keepFinished, tc.value)
	}
}

// A bad --finished-retention stops the orchestrator at start (exit 2)
// naming the flag and its variable, and --help documents it.
func TestFinishedRetentionStopsAtStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, value, says string }{
		{"zero", "0", `0s is not positive: "off" keeps finished sagas forever`},
		{"negative", "-1h", `-1h0m0s is not positive: "off" keeps finished sagas forever`},
		{"shorter than the inbox's", "24h", "24h0m0s is shorter than the inbox's retention (168h0m0s)"},
		{"not a duration", "forever", `"forever" is not a duration (such as 720h) nor "off"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stderr, code := runOrchestrator(t, "DTX_FINISHED_RETENTION="+tc.value)
			require.Equal(t, 2, code, stderr)
			require.Contains(t, stderr, "finished-retention (DTX_FINISHED_RETENTION): "+tc.says)
		})
	}
	t.Run("help", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, binary, "--help").CombinedOutput()
		require.Contains(t, string(out), "--finished-retention  (env DTX_FINISHED_RETENTION, default 720h0m0s)")
		require.Contains(t, string(out), `"off" keeps finished sagas forever`)
	})
}

// runOrchestrator runs the binary with env against an unreachable database
// (settings are checked before any connection) and returns its standard
// error and exit code.
func runOrchestrator(t *testing.T, env ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "--definitions", "../../examples/billing/sagas", "--schemas", "../../examples/billing/contracts")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append([]string{"DTX_DATABASE_URL=postgres://dtx:dtx@127.0.0.1:1/dtx", "DTX_ADMIN_ADDR=127.0.0.1:0"}, env...)
	err := cmd.Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "want an exit code; stderr: %s", stderr.String())
	return stderr.String(), exit.ExitCode()
}
