// Package outbox writes the messages a service emits into the table
// <schema>.outbox in the service's own PostgreSQL transaction, so that they
// leave with its state change or not at all (G1, docs/guarantees.md). The outbox relay
// reads the table in commit order and publishes each row as one Kafka
// record; nothing is published before the transaction commits.
//
//	tx, _ := pool.Begin(ctx)
//	_ = ob.Lock(ctx, tx, "sales.orders", orderID) // first: see "Order per key"
//	_, _ = tx.Exec(ctx, "UPDATE orders SET status = 'placed' WHERE id = $1", orderID)
//	env, _ := messaging.NewEnvelope("sales.order.placed", "/sales/api", placed)
//	env.PartitionKey = orderID
//	_ = ob.WriteEnvelopes(ctx, tx, "sales.orders", env)
//	_ = tx.Commit(ctx)
//
// Write takes Watermill messages, WriteEnvelopes envelopes; Publisher and
// ContextPublisher wrap Write into a message.Publisher bound to a
// transaction, for code written against Watermill (components/cqrs buses,
// handlers).
//
// # Guarantees
//
//   - Atomic with the caller's transaction. A call inserts all its rows in
//     one statement of the caller's transaction and one round trip (the key
//     locks travel in the same pipeline); they commit or roll back with it.
//     At commit the table's trigger notifies the channel "<schema>.outbox",
//     which wakes the relay (unless another committing writer is notifying
//     it); a rolled-back transaction notifies nothing.
//   - All or nothing per call. Every message is checked before anything is
//     written: a valid dtx envelope (messaging.Decode) whose UUID is its
//     ce_id, a payload that follows its JSON Schema when Config.Registry is
//     set (docs/architecture.md#payloads-and-schemas: validated where it is written), metadata that are
//     valid UTF-8 without NUL, a record within Config.MaxRecordBytes, a topic
//     Kafka accepts. One bad message fails the call and nothing of it is
//     written.
//   - The same record as a direct publish. A row holds exactly the record the
//     kafka package's Publisher would produce for the message: key = its
//     messaging.MetadataPartitionKey metadata (NULL when empty), value = its
//     payload, headers = ce_id (the UUID) and every other metadata entry but
//     the key and the receive-only messaging.ReceiveOnlyPrefix entries, as a
//     jsonb object of strings. Consumers cannot tell the two paths apart.
//   - Size. The key, the headers as PostgreSQL prints the jsonb object, and
//     the payload together stay within Config.MaxRecordBytes (900 KiB by
//     default), below the table's CHECK (1000000 bytes) and Kafka's default
//     message.max.bytes, so a written row never fails the relay for its size
//     under default broker settings.
//   - Traceability. Messages without correlation or causation id are stamped
//     with the Origin of the context (middleware.StampContext), the handled
//     message's within a Correlation middleware (G8, docs/guarantees.md).
//
// # Order per key
//
// Messages of one call keep their order. Across transactions, the relay reads
// rows by (tx_id, position): transactions in the order PostgreSQL gave them
// their ids, which it does at a transaction's first write or row lock, not at
// commit (docs/guarantees.md, G4). Two transactions writing the same key
// therefore come out in commit order (G4, docs/guarantees.md) only if the second could
// not get its id before the first committed.
//
// Write and Lock take a transaction-scoped advisory lock per distinct
// (topic, key), in ascending lock id order, held until the transaction ends:
// writers of a key are serialised. If the transaction had no id when it took
// the lock, it gets one only afterwards, while holding the lock, so after
// every earlier writer of the key committed: order holds. If it already had
// one, because it wrote or locked a row before, a writer of the same key that
// got its id later may have committed in between; its rows have the higher
// tx_id and would be published after this transaction's rows though they
// committed first. Hence:
//
//   - Call Lock with the keys the transaction will write as its first
//     statement, before any write or row lock. Write then takes locks the
//     transaction already holds, and order is guaranteed whatever it does in
//     between. A transaction that does nothing before its Write is safe
//     without Lock. Locking keys of several topics in several calls can
//     deadlock with a transaction doing it in the opposite order; PostgreSQL
//     then aborts one of them (SQLSTATE 40P01), which may be retried.
//   - Otherwise Config.KeyOrder applies. With KeyOrderVerify (the default)
//     Write and Lock check, once the lock is granted, whether a row of the
//     key was committed by a transaction with a higher id. Such a row cannot
//     have been published or pruned yet: no reader passes a transaction still
//     open. If there is one, the call writes nothing and fails with
//     ErrKeyOrder: roll back and retry. The check is exact at READ COMMITTED
//     and costs a range scan of the rows of younger transactions. At
//     REPEATABLE READ and SERIALIZABLE the transaction's snapshot is older
//     than the lock and cannot see the rows the check looks for: it is
//     skipped, and the risk is counted as "unverified". With
//     KeyOrderUnchecked nothing is checked.
//   - Each call that takes a key's lock for the first time in a transaction
//     that already has its id is counted by dtx_outbox_order_risk_total
//     {result} (see Outbox.Collector), with result verified, inverted,
//     unverified or unchecked, and logged at debug level unless verified.
//     A transaction that locks all its keys with Lock first, or whose first
//     write is one Write of all its keys, never counts; nor does a later
//     Write of a key it already holds.
//
// A row lock taken as the transaction's first write (SELECT ... FOR UPDATE of
// the saga or aggregate row) orders the writers of that row the same way: a
// transaction waiting for a row lock gets its id only once it holds the lock.
// Write then finds the transaction with an id and counts and verifies its
// first lock of each key; KeyOrderUnchecked saves that cost for code that
// relies on such a row lock.
//
// # How it fails
//
//   - Invalid input: a *MessageError naming the message's index and id,
//     wrapping ErrTooLarge, ErrInvalidMessage, messaging.ErrInvalidEnvelope,
//     messaging.ErrSchemaViolation or messaging.ErrUnknownType; a bad topic
//     wraps ErrInvalidTopic. All are permanent; nothing was written, and the
//     transaction may go on.
//   - ErrKeyOrder: nothing was written; the transaction should roll back and
//     be retried.
//   - Database errors (a lost connection, a deadlock, a cancelled context)
//     are returned wrapped; the transaction is then aborted and must be
//     rolled back. pgconn.SafeToRetry and the SQLSTATE tell whether a retry
//     of the whole transaction may succeed.
//   - A call without a transaction, or a ContextPublisher message whose
//     context carries none, fails with ErrNoTransaction.
//   - The outbox publishes nothing itself: a row waits for the relay, and a
//     transaction left open delays every row committed after it began.
package outbox
