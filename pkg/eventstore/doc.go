// Package eventstore defines event streams as programs use them: appends
// with optimistic concurrency, reads of one stream forward or backward, a
// global read in commit order, upcasting of old event schemas on read, and a
// generic aggregate helper (Load, Update, RetryOnConflict) with optional
// snapshots. Store is the
// interface; package eventstore/postgres implements it on PostgreSQL, and
// package eventstoretest is the conformance suite every implementation
// passes.
//
// # Guarantees
//
//   - Optimistic concurrency. An append names the version it expects the
//     stream at (Any, NoStream, StreamExists or Exact(v)); a stream at
//     another version fails the append with a *VersionConflictError, which
//     wraps ErrConcurrencyConflict and names the stream, the expectation and
//     the version found. (stream, version) is unique, so of concurrent
//     appenders expecting the same version exactly one wins; the others are
//     told, never silently lost.
//   - Atomic appends. The events of one append are stored all or none, at
//     consecutive versions after the current one, in their order.
//   - Atomic intent (G1, docs/guarantees.md). The PostgreSQL store writes each event
//     to the outbox in the same transaction, as a CloudEvents envelope
//     keyed by the stream id, so every stored event reaches Kafka and no
//     published event is missing from the store. Appends can run in the
//     caller's transaction, with its other changes.
//   - Gap-safe global order (G5, docs/guarantees.md). ReadAll returns every committed
//     event once, after the Position given, in commit order per stream; an
//     event whose transaction commits late is read when it commits, never
//     skipped, and the events of younger transactions wait behind it.
//   - Upcasting never rewrites. Upcasters change events as they are read;
//     the stored event keeps its schema version and data.
//   - Snapshots only save time. With Aggregate.Snapshot set and a Store
//     that is also a SnapshotStore, Load starts from the latest snapshot
//     of the state's type and schema version and applies the events after
//     it, which gives the state a full replay gives (ApplyFunc being
//     deterministic). A snapshot of another schema version, or one that
//     does not decode, is ignored and the stream replayed. Update saves a
//     snapshot when the SnapshotPolicy (EveryN, SnapshotFunc) says so,
//     in the caller's transaction when the Store is bound to one; a
//     snapshot that cannot be saved never fails the append.
//
// # Ordering
//
// A stream reads in version order. ReadAll orders events by Position: the
// appending transactions in the order they got their ids, each one's events
// in append order. Appends to one stream are serialised by a lock taken
// before they write, so a stream's events come out of ReadAll, and out of
// Kafka, in version order (G4, docs/guarantees.md). Nothing is promised across
// streams beyond what commit order gives.
//
// # How it fails
//
//   - *VersionConflictError (ErrConcurrencyConflict): nothing was written;
//     reload, decide again and append (RetryOnConflict does this).
//   - ErrInvalidAppend: the parameters can never succeed (a missing stream
//     id or type, no events, data that is not JSON, a stream type that
//     differs from the stream's); nothing was written.
//   - ErrDuplicateEventID: an event id is already stored; nothing was
//     written.
//   - ErrUpcast: an upcaster failed on read; the stored event is intact.
//   - A snapshot that cannot be decoded or saved goes to
//     Aggregate.SnapshotErrorFunc; Load and Update go on without it. An
//     error reading snapshots fails Load like an error reading events.
//   - Storage errors are returned wrapped; whether a retry may succeed is
//     the storage's to say (for PostgreSQL, pgconn.SafeToRetry and the
//     SQLSTATE).
//   - A transaction left open stalls ReadAll for every event committed after
//     it began, until it ends.
package eventstore
