package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `dtx-dev: development helper for dtx (never for production)

Usage:
  dtx-dev kafka [--addr 127.0.0.1:9092] [--data-dir DIR] [--partitions N] [--log-level LEVEL]
      Run the embedded development Kafka broker (franz-go kfake) until SIGINT or SIGTERM.
  dtx-dev wait kafka [--brokers HOST:PORT[,HOST:PORT...]] [--timeout 90s]
      Wait until a metadata request to the brokers succeeds.
  dtx-dev wait postgres [--url URL] [--timeout 60s]
      Wait until SELECT 1 succeeds on the database.
  dtx-dev traces serve --file FILE [--addr 127.0.0.1:4318]
      Receive OTLP/HTTP traces and append each span to FILE as a JSON line.
  dtx-dev traces show --file FILE --trace TRACE_ID
      Print one trace of FILE as a tree of spans, with their services.
  dtx-dev records --topics T1,T2 --since TIME --header NAME [--brokers HOST:PORT,...]
      Count the records of the topics written since TIME that lack header NAME; fail if any does.
  dtx-dev bench report [FILE...]
      Print the figures of "go test -bench" output (FILEs or standard input) as one table:
      each beside its same-run baseline, the ratio, the goal and whether it is met.

Run "dtx-dev COMMAND -h" for the flags of one command.
`

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// errUsage marks a command line that could not be parsed; the flag package
// has already printed what was wrong.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the process exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "kafka":
		err = runKafka(ctx, args[1:], stdout, stderr)
	case "wait":
		err = runWait(ctx, args[1:], stdout, stderr)
	case "records":
		err = runRecords(ctx, args[1:], stdout, stderr)
	case "traces":
		err = runTraces(ctx, args[1:], stdout, stderr)
	case "bench":
		err = runBench(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "dtx-dev: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		return exitUsage
	default:
		fmt.Fprintf(stderr, "dtx-dev: %v\n", err)
		return exitFailure
	}
}

// newFlagSet returns a flag set that reports errors instead of exiting, with
// a usage text of synopsis followed by the flags.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args into fs and rejects positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	return nil
}
