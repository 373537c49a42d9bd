package middleware

import (
	"net/http"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// HeaderHTTPCorrelationID is the HTTP header that carries a request's
// correlation id, in and out.
const HeaderHTTPCorrelationID = "X-Correlation-ID"

// maxCorrelationIDLen is the longest correlation id HTTP takes from a
// request; a longer one is replaced.
const maxCorrelationIDLen = 128

// HTTP is net/http middleware for the edge of a business transaction: the
// request that starts it, such as POST /orders. For each request it
//
//   - continues the caller's trace: the W3C traceparent and tracestate
//     headers are read with the global propagator (otel.GetTextMapPropagator)
//     and a server span "<method> <route>" is started with the global
//     TracerProvider (a no-op one until telemetry.Setup or your own SDK
//     installs one);
//   - takes the correlation id of the X-Correlation-ID header, or creates
//     one (a UUID) when the header is missing or not 1 to 128 bytes of
//     printable ASCII without spaces, and echoes it in the response's
//     X-Correlation-ID header;
//   - puts both on the request's context (WithCorrelationID), so that every
//     message the handler writes to the outbox, or sends through pkg/cqrs,
//     carries the correlation id and continues the trace.
func HTTP(next http.Handler) http.Handler {
	tracer := otel.Tracer(ScopeName)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		route := r.Pattern
		if route == "" {
			route = r.URL.Path
		}
		ctx, span := tracer.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
		defer span.End()

		id := r.Header.Get(HeaderHTTPCorrelationID)
		if !validCorrelationID(id) {
			id = uuid.NewString()
		}
		span.SetAttributes(attribute.String("dtx.correlation_id", id))
		w.Header().Set(HeaderHTTPCorrelationID, id)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r.WithContext(WithCorrelationID(ctx, id)))
		span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
		if sw.status >= http.StatusInternalServerError {
			span.SetStatus(codes.Error, http.StatusText(sw.status))
		}
	})
}

// validCorrelationID reports whether id may be taken from a request.
func validCorrelationID(id string) bool {
	if id == "" || len(id) > maxCorrelationIDLen {
		return false
	}
	for i := range len(id) {
		if c := id[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status  int
	written bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.written {
		w.status, w.written = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.written = true
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
