// Package messaging is how every dtx process talks to Kafka: a Watermill
// Publisher and Subscriber on franz-go, the CloudEvents envelope that every
// record carries, JSON Schema validation of payloads, dead-letter routing,
// the durable inbox that deduplicates redelivered messages, correlation and
// causation ids, trace propagation and the HTTP Idempotency-Key middleware.
//
// The contract it will keep (docs/guarantees.md; docs/architecture.md#messages): records follow the
// CloudEvents 1.0 Kafka binding in binary mode with the partition key as the
// record key; delivery is at-least-once and effects happen once through the
// inbox, committed in the handler's own transaction; a record that cannot be
// decoded, fails its schema or has an unknown type goes to <topic>.dlq with
// the reason in its headers and never blocks its partition.
//
// # Envelope
//
// Envelope is a dtx message as programs build and read it: the CloudEvents 1.0
// attributes (id, type, source, subject, time, datacontenttype, dataschema),
// dtx's extensions (correlationid, causationid, sagaid, traceparent,
// tracestate, schemaversion, partitionkey, plus any custom ones) and the
// payload. NewEnvelope fills in a UUID v7 id, the time and schema version 1;
// CausedBy links a message to the one that caused it. ToMessage produces a
// Watermill message whose metadata are the record headers of the CloudEvents
// Kafka binding in binary mode (ce_* and content-type); the partition key goes
// to MetadataPartitionKey, which becomes the record key, and is repeated in the
// ce_partitionkey header so that any CloudEvents reader sees it. The schema
// version travels as the ce_schemaversion extension. Any CloudEvents SDK reads
// what ToMessage writes, and Decode reads what such SDKs write.
//
// Decode never panics. It rejects a message that lacks id, type or source, has
// a specversion other than 1.0, a malformed time, source, dataschema, schema
// version or content type, an invalid extension name, an attribute that is not
// a valid CloudEvents string, or a payload that is not JSON although its content
// type says JSON. The error is a *DecodeError naming the header, and it wraps
// ErrInvalidEnvelope: the failure is permanent, and the message is
// dead-lettered. Whatever Decode accepts, ToMessage writes back unchanged.
//
// # Schemas
//
// SchemaRegistry validates payloads against JSON Schemas (draft 2020-12,
// formats enforced) chosen by message type and schema version, loaded from one
// or several sources, each an fs.FS of <type>.v<version>.json files (package
// schemas embeds dtx's own; SchemaDirs reads directories). Sources are merged
// into one registry, so a schema may refer to one of another source by its
// "$id"; a type and version defined in two sources fails with a
// *DuplicateSchemaError naming both files.
// Every schema is compiled when the registry is created, and a schema that does
// not compile stops the registry from being created; afterwards the registry
// never changes and is safe for concurrent use. A payload that breaks its schema
// fails with a *SchemaError wrapping ErrSchemaViolation, listing each violation
// by JSON pointer. A type and version without a schema fails with
// ErrUnknownType unless the registry was configured with AllowUnknownTypes. Both
// failures are permanent.
//
// # Retry or dead-letter
//
// IsRetryable is dtx's one classifier of "may trying again succeed?". Errors
// marked with Permanent, ErrInvalidEnvelope, ErrSchemaViolation and
// ErrUnknownType are permanent, and so are PostgreSQL errors whose SQLSTATE
// says the statement itself is wrong (integrity 23, data 22, syntax and
// undefined objects 42, ...) and non-retriable Kafka error codes. Serialization
// failures and deadlocks (class 40), connection exceptions (08), insufficient
// resources (53), server shutdowns (57P01-57P03), statement and lock timeouts,
// retriable Kafka codes, network failures, context cancellation and every
// unrecognised error are retryable. A handler marks bad input with
// Permanent(err); the consumer middleware (package middleware) retries what is
// retryable with backoff and dead-letters the rest, except when the last
// failure says a dependency is down (IsUnavailable): an outage longer than the
// retry budget redelivers the message instead of setting it aside.
//
// # Subpackages
//
//   - kafka: the Watermill Publisher and Subscriber on franz-go.
//   - inbox: durable deduplication of consumed messages, committed with the
//     handler's effect.
//   - idempotency: the HTTP Idempotency-Key middleware.
//   - middleware: the consumer stack (tracing, dead letters, retry,
//     correlation and causation, decoding and schema validation).
package messaging
