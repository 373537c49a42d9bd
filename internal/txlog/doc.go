// Package txlog reads append-only PostgreSQL tables ("logs") in an order that
// no late-committing transaction can break: the primitive under the outbox
// relay, the event store's global read and projector catch-up.
//
// # What a log table looks like
//
// Any table is a log if it has these columns and index, besides its own
// payload columns (CheckTable verifies them, and names what is missing):
//
//	tx_id    xid8   NOT NULL DEFAULT pg_current_xact_id(),
//	position bigint GENERATED ALWAYS AS IDENTITY,
//	...
//	PRIMARY KEY (tx_id, position)   -- or a unique index on exactly these, ascending
//
// Writers only INSERT, and never set tx_id or position themselves. The log
// and the checkpoints table txlog_checkpoints (migration 003) live in the
// same schema; the log is known there by its table name. To wake readers at
// commit, a writer calls Notify in its transaction, or the log's migration
// attaches a trigger function: txlog_notify (migration 003, notifies at every
// commit) or, as the outbox and the events tables do, txlog_notify_at_commit
// (migration 010) as a deferred constraint trigger whose WHEN condition
// (migration 015) queues it for the first row a transaction inserts only:
//
//	CREATE CONSTRAINT TRIGGER outbox_notify AFTER INSERT ON {{.schema}}.outbox
//	    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
//	    WHEN (CASE WHEN current_setting('dtx.txlog_wake_queued.dtx.outbox', true) IS DISTINCT FROM 'yes'
//	               THEN set_config('dtx.txlog_wake_queued.dtx.outbox', 'yes', true) = 'yes'
//	               ELSE false END)
//	    EXECUTE FUNCTION {{.schema}}.txlog_notify_at_commit('dtx.outbox');
//
// PostgreSQL has no deferred statement-level trigger: without the WHEN
// condition every row would queue an event and run the function at commit.
// With it, the function runs once per transaction and table, and each
// further row costs one lookup of a transaction-local setting.
//
// PostgreSQL serialises the commits of notifying transactions (a lock held
// through the WAL flush), which takes group commit away from concurrent
// writers. txlog_notify_at_commit lets one committing transaction at a time
// notify a channel; the others commit without notifying, and
// Subscription.Wait polls once EchoInterval after every wake-up to read what
// they committed.
//
// A table with a time column (created_at) also gets the lag in seconds
// metric. Retention deletes rows in (tx_id, position) order through the same
// index.
//
// # Guarantees
//
//   - Gap safety (G5, docs/guarantees.md). Reader.ReadBatch returns rows after a
//     Position in (tx_id, position) order, and only rows whose tx_id is below
//     the horizon: the xmin of the reading statement's snapshot, the id of the
//     oldest transaction still running. Every transaction below it has ended,
//     so every row it committed is visible, and no new row can ever appear
//     before the horizon. Rows of a transaction that is still open, and rows
//     of every transaction that took its id after it, wait until it ends;
//     they are read then, never skipped. A position alone ("id > last") does
//     not give this: positions are taken at insert, not at commit, and a row
//     with a lower position can commit after a higher one was read.
//   - Checkpoints. A reader's checkpoint (Reader.SaveCheckpoint) only moves
//     forward; it commits or rolls back with the caller's transaction, and
//     SaveCheckpointFenced checks a lease in that same transaction. Resuming
//     from a checkpoint reads every row after it once: no row is returned
//     twice by consecutive reads, none is left out.
//   - Retention. A Pruner deletes only rows at or before the lowest
//     checkpoint of the log's registered readers; with no reader registered,
//     nothing. Unread rows of a registered reader are never deleted.
//   - Wake-ups. A Listener's subscriptions wake on a notification, or at the
//     latest after the poll interval: notifications make readers prompt,
//     polling makes them correct. Lost notifications (a dropped connection,
//     a PostgreSQL restart, a writer that does not notify) cost latency,
//     never rows. The Listener reconnects with backoff for as long as it
//     runs.
//
// # Ordering
//
// Rows come out by tx_id, then position: transactions in the order they got
// their transaction id, which PostgreSQL assigns at a transaction's first
// write or row lock, and each transaction's rows in insert order. That is
// commit order for transactions that exclude each other through a lock taken
// before either writes (a row lock on the aggregate or saga row, or
// pg_advisory_xact_lock): the second one cannot take its id before the first
// has one, nor commit before the first. Transactions that do not, and overlap,
// may come out in the reverse of their commit order. So writers that need
// per-key order (G4, docs/guarantees.md) take the key's lock before their first write
// in the transaction, not after.
//
// # Watching the horizon
//
// The horizon is the xmin of a reading statement's snapshot. A HorizonWatch
// looks at it every second (HorizonConfig.Interval) with the columns every role
// may read: its own snapshot's xmin; for each watched log, whether a committed
// row lies at or past it (such a row waits, and proves that a transaction still
// runs at the xmin); and, while rows wait, the session whose
// pg_stat_activity.backend_xid is that xmin (pid, database, role,
// application_name), or the prepared transaction of that id. "Held for" is
// the time since the watch first saw the horizon at that xmin: a lower bound of
// how long the transaction has held it, counted in steps of the interval, and
// reported (dtx_txlog_horizon_held_seconds{schema, log}) only while rows of
// the log wait; 0 otherwise, however old the oldest transaction. When the
// horizon moves, even to another long transaction, it starts over.
//
// # Reading a log
//
//	r, _ := txlog.NewReader(txlog.Config{Log: "outbox", Reader: "relay",
//		Columns: []string{"topic", "payload"}}, func(m *msg) []any { return []any{&m.Topic, &m.Payload} })
//	sub := listener.Subscribe()
//	after, _ := r.LoadCheckpoint(ctx, pool)
//	for {
//		b, err := r.ReadBatch(ctx, pool, after)
//		// handle err: back off and retry
//		// handle b.Rows, then r.SaveCheckpoint(ctx, tx, b.End) with their effect
//		after = b.End
//		if !b.Full {
//			sub.Wait(ctx, b.HorizonBlocked)
//		}
//	}
//
// A reader that holds a lease (several replicas, one active) saves with
// SaveCheckpointFenced, whose FenceFunc locks and checks the lease row in the
// same transaction, or calls SaveCheckpoint in its own transaction after its
// own fencing check; either way check and checkpoint commit together.
//
// # How it fails
//
//   - A transaction left open stalls every reader of every log in the
//     cluster: nothing committed after it took its id is read until it
//     ends. Only transactions that hold a transaction id count, in any
//     database of the cluster and of any role, prepared transactions
//     included; read-only ones do not. Readers never skip past it: the
//     rows it may still commit would be lost. A HorizonWatch shows it to a
//     role without special privileges: dtx_txlog_horizon_held_seconds, a
//     warning at most every 30 s naming the blocking pid, database and
//     role, and Check for /readyz (not ready after a minute, by default);
//     docs/runbook.md says how to find and end the transaction.
//     dtx_txlog_oldest_open_tx_seconds misses other roles' transactions
//     unless the role is a member of pg_read_all_stats.
//   - ReadBatch inside a transaction that has written holds back rows of
//     transactions newer than itself: read before writing.
//   - A batch that is not full costs a second statement, an index probe past
//     its end for HorizonBlocked. The probe steps over the rows of
//     transactions still open, so a single transaction inserting millions of
//     rows makes caught-up reads slower until it ends.
//   - Transaction ids restart lower after a logical dump is restored into a
//     new cluster: ReadBatch then fails with ErrPositionAhead rather than
//     skip rows; an operator resets the checkpoints. (pg_upgrade and physical
//     backups keep transaction ids.)
//   - Database errors are returned wrapped, naming the reader and the log;
//     ReadBatch and the checkpoint functions change nothing on failure. A
//     failed prune is logged and retried at the next interval.
//   - NOTIFY makes committing transactions that notify take a cluster-wide
//     lock in turn; at very high write rates, rely on polling instead.
//   - A listening connection that dies silently (no reset from the network)
//     is noticed only by TCP keepalive; until then readers wake by polling.
package txlog
