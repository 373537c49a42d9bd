// Package fault holds fault tests of dtx's binaries: they start the real
// outbox-relay (and, for sagas, the orchestrator and the Order-to-Cash
// services) against real PostgreSQL and real Apache Kafka, inject faults
// while a writer commits small transactions, some rolled back, and then
// check the guarantees G2, G4 and G5 of docs/guarantees.md with one
// verifier. The faults:
//
//   - kill -9 mid-batch; a leader paused past its lease; a late-committing
//     transaction; a broker outage; a PostgreSQL restart;
//   - a record the broker refuses for good (too large: set aside);
//   - faults of the environment, retried and never set aside: records
//     stamped 2 hours ahead of the broker's clock until it accepts them; a
//     topic the relay's SASL user has no ACL for until one is granted (also
//     DESCRIBE first and WRITE later, which the broker answers with
//     CLUSTER_AUTHORIZATION_FAILED for the producer id); a
//     topic missing until it is created (held, while the other topics
//     flow);
//   - SIGTERM while a binary waits for the start-up migration lock;
//   - sagas through kills, participant outages, duplicate replies and
//     compensations that arrive before their actions;
//   - a rolling deploy of a new saga definition version: replies of
//     version-2 sagas reach a replica that knows version 1 only, and wait
//     there until it is replaced.
//
// One test is not a fault: an Order-to-Cash order placed with one HTTP
// request to the real binaries (sales API, outbox-relay, orchestrator,
// participants), each exporting its spans to an OTLP endpoint in the test,
// is one trace with spans from every process, each parented in the trace.
//
// # What the verifier guarantees
//
// It reads the test's topic from the beginning until every committed row has
// been seen or a deadline passes, and reports: rows committed but not on
// Kafka (loss), records of rows never committed (phantoms: rolled back, or
// refused by the broker), keys whose first occurrences are not in commit
// order, and the number of duplicates. Which rows committed is recorded in a
// ledger table written in the same transaction as the outbox rows, so a
// commit whose outcome the writer never learned (PostgreSQL stopped during
// COMMIT) is judged by what the database holds, not by a guess.
//
// # How it fails
//
// Each test fails with the verifier's report (missing, phantom and
// out-of-order ids) and the relays' logs. Tests that stop a broker or
// PostgreSQL use private ones (kafkatest.StartBroker, pgtest.NewCluster) and
// skip when those cannot run, except with CI=true, where they fail. The
// shared services are never stopped.
package fault
