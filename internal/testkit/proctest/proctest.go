// Package proctest helps tests that run dtx binaries as processes: it
// collects a process's JSON log lines (log/slog records) and lets a test wait
// for a given message, failing with the whole log when it does not come.
//
// Logs is safe for concurrent use: one goroutine feeds it with Consume while
// the test waits.
package proctest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"sync"
	"testing"
	"time"
)

// Logs collects the log lines of one process.
type Logs struct {
	mu    sync.Mutex
	lines []map[string]any
	raw   bytes.Buffer
	cond  chan struct{}
}

// NewLogs returns empty Logs.
func NewLogs() *Logs { return &Logs{cond: make(chan struct{})} }

// Consume reads r (a process's standard error) line by line until it ends.
// Lines that are not JSON objects are kept in String only.
func (l *Logs) Consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		_ = json.Unmarshal(sc.Bytes(), &rec)
		l.mu.Lock()
		l.raw.Write(sc.Bytes())
		l.raw.WriteByte('\n')
		if rec != nil {
			l.lines = append(l.lines, rec)
		}
		close(l.cond)
		l.cond = make(chan struct{})
		l.mu.Unlock()
	}
}

// String returns every line read so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// WaitForNth returns the n-th (from 1) record whose msg is msg, waiting for
// it up to timeout; it fails the test, showing the log, when none comes.
func (l *Logs) WaitForNth(t testing.TB, msg string, n int, timeout time.Duration) map[string]any {
	t.Helper()
	return l.waitFor(t, msg, n, nil, timeout)
}

// WaitForMatch returns the first record whose msg is msg and for which
// match returns true, waiting for it up to timeout; it fails the test,
// showing the log, when none comes.
func (l *Logs) WaitForMatch(t testing.TB, msg string, match func(rec map[string]any) bool, timeout time.Duration) map[string]any {
	t.Helper()
	return l.waitFor(t, msg, 1, match, timeout)
}

func (l *Logs) waitFor(t testing.TB, msg string, n int, match func(map[string]any) bool, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		seen := 0
		for _, rec := range l.lines {
			if rec["msg"] == msg && (match == nil || match(rec)) {
				if seen++; seen == n {
					l.mu.Unlock()
					return rec
				}
			}
		}
		wait := l.cond
		l.mu.Unlock()
		select {
		case <-wait:
		case <-deadline:
			t.Fatalf("no log line %q (#%d) within %s; logs:\n%s", msg, n, timeout, l.String())
		}
	}
}

// WaitFor returns the first record whose msg is msg (see WaitForNth).
func (l *Logs) WaitFor(t testing.TB, msg string, timeout time.Duration) map[string]any {
	t.Helper()
	return l.WaitForNth(t, msg, 1, timeout)
}
