package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Output of `go test -bench` as make bench prints it: logs between the
// results, two runs of one benchmark (-count=2), and benchmarks the report
// does not know.
const benchOutput = `goos: linux
goarch: amd64
pkg: github.com/vextrus/dtx/pkg/eventstore/postgres
cpu: Intel(R) Xeon(R) Processor
BenchmarkAppend/eventstore/events=1-2         	    3205	    365843 ns/op	      2733 events/s
BenchmarkAppend/raw-pgx/events=1-2            	    6368	    157969 ns/op	      6330 events/s
BenchmarkAppend/eventstore/events=100-2       	     346	   3482220 ns/op	     28000 events/s
BenchmarkAppend/eventstore/events=100-2       	     346	   3482220 ns/op	     30000 events/s
BenchmarkAppend/raw-pgx/events=100-2          	    1129	   1034264 ns/op	     40000 events/s
    bench_test.go:84: events=100: eventstore 28717 events/s, raw pgx 96687 events/s, ratio 0.30
2026/12/05 02:01:43 INFO txlog: listening channel=t.events pid=20836
PASS
ok  	github.com/vextrus/dtx/pkg/eventstore/postgres	20.1s
pkg: github.com/vextrus/dtx/internal/relay
BenchmarkRelayLatency/broker=kfake/config=default-2 	       1	5012345678 ns/op	         3.5 p50_ms	         4.5 p99_ms	      5012 rows/s
BenchmarkRelayLatency/broker=apache/config=default-2 	       1	5012345678 ns/op	         9.0 p50_ms	        30.6 p99_ms	      5012 rows/s
BenchmarkSomethingElse-2 	       1	5012345678 ns/op
PASS
`

func TestBenchReport(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "bench.txt")
	require.NoError(t, os.WriteFile(file, []byte(benchOutput), 0o600))
	code, out, stderr := runArgs(t, "bench", "report", file)
	require.Equal(t, exitOK, code, stderr)
	row := func(what string) string {
		t.Helper()
		for line := range strings.SplitSeq(out, "\n") {
			if strings.HasPrefix(line, "| "+what+" |") {
				return line
			}
		}
		t.Fatalf("no row %q in\n%s", what, out)
		return ""
	}
	require.Equal(t, "| event-store appends, 1 event, events/s | 2733 | 6330 raw pgx INSERT | 0.43 | ratio ≥ 0.8 | no |",
		row("event-store appends, 1 event, events/s"))
	require.Equal(t, "| event-store appends, 100 events, events/s | 29000 | 40000 raw pgx INSERT | 0.72 | ratio ≥ 0.7 | yes |",
		row("event-store appends, 100 events, events/s"), "the median of two runs")
	require.Equal(t, "| relay commit → ack p99 ms at 5,000 rows/s, embedded broker | 4.50 | — | — | ≤ 5 | yes |",
		row("relay commit → ack p99 ms at 5,000 rows/s, embedded broker"))
	require.Equal(t, "| relay commit → ack p99 ms at 5,000 rows/s, Apache Kafka | 30.6 | — | — | ≤ 15 | no |",
		row("relay commit → ack p99 ms at 5,000 rows/s, Apache Kafka"))
	require.Equal(t, "| sagas/s, happy, Apache Kafka | — | — raw PostgreSQL ceiling | — | ≥ 500 | not measured |",
		row("sagas/s, happy, Apache Kafka"))
	require.Contains(t, out, "of 23 figures were not measured")

	// The same from standard input is covered by the file path; bad input
	// is a clear error, never an empty table.
	empty := filepath.Join(t.TempDir(), "empty.txt")
	require.NoError(t, os.WriteFile(empty, []byte("PASS\nok\n"), 0o600))
	code, _, stderr = runArgs(t, "bench", "report", empty)
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "no benchmark results")
	code, _, stderr = runArgs(t, "bench", "report", filepath.Join(t.TempDir(), "missing.txt"))
	require.Equal(t, exitFailure, code)
	require.Contains(t, stderr, "missing.txt")
	code, _, _ = runArgs(t, "bench")
	require.Equal(t, exitUsage, code)
}
