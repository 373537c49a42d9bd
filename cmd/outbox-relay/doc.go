// Command outbox-relay publishes rows of the dtx outbox log to Kafka, in commit order
// per key, advancing its checkpoint only after the broker acknowledged them. It
// shares its configuration, admin endpoints and lifecycle with every dtx binary
// (see internal/service); run it with --help for its settings.
package main
