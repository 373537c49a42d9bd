// Package inbox makes a message handler's effect happen once although Kafka
// delivers messages at least once (G3, docs/guarantees.md): the handler records the
// message id in the table <schema>.inbox in the same PostgreSQL transaction
// as its effect, and a redelivered message finds its id recorded and is
// skipped.
//
// An Inbox serves one consumer (Config.Consumer); the table's primary key is
// (consumer, message_id), so two consumers of the same message each process
// it once, and replicas of one consumer share their records. Handler wraps a
// function into a Watermill handler that does the bookkeeping; Record is the
// primitive for code that manages its own transaction.
//
// # Guarantees
//
//   - Effects in the transaction happen once per (consumer, message id)
//     while the record is kept: the record and the effect commit together or
//     not at all. A handler that fails or panics leaves no record, so the
//     redelivered message runs it again.
//   - Concurrent deliveries of one message (two consumers of a group during
//     a rebalance) are serialised by the primary key: the second transaction
//     waits for the first, then skips the message if the first committed or
//     processes it if the first rolled back. No duplicate effect and no lost
//     message, without retries.
//   - Records are kept for at least Config.Retention (7 days by default),
//     measured on the database's clock from the start of the recording
//     transaction. A record that has expired but is not swept yet still
//     deduplicates.
//   - Sweep and the sweeper of Start delete expired records in batches of
//     Config.SweepBatchSize rows, one short transaction each, skipping rows
//     other transactions hold; Stop waits for the sweeper goroutine.
//
// # Ordering
//
// The inbox does not order messages; it keeps whatever order the subscriber
// delivers in (per key, G4, docs/guarantees.md). A message skipped as a duplicate is
// acked.
//
// # How it fails
//
//   - Effects outside the transaction (HTTP calls, messages the Watermill
//     router publishes from the handler's return value) are not covered: they
//     may happen twice, or, for returned messages, be lost when their publish
//     fails after the commit. Write messages to the outbox with the
//     transaction instead.
//   - A message redelivered after its record expired and was swept is
//     processed again: Retention must outlive redelivery.
//   - A message id that is empty, longer than 512 bytes, not UTF-8 or holds
//     NUL fails with ErrInvalidMessageID on every delivery: dead-letter it.
//   - Database errors, including a failed commit, are returned wrapped; the
//     router nacks and the redelivery either finds the record (the commit
//     succeeded after all) or processes the message again. Serialization
//     failures and deadlocks of the handler's own statements take the same
//     path: the inbox does not retry the transaction itself; the router's
//     retry middleware or the redelivery does.
//   - A failed sweep is logged by Run and retried at the next interval.
package inbox
