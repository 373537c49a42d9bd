package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// A goal is what a figure should reach: at least or at most a value, of
// the figure itself or of its ratio to the baseline.
type goal struct {
	ratio  bool // of figure/baseline, not of the figure
	atMost bool // the figure (or ratio) should be at most value
	value  float64
}

func (g goal) String() string {
	op := "≥"
	if g.atMost {
		op = "≤"
	}
	if g.ratio {
		return fmt.Sprintf("ratio %s %g", op, g.value)
	}
	return fmt.Sprintf("%s %g", op, g.value)
}

// met reports whether v (the figure, or the ratio for a ratio goal) meets g.
func (g goal) met(v float64) bool {
	if g.atMost {
		return v <= g.value
	}
	return v >= g.value
}

// metric names one value of one benchmark: the benchmark's name without
// its GOMAXPROCS suffix, and the unit it reports.
type metric struct{ bench, unit string }

// A figure is one row of the report: a metric, the baseline measured in
// the same run beside it (none for a figure whose goal is absolute and has
// no peer), and its goal (none: reported only).
type figure struct {
	what     string
	value    metric
	baseline metric // zero: none
	baseName string
	goal     *goal
}

func atLeast(v float64) *goal      { return &goal{value: v} }
func atMost(v float64) *goal       { return &goal{atMost: true, value: v} }
func ratioAtLeast(v float64) *goal { return &goal{ratio: true, value: v} }

