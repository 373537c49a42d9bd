// Package projection keeps read models up to date from the event store: a
// Projection applies events to its tables in PostgreSQL, and a Runner feeds
// it live, from the store's global log (Run) or from the Kafka records the
// outbox relay publishes (RunKafka, usually after CatchUp from the log), and
// rebuilds it from scratch into shadow tables that replace the live ones
// without stopping the live projection.
//
// A Projection names itself (its checkpoint), lists the event types it
// handles and applies one event with a transaction. Handlers builds one from
// a map of functions. A BatchProjection also applies several events with
// one statement (the built-in StreamSummaries does). A
// RebuildableProjection also names its tables and can write to shadow
// copies of them.
//
// # Per-stream versions
//
// Whatever its source, a projection keeps, in the table projection_streams
// (migration 009) and in the same transaction as its read model, the
// version of the last event of each stream it holds. Every writer locks the
// rows of the streams it is about to apply events of before any effect
// (the log source all of its batch's, in stream order; the Kafka source its
// event's one) and skips an event at or below its stream's version
// (counted in dtx_projection_duplicates_total). So the sources can be
// combined and switched at any time without an event applied twice:
// catch up from the log, then go live from Kafka, whose records of the
// events caught up are no-ops; run both at once; go back to the log. The
// version also moves past events of types the projection does not handle.
//
// # Guarantees
//
//   - Effects once (G3, docs/guarantees.md). Run reads the log through the event
//     store's Subscribe under the projection's name: each batch of events
//     is applied in one transaction that also moves the projection's
//     checkpoint, so the read model and the checkpoint commit together.
//     After a crash or a restart the projection resumes after the last
//     committed batch and applies nothing twice.
//   - Gap safety (G5, docs/guarantees.md). Events are read in the store's gap-safe
//     global order: an event whose transaction commits late is applied
//     when it commits, never skipped.
//   - Several replicas are safe. Replicas running the same projection share
//     its checkpoint. Each batch locks the checkpoint before its first
//     effect and goes on only if its first event lies after it; otherwise
//     another replica applied it, and the batch is rolled back and reading
//     resumes from the checkpoint. Run one per name for efficiency (the
//     others wait and do work that is thrown away); two are safe.
//   - Unknown types are not fatal. An event of a type the projection does
//     not handle is skipped, counted in dtx_projection_skipped_total, and
//     the checkpoint moves past it.
//   - Effects once from Kafka too. RunKafka applies each record in a
//     transaction that locks its stream's version: a record at or below it
//     (redelivered, published twice, or applied by another source) changes
//     nothing; the next version is applied; a record further ahead (records
//     lost or dead-lettered, or a consumer group that started mid-stream) is
//     preceded, in the same transaction, by the stream's missing events read
//     from the store. Kafka keeps each stream's records in order (the key is
//     the stream id), so a stream's read model only moves forward.
//   - Several Kafka replicas are safe. Replicas in one consumer group share
//     the partitions; after a rebalance the records the new owner gets
//     again are duplicates, and the version's row lock makes two
//     transactions on one stream take turns.
//   - Rebuild equals replay. Runner.Rebuild applies the whole log to shadow
//     tables, then in one transaction brings them to the live checkpoint,
//     swaps them in and moves the live checkpoint to where they are; the
//     live projection continues on the new tables with no gap and no event
//     applied twice. The rebuilt tables hold what a projection run from the
//     first event would hold (Apply being deterministic). The shadow tables
//     keep per-stream versions of their own; at the swap, which also holds
//     off the Kafka source (a lock its transactions share), each stream the
//     live tables hold further than the shadow ones (Kafka ahead of the log)
//     is brought up to the live version from the store, and the live
//     versions become the greater of the two: the swap takes no stream
//     backwards and applies nothing twice, with either source running.
//
// # Ordering
//
// From the log a projection sees events in the store's global order, so the
// events of one stream in version order. From Kafka it sees each stream's
// events in version order too, but streams (partitions) in any order
// relative to each other: a read model must not rely on an order across
// streams when fed from Kafka. Projections run independently: one may be
// ahead of another.
//
// # Metrics
//
// A Runner with Config.Registerer set reports:
//
//   - dtx_projection_applied_total{projection}: events applied;
//   - dtx_projection_skipped_total{projection,type}: events skipped as of
//     unhandled types;
//   - dtx_projection_duplicates_total{projection}: events skipped as their
//     streams' versions held them already (redeliveries, or events another
//     source applied first);
//   - dtx_projection_lag_seconds{projection}: the age (now minus
//     recorded_at) of the last event the projection handled, when it
//     handled it;
//   - dtx_projection_events_behind{projection}: committed events after the
//     projection's log checkpoint, counted at each scrape, for projections
//     Run or CatchUp ran (the Kafka source does not move the checkpoint);
//   - the event store log's own metrics (dtx_txlog_reader_lag_rows and
//     dtx_txlog_reader_lag_seconds for every registered reader of the
//     events log, dtx_txlog_oldest_open_tx_seconds,
//     dtx_txlog_metrics_errors_total), so do not register another collector
//     of them on the same registry.
//
// The counters count handlings: a batch rolled back and retried counts
// again.
//
// # How it fails
//
//   - An Apply error rolls its batch back (effects and checkpoint); the
//     batch is logged and retried with a backoff for as long as it fails,
//     holding that projection (and only it) back.
//   - Database errors are retried the same way. Run returns early only
//     when a checkpoint lies beyond the database's transaction ids, or at
//     once for invalid projections.
//   - A Rebuild that fails or is cancelled leaves its shadow tables and
//     checkpoint, and the live tables untouched; the next Rebuild resumes
//     it. A second concurrent Rebuild of a projection fails with
//     ErrRebuildRunning. The swap fails, and changes nothing, when objects
//     depend on the live tables.
//   - The swap is bounded by Config.SwapTimeout (30s by default): its lock
//     waits, its statements and its idle time on the server, the whole
//     transaction on the client. A swap that cannot take its locks in time
//     (a long query holds the live tables) or takes longer is rolled back
//     and Rebuild fails with ErrSwapTimeout, naming the projection; the
//     live tables are unchanged, and the next Rebuild resumes from the
//     shadow tables and swaps again. The swap reads what it applies in its
//     own transaction, so a Rebuild needs two connections of the pool and
//     never waits for a third while live batches and Kafka handlers wait
//     for its locks.
//   - A transaction with a transaction id left open anywhere in the
//     cluster (any database, any role) stalls every projection, as every
//     reader of the log, for the events committed after it took its id;
//     they are applied once it ends, never skipped. The projector binary
//     watches for it (dtx_txlog_horizon_held_seconds, a warning naming the
//     blocking pid and database, /readyz); docs/runbook.md says what to do.
//   - From Kafka, a failed record is retried by the middleware stack
//     (middleware.Retry); one that fails for good (not an event-store event,
//     an invalid envelope, a schema violation, a permanent error of Apply, a
//     panic) is dead-lettered to "<topic>.dlq" and its partition moves on
//     (G7, docs/guarantees.md). An event that was dead-lettered, or never published, is
//     applied from the store before the next event of its stream; the last
//     events of a stream that gets no further event stay missing from
//     Kafka-fed read models until CatchUp or Run from the log (which skip
//     what Kafka applied) or a Rebuild. An event whose Apply always fails is
//     thus retried with each later event of its stream.
//   - A Kafka handler, a log batch and a rebuild's swap that write the same
//     read-model rows in different orders may deadlock; PostgreSQL aborts
//     one, and it is retried.
package projection
