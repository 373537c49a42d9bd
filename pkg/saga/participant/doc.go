// Package participant is the helper for services that take part in sagas
// (docs/architecture.md#participants-and-the-barrier): it handles the orchestrator's commands in the
// service's own PostgreSQL transaction behind a barrier, and replies through
// the service's own outbox in that same transaction.
//
//	p, _ := participant.New(pool, participant.Config{Name: "payments", Outbox: ob})
//	p.Action("payments.charge", func(ctx context.Context, tx pgx.Tx, cmd participant.Command) (participant.Reply, error) {
//		if insufficient {
//			return participant.Reply{}, participant.Reject("payments.charge_declined", nil)
//		}
//		_, err := tx.Exec(ctx, "INSERT INTO charges ...")
//		return participant.Reply{Type: "payments.charged", Data: charge}, err
//	})
//	p.Compensation("payments.refund", "payments.refunded", func(ctx context.Context, tx pgx.Tx, cmd participant.Command) (any, error) {
//		_, err := tx.Exec(ctx, "DELETE FROM charges ...")
//		return refunded, err // the reply's data
//	}, func(cmd participant.Command) any {
//		return nothingToRefund // the reply's data when nothing was charged here
//	})
//	router.AddConsumerHandler("payments", "payments.commands", sub, p.Handle)
//
// A command is a dtx envelope (package messaging) with the saga headers of
// package saga's wire contract: ce_sagaid, ce_sagastep, ce_sagaattempt,
// ce_sagaphase ("action" or "compensation") and optionally ce_sagareplyto.
// Handlers are registered by command type and phase.
//
// # The barrier
//
// The table <schema>.saga_barrier holds one row per (participant, saga, step,
// phase), written in the transaction that handles the command, with the
// handler's effects and the reply's outbox row (G1, G3, docs/guarantees.md):
//
//   - An action whose row exists is a duplicate: nothing happens, no reply.
//   - An action that finds the step's compensation row arrived after the
//     compensation: it is refused (recorded as such, no handler call, no
//     reply; the orchestrator has moved on) and counted.
//   - Otherwise the action's handler runs. Its Reply is sent and the row
//     records "applied"; a Reject discards the handler's writes (rollback to
//     a savepoint taken before it ran) and commits the failure reply with the
//     row, recorded as "rejected". Any other error rolls everything back.
//   - A compensation whose row exists is a duplicate: its handler does not
//     run again. A redelivery of the same command gets no reply; a new
//     command (another attempt) gets the success reply again, for the
//     orchestrator may be waiting for that attempt's answer (say the
//     compensation first came before the saga asked for it); it ignores
//     answers it does not wait for.
//   - A compensation that finds no applied action (none yet, rejected or
//     refused) is empty: recorded, so that a late action is refused, and
//     answered with the success reply without calling its handler.
//   - Otherwise the compensation's handler runs, then the success reply is
//     sent.
//
// Each command first takes a transaction-scoped advisory lock on
// (participant, saga, step), so an action and its compensation handled at
// once by two consumers are serialised and each sees the other's row. The
// participant name (Config.Name) is part of the key, so several services may
// share a schema.
//
// # Replies
//
// A reply goes to the command's ce_sagareplyto topic (saga.DefaultReplyTopic
// when absent), keyed by the saga id, with ce_source Config.Source, the
// headers ce_sagaid, ce_sagastep, ce_sagaattempt and ce_sagaphase copied from
// the command, the command's correlation id (or its id when it has none),
// causation id = the command's ce_id, and the trace context of the span in
// the handling context. It is written with Config.Outbox, which validates it
// against its schema when the outbox has a registry; the outbox relay
// publishes it after the commit.
//
// # Guarantees
//
//   - Effects once per (participant, saga, step, phase) while the barrier
//     row is kept: barrier row, handler effects and reply commit together or
//     not at all.
//   - Never both an applied action and an empty compensation: whichever
//     comes first decides, under the step's lock.
//   - One reply per handled command at most; none for redeliveries,
//     duplicate actions and refused actions (a re-sent compensation is
//     answered again, see above).
//   - Replies of one saga keep their commit order on the reply topic: the
//     reply key's lock is taken before anything is written (see package
//     outbox, "Order per key").
//
// # How it fails
//
//   - A message that is not a valid saga command (no envelope, no saga id,
//     step or attempt, a bad phase, an invalid reply topic) or whose type
//     has no handler for its phase fails with an error marked
//     messaging.Permanent (ErrInvalidCommand, ErrUnknownCommand): the
//     dead-letter middleware sets it aside. Nothing panics on bad input.
//   - A handler's error, other than Reject from an action, and database
//     errors roll back the whole transaction — no barrier row, no reply —
//     and are returned: the router's retry middleware decides, and a later
//     delivery runs the handler again. A reply the outbox refuses (schema,
//     size) and a reply without a type are permanent.
//   - A re-sent action (the orchestrator's next attempt of a step whose
//     reply it has not seen yet) is a duplicate: it gets no second reply,
//     the first reply still answers it (the orchestrator accepts replies to
//     earlier attempts of the step it waits for).
//   - Barrier rows are kept until Prune deletes them. A command delivered
//     again after its row was pruned runs again, and a compensation whose
//     action row was pruned finds nothing to undo: retention must outlast
//     every saga's life, compensation included.
//   - Handlers must not make effects outside the transaction (HTTP calls,
//     direct publishes): those are not covered and may happen twice.
//   - The barrier needs READ COMMITTED (the default) or SERIALIZABLE; a
//     REPEATABLE READ transaction fails with ErrIsolation.
package participant
