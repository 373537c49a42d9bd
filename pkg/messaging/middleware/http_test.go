package middleware_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

const (
	callerTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan   = "00f067aa0ba902b7"
	callerParent = "00-" + callerTrace + "-" + callerSpan + "-01"
)

// httpFixture is a handler behind middleware.HTTP that writes one message
// per request, stamped and traced as the outbox stamps what it writes.
type httpFixture struct {
	rec     *tracetest.SpanRecorder // nil: no TracerProvider installed
	handler http.Handler
	written *message.Message
}

// setupHTTP installs the W3C propagator and, if traced, a recording
// TracerProvider, as telemetry.Setup does, and puts the previous ones back.
// Tests that use it are not parallel.
func setupHTTP(t *testing.T, traced bool) *httpFixture {
	t.Helper()
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() { otel.SetTracerProvider(prevTP); otel.SetTextMapPropagator(prevProp) })
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	f := &httpFixture{}
	if traced {
		f.rec = tracetest.NewSpanRecorder()
		otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(f.rec)))
	} else {
		otel.SetTracerProvider(noop.NewTracerProvider())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		env, err := messaging.NewEnvelope("sales.order.placed", "/sales", map[string]any{"order_id": r.PathValue("id")})
		if err == nil {
			f.written, err = env.ToMessage()
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		middleware.StampContext(r.Context(), f.written)
		middleware.InjectTraceContext(r.Context(), f.written)
		w.WriteHeader(http.StatusCreated)
	})
	f.handler = middleware.HTTP(mux)
	return f
}

// do sends POST /orders/o-1 with the given headers and returns the answer.
func (f *httpFixture) do(t *testing.T, headers map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	f.written = nil
	req := httptest.NewRequest(http.MethodPost, "/orders/o-1", nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.handler.ServeHTTP(w, req)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	require.NotNil(t, f.written)
	return w
}

func TestHTTPTakesTheCallersCorrelationID(t *testing.T) {
	f := setupHTTP(t, true)
	w := f.do(t, map[string]string{middleware.HeaderHTTPCorrelationID: "checkout-42"})
	require.Equal(t, "checkout-42", w.Header().Get(middleware.HeaderHTTPCorrelationID), "the id is echoed")
	require.Equal(t, "checkout-42", f.written.Metadata.Get(messaging.HeaderCorrelationID),
		"what the handler writes carries the caller's correlation id")
}

func TestHTTPCreatesACorrelationIDWhenThereIsNone(t *testing.T) {
	f := setupHTTP(t, true)
	w := f.do(t, nil)
	got := w.Header().Get(middleware.HeaderHTTPCorrelationID)
	_, err := uuid.Parse(got)
	require.NoError(t, err, "a UUID is made: %q", got)
	require.Equal(t, got, f.written.Metadata.Get(messaging.HeaderCorrelationID))
	require.NotEqual(t, got, f.do(t, nil).Header().Get(middleware.HeaderHTTPCorrelationID), "one per request")
}

// Not parallel: it replaces slog's default logger to read the debug line.
func TestHTTPReplacesABadCorrelationID(t *testing.T) {
	f := setupHTTP(t, true)
	var logs bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prev) })

	for _, bad := range []string{"has space", "tab\there", "caf\u00e9", "nul\x00", strings.Repeat("x", 129)} {
		logs.Reset()
		w := f.do(t, map[string]string{middleware.HeaderHTTPCorrelationID: bad})
		got := w.Header().Get(middleware.HeaderHTTPCorrelationID)
		_, err := uuid.Parse(got)
		require.NoError(t, err, "a UUID replaces %q", bad)
		require.Equal(t, got, f.written.Metadata.Get(messaging.HeaderCorrelationID))
		require.Contains(t, logs.String(), "level=DEBUG", "the replacement is logged at debug: %q", bad)
		require.Contains(t, logs.String(), "X-Correlation-ID replaced")
	}
	// The longest id taken, and one of every printable character.
	for _, good := range []string{strings.Repeat("x", 128), "a!~#%&'*+-.^_`|0:Z/=?@[]{}()<>,;\"\\"} {
		w := f.do(t, map[string]string{middleware.HeaderHTTPCorrelationID: good})
		require.Equal(t, good, w.Header().Get(middleware.HeaderHTTPCorrelationID))
	}
}

func TestHTTPContinuesTheCallersTrace(t *testing.T) {
	f := setupHTTP(t, true)
	f.do(t, map[string]string{"traceparent": callerParent, "tracestate": "vendor=v1"})

	spans := f.rec.Ended()
	require.Len(t, spans, 1)
	s := spans[0]
	require.Equal(t, trace.SpanKindServer, s.SpanKind())
	require.Equal(t, "POST /orders/{id}", s.Name(), "named after the route, not the path")
	require.Equal(t, callerTrace, s.SpanContext().TraceID().String(), "the caller's trace goes on")
	require.Equal(t, callerSpan, s.Parent().SpanID().String(), "the server span's parent is the caller's span")
	require.True(t, s.Parent().IsRemote())
	require.Equal(t, "00-"+callerTrace+"-"+s.SpanContext().SpanID().String()+"-01",
		f.written.Metadata.Get(messaging.HeaderTraceParent), "what the handler writes continues from the server span")
	require.Equal(t, "vendor=v1", f.written.Metadata.Get(messaging.HeaderTraceState))

	// Without a caller's trace, the request starts one.
	f.do(t, nil)
	spans = f.rec.Ended()
	require.Len(t, spans, 2)
	require.False(t, spans[1].Parent().IsValid(), "a root span")
	require.Equal(t, "00-"+spans[1].SpanContext().TraceID().String()+"-"+spans[1].SpanContext().SpanID().String()+"-01",
		f.written.Metadata.Get(messaging.HeaderTraceParent))
}

// With no TracerProvider installed (tracing off), the caller's trace
// context is still carried on to what the handler writes.
func TestHTTPCarriesTheTraceOnWithoutATracerProvider(t *testing.T) {
	f := setupHTTP(t, false)
	f.do(t, map[string]string{"traceparent": callerParent})
	require.Equal(t, callerParent, f.written.Metadata.Get(messaging.HeaderTraceParent))
}

// HTTP inside a mux's route names the span after that route too.
func TestHTTPInsideAMuxNamesTheSpanAfterTheRoute(t *testing.T) {
	f := setupHTTP(t, true)
	mux := http.NewServeMux()
	mux.Handle("GET /orders/{id}", middleware.HTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	})))
	mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/orders/o-9", nil))
	spans := f.rec.Ended()
	require.Len(t, spans, 1)
	require.Equal(t, "GET /orders/{id}", spans[0].Name())
	require.Equal(t, "Error", spans[0].Status().Code.String(), "a 5xx answer marks the span as failed")
}
