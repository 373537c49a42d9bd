// Package service is the process plumbing every dtx binary shares.
//
// # Configuration
//
// Each setting is a flag --some-name that the environment variable
// DTX_SOME_NAME also sets; a flag given on the command line wins over the
// environment, which wins over the default. --help lists every setting with
// its variable and default. Invalid settings stop the process with exit code 2
// and a message naming each offending setting; passwords in connection
// strings are redacted from --help, logs and errors.
//
// # Admin endpoints
//
// An HTTP server on --admin-addr serves:
//   - /healthz: 200 while the process runs (liveness).
//   - /readyz: 200 with a JSON report only while PostgreSQL answers a ping
//     and a Kafka broker answers a metadata request, each within
//     --ready-timeout, every check the work loop registered passes (the
//     orchestrator's "topics": each topic it uses exists; a check the work
//     loop has not registered yet reads "not checked yet"), and the process
//     is not draining; 503 otherwise, with the failing check's reason
//     (readiness). Checks run on each request; nothing is cached.
//   - /metrics: Prometheus text format (Go runtime, process, dtx_build_info,
//     dtx_dependency_up, and what the binary registers).
//
// # Lifecycle
//
// Logs are log/slog records (JSON by default) on standard error, each with
// the binary and instance. With --migrate the process waits for PostgreSQL
// and applies pending migrations (under an advisory lock, so replicas may
// start together) before its work loop starts. On the first SIGTERM or
// SIGINT, /readyz turns 503, the work loop's context is cancelled and the
// process waits for it up to --drain-timeout: it exits 0 when the loop
// returned in time, 1 when it overran or failed.
package service
