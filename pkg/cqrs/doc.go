// Package cqrs connects command and event handlers to dtx messaging: command
// and event buses that publish through the transactional outbox, and handlers
// that run with inbox deduplication in the same transaction as their effect.
//
// The contract it will keep (G1, G3, docs/guarantees.md): a handler's state change
// and the messages it emits commit together; a redelivered message changes
// nothing.
//
// The package is being built; today it holds no API.
package cqrs
