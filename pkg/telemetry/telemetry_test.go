package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/vextrus/dtx/internal/otlpsink"
	"github.com/vextrus/dtx/pkg/telemetry"
)

// names maps each span's name to its service.
func names(spans []otlpsink.Span) map[string]string {
	out := map[string]string{}
	for _, s := range spans {
		out[s.Name] = s.Service
	}
	return out
}

func TestSpansReachAnOTLPEndpointOnShutdown(t *testing.T) {
	keepGlobals(t)
	clearEnv(t)
	rcv := otlpsink.New(nil)
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
	require.Equal(t, map[string]string{"invoice.create": "billing"}, names(rcv.Spans()))
	require.NoError(t, shutdown(ctx), "a second shutdown does nothing")
}

func TestNoEndpointExportsNothingButPropagates(t *testing.T) {
	keepGlobals(t)
	clearEnv(t)
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
	for _, tc := range []struct{ exporter, endpoint, want string }{
		{"", "http://collector:4318", telemetry.ExporterOTLP},
		{"", "", telemetry.ExporterNone},
		{"console", "", telemetry.ExporterConsole},
		{"otlp", "", telemetry.ExporterOTLP},
		{"none", "http://collector:4318", telemetry.ExporterNone},
	} {
		t.Setenv("OTEL_TRACES_EXPORTER", tc.exporter)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", tc.endpoint)
		t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
		got, err := telemetry.ExporterName()
		require.NoError(t, err)
		require.Equal(t, tc.want, got, "%+v", tc)
	}
	_, err := telemetry.Setup(t.Context(), telemetry.Config{})
	require.ErrorContains(t, err, "ServiceName")
}

// Each value Setup cannot use fails it with an error naming the variable,
// and installs nothing.
func TestBadEnvironmentNamesTheVariable(t *testing.T) {
	keepGlobals(t)
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"OTEL_TRACES_EXPORTER": "jaeger"}, `OTEL_TRACES_EXPORTER: "jaeger" is not one of otlp, console, none`},
		{map[string]string{"OTEL_TRACES_EXPORTER": " OTLP "}, `OTEL_TRACES_EXPORTER: " OTLP " is not one of`},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp,console"}, `OTEL_TRACES_EXPORTER: "otlp,console"`},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
			`OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" is not one of http/protobuf, grpc`},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"},
			`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "udp"`},
		{map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"}, `OTEL_TRACES_SAMPLER: "sometimes" is not one of`},
		{map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
			`OTEL_TRACES_SAMPLER_ARG: "1.5" is not a ratio between 0 and 1`},
		{map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
			`OTEL_TRACES_SAMPLER_ARG: "half"`},
		{map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment"}, `OTEL_RESOURCE_ATTRIBUTES:`},
	} {
		clearEnv(t)
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		require.ErrorContains(t, telemetry.CheckEnv(), tc.want, "%v", tc.env)
		before := otel.GetTracerProvider()
		_, err := telemetry.Setup(t.Context(), telemetry.Config{ServiceName: "x"})
		require.ErrorContains(t, err, tc.want, "Setup fails the same way: %v", tc.env)
		require.Equal(t, before, otel.GetTracerProvider(), "nothing is installed: %v", tc.env)
	}

	// Values the SDK takes are not refused.
	clearEnv(t)
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=billing")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	require.NoError(t, telemetry.CheckEnv())
}

// With OTEL_TRACES_EXPORTER=console, spans are written to standard output.
// The console exporter holds the process's standard output, so a child
// process (consoleChild, in TestMain) does the tracing.
func TestConsoleWritesSpansToStandardOutput(t *testing.T) {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envConsoleChild+"=1", "OTEL_TRACES_EXPORTER=console",
		"OTEL_SERVICE_NAME=", "OTEL_RESOURCE_ATTRIBUTES=", "OTEL_TRACES_SAMPLER=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())

	var span struct {
		Name     string
		Resource []struct {
			Key   string
			Value struct{ Value any }
		}
	}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &span), "standard output: %s", stdout.String())
	require.Equal(t, "invoice.print", span.Name)
	service := ""
	for _, kv := range span.Resource {
		if kv.Key == "service.name" {
			service, _ = kv.Value.Value.(string)
		}
	}
	require.Equal(t, "billing", service, "the span's resource names the service")
}

// envConsoleChild makes the test binary run consoleChild instead of tests.
const envConsoleChild = "DTX_TELEMETRY_CONSOLE_CHILD"

// consoleChild sets up tracing from the environment, ends one span and
// flushes it; it returns the exit code.
func consoleChild() int {
	shutdown, err := telemetry.Setup(context.Background(), telemetry.Config{
		ServiceName: "billing", Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_, span := otel.Tracer("test").Start(context.Background(), "invoice.print")
	span.End()
	if err := shutdown(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// With OTEL_TRACES_EXPORTER=none, nothing reaches the endpoint that is set.
func TestNoneExportsNothing(t *testing.T) {
	keepGlobals(t)
	clearEnv(t)
	rcv := otlpsink.New(nil)
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)

	shutdown, err := telemetry.Setup(t.Context(), telemetry.Config{ServiceName: "billing"})
	require.NoError(t, err)
	_, span := otel.Tracer("test").Start(context.Background(), "invoice.create")
	require.False(t, span.IsRecording(), "no span is recorded")
	span.End()
	require.NoError(t, shutdown(t.Context()))
	require.Empty(t, rcv.Spans())
	require.Zero(t, rcv.Requests())
}

// otelVars are the variables these tests set; clearEnv empties them so
// that the environment the tests run in decides nothing.
var otelVars = []string{
	"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME",
	"OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
}

func clearEnv(t *testing.T) {
	t.Helper()
	for _, name := range otelVars {
		t.Setenv(name, "")
	}
}

// keepGlobals puts back the global TracerProvider, propagator and error
// handler that Setup replaces.
func keepGlobals(t *testing.T) {
	t.Helper()
	tp, prop := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() {
		if otel.GetTracerProvider() != tp {
			otel.SetTracerProvider(tp)
		}
		if otel.GetTextMapPropagator() != prop {
			otel.SetTextMapPropagator(prop)
		}
	})
}
