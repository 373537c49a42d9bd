// Package saga defines dtx sagas and their state machine: declarative
// definitions (YAML or Go) of ordered steps, each with an action command,
// the replies that mean success or failure, a compensation, a timeout and a
// retry policy; a registry of definitions by name and version; the mapping
// that builds command payloads from saga data; and Transition, the pure
// function that moves a saga from one State to the next.
//
// # What it guarantees
//
// Transition is deterministic and does no I/O: time comes only from its now
// argument, it starts no goroutine, and it never modifies the state or the
// definition it is given. The runtime (package orchestrator) persists the
// returned State, writes the returned commands to the outbox and the
// lifecycle events and timeline entries beside them, in one transaction.
// The package imports no database or Kafka driver.
//
// Given a runtime that feeds every due WakeAt as a Tick, every saga ends
// (G6, docs/guarantees.md): Completed, Compensated, or Failed. Action attempts
// and compensation attempts are bounded by their retry policies, and
// timeouts need no reply, so ticks alone drive any saga to a terminal
// status. Failed is "parked": no timer wakes it, but when compensations are
// pending an operator can Retry or Compensate it.
//
// Compensation runs the compensations of the completed steps in reverse
// order; a step whose action outcome is unknown (its attempts timed out,
// the saga deadline passed, or an operator forced compensation while its
// action was outstanding) is compensated too, first, so that a participant
// that acted without answering is undone: participants must accept a
// compensation for an action they never performed (the barrier of
// participant does). A step whose action failed with a business failure is
// not compensated. A Compensated saga has received a compensation success
// for every compensable step whose action success it accepted.
//
// In-flight sagas keep the definition version they started with: a State
// names its definition's name and version, and Transition refuses a
// definition of another version. Registry serves every version; new sagas
// start at Registry.Latest.
//
// # Replies and ordering
//
// A reply is accepted only for the current step and phase, for an attempt
// already sent (a reply to an earlier attempt counts: a participant's
// barrier performs an action once, and one that was down answers the first
// attempt). A compensation failure counts only for the outstanding attempt.
// Anything else — another step, another phase, a future attempt, a reply
// type the step does not list, a saga that is terminal — is ignored:
// Result.Ignored is true, the state is unchanged and nothing is recorded;
// the runtime logs it. Duplicate deliveries are therefore harmless.
//
// Commands carry the saga id as Kafka key unless the step maps another key,
// so all of a saga's commands keep their order per key (G4, docs/guarantees.md).
//
// # How it fails
//
// Parse, LoadFile and LoadDir return *DefinitionError values (joined with
// errors.Join) naming the file, the step and the field; YAML is validated
// first against the JSON Schema schemas/saga/definition.v1.json, then by
// Definition.Validate. NewRegistry refuses invalid definitions and
// duplicate name@version pairs.
//
// Transition returns an error only for programming errors: a nil
// definition, a state of another definition or version or one that breaks
// State.Check (ErrInvalidState), a Start on an existing saga
// (ErrAlreadyStarted), another input on an empty state (ErrNotStarted). A
// command whose key or payload cannot be mapped from the saga data (a
// definition bug or unexpected data) parks the saga as Failed, with the
// step and the missing path in its Reason, instead of looping.
//
// The wire contract with participants (header names, phases, lifecycle
// event types) is in wire.go.
package saga
