package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/vextrus/dtx/internal/otlpsink"
)

func runTraces(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, "Usage: dtx-dev traces serve|show [flags]\n")
		return errUsage
	}
	switch args[0] {
	case "serve":
		return runTracesServe(ctx, args[1:], stdout, stderr)
	case "show":
		return runTracesShow(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "dtx-dev traces: unknown command %q: want serve or show\n", args[0])
		return errUsage
	}
}

// runTracesServe receives OTLP/HTTP traces on --addr and appends each span
// to --file as a JSON line, until ctx ends.
func runTracesServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dtx-dev traces serve", "dtx-dev traces serve --file FILE [--addr 127.0.0.1:4318]", stderr)
	addr := fs.String("addr", "127.0.0.1:4318", "`host:port` of the OTLP/HTTP endpoint (POST /v1/traces)")
	file := fs.String("file", "", "`path` of the JSON-lines file the spans are appended to (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *file == "" {
		fmt.Fprint(stderr, "dtx-dev traces serve: --file is required\n")
		fs.Usage()
		return errUsage
	}
	f, err := os.OpenFile(*file, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644) //nolint:gosec // a development file the user names
	if err != nil {
		return fmt.Errorf("traces serve: --file: %w", err)
	}
	defer f.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("traces serve: --addr: %w", err)
	}
	sink := otlpsink.New(f)
	srv := &http.Server{Handler: sink, ReadHeaderTimeout: 10 * time.Second}
	logger := slog.New(slog.NewTextHandler(stdout, nil))
	logger.Info("dtx-dev traces: receiving OTLP/HTTP traces", "endpoint", "http://"+ln.Addr().String(), "file", *file)
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("traces serve: %w", err)
	}
	logger.Info("dtx-dev traces: stopped", "spans", len(sink.Spans()))
	return sink.Err()
}

// runTracesShow prints one trace of a file that serve wrote, as a tree.
func runTracesShow(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dtx-dev traces show", "dtx-dev traces show --file FILE --trace TRACE_ID", stderr)
	file := fs.String("file", "", "`path` of the JSON-lines file serve wrote (required)")
	traceID := fs.String("trace", "", "the trace's id, 32 hex digits (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *file == "" || *traceID == "" {
		fmt.Fprint(stderr, "dtx-dev traces show: --file and --trace are required\n")
		fs.Usage()
		return errUsage
	}
	f, err := os.Open(*file)
	if err != nil {
		return fmt.Errorf("traces show: --file: %w", err)
	}
	defer f.Close()
	all, err := otlpsink.ReadJSONLines(f)
	if err != nil {
		return fmt.Errorf("traces show: %s: %w", *file, err)
	}
	spans := otlpsink.TraceOf(all, *traceID)
	if len(spans) == 0 {
		return fmt.Errorf("traces show: trace %s: no span among the %d in %s", *traceID, len(all), *file)
	}
	services := otlpsink.Services(spans)
	fmt.Fprintf(stdout, "trace %s: %d spans from %d services %v\n", *traceID, len(spans), len(services), services)
	otlpsink.WriteTree(stdout, spans)
	return nil
}
