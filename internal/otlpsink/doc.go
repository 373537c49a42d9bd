// Package otlpsink is a minimal OpenTelemetry collector for development and
// tests: an OTLP/HTTP traces endpoint (POST /v1/traces, protobuf or JSON,
// gzip or not) that keeps every span it receives in memory, and optionally
// appends each as one JSON line to a writer. `dtx-dev traces` serves one,
// so that `make demo` can show a trace across the binaries without a
// collector; the tests use it to assert what the binaries export.
//
// # Guarantees
//
//   - A request is acknowledged (200, an empty ExportTraceServiceResponse)
//     only once its spans are kept and written; a span is never kept twice
//     for one request.
//   - Spans keep what a test or a reader of a trace needs: trace, span and
//     parent ids, name, kind, the resource's service.name, start and end,
//     status, string attributes and links.
//
// # How it fails
//
// A body that is not an ExportTraceServiceRequest, another path or another
// method is answered 400, 404 or 405, and nothing is kept. A write error of
// the JSON-lines writer is answered 500 (the exporter retries) and returned
// by Err. Nothing is ever dropped silently: the sink has no limit, so it is
// for development and tests, never for production traffic.
package otlpsink
