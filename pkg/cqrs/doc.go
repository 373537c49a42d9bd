// Package cqrs gives a service typed command, query and event buses on dtx
// messaging: handlers registered by Go type, commands handled in process in
// the caller's transaction or sent through the transactional outbox and
// handled once at the other end through the inbox, queries with typed
// results, and events published through the outbox or appended to the event
// store.
//
// A Go type is bound to a message type, such as "billing.invoice.create",
// when it is registered (HandleCommand, RegisterCommand, HandleQuery,
// RegisterEvent). The message type is the envelope's ce_type and names the
// JSON Schema (version 1) every command and event is validated against
// before it is handled or written. Values travel as JSON; a value that
// implements Keyed gives its partition key.
//
//   - CommandBus: exactly one handler per command type. Dispatch runs it now,
//     in the transaction the context carries (messaging.ContextWithTx) or one of
//     the bus's own; Send writes the command to the outbox in the caller's
//     transaction, and a CommandProcessor on the receiving side runs the
//     handler from Kafka in the transaction that records the command in its
//     inbox.
//   - QueryBus: Query[Q, R] runs the one handler of Q and returns its R. A
//     query has no side effects: with a pool it runs in a READ ONLY
//     transaction, or in a savepoint of the caller's transaction that is
//     rolled back.
//   - EventBus: Publish writes events to the outbox, Append to the event
//     store, both in the caller's transaction; an EventProcessor subscribes
//     handlers through a Watermill router.
//   - Marshaler: a CloudEvents marshaler for Watermill's components/cqrs, so
//     that its CommandBus and EventBus publish dtx envelopes, through the
//     outbox (outbox.ContextPublisher) if they like.
//
// Every bus runs the same middleware around its handlers and writes: an
// OpenTelemetry span "<kind> <type>" whose trace context the envelope
// carries on, a log line, correlation (the envelope is stamped with the
// Origin of the context, then becomes the Origin of what its handler emits)
// and validation; then the Config's own Middleware. The processors also
// install middleware.Standard on each router handler: consumer span, dead
// letters, retry, recovery, correlation, decoding and validation.
//
// # Guarantees
//
//   - A command handler's state change and the messages it emits commit
//     together: the handler gets the transaction (also in its context), and
//     Publish and Send write to the outbox in that transaction. If the
//     handler fails, the bus's or the inbox's transaction rolls back and
//     nothing of it remains; in the caller's transaction (Dispatch), the
//     caller rolls back.
//   - A command sent with Send reaches Kafka if and only if the sender's
//     transaction commits, and the CommandProcessor runs its handler once:
//     a redelivered command finds its id in the inbox and changes nothing.
//     The same holds per handler for events and the EventProcessor.
//   - A command or event that breaks its schema is never handled nor
//     written; a command of a type without handler is never silently
//     dropped (it is an error, and a dead letter at a processor).
//   - Messages emitted while handling a command carry its id as their
//     causation id and its correlation id (or its id when it has none).
//
// # How it fails
//
//   - A second handler for a command or query type, or a Go type bound to
//     two message types, fails the registration with ErrDuplicateHandler,
//     naming the type.
//   - A command of an unregistered Go type or without handler fails with
//     ErrUnknownCommand naming the type; a type without schema fails its
//     registration the same way. At a CommandProcessor such a command is
//     marked permanent and dead-lettered to "<topic>.dlq".
//   - A payload that breaks its schema fails with an error wrapping
//     messaging.ErrSchemaViolation, marked permanent, which names the type
//     and the offending JSON pointer. At a processor it is dead-lettered
//     before the inbox records it.
//   - Dispatch, Send, Publish and Append need a transaction: in the context,
//     or (Dispatch and Send) the bus's Pool. Without one they fail with
//     outbox.ErrNoTransaction and nothing happens.
//   - A handler's own error rolls its transaction back and is returned: by
//     Dispatch to the caller; at a processor the message is retried or
//     dead-lettered as middleware.Standard decides, and a redelivery runs
//     the handler again. Effects outside the transaction (HTTP calls) may
//     then happen twice.
//   - The inbox forgets a message id after its retention (7 days by
//     default); a command redelivered later is handled again.
package cqrs