// figures are the rows of the report, in order. Their goals are the
// project's targets; a figure without a goal is watched for regressions.
var figures = []figure{
	{"sagas/s, happy, Apache Kafka", metric{"BenchmarkSaga/broker=apache/happy", "sagas/s"},
		metric{"BenchmarkSaga/broker=apache/happy", "raw_sagas/s"}, "raw PostgreSQL ceiling", atLeast(500)},
	{"sagas/s, 20 % compensating, Apache Kafka", metric{"BenchmarkSaga/broker=apache/mixed", "sagas/s"},
		metric{"BenchmarkSaga/broker=apache/mixed", "raw_sagas/s"}, "raw PostgreSQL ceiling", atLeast(430)},
	{"sagas/s, happy, embedded broker", metric{"BenchmarkSaga/broker=kfake/happy", "sagas/s"},
		metric{"BenchmarkSaga/broker=kfake/happy", "raw_sagas/s"}, "raw PostgreSQL ceiling", atLeast(600)},
	{"sagas/s, 20 % compensating, embedded broker", metric{"BenchmarkSaga/broker=kfake/mixed", "sagas/s"},
		metric{"BenchmarkSaga/broker=kfake/mixed", "raw_sagas/s"}, "raw PostgreSQL ceiling", atLeast(500)},
	{"sagas/s, happy, Apache Kafka, 1 M finished sagas kept", metric{"BenchmarkSagaFinishedHistory/finished=1000000", "sagas/s"},
		metric{"BenchmarkSagaFinishedHistory/finished=0", "sagas/s"}, "same, without them", ratioAtLeast(0.9)},
	{"saga latency p50 ms at half load, Apache Kafka", metric{"BenchmarkSaga/broker=apache/latency", "p50_ms"}, metric{}, "", atMost(60)},
	{"saga latency p99 ms at half load, Apache Kafka", metric{"BenchmarkSaga/broker=apache/latency", "p99_ms"}, metric{}, "", atMost(150)},
	{"saga latency p50 ms at half load, embedded broker", metric{"BenchmarkSaga/broker=kfake/latency", "p50_ms"}, metric{}, "", nil},
	{"saga latency p99 ms at half load, embedded broker", metric{"BenchmarkSaga/broker=kfake/latency", "p99_ms"}, metric{}, "", nil},
	{"relay commit → ack p99 ms at 5,000 rows/s, embedded broker", metric{"BenchmarkRelayLatency/broker=kfake/config=default", "p99_ms"}, metric{}, "", atMost(5)},
	{"relay commit → ack p99 ms at 5,000 rows/s, Apache Kafka", metric{"BenchmarkRelayLatency/broker=apache/config=default", "p99_ms"}, metric{}, "", atMost(15)},
	{"relay commit → ack p99 ms at 5,000 rows/s, embedded broker, 10 ms poll", metric{"BenchmarkRelayLatency/broker=kfake/config=poll10ms", "p99_ms"}, metric{}, "", nil},
	{"relay commit → ack p99 ms at 5,000 rows/s, Apache Kafka, 10 ms poll", metric{"BenchmarkRelayLatency/broker=apache/config=poll10ms", "p99_ms"}, metric{}, "", nil},
	{"relay rows/s", metric{"BenchmarkRelay", "relay_rows/s"},
		metric{"BenchmarkRelay", "raw_rows/s"}, "raw claim + produce", ratioAtLeast(0.5)},
	{"relay rows/s vs Watermill's SQL forwarder", metric{"BenchmarkRelayVsWatermillForwarder", "relay_rows/s"},
		metric{"BenchmarkRelayVsWatermillForwarder", "forwarder_rows/s"}, "watermill-sql forwarder", ratioAtLeast(10)},
	{"event-store appends, 1 event, events/s", metric{"BenchmarkAppend/eventstore/events=1", "events/s"},
		metric{"BenchmarkAppend/raw-pgx/events=1", "events/s"}, "raw pgx INSERT", ratioAtLeast(0.8)},
	{"event-store appends, 100 events, events/s", metric{"BenchmarkAppend/eventstore/events=100", "events/s"},
		metric{"BenchmarkAppend/raw-pgx/events=100", "events/s"}, "raw pgx INSERT", ratioAtLeast(0.7)},
	{"projector catch-up events/s", metric{"BenchmarkProjectorCatchUp/runner", "events/s"},
		metric{"BenchmarkProjectorCatchUp/raw-pgx", "events/s"}, "raw pgx read + write", nil},
	{"outbox writes, 1 row, rows/s", metric{"BenchmarkWrite/outbox/batch=1", "rows/s"},
		metric{"BenchmarkWrite/raw-pgx/batch=1", "rows/s"}, "raw pgx INSERT", nil},
	{"outbox writes, 100 rows, rows/s", metric{"BenchmarkWrite/outbox/batch=100", "rows/s"},
		metric{"BenchmarkWrite/raw-pgx/batch=100", "rows/s"}, "raw pgx INSERT", nil},
	{"log reads, batches of 500, rows/s", metric{"BenchmarkReadBatch/batch=500", "rows/s"},
		metric{"BenchmarkReadBatch/baseline-by-position/batch=500", "rows/s"}, "read by position (not gap-safe)", nil},
	{"publish batches of 100, msgs/s", metric{"BenchmarkPublishVsWatermillKafka/batch=100/goroutines=1", "dtx_msgs/s"},
		metric{"BenchmarkPublishVsWatermillKafka/batch=100/goroutines=1", "wmkafka_msgs/s"}, "watermill-kafka", nil},
	{"publish 1 message from 16 goroutines, msgs/s", metric{"BenchmarkPublishVsWatermillKafka/batch=1/goroutines=16", "dtx_msgs/s"},
		metric{"BenchmarkPublishVsWatermillKafka/batch=1/goroutines=16", "wmkafka_msgs/s"}, "watermill-kafka", nil},
}

// readBench reads `go test -bench` output and returns the values of every
// metric, one per result line (several with -count). Lines that are not
// benchmark results (logs, PASS, ok) are skipped.
func readBench(r io.Reader, name string) (map[metric][]float64, error) {
	out := map[metric][]float64{}
	rd := benchfmt.NewReader(r, name)
	for rd.Scan() {
		res, ok := rd.Result().(*benchfmt.Result)
		if !ok {
			continue // unit metadata, or a line that is no benchmark result
		}
		bench := benchName(res.Name)
		for _, v := range res.Values {
			// Values come in benchfmt's normalised units (ns/op as sec/op);
			// Orig* keep the unit the benchmark reported, when it differs.
			unit, value := v.Unit, v.Value
			if v.OrigUnit != "" {
				unit, value = v.OrigUnit, v.OrigValue
			}
			m := metric{bench, unit}
			out[m] = append(out[m], value)
		}
	}
	return out, rd.Err()
}

