// Command orchestrator runs dtx sagas from Kafka commands and replies, keeping saga
// state, outgoing commands and deduplication in one PostgreSQL transaction per
// message. It shares its configuration, admin endpoints and lifecycle with every
// dtx binary (see internal/service); run it with --help for its settings.
package main
