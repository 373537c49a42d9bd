package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/vextrus/dtx/pkg/telemetry"
)

// otlpReceiver is an OTLP/HTTP traces endpoint that keeps what it gets.
type otlpReceiver struct {
	mu    sync.Mutex
	spans map[string]string // span name -> service.name
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req coltrace.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				o.spans[s.GetName()] = service
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func TestSpansReachAnOTLPEndpointOnShutdown(t *testing.T) {
	rcv := &otlpReceiver{spans: map[string]string{}}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_SERVICE_NAME", "")

	shutdown, err := telemetry.Setup(t.Context(), telemetry.Config{ServiceName: "billing"})
	require.NoError(t, err)
	_, span := otel.Tracer("test").Start(context.Background(), "invoice.create")
	require.True(t, span.SpanContext().IsSampled(), "spans are recorded and sampled")
	span.End()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, shutdown(ctx), "shutdown flushes")
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	require.Equal(t, map[string]string{"invoice.create": "billing"}, rcv.spans)
	require.NoError(t, shutdown(ctx), "a second shutdown does nothing")
}

func TestNoEndpointExportsNothingButPropagates(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	name, err := telemetry.ExporterName()
	require.NoError(t, err)
	require.Equal(t, telemetry.ExporterNone, name)
	shutdown, err := telemetry.Setup(t.Context(), telemetry.Config{ServiceName: "billing"})
	require.NoError(t, err)
	require.NoError(t, shutdown(t.Context()))

	// A traceparent that arrives is carried on.
	in := propagation.MapCarrier{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	ctx := otel.GetTextMapPropagator().Extract(context.Background(), in)
	out := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, out)
	require.Equal(t, in["traceparent"], out["traceparent"])
}

func TestExporterFromTheEnvironment(t *testing.T) {
	for _, tc := range []struct{ exporter, endpoint, want, err string }{
		{"", "http://collector:4318", telemetry.ExporterOTLP, ""},
		{"console", "", telemetry.ExporterConsole, ""},
		{" OTLP ", "", telemetry.ExporterOTLP, ""},
		{"none", "http://collector:4318", telemetry.ExporterNone, ""},
		{"jaeger", "", "", `OTEL_TRACES_EXPORTER: "jaeger" is not one of otlp, console, none`},
	} {
		t.Setenv("OTEL_TRACES_EXPORTER", tc.exporter)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", tc.endpoint)
		t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
		got, err := telemetry.ExporterName()
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err)
			_, err = telemetry.Setup(t.Context(), telemetry.Config{ServiceName: "x"})
			require.ErrorContains(t, err, tc.err, "Setup fails the same way")
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, got, "%+v", tc)
	}
	_, err := telemetry.Setup(t.Context(), telemetry.Config{})
	require.ErrorContains(t, err, "ServiceName")
}