// benchName is a result's full name without its GOMAXPROCS suffix ("-2"),
// as go test prints it ("BenchmarkAppend/eventstore/events=1"; benchfmt's
// base name drops "Benchmark").
func benchName(n benchfmt.Name) string {
	base, parts := n.Parts()
	var b strings.Builder
	b.WriteString("Benchmark")
	b.Write(base)
	for _, p := range parts {
		if bytes.HasPrefix(p, []byte("-")) {
			continue
		}
		b.Write(p)
	}
	return b.String()
}

// median of vs, NaN when there are none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// trim formats v with three significant digits at most below 100, and as
// an integer above.
func trim(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// report writes one Markdown table: every figure, its baseline, their
// ratio, the goal and whether it is met. It returns how many figures were
// missing from the results.
func report(w io.Writer, results map[metric][]float64) int {
	fmt.Fprintln(w, "| figure | dtx | baseline (same run) | ratio | goal | met |")
	fmt.Fprintln(w, "|---|--:|---|--:|---|---|")
	missing := 0
	for _, f := range figures {
		v := median(results[f.value])
		if math.IsNaN(v) {
			missing++
		}
		ratio := math.NaN()
		baseCol := "—"
		if f.baseline != (metric{}) {
			base := median(results[f.baseline])
			ratio = v / base
			baseCol = trim(base) + " " + f.baseName
		}
		goalCol, met := "—", "—"
		if f.goal != nil {
			goalCol = f.goal.String()
			x := v
			if f.goal.ratio {
				x = ratio
			}
			switch {
			case math.IsNaN(x):
				met = "not measured"
			case f.goal.met(x):
				met = "yes"
			default:
				met = "no"
			}
		}
		if math.IsNaN(v) && f.goal == nil {
			met = "not measured"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", f.what, trim(v), baseCol, trim(ratio), goalCol, met)
	}
	return missing
}

// runBench runs `dtx-dev bench report`.
func runBench(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "report" {
		fmt.Fprintln(stderr, "dtx-dev bench: the only command is report")
		return errUsage
	}
	fs := flag.NewFlagSet("bench report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: dtx-dev bench report [FILE...]\n\n"+
			"Print one table of the benchmark figures read from FILEs (or standard input), output of\n"+
			"`go test -bench`: each figure, its baseline measured in the same run, the ratio, the goal,\n"+
			"and whether it is met. The median is taken when a benchmark ran several times (-count).\n"+
			"A missed goal is reported, never an error; a figure that did not run is \"not measured\".")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	results := map[metric][]float64{}
	add := func(r io.Reader, name string) error {
		got, err := readBench(r, name)
		if err != nil {
			return fmt.Errorf("dtx-dev bench report: %s: %w", name, err)
		}
		for m, vs := range got {
			results[m] = append(results[m], vs...)
		}
		return nil
	}
	if fs.NArg() == 0 {
		if err := add(os.Stdin, "<stdin>"); err != nil {
			return err
		}
	}
	for _, name := range fs.Args() {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("dtx-dev bench report: %w", err)
		}
		err = add(f, name)
		_ = f.Close()
		if err != nil {
			return err
		}
	}
	if len(results) == 0 {
		return errors.New("dtx-dev bench report: no benchmark results in the input")
	}
	if missing := report(stdout, results); missing > 0 {
		fmt.Fprintf(stdout, "\n%d of %d figures were not measured (their benchmarks did not run).\n", missing, len(figures))
	}
	return nil
}
