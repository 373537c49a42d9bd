package otlpsink_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/internal/otlpsink"
)

// TestSpansOfTheOTLPExporterAreKept exports a trace with the SDK's own
// OTLP/HTTP exporter (gzip on) and reads it back from memory and from the
// JSON lines.
func TestSpansOfTheOTLPExporterAreKept(t *testing.T) {
	t.Parallel()
	var lines bytes.Buffer
	sink := otlpsink.New(&lines)
	srv := httptest.NewServer(sink)
	t.Cleanup(srv.Close)

	ctx := context.Background()
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(srv.URL+"/v1/traces"),
		otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
	require.NoError(t, err)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName("shop"))))
	tr := tp.Tracer("test")
	ctx, root := tr.Start(ctx, "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
	_, child := tr.Start(ctx, "send sales.order.place", trace.WithAttributes(attribute.Int("n", 3)))
	child.End()
	root.End()
	require.NoError(t, tp.Shutdown(ctx))

	spans := sink.Trace(root.SpanContext().TraceID().String())
	require.Len(t, spans, 2)
	require.Equal(t, "POST /orders", spans[0].Name)
	require.Equal(t, "server", spans[0].Kind)
	require.Equal(t, []string{"shop"}, otlpsink.Services(spans))
	require.Empty(t, spans[0].ParentSpanID)
	require.Equal(t, spans[0].SpanID, spans[1].ParentSpanID)
	require.Equal(t, "3", spans[1].Attributes["n"])

	read, err := otlpsink.ReadJSONLines(&lines)
	require.NoError(t, err)
	require.ElementsMatch(t, sink.Spans(), read)

	var tree strings.Builder
	otlpsink.WriteTree(&tree, spans)
	require.Regexp(t, `^POST /orders  \[shop, server, .*\]\n  send sales.order.place  \[shop, internal, .*\]\n$`, tree.String())
}

func TestBadRequestsKeepNothing(t *testing.T) {
	t.Parallel()
	sink := otlpsink.New(nil)
	srv := httptest.NewServer(sink)
	t.Cleanup(srv.Close)
	for _, c := range []struct {
		method, path, body string
		code               int
	}{
		{http.MethodPost, "/v1/traces", "not protobuf \xff\xff", http.StatusBadRequest},
		{http.MethodGet, "/v1/traces", "", http.StatusMethodNotAllowed},
		{http.MethodPost, "/v1/metrics", "", http.StatusNotFound},
	} {
		req, err := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-protobuf")
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		require.NoError(t, res.Body.Close())
		require.Equal(t, c.code, res.StatusCode, "%s %s", c.method, c.path)
	}
	require.Empty(t, sink.Spans())
}
