// Command outbox-relay publishes rows of the dtx outbox log to Kafka, in commit order
// per key, advancing its checkpoint only after the broker acknowledged them. It
// shares its configuration, admin endpoints and lifecycle with every dtx binary
// (see internal/service); run it with --help for its settings.
//
// /readyz reports, beside PostgreSQL and Kafka:
//
//   - "relay": not ready while a topic is held (its rows wait in outbox_held
//     because the broker does not take them: a missing topic, a missing ACL)
//     or while publishing is stopped by a fault of the broker (a clock ahead,
//     an outage); the check names the topic, the reason and since when.
//   - "horizon": not ready once outbox rows have waited longer than
//     --horizon-not-ready-after (1m; 0: never) behind a transaction left open
//     anywhere in the cluster; dtx_txlog_horizon_held_seconds counts the
//     wait, and after --horizon-warn-after (10s) a warning, at most every
//     --horizon-warn-every (30s), names the blocking pid, database and role
//     (docs/runbook.md).
package main
