package service

import (
	"bytes"
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"

	"github.com/vextrus/dtx/internal/otlpsink"
)

// A binary traces from the OTEL_* environment and exports its last spans
// when it drains, under the service name dtx-<binary>. Not parallel: it
// sets the process's environment, which OpenTelemetry reads.
func TestBinaryExportsItsSpansWhenItDrains(t *testing.T) {
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() { otel.SetTracerProvider(prevTP); otel.SetTextMapPropagator(prevProp) })
	sink := otlpsink.New(nil)
	collector := httptest.NewServer(sink)
	t.Cleanup(collector.Close)
	for _, name := range []string{"OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_TRACES_SAMPLER", "OTEL_RESOURCE_ATTRIBUTES"} {
		t.Setenv(name, "")
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	// The batch processor would hold the span for 5s: only the drain's
	// flush sends it before the process ends.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")

	traced := make(chan struct{})
	app := App{Name: "trace-test", DefaultAdminAddr: ":0", RunFunc: func(ctx context.Context, env *Env) error {
		_, span := otel.Tracer("test").Start(ctx, "work.item")
		span.End()
		close(traced)
		<-ctx.Done()
		return nil
	}}
	r := runApp(t, app, "30s")
	<-traced
	r.cancel() // the shutdown signal
	require.Equal(t, ExitOK, r.wait(), r.logs.String())
	spans := sink.Spans()
	require.Len(t, spans, 1, r.logs.String())
	require.Equal(t, "work.item", spans[0].Name)
	require.Equal(t, "dtx-trace-test", spans[0].Service)
}

// An OTEL_* value the binary cannot use stops it at start, exit 2, naming
// the variable. Not parallel: it sets the process's environment.
func TestBadTracingVariableIsInvalidConfiguration(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "jaeger")
	t.Setenv("OTEL_TRACES_SAMPLER", "sometimes")
	var stderr bytes.Buffer
	app := App{Name: "trace-test", DefaultAdminAddr: ":0", RunFunc: Idle("nothing")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.Equal(t, ExitUsage, Run(ctx, app, nil, envOf(nil), &bytes.Buffer{}, &stderr))
	require.Contains(t, stderr.String(), `OTEL_TRACES_EXPORTER: "jaeger"`)
	require.Contains(t, stderr.String(), `OTEL_TRACES_SAMPLER: "sometimes"`)
}
