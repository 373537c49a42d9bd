// Package telemetry sets up OpenTelemetry tracing for a service from the
// standard OTEL_* environment, in one call: Setup installs the global
// TracerProvider and the W3C propagator (trace context and baggage) that
// dtx's middleware, outbox, orchestrator and participants use, and returns
// the function that flushes what is buffered. Every dtx binary calls it at
// start and flushes on drain; a service built on dtx calls it from main.
//
// # The environment
//
//   - OTEL_TRACES_EXPORTER: otlp, console or none (lower case, one
//     exporter, as the OpenTelemetry exporter registry reads it). When it
//     is unset, traces
//     are exported over OTLP if an endpoint is set
//     (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
//     and not at all otherwise: a process without a collector neither
//     blocks nor logs export errors.
//   - OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _PROTOCOL (http/protobuf, the
//     default, or grpc), _HEADERS, _TIMEOUT: the OTLP exporter's settings.
//   - OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES: the resource;
//     Config.ServiceName is the service name when OTEL_SERVICE_NAME is
//     unset.
//   - OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG: the sampler
//     (parentbased_always_on by default) and its ratio (0 to 1).
//   - OTEL_BSP_*: the batch span processor's delay, queue and batch sizes.
//   - OTEL_PROPAGATORS is not read: the propagator is always W3C trace
//     context and baggage, which dtx writes into every record it produces.
//
// # Guarantees
//
//   - With tracing on, spans are batched and exported in the background;
//     the shutdown function Setup returns exports what is buffered, within
//     its context's deadline, and stops the exporter.
//   - With tracing off, the global TracerProvider stays a no-op, but the
//     propagator is installed all the same: trace context that arrives
//     with a request or a record is carried on to what it causes.
//
// # How it fails
//
//   - An OTEL_TRACES_EXPORTER other than otlp, console or none, an OTLP
//     protocol other than http/protobuf or grpc, an unknown sampler or a
//     ratio outside 0..1, OTEL_RESOURCE_ATTRIBUTES that is not
//     key=value,..., or an exporter that cannot be built from its
//     variables, fails Setup with an error naming the variable (CheckEnv
//     reports the same without Setup); nothing is installed then.
//   - Spans that cannot be exported (a collector down) are dropped by the
//     batch processor after its retries; the OpenTelemetry error handler
//     logs them (Config.Logger, rate-limited). They never block the
//     service.
package telemetry
