// Command dtxctl is the operator's tool for a dtx installation.
//
// Usage:
//
//	dtxctl migrate up     [--database-url URL] [--schema NAME]
//	dtxctl migrate down   [--steps N | --all] [--database-url URL] [--schema NAME]
//	dtxctl migrate status [--database-url URL] [--schema NAME]
//	dtxctl saga start     SAGA_NAME (--data JSON | --data-file F) --definitions DIR [--schemas DIR ...] [--version N] [--trigger-type T] [--message-id ID] [--json]
//	dtxctl saga list      [--status S] [--definition NAME] [--limit N] [--json]
//	dtxctl saga show      <saga-id> [--definitions DIR] [--json]
//	dtxctl saga retry     <saga-id> --definitions DIR [--reason TEXT]
//	dtxctl saga abort     <saga-id> --definitions DIR [--reason TEXT]
//	dtxctl saga compensate <saga-id> --definitions DIR [--reason TEXT]
//
// `migrate up` applies every pending migration, creating the schema if it
// does not exist; `migrate down` rolls back the last migration, the last N or
// all of them (dropping dtx's tables and their data; the schema and its version
// table stay); `migrate status` shows the version and each migration's state
// without changing anything.
//
// `saga start` starts a saga the way a service does: it builds the trigger
// event of the saga's definition (the topic and type of its triggers; the
// saga id is what the trigger's saga_id path gives on the payload, else the
// message id), validates the payload against dtx's schemas and those of
// --schemas (repeatable; DTX_SCHEMAS, comma-separated), publishes it to
// Kafka (--kafka-brokers, DTX_KAFKA_BROKERS) with an idempotent producer,
// and prints the topic, the message id and the saga id. It publishes nothing
// when the definition, the payload or the topic is wrong. The orchestrator
// running the same definitions starts the saga; a saga id that exists
// already starts nothing.
//
// `saga list` and `saga show` read the saga tables; `show` prints the saga's
// status, what it waits for now, its data and its timeline (each step's
// attempts with time, outcome, reply and error). `retry`, `abort` and
// `compensate` apply an operator's command in one transaction through the
// orchestrator's own transition path (package saga/orchestrator: the saga is
// locked, its commands go through the outbox, the timeline records it); they
// need the definitions the orchestrator runs (--definitions, DTX_DEFINITIONS)
// and work whether or not an orchestrator is running. The orchestrator also
// serves the same operations over HTTP on its admin address under /sagas.
//
// `dtxctl --help` and `dtxctl migrate COMMAND
// --help` describe every command and flag.
//
// # Settings
//
// Each setting is read from its flag, else from its environment variable,
// else from its default:
//
//	--database-url  DTX_DATABASE_URL  postgres://dtx:dtx@127.0.0.1:5432/dtx?sslmode=disable
//	--schema        DTX_SCHEMA        dtx
//
// The connection string may be a URL or key=value pairs; a connection string
// without connect_timeout gets 10 seconds. dtxctl never prints the password:
// help, errors and logs show it as xxxxx.
//
// # Behaviour
//
// Migrations run one transaction each under an advisory lock, so dtxctl may
// run while replicas migrate at start (DTX_MIGRATE=true): each migration is
// applied once. Progress lines (one per migration) go to standard error, the
// result to standard output. SIGINT or SIGTERM cancels the running statement;
// its migration rolls back.
//
// # Exit status
//
// 0 on success (and for --help), 1 when the command failed (the reason is
// printed on standard error, prefixed with the command), 2 for a command line
// that cannot be used. `migrate status` exits 1 when the database is at a
// version newer than this build knows, after printing what it knows.
package main
