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
//     order, and read the database's clock;
//  2. record the batch's message ids in the inbox; a message recorded before
//     is a duplicate and changes nothing;
//  3. load and lock the sagas (SELECT ... FOR UPDATE);
//  4. transition each saga for each of its inputs, in arrival order;
//  5. write the sagas, their timeline, and the commands and lifecycle events
//     to the outbox;
//  6. commit, then ack every message of the batch.
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
//   - Several replicas. Consumers of a group share partitions; a saga's
//     advisory and row locks serialise whatever touches it, from any replica
//     (messages, ticks, operators), so no transition is applied twice.
//   - Pinned versions. A saga runs the definition version it started with;
//     the registry must keep that version while such sagas are in flight. A
//     saga whose version is missing is reported (permanent error, log) and
//     left untouched.
//   - Bad commands park. A command whose payload fails its JSON Schema
//     (Config.Schemas) parks its saga as Failed with the reason, rather than
//     failing the reply that caused it again and again.
//   - Traceable (G8, docs/guarantees.md). Commands and events carry the saga id, the correlation
//     id (the trigger's, else its id), the causation id (the message
//     handled) and the trace context of the span that handled it; ticks
//     continue the trace of the saga's last message.
//
// # Order
//
// Commands are keyed by saga id unless the step's Key mapping says otherwise.
// A saga's advisory lock is taken before its transaction's first write, so
// the transaction gets its id after every earlier writer of the saga
// committed and the relay publishes a saga's commands in commit order
// (G4, docs/guarantees.md).
//
// # Operators
//
// Operate applies retry, abort or compensate to one saga through the same
// path; List and Show (also without an Orchestrator, for tools) read sagas
// and their timelines; HTTPHandler serves them as a JSON API.
//
// # How it fails
//
//   - Database errors fail the batch: the messages are nacked (or retried by
//     the router's Retry middleware) and come again. Deadlocks and
//     serialization failures are retried at once, three times.
//   - Malformed replies (no saga headers, bad attempt or phase, a payload
//     that is not a JSON object) and triggers whose saga id cannot be mapped
//     fail with a permanent error: dead-lettered, the partition moves on.
//   - Handle returns ErrNotRunning once Run has stopped; before Run starts
//     it waits.
//   - A saga whose definition version is missing stays as it is until an
//     orchestrator with that version handles it.
package orchestrator
