package middleware

import (
	"log/slog"
	"net/http"
	"strings"

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
//     installs one; the trace context is carried on all the same). The route
//     is the http.ServeMux pattern that matched, whether the mux is inside
//     HTTP or HTTP is inside the mux;
//   - takes the correlation id of the X-Correlation-ID header, or creates
//     one (a UUID) when the header is missing or not 1 to 128 bytes of
//     printable ASCII without spaces (a replaced id is logged at debug
//     level with slog.Default), and echoes it in the response's
//     X-Correlation-ID header;
//   - puts both on the request's context (WithCorrelationID), so that every
//     message the handler writes to the outbox, or sends through pkg/cqrs,
//     carries the correlation id and continues the trace.
func HTTP(next http.Handler) http.Handler {
	tracer := otel.Tracer(ScopeName)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, httpSpanName(r.Method, r.Pattern), trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
		defer span.End()

		id := r.Header.Get(HeaderHTTPCorrelationID)
		if !validCorrelationID(id) {
			fresh := uuid.NewString()
			if id != "" {
				slog.DebugContext(ctx, "middleware: X-Correlation-ID replaced: not 1 to 128 printable ASCII characters without spaces",
					"got", truncate(id, 64), "got_len", len(id), "correlation_id", fresh)
			}
			id = fresh
		}
		span.SetAttributes(attribute.String("dtx.correlation_id", id))
		w.Header().Set(HeaderHTTPCorrelationID, id)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		req := r.WithContext(WithCorrelationID(ctx, id))
		next.ServeHTTP(sw, req)
		// A ServeMux inside sets the pattern it matched on the request it
		// was given: the span is named after the route, not the path.
		if r.Pattern == "" && req.Pattern != "" {
			span.SetName(httpSpanName(r.Method, req.Pattern))
			span.SetAttributes(attribute.String("http.route", route(req.Pattern)))
		}
		span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
		if sw.status >= http.StatusInternalServerError {
			span.SetStatus(codes.Error, http.StatusText(sw.status))
		}
	})
}

// httpSpanName is "<method> <route>", or the method alone while the route is
// unknown (a path would give every order its own span name).
func httpSpanName(method, pattern string) string {
	if pattern == "" {
		return method
	}
	return method + " " + route(pattern)
}

// route is a ServeMux pattern without its method: "POST /orders/{id}"
// gives "/orders/{id}".
func route(pattern string) string {
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		return strings.TrimSpace(pattern[i+1:])
	}
	return pattern
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
