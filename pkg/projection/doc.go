// Package projection keeps read models up to date from the event store: a
// Projection applies events to its tables in PostgreSQL, and a Runner feeds
// it the store's global log, live, and rebuilds it from scratch into shadow
// tables that replace the live ones without stopping the live projection.
//
// A Projection names itself (its checkpoint), lists the event types it
// handles and applies one event with a transaction. Handlers builds one from
// a map of functions. A RebuildableProjection also names its tables and can
// write to shadow copies of them.
//
// # Guarantees
//
//   - Effects once (DESIGN.md G3). Run reads the log through the event
//     store's Subscribe under the projection's name: each batch of events
//     is applied in one transaction that also moves the projection's
//     checkpoint, so the read model and the checkpoint commit together.
//     After a crash or a restart the projection resumes after the last
//     committed batch and applies nothing twice.
//   - Gap safety (DESIGN.md G5). Events are read in the store's gap-safe
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
//   - Rebuild equals replay. Runner.Rebuild applies the whole log to shadow
//     tables, then in one transaction brings them to the live checkpoint,
//     swaps them in and moves the live checkpoint to where they are; the
//     live projection continues on the new tables with no gap and no event
//     applied twice. The rebuilt tables hold what a projection run from the
//     first event would hold (Apply being deterministic).
//
// # Ordering
//
// A projection sees events in the store's global order, so the events of
// one stream in version order. Projections run independently: one may be
// ahead of another.
//
// # Metrics
//
// A Runner with Config.Registerer set reports:
//
//   - dtx_projection_applied_total{projection}: events applied;
//   - dtx_projection_skipped_total{projection,type}: events skipped as of
//     unhandled types;
//   - dtx_projection_lag_seconds{projection}: the age (now minus
//     recorded_at) of the last event the projection handled, when it
//     handled it;
//   - dtx_projection_events_behind{projection}: committed events after the
//     projection's checkpoint, counted at each scrape.
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
//   - A transaction left open stalls every projection (as every reader of
//     the log) for the events committed after it began.
//
// # Not yet
//
// Live projection straight from Kafka (through the messaging Pub/Sub) is
// not provided yet: projections read the event store's global log, live and
// when rebuilding.
package projection
