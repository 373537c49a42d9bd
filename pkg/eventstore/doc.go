// Package eventstore keeps event streams in PostgreSQL: appends with
// optimistic concurrency, reads of one stream and of all streams in a
// gap-safe global commit order, snapshots and upcasting of old event schemas.
//
// The contract it will keep (DESIGN.md §1 G1, G5, §3, §4): an append commits
// with the caller's other changes and with the outbox rows that carry the
// events to Kafka, or not at all; (stream, version) is unique, so a
// concurrent writer gets a conflict error instead of a lost update; a global
// reader never skips an event committed late by a concurrent transaction.
//
// The package is being built; today it holds no API.
package eventstore
