// Package middleware holds the Watermill router middleware every dtx
// consumer runs: trace propagation, correlation and causation ids, retries
// steered by messaging.IsRetryable, dead letters, and decoding with schema
// validation. Standard assembles them in the order below; each is usable on
// its own.
//
// # The stack
//
// Outermost first, as Standard returns it:
//
//	Recoverer → Tracing → DeadLetter → Retry → Recover → Correlation → Validate → handler
//
// Recoverer is Watermill's; it turns a panic of the stack itself into an
// error. The others are this package's:
//
//   - Tracing handles each delivery in a CONSUMER span "process <topic>",
//     child of the trace context the message carries in ce_traceparent and
//     ce_tracestate, and writes its own trace context into the messages the
//     handler returns. TracingPublisher does the producing side: a PRODUCER
//     span "send <topic>" per message, whose context it writes into the
//     message. With both, one saga is one trace across processes
//     (G8, docs/guarantees.md).
//   - DeadLetter publishes a message the handler fails on for good to
//     "<topic>.dlq" with the reason and the original topic, partition,
//     offset and consumer group in headers, then acks it. Given a Logger
//     and a Registerer, it logs a warning per dead letter (at most one per
//     topic and reason per second, the next saying how many it left out)
//     and counts it in dtx_dead_letters_total{topic, reason}.
//   - Retry runs the handler again, with exponential backoff and jitter,
//     while it fails with a retryable error, up to MaxAttempts and
//     MaxElapsed.
//   - Recover turns a panic of the handler into a permanent error.
//   - Correlation puts the handled message's Origin (its id, correlation id
//     and saga id) into the context and stamps the messages the handler
//     returns: causation id = the handled message's id, correlation id and
//     saga id inherited unless set. At an edge that is not a message (an HTTP
//     request), WithCorrelationID and StampContext do the same.
//   - Validate decodes the envelope and checks its payload against its JSON
//     Schema; the handler reads the envelope with EnvelopeFromContext.
//
// HTTP is the same edge for net/http: it takes or makes the request's
// X-Correlation-ID (echoed in the response), continues the caller's W3C
// trace context with a server span, and puts both on the request's
// context, so that what the handler writes to the outbox carries them.
//
// # Guarantees
//
//   - A poison message never crashes the process and never blocks its
//     partition (G7, docs/guarantees.md). A message that does not decode, breaks its
//     schema, has an unknown type, makes the handler panic or fails with an
//     error marked messaging.Permanent is dead-lettered on its first
//     delivery, without retries. A message whose handler keeps failing with
//     retryable errors is dead-lettered once Retry gives up (about 33
//     seconds with the defaults), unless DeadLetterConfig.NackExhausted asks
//     to keep redelivering it.
//   - Nothing is lost: a message is acked only after its handler succeeded
//     or its dead letter was acknowledged by the broker. If the dead letter
//     cannot be published, the message is nacked and delivered again.
//   - A dead letter is the original message — payload, record key, headers,
//     including the trace context and the correlation and causation ids —
//     plus the dtx_dlq_* headers, so it can be inspected and replayed as it
//     was.
//   - Every message a handler returns carries a causation id, a correlation
//     id and the trace context of its handling (G8, docs/guarantees.md).
//
// # What is retried
//
// Exactly what messaging.IsRetryable says: serialization failures,
// deadlocks, lost connections and server restarts of PostgreSQL, retriable
// Kafka errors, network failures, timeouts and any error dtx does not
// recognise. Not retried: undecodable envelopes, schema violations, unknown
// types, errors marked messaging.Permanent, PostgreSQL integrity, data and
// syntax errors, non-retriable Kafka errors, panics. A handler that knows the
// message itself is at fault returns messaging.Permanent(err).
//
// When the message's context ends while Retry is running or waiting
// (its partition was revoked, the subscriber is closing), Retry stops and
// returns the last error, which DeadLetter passes on: the message is nacked
// and another delivery, possibly to another consumer, handles it. Such a
// message is never dead-lettered for that reason.
//
// # Ordering
//
// The stack adds no concurrency: each delivery runs through it in the
// router's goroutine for that delivery, and retries happen inside the delivery, so the later messages of
// the partition wait for them and keep their order (G4, docs/guarantees.md, with the
// subscriber's default of one message in flight per partition). A
// dead-lettered message leaves the order: the messages after it are handled
// without it. Dead letters of one partition are published in its order, with
// their original record key.
//
// # How it fails
//
//   - A dead letter that cannot be published (the dead-letter topic is
//     missing, the broker is down) fails the delivery: the message is nacked
//     and redelivered, and the partition waits until the dead letter can be
//     written. Create the dead-letter topics with the topics.
//   - Dead letters are at-least-once, like every delivery: a message that is
//     delivered twice (after a rebalance, or a crash between publishing the
//     dead letter and committing the offset) may be dead-lettered twice.
//     The copies share the message's id.
//   - With the defaults, a dependency outage longer than Retry's budget
//     (about 33 seconds) dead-letters the messages that fail during it with
//     "retries exhausted". Raise RetryConfig.MaxAttempts and MaxElapsed, or
//     set DeadLetterConfig.NackExhausted, for consumers that must ride out
//     longer outages.
//   - Messages a handler returns are published by the router after the
//     handler returned, not atomically with its effect; use the outbox for
//     messages that must leave with the effect.
package middleware
