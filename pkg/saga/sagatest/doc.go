// Package sagatest runs a saga definition against scripted fake
// participants with an injected clock, so that users can unit-test their
// definitions without PostgreSQL, Kafka or real time.
//
// A Harness feeds saga.Transition: it starts a saga, hands every command
// the state machine emits to the Responder registered for its type, delivers
// the scripted replies, and advances its fake clock to the next reply or to
// the state's WakeAt, firing a Tick, until the saga is terminal. Everything
// is deterministic: replies due at the same instant are delivered in the
// order their commands were sent, and before a Tick due at that instant.
//
// # How it fails
//
// The Harness reports through the testing.TB it was given: an invalid
// definition, a Transition error, a command type without a Responder, or a
// run exceeding its step cap (a definition that never ends, which saga
// guarantees cannot happen) fail the test with t.Fatalf.
package sagatest
