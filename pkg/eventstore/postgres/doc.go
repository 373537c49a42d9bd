// Package postgres is the PostgreSQL implementation of eventstore.Store,
// on the tables events and snapshots (migration 005), the outbox (004) and
// the log primitive's checkpoints (003) of one schema.
//
//	store, _ := postgres.New(pool, postgres.Config{Schema: "dtx"})
//	res, err := store.Append(ctx, eventstore.AppendParams{
//		StreamID: "order-42", StreamType: "order", Expected: eventstore.NoStream,
//		Events: []eventstore.EventData{{Type: "sales.order.placed", Data: placed}},
//	})
//
// Append runs in a transaction of its own; AppendTx and WithTx run in the
// caller's, with its other changes.
//
// # Guarantees
//
//   - One append is three statements in its transaction, whatever the
//     number of events: the stream's lock; one statement that reads the
//     stream's version, checks the expectation and inserts every event
//     (arrays, unnest); and one outbox write of every event. Events and
//     outbox rows commit together or not at all (G1, docs/guarantees.md).
//   - Each event becomes one outbox row on the topic Config.TopicFunc names
//     for the stream type ("<stream type>.events" by default), keyed by the
//     stream id, whose headers and payload are a valid dtx envelope: ce_id
//     = the event id, ce_type, ce_source = Config.Source, ce_subject = the
//     stream id, ce_time = the recording time, ce_schemaversion, the
//     correlation, causation and trace context of the event's metadata, and
//     the extensions ce_streamtype and ce_streamversion; the payload is the
//     event's data as given.
//   - The stream's lock is the outbox's transaction-scoped lock of (topic,
//     stream id) (outbox.Outbox.Lock). Appends to one stream are serialised
//     and take their transaction ids in commit order when the lock is their
//     transaction's first statement: their events are read by ReadAll and
//     published in version order (G4, docs/guarantees.md). The version check runs
//     after the lock is granted, so at READ COMMITTED it sees every earlier
//     append; at higher isolation levels an outdated snapshot is caught by
//     the unique (stream_id, version) and reported as a conflict with an
//     unknown actual version.
//   - ReadAll reads the events table with the gap-safe log reader: only
//     events of transactions below the horizon (the oldest transaction
//     still running), in (tx_id, position) order. A late-committing
//     transaction's events are read once it ends, never skipped.
//   - Events are stored as given and upcast on every read when
//     Config.Upcasters is set.
//
// # How it fails
//
//   - A version conflict or invalid parameters: nothing was written, and a
//     caller's transaction stays usable.
//   - In a caller's transaction that wrote before the append, the stream's
//     lock may find that a younger transaction appended to the stream
//     meanwhile: the append fails with outbox.ErrKeyOrder; roll back and
//     retry, calling LockStream (or the append) first.
//   - A duplicate event id (eventstore.ErrDuplicateEventID), an outbox
//     refusal (a record too large, data that fails its JSON Schema when
//     Config.Registry is set) or a database error abort the transaction:
//     roll it back. Event data PostgreSQL's jsonb cannot hold (the string
//     escape \u0000) fails the insert.
//   - ReadAll inside a transaction that has written holds back events of
//     younger transactions until it ends; a transaction left open anywhere
//     in the cluster stalls ReadAll (docs/operations.md names the metric
//     and the warning that say so).
//
// # Snapshots
//
// Store and the view WithTx returns are eventstore.SnapshotStores on the
// snapshots table (migration 005): eventstore.Load and Update use them
// when the Aggregate has a SnapshotPolicy. A snapshot is keyed by (stream,
// version) and carries the state's type and schema version; loading takes
// the highest version of the wanted type and schema version, so snapshots
// of an older state shape are passed over. Saving at a version that has a
// snapshot replaces it. Through WithTx a snapshot is saved under a
// savepoint: it commits with the append, and a failed save leaves the
// transaction usable.
//
// # Subscriptions
//
// Subscribe hands every event to a HandlerFunc once, in ReadAll's gap-safe
// order, from a named reader's checkpoint (txlog_checkpoints, log
// "events"). Each batch runs in one transaction that holds the handler's
// effects and the moved checkpoint, so they commit together
// (G3, docs/guarantees.md): a restart resumes after the last committed batch and applies
// nothing twice. A failed batch rolls back whole and is retried with
// backoff, or ends Subscribe if SubscribeParams.ErrorFunc says so; an
// event that always fails holds the subscription there. Subscribe waits
// for the events table's notification ("<schema>.events") on a listening
// connection of its own, and polls as a fallback. Subscribers that share a
// reader name take turns on a transaction-scoped lock and apply a batch only
// while the checkpoint is still where they read it from, so no event is
// applied twice even when their batches overlap; they do, however, compete,
// so one per name is the efficient choice.
package postgres
