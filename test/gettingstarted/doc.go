// Package gettingstarted runs docs/getting-started.md as a test: it builds
// the shipped binaries (orchestrator, outbox-relay, dtxctl) and the billing
// example (examples/billing, a module of its own that uses only dtx's public
// packages), provisions a fresh PostgreSQL schema and uniquely named Kafka
// topics with dtxctl, runs the processes, and drives the saga through the
// service's HTTP API.
//
// # Guarantees
//
// The test passes only when, with the binaries as users get them:
//
//   - dtxctl migrate up and dtxctl topics apply prepare an empty schema and
//     cluster for the example's saga definitions and topics file;
//   - the orchestrator accepts the example's own message types
//     (--schemas examples/billing/contracts) and runs its definitions;
//   - an invoice request (POST with an Idempotency-Key) starts exactly one
//     saga, also when the request is replayed with the same key, which
//     returns the same response;
//   - a request the API's own checks accept but whose trigger event fails
//     its schema gets 422, stored and replayed with its key, and leaves no
//     invoice row: the API validates the event before it writes anything;
//   - a saga whose steps succeed ends Completed, one whose second step is
//     refused ends Compensated with its first step undone, and one started
//     with dtxctl saga start ends Completed;
//   - the service's downstream consumers, the Watermill router handler and
//     the plain franz-go consumer, both see each saga's lifecycle events;
//   - every process stops with exit status 0 on SIGTERM.
//
// # How it fails
//
// Every wait is bounded. A process that does not log what the test waits
// for, a saga that does not reach its status, or a process that does not
// exit cleanly fails the test with the logs of every process. Processes
// still running at the end are killed, and the test's topics, consumer
// groups and schemas are deleted.
package gettingstarted
