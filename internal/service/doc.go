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
//     loop has not registered yet reads "not checked yet"), the start-up is
//     done, and the process is not draining; 503 otherwise, with the failing
//     check's reason (readiness). Checks run on each request; nothing is
//     cached. The "startup" check names the start-up step under way (waiting
//     for PostgreSQL, applying migrations or waiting for the migration lock
//     another replica holds, the work loop starting) and disappears once
//     migrations (with --migrate) are applied and the work loop has started:
//     a process is never ready before its tables exist.
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
// returned in time, 1 when it overran or failed. A signal during the start-up
// migration (or while waiting for its lock or for PostgreSQL) is a clean
// drain too: the migration under way is rolled back, whatever error its
// interruption caused is logged, and the process exits 0.
package service
