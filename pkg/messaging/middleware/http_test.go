package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

// Not parallel: it installs the global TracerProvider and propagator, as
// telemetry.Setup does, and puts the previous ones back.
func TestHTTPContinuesTheTraceAndCarriesTheCorrelationID(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTracerProvider(prevTP); otel.SetTextMapPropagator(prevProp) })

	// What the handler writes: a message, stamped and traced as the outbox
	// stamps the messages it writes.
	var written *message.Message
	mux := http.NewServeMux()
	mux.Handle("POST /orders", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		env, err := messaging.NewEnvelope("sales.order.placed", "/sales", map[string]any{"order_id": "o-1"})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		written, err = env.ToMessage()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		middleware.StampContext(r.Context(), written)
		middleware.InjectTraceContext(r.Context(), written)
		w.WriteHeader(http.StatusCreated)
	}))
	h := middleware.HTTP(mux)

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req := httptest.NewRequest(http.MethodPost, "/orders", nil)
	req.Header.Set("traceparent", parent)
	req.Header.Set(middleware.HeaderHTTPCorrelationID, "checkout-42")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	require.Equal(t, http.StatusCreated, w.Code)
	require.Equal(t, "checkout-42", w.Header().Get(middleware.HeaderHTTPCorrelationID), "the id is echoed")

	spans := rec.Ended()
	require.Len(t, spans, 1)
	s := spans[0]
	require.Equal(t, trace.SpanKindServer, s.SpanKind())
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", s.SpanContext().TraceID().String(), "the caller's trace goes on")
	require.Equal(t, "00f067aa0ba902b7", s.Parent().SpanID().String(), "the server span's parent is the caller's span")

	require.NotNil(t, written)
	require.Equal(t, "checkout-42", written.Metadata.Get(messaging.HeaderCorrelationID), "what the handler writes carries the correlation id")
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-"+s.SpanContext().SpanID().String()+"-01",
		written.Metadata.Get(messaging.HeaderTraceParent), "and continues the trace from the server span")

	// No id, or a bad one: a new one is made, and echoed.
	for _, bad := range []string{"", "has space", string(make([]byte, 200))} {
		req := httptest.NewRequest(http.MethodPost, "/orders", nil)
		if bad != "" {
			req.Header.Set(middleware.HeaderHTTPCorrelationID, bad)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		got := w.Header().Get(middleware.HeaderHTTPCorrelationID)
		require.Len(t, got, 36, "a UUID replaces %q", bad)
		require.Equal(t, got, written.Metadata.Get(messaging.HeaderCorrelationID))
	}
}
