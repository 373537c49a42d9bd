// Command dtx-dev is a small helper for developing and testing dtx. It is
// used by scripts/deps.sh and is never part of a deployment: nothing in
// production should start it, link it or depend on its behaviour.
//
// It has these subcommands:
//
//	dtx-dev kafka [--addr 127.0.0.1:9092] [--data-dir DIR] [--partitions 1]
//	dtx-dev wait kafka [--brokers host:port[,host:port]] [--timeout 90s]
//	dtx-dev wait postgres [--url URL] [--timeout 60s]
//	dtx-dev traces serve --file FILE [--addr 127.0.0.1:4318]
//	dtx-dev traces show --file FILE --trace TRACE_ID
//	dtx-dev records --topics T1,T2 --since TIME --header NAME [--brokers HOST:PORT,...]
//	dtx-dev bench report [FILE...]
//
// # kafka
//
// "dtx-dev kafka" runs the embedded development broker: franz-go's kfake, an
// in-process imitation of a single Kafka node, listening on one address until
// it receives SIGINT or SIGTERM. It creates topics on first use. It is a
// fallback for machines that cannot run Apache Kafka, and a fast broker for
// quick local loops; it is not Apache Kafka. It keeps no replicas, implements
// the protocol from a separate code base and differs from the real broker in
// timing and in corner cases, so a test that passes against it proves less
// than one that passes against Apache Kafka. CI never uses it.
//
// Without --data-dir everything lives in memory and is lost when the command
// stops. With it, kfake saves its state to that folder and reloads it on the
// next start.
//
// # wait
//
// "dtx-dev wait kafka" polls until a metadata request to the brokers succeeds
// and names at least one broker; "dtx-dev wait postgres" polls until
// "SELECT 1" succeeds over a new connection. Each exits 0 once the service
// answers, and 1 with the last error when the timeout passes first. The
// addresses default to DTX_KAFKA_BROKERS and DTX_DATABASE_URL.
//
// # traces
//
// "dtx-dev traces serve" is a minimal OpenTelemetry collector: an OTLP/HTTP
// traces endpoint (POST /v1/traces; protobuf or JSON, gzip or not) that
// appends every span it receives to a file, one JSON object per line, until
// SIGINT or SIGTERM. Point the binaries at it with
// OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318. "dtx-dev traces show"
// prints one trace of that file as a tree of spans, each with its service,
// kind and duration. `make demo` uses both to show one order's trace across
// the processes. It keeps every span and has no limit: use a real collector
// (and Jaeger, Tempo, ...) anywhere else.
//
// # bench report
//
// "dtx-dev bench report" reads the output of `go test -bench` (files, or
// standard input) and prints one Markdown table: each figure the project
// tracks, its baseline measured in the same run, their ratio, the goal and
// whether it is met. With several runs of a benchmark (-count) it takes the
// median. A missed goal is a row that says "no", never a failure: a slow
// machine fails no command. A figure whose benchmark did not run says "not
// measured". `make bench` ends with it; docs/benchmarks.md keeps the latest
// table.
//
// # Exit status
//
// 0 on success, 1 when the work failed, 2 when the command line was wrong.
package main
