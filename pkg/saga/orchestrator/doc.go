// Package orchestrator runs sagas (package saga) on PostgreSQL and Kafka: it
// takes trigger messages, participant replies, scheduler ticks and operator
// commands, applies saga.Transition to each saga, and writes the new state,
// the saga's timeline, the next commands and the lifecycle events in one
// PostgreSQL transaction, the commands and events through the outbox (package
// outbox; the outbox relay publishes them). It never publishes to Kafka
// itself.
//
//	o, _ := orchestrator.New(pool, orchestrator.Config{Definitions: registry, Schemas: schemas})
//	go o.Run(ctx)                      // workers, scheduler, inbox sweeper
//	for _, topic := range o.Topics() { // the reply topic and the trigger topics
//		router.AddConsumerHandler("saga:"+topic, topic, subscriber, o.Handle)
//	}
//
// # One transaction per batch
//
// Handle queues its message and waits; Run's workers take what is queued
// (up to Config.MaxBatch, within Config.BatchWindow) and handle it in one
// transaction:
//
//  1. take the advisory lock of every saga of the batch, in ascending key
//     order, and read the database's clock; read which of the batch's
//     messages the inbox recorded before (a duplicate changes nothing) and
//     load the sagas: nothing is written yet, so the transaction has no id;
//  2. transition each saga for each of its inputs, in arrival order, and
//     build the records of the commands and lifecycle events, checked as the
//     outbox checks them (envelope, schema, size);
//  3. take the outbox's lock of every (topic, key) of those records (topics
//     in ascending order), then record the applied messages in the inbox (a
//     message not applied, because its saga does not exist or runs a
//     definition version this orchestrator lacks, is not recorded, so that
//     its redelivery or replay is applied), and write the sagas, their
//     timeline and the records;
//  4. commit, then ack every message of the batch.
//
// If the transaction fails, every message of the batch is handled again in a
// transaction of its own, so that one bad message fails alone: its error goes
// back to the router, whose middleware retries it or dead-letters it.
// Subscribing with kafka.SubscriberConfig.MaxInFlightPerPartition above 1
// lets one partition fill a batch; the messages of one saga are still
// serialised by its lock, and a saga has one command outstanding at a time.
//
// # Guarantees
//
//   - Effects once (G3, docs/guarantees.md). A message's inbox record, the saga's new
//     state and the commands it causes commit together: a redelivered message
//     is a duplicate. A reply the saga no longer waits for (late, duplicate,
//     for another attempt's step) is ignored by the state machine.
//   - Starting is idempotent by saga id. A trigger (or Start) for a saga id
//     that exists changes nothing; a trigger's saga id comes from its
//     mapping (saga.Trigger.SagaID), else from the message id.
//   - Sagas end (G6, docs/guarantees.md). Every running or compensating saga has a due time (its
//     step timeout, retry backoff or deadline). The scheduler claims due
//     sagas with FOR UPDATE SKIP LOCKED by the database's clock, moves their
//     due time ahead by Config.ClaimDuration (the claim) and ticks them; the
//     tick writes the saga's real next due time. A replica that dies holding
//     a claim leaves it to expire, and another replica ticks the saga.
//   - Finished sagas are pruned (docs/operations.md#retention-of-finished-sagas).
//     Run deletes a completed, compensated or failed saga with its
//     timeline, in one transaction, once its last update is older than
//     Config.FinishedRetention (30 days by default; Config.DisablePruning
//     keeps them forever), counted by dtx_saga_pruned_total. A running or
//     compensating saga is never deleted, nor one that another transaction
//     holds at that moment (see Prune). A pruned saga is unknown from then
//     on: Show returns ErrUnknownSaga and a late reply is dead-lettered.
//   - Several replicas. Consumers of a group share partitions; a saga's
//     advisory lock serialises whatever touches it, from any replica
//     (messages, ticks, operators), so no transition is applied twice.
//   - Pinned versions. A saga runs the definition version it started with;
//     the registry must keep that version while such sagas are in flight. A
//     reply for a saga whose version is missing here is a fault of the
//     environment (a rolling deploy: this replica is of the previous
//     release), not of the message: Handle neither applies nor records it,
//     and tries it again with backoff (a warning at most every 10s, counted
//     as dtx_saga_inputs_total{outcome="unknown_definition"}) until the
//     message's context ends, then returns a retryable error so that the
//     message is delivered again, to the replica that owns its partition
//     next. No retry budget of the router can dead-letter it meanwhile; its
//     partition waits, in order.
//   - Bad commands park. A command that cannot be written, because its
//     record is larger than the outbox's limit (outbox.DefaultMaxRecordBytes)
//     or its payload fails its JSON Schema (Config.Schemas), is a fault of the
//     record: the transaction that handles the input causing it (a reply, a
//     trigger, a start, a scheduler tick) parks the saga as Failed instead
//     (saga.Abort: no compensation runs), with the reason in its state and
//     timeline; the input is applied and recorded, not failed, so a reply is
//     neither retried nor dead-lettered and a tick does not fail again at
//     every pass. Logged (an error at most every 10s) and counted
//     (dtx_saga_commands_refused_total{definition, reason}).
//   - Traceable (G8, docs/guarantees.md). Commands and events carry the saga id, the correlation
//     id (the trigger's, else its id), the causation id (the message
//     handled) and the trace context of the span that handled it; ticks
//     continue the trace of the saga's last message.
//
// # Order
//
// Commands are keyed by saga id unless the step's Key mapping says otherwise
// (a customer id, say, shared by many sagas). A batch takes the outbox's lock
// of every (topic, key) it writes before its transaction's first write, so
// the transaction gets its id after every earlier writer of those keys
// committed: the relay publishes the commands of one key, of one saga or of
// many, in the order their transactions committed (G4, docs/guarantees.md).
// A command decided after another of its key committed comes after it.
// Nothing is promised across keys, nor between transactions that were open
// at once for sagas that do not share a key.
//
// Start in a caller's transaction that wrote before it already holds its id:
// the outbox then checks the order (outbox.KeyOrderVerify) and fails the
// start with outbox.ErrKeyOrder when a younger transaction committed a record
// of one of its keys; roll back and retry, starting the saga first.
//
// # Operators
//
// Operate applies retry, abort or compensate to one saga through the same
// path, and the timeline records who (OperateParams.Actor) and why; List
// and Show (also without an Orchestrator, for tools) read sagas and their
// timelines; HTTPHandler serves them as a JSON API. The API requires an
// Authenticator (bearer tokens with NewTokenAuthenticator, or read-only
// access from this host with LoopbackReadOnly) for every request, and an
// operation requires a JSON body with a reason, which a browser page
// cannot send to it.
//
// # How it fails
//
//   - Database errors fail the batch: the messages are nacked (or retried by
//     the router's Retry middleware) and come again. Deadlocks,
//     serialization failures and a message recorded in the inbox by a
//     concurrent transaction are retried at once, three times.
//   - Start in a caller's transaction that already holds its id may fail
//     with outbox.ErrKeyOrder (see "Order"): nothing is written; roll back
//     and retry.
//   - Malformed replies (no saga headers, bad attempt or phase, a payload
//     that is not a JSON object) and triggers whose saga id cannot be mapped
//     fail with a permanent error: dead-lettered, the partition moves on.
//   - A reply for a saga that does not exist fails with a permanent error
//     wrapping ErrUnknownSaga: dead-lettered, logged (a warning naming the
//     saga id, message id and topic, at most every 10s) and counted
//     (dtx_saga_inputs_total{outcome="unknown_saga"}). It is a fault of the
//     record, not of the environment: a saga's row commits with its first
//     commands, so no reply can precede it; such a reply comes from another
//     deployment sharing the topic, or names a saga that was deleted.
//     Dead-lettering keeps it for inspection rather than dropping it, and,
//     as it is not recorded in the inbox, a replay is applied if the saga
//     exists by then.
//   - Handle returns ErrNotRunning once Run has stopped; before Run starts
//     it waits.
//   - A saga whose definition version is missing stays as it is until an
//     orchestrator with that version handles it; its replies wait (see
//     "Pinned versions"), and its scheduler ticks and operator commands on
//     this replica fail with ErrUnknownDefinition.
//   - The operator API answers 401 to a request without a credential its
//     Authenticator accepts (logged at most once every 10 seconds), 403 to
//     a read-only caller's operation, and 415 or 400 to an operation
//     without a JSON body and a reason; none of them changes a saga.
package orchestrator
