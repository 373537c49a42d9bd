// Command dtxctl is the operator's tool for a dtx installation.
//
// Usage:
//
//	dtxctl migrate up     [--database-url URL] [--schema NAME]
//	dtxctl migrate down   [--steps N | --all] [--database-url URL] [--schema NAME]
//	dtxctl migrate status [--database-url URL] [--schema NAME]
//	dtxctl saga start     SAGA_NAME (--data JSON | --data-file F) --definitions DIR [--schemas DIR ...] [--version N] [--trigger-type T] [--message-id ID] [--json]
//	dtxctl saga list      [--status S] [--definition NAME] [--limit N] [--json] [--operator-url URL --operator-token-file F]
//	dtxctl saga show      <saga-id> [--definitions DIR] [--json] [--operator-url URL --operator-token-file F]
//	dtxctl saga retry     <saga-id> --reason TEXT [--by NAME] (--definitions DIR | --operator-url URL --operator-token-file F)
//	dtxctl saga abort     <saga-id> --reason TEXT [--by NAME] (--definitions DIR | --operator-url URL --operator-token-file F)
//	dtxctl saga compensate <saga-id> --reason TEXT [--by NAME] (--definitions DIR | --operator-url URL --operator-token-file F)
//	dtxctl dlq list       [--topic T ...] [--original-topic T] [--id ID] [--reason TEXT] [--since T] [--until T] [--limit N] [--json]
//	dtxctl dlq show       <[TOPIC/]PARTITION:OFFSET | MESSAGE-ID> [--topic T] [--json]
//	dtxctl dlq replay     (filters as for list | --all) [--dry-run] [--limit N] [--json]
//	dtxctl outbox rejected list    [--topic T] [--reason TEXT] [--since T] [--until T] [--limit N] [--json]
//	dtxctl outbox rejected requeue (ID... | --all [filters])
//	dtxctl outbox rejected delete  (ID... | --all [filters]) --yes
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
// and work whether or not an orchestrator is running; the timeline records
// --reason and who (--by, default $USER). With --operator-url
// (DTX_OPERATOR_URL) every saga command but start goes through the
// orchestrator's operator API instead, with the bearer token of
// --operator-token-file (DTX_OPERATOR_TOKEN_FILE); docs/operations.md
// describes it.
//
// `dlq list` and `dlq show` read dead-letter topics ("<topic>.dlq", where a
// consumer puts a message it fails on for good, with the headers
// dtx_dlq_reason, dtx_dlq_original_topic, ..._partition, ..._offset,
// ..._consumer_group and dtx_dlq_time) from their start, or from --since,
// up to the end offsets they had when the command started; they never wait
// for more. By default they read the dead-letter topic of the orchestrator's
// reply topic (--topic-prefix, --reply-topic) and, with --definitions, those
// of the trigger topics; --topic names others. `dlq replay` publishes the
// selected dead letters to their original topic with their key, value and
// headers, without the dead-letter headers and with dtx_replayed_at and
// dtx_replayed_from: the message id is unchanged, so a consumer that applied
// it already ignores it (inbox). It refuses without a filter unless --all,
// and publishes nothing when an original topic is unknown or missing.
// Replaying does not remove the dead letter: Kafka cannot delete a record.
//
// `outbox rejected list` shows the outbox rows the relay set aside in
// outbox_rejected (refused by the broker for good), in their original order;
// their id is their outbox position. `requeue` moves rows back into the
// outbox as new rows, in their original order and in one transaction, taking
// the outbox's key locks first, so that the relay publishes them; `delete`
// removes rows for good and needs --yes. docs/dead-letters.md describes
// both places and when to use what.
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
// # Secured connections
//
// Every command that talks to Kafka (topics, dlq, saga start) takes the
// binaries' Kafka TLS and SASL settings, every command that talks to
// PostgreSQL (migrate, saga list|show|retry|abort|compensate, outbox) their
// secret files, with the same names, variables, meaning and checks:
// --kafka-tls, --kafka-tls-ca-file, --kafka-tls-cert-file,
// --kafka-tls-key-file, --kafka-tls-server-name,
// --kafka-tls-insecure-skip-verify, --kafka-sasl-mechanism,
// --kafka-sasl-username, --kafka-sasl-password-file, --database-url-file and
// --database-password-file (DTX_KAFKA_TLS, ..., DTX_DATABASE_PASSWORD_FILE).
// Secrets are read from files only; dtxctl prints their paths, never their
// content. Every Kafka client dtxctl opens has the client id "dtxctl".
// docs/security.md describes the settings.
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
// or settings that cannot be used: settings are checked, and the files they
// name read, before dtxctl connects, and each problem is printed on a line of
// its own naming the setting and its variable. `migrate status` exits 1 when the database is at a
// version newer than this build knows, after printing what it knows.
package main
