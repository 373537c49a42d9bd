// Command orchestrator runs dtx sagas from Kafka commands and replies, keeping saga
// state, outgoing commands and deduplication in one PostgreSQL transaction per
// message. It shares its configuration, admin endpoints and lifecycle with every
// dtx binary (see internal/service); run it with --help for its settings.
//
// The operator API (list, show, retry, abort, compensate under /sagas) has a
// listener of its own, off unless --operator-addr (DTX_OPERATOR_ADDR) is set, and
// never on the admin address. Its requests need a bearer token of
// --operator-token-file (DTX_OPERATOR_TOKEN_FILE); without one it is read-only and
// may only listen on a loopback address, else the orchestrator exits 2 at start.
// docs/operations.md#operator-api describes it.
package main
