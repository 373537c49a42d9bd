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
// handler's effects and the reply's outbox row (G1, G3, docs/guarantees.md).
// The row records the reply sent: its headers and payload as the outbox got
// them.
//
//   - An action whose row exists is a duplicate: its handler does not run
//     again. A redelivery of the command that was handled gets no reply; a
//     command sent again gets the recorded reply again (see "Commands sent
//     again").
//   - An action that finds the step's compensation row arrived after the
//     compensation: it is refused (recorded as such, no handler call, no
//     reply; the orchestrator has moved on) and counted.
//   - Otherwise the action's handler runs. Its Reply is sent and the row
//     records "applied"; a Reject discards the handler's writes (rollback to
//     a savepoint taken before it ran) and commits the failure reply with the
//     row, recorded as "rejected". Any other error rolls everything back.
//   - A compensation whose row exists is a duplicate, answered like an
//     action's: its handler does not run again, a redelivery gets no reply,
//     a command sent again gets the recorded reply again.
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
// # Commands sent again
//
// The orchestrator sends a step's command again when it has not seen the
// answer in time (its next attempt) or an operator resumes the saga
// (retry). The first reply may be late, or may have reached the
// orchestrator when it could not apply it. Such a command has its own id;
// its row exists, so it is a duplicate, and, in the same transaction, it is
// answered through the outbox with the reply the row records: the same
// type, source, payload (byte for byte), correlation id, saga headers and
// key, as a new message: a new id and time, the command sent again as its
// cause, its attempt, and the trace context of the handling span. A new id,
// because the orchestrator drops a reply whose id it has handled, also one
// it handled while it was not waiting for it; that attempt, because it
// accepts replies only to attempts it has sent, and an operator's retry
// counts them from 1 again. The orchestrator ignores a reply to a step it
// no longer waits for, so the re-sent reply changes a saga at most once.
//
// A refused action has no reply to re-send: the orchestrator has moved on
// to the compensation. Rows written before migration 011 record no reply: a
// compensation sent again is answered, as it was then, with the success
// reply and the data the empty function builds; an action sent again is
// answered with nothing, for its reply cannot be rebuilt and its handler
// must not run twice: a warning is logged, and the saga will time out and
// compensate. Both are counted in
// dtx_participant_repeated_commands_total{participant, reply} (reply
// "resent", "refused", "not_recorded").
//
// # Guarantees
//
//   - Effects once per (participant, saga, step, phase) while the barrier
//     row is kept: barrier row, handler effects and reply commit together or
//     not at all.
//   - Never both an applied action and an empty compensation: whichever
//     comes first decides, under the step's lock.
//   - One reply per handled command; a command sent again (another command
//     id) is answered with the recorded reply, in the transaction that finds
//     it a duplicate; none for redeliveries of a handled command and for
//     refused actions.
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
//   - A recorded reply that no longer decodes (a row edited by hand) fails
//     the command sent again with a permanent error. An action whose row
//     predates recorded replies is not answered again (see "Commands sent
//     again").
//   - Barrier rows are kept until Prune deletes them. A command delivered
//     again after its row was pruned runs again, and a compensation whose
//     action row was pruned finds nothing to undo: retention must outlast
//     every saga's life, compensation included.
//   - Handlers must not make effects outside the transaction (HTTP calls,
//     direct publishes): those are not covered and may happen twice.
//   - The barrier needs READ COMMITTED (the default) or SERIALIZABLE; a
//     REPEATABLE READ transaction fails with ErrIsolation.
package participant
