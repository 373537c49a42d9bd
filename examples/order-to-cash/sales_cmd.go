package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/vextrus/dtx/pkg/telemetry"
)

// salesAPICommand serves the sales API until ctx ends, and keeps its
// order-status read model up to date meanwhile.
func salesAPICommand(ctx context.Context, fs *flag.FlagSet, args []string, c *common, out io.Writer) error {
	var addr, topic string
	fs.StringVar(&addr, "addr", "127.0.0.1:8095", "address the HTTP API listens on")
	fs.StringVar(&topic, "topic", DefaultTopics().SalesEvents, "topic of the sales events (the saga's trigger topic)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("addr: %q: %w", addr, err)
	}
	pool, _, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	logger := slog.New(slog.NewTextHandler(out, nil))
	// Traces follow the standard OTEL_* variables (none unless set); the
	// spans still buffered are flushed when the API stops.
	shutdownTracing, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "example-o2c-sales-api", Logger: logger})
	if err != nil {
		return err
	}
	defer func() {
		flush, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer done()
		if err := shutdownTracing(flush); err != nil {
			logger.Warn("sales api: flush traces", "err", err)
		}
	}()
	api, err := NewSalesAPI(SalesAPIConfig{Pool: pool, Schema: c.schema, ExampleSchema: c.exampleSchema,
		SalesEventsTopic: topic, Logger: logger})
	if err != nil {
		return err
	}
	if err := api.Setup(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("addr: %w", err)
	}
	srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second}
	var (
		wg      sync.WaitGroup
		projErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() {
		if err := api.RunProjection(ctx); err != nil && ctx.Err() == nil {
			projErr = fmt.Errorf("order-status projection: %w", err)
			cancel()
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		shut, done := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer done()
		_ = srv.Shutdown(shut)
	})
	logger.Info("sales api: listening", "addr", ln.Addr().String(), "schema", c.schema,
		"example_schema", c.exampleSchema, "topic", topic)
	err = srv.Serve(ln)
	cancel()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, projErr)
}
