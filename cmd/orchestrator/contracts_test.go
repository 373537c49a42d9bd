package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDefinitionsWithoutSchemasStopAtStart: a deployment whose definitions
// name message types without a schema exits 2 naming them, before it
// takes any work, instead of dead-lettering its first trigger.
func TestDefinitionsWithoutSchemasStopAtStart(t *testing.T) {
	t.Parallel()
	run := func(args ...string) (int, string) {
		// A process that passes the check runs until it is stopped.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary, args...)
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		// An unreachable database: the check must come before any connection.
		cmd.Env = []string{"DTX_DATABASE_URL=postgres://dtx:dtx@127.0.0.1:1/dtx", "DTX_ADMIN_ADDR=127.0.0.1:0"}
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), stderr.String()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, stderr.String() // stopped by SIGTERM, drained
		}
		require.NoError(t, err)
		return 0, stderr.String()
	}
	code, stderr := run("--definitions", "../../examples/billing/sagas")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "billing-invoice@1")
	require.Contains(t, stderr, "billing.invoice.requested")
	require.Contains(t, stderr, "--schemas")

	// With the contracts given, the same definitions pass the check and the
	// process starts (it waits for the database until it is stopped).
	code, stderr = run("--definitions", "../../examples/billing/sagas", "--schemas", "../../examples/billing/contracts",
		"--drain-timeout", "1s", "--ready-timeout", "100ms")
	require.NotEqual(t, 2, code, stderr)
	require.NotContains(t, stderr, "no schema for message types")
	require.Contains(t, stderr, `"msg":"starting"`)
}
