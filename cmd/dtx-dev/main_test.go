package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRunRejectsBadCommandLines(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "Usage:"},
		{[]string{"bogus"}, exitUsage, `unknown command "bogus"`},
		{[]string{"help"}, exitOK, ""},
		{[]string{"kafka", "-h"}, exitOK, "-addr"},
		{[]string{"kafka", "extra"}, exitUsage, `unexpected argument "extra"`},
		{[]string{"kafka", "--addr", "0.0.0.0:9092"}, exitUsage, "clients can dial"},
		{[]string{"kafka", "--addr", ":9092"}, exitUsage, "name a host"},
		{[]string{"kafka", "--addr", "127.0.0.1:70000"}, exitUsage, "between 0 and 65535"},
		{[]string{"kafka", "--addr", "nonsense"}, exitUsage, "--addr"},
		{[]string{"kafka", "--partitions", "0"}, exitUsage, "--partitions 0"},
		{[]string{"kafka", "--log-level", "loud"}, exitUsage, "--log-level"},
		{[]string{"kafka", "--no-such-flag"}, exitUsage, "no-such-flag"},
		{[]string{"wait"}, exitUsage, "kafka|postgres"},
		{[]string{"wait", "redis"}, exitUsage, `unknown service "redis"`},
		{[]string{"wait", "kafka", "--brokers", " , "}, exitUsage, "name the brokers"},
		{[]string{"wait", "kafka", "--brokers", "127.0.0.1:9092", "--timeout", "0s"}, exitUsage, "must be positive"},
		{[]string{"wait", "postgres", "--url", "postgres://x@127.0.0.1/x", "--timeout", "-1s"}, exitUsage, "must be positive"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runArgs(t, tc.args...)
			require.Equal(t, tc.code, code, "stdout: %s\nstderr: %s", stdout, stderr)
			require.Contains(t, stdout+stderr, tc.want)
		})
	}
}

func TestWaitPostgresRejectsUnparsableURL(t *testing.T) {
	t.Parallel()
	code, _, stderr := runArgs(t, "wait", "postgres", "--url", "postgres://dtx:secret@[bad/dtx", "--timeout", "1s")
	require.Equal(t, exitFailure, code)
	require.NotContains(t, stderr, "secret")
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestWaitKafkaTimesOutWithLastError(t *testing.T) {
	t.Parallel()
	code, _, stderr := runArgs(t, "wait", "kafka", "--brokers", freeAddr(t), "--timeout", "1s")
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "not answering after 1s")
	require.Contains(t, stderr, "refused")
}

func TestWaitPostgresTimesOutWithLastError(t *testing.T) {
	t.Parallel()
	url := "postgres://dtx:secret@" + freeAddr(t) + "/dtx?sslmode=disable"
	code, _, stderr := runArgs(t, "wait", "postgres", "--url", url, "--timeout", "1s")
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "not answering after 1s")
	require.NotContains(t, stderr, "secret")
}

func TestKafkaServesUntilCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	outR, outW := io.Pipe()
	done := make(chan int, 1)
	go func() {
		code := run(ctx, []string{"kafka", "--addr", "127.0.0.1:0", "--log-level", "none"}, outW, io.Discard)
		outW.Close()
		done <- code
	}()

	lines := bufio.NewScanner(outR)
	require.True(t, lines.Scan(), "no start-up line")
	first := lines.Text()
	require.Contains(t, first, "listening on 127.0.0.1:")
	addr := strings.Fields(strings.SplitN(first, "listening on ", 2)[1])[0]
	// Keep reading so the command never blocks on its output.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_, _ = io.Copy(io.Discard, outR)
	}()

	code, stdout, stderr := runArgs(t, "wait", "kafka", "--brokers", addr, "--timeout", "20s")
	require.Equal(t, exitOK, code, "stderr: %s", stderr)
	require.Contains(t, stdout, "1 broker(s)")

	cancel()
	select {
	case code := <-done:
		require.Equal(t, exitOK, code)
	case <-time.After(10 * time.Second):
		t.Fatal("dtx-dev kafka did not stop after cancellation")
	}
	<-drained
}

func TestWaitPostgres(t *testing.T) {
	t.Parallel()
	url := os.Getenv("DTX_DATABASE_URL")
	if url == "" {
		t.Skip("DTX_DATABASE_URL is not set (make test sets it)")
	}
	code, stdout, stderr := runArgs(t, "wait", "postgres", "--url", url, "--timeout", "20s")
	require.Equal(t, exitOK, code, "stderr: %s", stderr)
	require.Contains(t, stdout, "answers: PostgreSQL")
}
