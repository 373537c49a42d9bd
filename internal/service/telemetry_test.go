package service

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// A binary traces from the OTEL_* environment and exports its last spans
// when it drains, under the service name dtx-<binary>. Not parallel: it
// sets the process's environment, which OpenTelemetry reads.
func TestBinaryExportsItsSpansWhenItDrains(t *testing.T) {
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() { otel.SetTracerProvider(prevTP); otel.SetTextMapPropagator(prevProp) })
	var mu sync.Mutex
	spans := map[string]string{} // span name -> service.name
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range req.GetResourceSpans() {
			service := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					spans[s.GetName()] = service
				}
			}
		}
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
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
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, map[string]string{"work.item": "dtx-trace-test"}, spans, r.logs.String())
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
