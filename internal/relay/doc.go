// Package relay publishes the transactional outbox to Kafka: the work of the
// outbox-relay binary. It tails the outbox log (migration 004) in gap-safe
// commit order with package txlog, produces each batch with franz-go's
// idempotent producer (acks=all), and moves its checkpoint only once the
// broker acknowledged the batch.
//
// # Guarantees
//
//   - No loss (G2, docs/guarantees.md). The checkpoint, in txlog_checkpoints, moves
//     past a row only after the broker acknowledged its record, or after
//     the row was moved to outbox_rejected. A crash, a PostgreSQL restart or
//     a broker outage costs duplicates, never rows: delivery is
//     at-least-once. Rows of a transaction that commits late are published
//     once it commits (G5, docs/guarantees.md): nothing read by (tx_id, position) is skipped.
//   - Order per key (G4, docs/guarantees.md). Rows are read in (tx_id, position) order and
//     produced in that order; a record's partition is the murmur2 hash of
//     its key (franz-go's default partitioner, as dtx's Kafka Pub/Sub and
//     the Java client use), and the idempotent producer keeps each
//     partition's records in the order produced, across retries. When a
//     record fails, the records produced after it to its partition fail as
//     well, and the relay publishes them again from the first failure on.
//     Rows without a key go to any partition, with no order.
//   - One publisher. Replicas with the same Config.Name compete for one
//     lease (a relay_leases row, timed by the database clock); the holder
//     publishes, the others stand by and poll the lease every
//     LeaseDuration/2. The holder renews every LeaseRenewInterval and checks
//     that it still holds the lease, by a deadline on its own monotonic
//     clock, before each batch. Each takeover increases the lease's token,
//     and the checkpoint is saved in a transaction that locks the lease row
//     and checks holder and token (txlog's SaveCheckpointFenced): a replica
//     that lost its lease moves nothing.
//   - Rejected rows do not block. A record the broker refuses for a fault
//     of the record itself (MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE,
//     CORRUPT_MESSAGE, INVALID_RECORD, or INVALID_TOPIC_EXCEPTION: a topic
//     name Kafka does not allow) and a row whose headers are not a JSON
//     object of strings are moved to outbox_rejected with the reason, in the
//     transaction that moves the checkpoint past them; they are logged and
//     counted, and the rows after them are published. A rejected row breaks
//     nothing else: the next rows of its key are still published, in order.
//     To tell the refused record from the records that shared its
//     partition, the failed rows of the batch are produced again one at a
//     time. Nothing else is set aside for good: see "How it fails".
//   - A topic the broker does not take holds up no other topic. Order is
//     kept per key, and a key belongs to one topic, so the relay keeps order
//     per topic, not across topics. When a topic's rows fail for a fault of
//     that topic's environment (UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID,
//     TOPIC_AUTHORIZATION_FAILED, POLICY_VIOLATION) while the broker is
//     otherwise well (a row of another topic of the same batch was
//     acknowledged, or the batch is full of that topic's rows alone), the
//     topic is held: its rows from the first failed one on, and every later
//     row of it while it has held rows, are copied, in log order, to
//     outbox_held (migration 012) in the transaction that moves the
//     checkpoint past them, and the other topics' rows are published
//     meanwhile. The publishing replica retries each held topic's oldest
//     rows, in order, with backoff (100ms doubling to MaxBackoff, with
//     jitter), beside the outbox. Each retry first asks the broker for the
//     topic's metadata, and does not produce the rows while the broker says
//     the topic is missing or may not be seen; so does the relay before it
//     produces again the rows of a topic that failed in its last batch.
//     Records of a topic known to be missing never wait in the Kafka
//     client the other topics' batches share (the client would look such a
//     topic up only at its slow metadata pace, and fail them after
//     ProduceTimeout as a timeout, which holds no topic): they fail at once,
//     with the broker's reason. The replica deletes each held row once the broker
//     acknowledged it, moves a row the broker refuses for good to
//     outbox_rejected, and releases the topic once none of its rows are
//     held: its next rows, all later in the log than the held ones, are
//     published as read. Held rows are set aside for a while, never for
//     good, and keep their order. A held topic is visible: a WARN naming
//     it and the reason (at most every 10s per topic and reason),
//     dtx_relay_topic_held{topic}, dtx_relay_publish_retries_total, and
//     Relay.Health and Relay.Faults (outbox-relay's /readyz). The rows are
//     copied, not moved, because other readers of the outbox (relays with
//     another Name) read them still; each relay holds its own.
//   - No re-publishing of acknowledged rows. When a row fails and stops
//     the batch, the rows after it the broker acknowledged are remembered
//     and not produced again when the relay publishes again from the
//     failed row (their partitions' earlier records were acknowledged too,
//     so this keeps per-key order). Duplicates remain possible only in the
//     windows below.
//   - Record timestamps. Each record carries its row's created_at (the
//     database's clock at insert) as its timestamp, so the relay host's
//     clock decides nothing.
//
// # Windows of duplicates
//
// A replica publishes a batch, then saves its checkpoint. Between the two,
// or if the save fails, a crash, a lost lease or an error leaves the
// checkpoint before the batch: the next holder publishes it again. A
// replica paused (SIGSTOP, a long GC pause, a frozen VM) while its batch is
// in flight may have that batch produced after it resumes, even after a
// standby took over and published the same rows: those records are
// duplicates, and for a moment interleave with the new holder's, but its
// checkpoint is fenced and it produces no further batch, because it checks
// the lease first. Consumers dedup by ce_id (dtx's inbox does: G3, docs/guarantees.md).
//
// # Wake-ups
//
// The relay listens on the channel "<schema>.outbox", which the outbox's
// trigger notifies at commit (one committing writer at a time: see package
// txlog), and reads at once when woken, and again EchoInterval later. It polls
// every PollInterval too (every 200ms while rows wait behind an open
// transaction), so lost notifications cost latency, never rows. A full
// batch is followed by the next read without waiting.
//
// # Retention
//
// The relay registers its reader (Config.Name) in txlog_checkpoints at
// start, and runs a txlog.Pruner that deletes the outbox rows every
// registered reader has passed, every PruneInterval.
//
// # Metrics
//
// On Config.Registerer: dtx_relay_published_total,
// dtx_relay_batch_size (histogram, rows per batch),
// dtx_relay_errors_total{kind} (read, produce, checkpoint, fenced, lease,
// listen), dtx_relay_publish_retries_total{topic,reason} (publishing
// retried from a row the broker did not accept, held rows included; reason
// is the Kafka error's name, "timeout" or "other"), dtx_relay_rejected_total,
// dtx_relay_topic_held{topic} (rows of a held topic in outbox_held, on the
// publishing replica), dtx_relay_is_leader (1 while this replica publishes), dtx_relay_commit_to_ack_seconds (histogram: from the
// row's created_at, by the database clock, to the acknowledgement, by the
// relay's clock: skew between the hosts shifts it), and a txlog.Collector
// of the outbox log (dtx_txlog_reader_lag_rows, _lag_seconds,
// dtx_txlog_oldest_open_tx_seconds).
//
// # Tracing
//
// A row whose headers carry a sampled W3C trace context
// (messaging.HeaderTraceParent, "ce_traceparent", with the sampled flag set,
// and messaging.HeaderTraceState) is published in a PRODUCER span named
// "publish <topic>", recorded with Config.TracerProvider (the global
// provider by default) under the instrumentation scope ScopeName. Its parent
// is the row's trace context, the span of the code that wrote the row; it
// starts when the record is handed to the Kafka client and ends at the
// broker's answer. It follows the OpenTelemetry semantic conventions for
// messaging (v1.43.0): messaging.system "kafka", messaging.operation.type
// "send", messaging.operation.name "publish", messaging.destination.name,
// messaging.message.id (ce_id) and messaging.message.body.size, and when
// set messaging.kafka.message.key; once acknowledged,
// messaging.destination.partition.id and messaging.kafka.offset. A record
// that fails ends its span with the error recorded, status Error and
// error.type (the Kafka error's name, "timeout", or the error's Go type), whatever the relay
// then does with the row (produce it again, hold its topic, reject it):
// each attempt to produce a row is a span of its own.
//
// The record's headers stay the row's: the relay does not write its span
// into ce_traceparent, so consumers remain children of the writer's span,
// and the relay's span is their sibling. Rows without a traceparent, or
// with one whose sampled flag is clear, cost a look at the headers and the
// flags, nothing more: no parsing, no span. With a no-op TracerProvider
// (go.opentelemetry.io/otel/trace/noop) the relay does not look at all;
// with the global provider while no SDK is installed (outbox-relay without
// a trace exporter), a row with a sampled traceparent costs parsing it and
// a non-recording span, dropped at once.
//
// # How it fails
//
//   - PostgreSQL down: reads, checkpoints and renewals fail; the relay
//     logs, backs off (100ms doubling to MaxBackoff, with jitter) and
//     carries on. If the lease cannot be renewed before it runs out, the
//     relay stops publishing until it holds the lease again.
//   - Broker down: records time out after ProduceTimeout; the checkpoint
//     moves up to the first record not acknowledged, and the relay backs
//     off and publishes again from there when the broker is back.
//   - A refusal that is the environment's fault, not the record's, is an
//     outage, never a rejection: INVALID_TIMESTAMP (the broker's clock and
//     the row's created_at disagree by more than the topic's
//     message.timestamp.before.max.ms / after.max.ms; Kafka 4 refuses
//     records more than an hour ahead by default), TOPIC_AUTHORIZATION_FAILED
//     and CLUSTER_AUTHORIZATION_FAILED (an ACL missing, or not propagated
//     yet), UNKNOWN_TOPIC_OR_PARTITION (a topic that does not exist and is
//     not created automatically), POLICY_VIOLATION, a leader that moved,
//     unsupported versions, ... A fault of one topic while the broker is
//     otherwise well holds that topic (see "Guarantees"). Any other one (a
//     broker that does not answer, a clock it refuses, every topic of the
//     batch failing) stops publishing: the checkpoint moves up to the first
//     row neither acknowledged nor held; that row and every row after it
//     wait, in order, and the relay publishes again from there with backoff
//     (100ms doubling to MaxBackoff, with jitter) until the broker accepts.
//     CLUSTER_AUTHORIZATION_FAILED also replaces the relay's Kafka client
//     before the next attempt (dtx_relay_errors_total{kind="client"}, and a
//     rate-limited warning): the broker gives it to a producer-id request
//     of a principal that may write no topic yet (DESCRIBE granted before
//     WRITE), and the client would keep that answer for good.
//     It does so loudly: dtx_relay_publish_retries_total{topic,reason}
//     counts every retry, a WARN naming the topic and the error is logged at
//     most every 10s per topic and error (with the number of retries not
//     logged since), and Relay.Health names the topic, the reason and since
//     when, while it lasts. Nothing is set aside for good, so a clock jump
//     or a slow ACL never rolls a topic's rows into outbox_rejected nor
//     breaks per-key order.
//   - A held topic whose fault lasts (a topic never created) keeps its rows
//     in outbox_held, growing with every row written for it, until an
//     operator creates the topic (or grants the ACL): then they are
//     published, in order. To drop them instead, delete the topic's rows of
//     outbox_held while no relay runs.
//   - Several topics failing with topic faults in one batch where no other
//     topic succeeded look like a fault of the whole broker: publishing
//     stops rather than holding them, until a batch shows another topic
//     acknowledged.
//   - Records are stamped with created_at, so a backlog published late
//     carries old timestamps: a topic whose retention is by time deletes
//     such records sooner after publishing, and records older than its
//     retention.ms may be deleted at once.
//   - A checkpoint ahead of the database's transaction ids (a restore from
//     a logical dump) stops reading with txlog.ErrPositionAhead, logged at
//     every retry, rather than skip rows; an operator resets the
//     checkpoint.
//   - A transaction left open anywhere in the cluster holds back every
//     row committed after it took its transaction id (see package txlog):
//     the relay reads none of them, so it publishes nothing of any topic
//     and logs nothing, until that transaction ends (held rows are still
//     retried). dtx_txlog_oldest_open_tx_seconds shows it, and
//     outbox-relay watches the outbox's horizon (txlog.HorizonWatch): a
//     warning names the blocking pid and database.
//   - Drain: when Run's context is done, the batch in flight is finished
//     (acknowledgements awaited at most ProduceTimeout), its checkpoint
//     saved and the lease released, so a standby takes over at once.
//   - A replica that crashes keeps its lease until it runs out: a standby
//     takes over at most LeaseDuration later. A replica restarted with the
//     same Holder waits as any other.
package relay
