// Command projector builds read models from dtx events, committing each update with
// its checkpoint in one PostgreSQL transaction (package pkg/projection). It runs the
// built-in stream_summaries projection over the event types of --event-types, and with
// --rebuild rebuilds it by shadow table and swap while the live projection runs.
//
// With --source=log (the default) it reads the event store's global log; with
// --source=kafka it catches up from the log, then consumes the --topics the outbox relay
// publishes the events to, in the consumer group --group, dead-lettering records that are
// not events. Each stream's last applied version commits with the read model, so neither
// source applies an event the other applied, and a stream's events missing from Kafka are
// read from the store.
// It shares its configuration, admin endpoints and lifecycle with every dtx binary (see
// internal/service); run it with --help for its settings.
//
// # How it fails
//
// A failed batch rolls back with its checkpoint and is retried, so a crash or kill
// applies nothing twice and loses nothing: the next start resumes after the last
// committed batch. On SIGTERM the batch in flight commits or rolls back as a whole. A
// failed or interrupted rebuild is logged and leaves the live table untouched; the next
// --rebuild resumes it. The swap of the rebuilt table waits for the live projection's lock
// at most --swap-timeout (30s); past it the swap rolls back and the rebuild fails so.
//
// A transaction with a transaction id left open anywhere in the cluster (any database,
// any role) holds back every event committed after it took its id: the projector reads
// none of them until it ends, and never skips them. It shows it within seconds:
// dtx_txlog_horizon_held_seconds{schema,log="events"} counts how long the horizon has
// been held while events wait (0 otherwise); after --horizon-warn-after (10s) a warning,
// at most every --horizon-warn-every (30s), names the blocking pid, database and role; after
// --horizon-not-ready-after (1m; 0: never) /readyz reports not ready under "horizon",
// saying which transaction holds which log. docs/runbook.md says how to find and end
// it.
package main
