// Package saga defines dtx sagas and their state machine: declarative
// definitions (YAML or Go) of ordered steps, each with a command, the replies
// that mean success or failure, a compensation, a timeout and a retry policy.
//
// The contract it will keep (DESIGN.md §1 G6, §6): every saga ends Completed,
// Compensated or Failed (parked, visible and resumable); compensations run in
// reverse order of the completed steps; in-flight sagas keep the definition
// version they started with. The state machine is pure: it imports no
// database or Kafka driver.
//
// The package is being built; today it holds no API.
package saga
