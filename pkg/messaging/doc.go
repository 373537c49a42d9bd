// Package messaging is how every dtx process talks to Kafka: a Watermill
// Publisher and Subscriber on franz-go, the CloudEvents envelope that every
// record carries, JSON Schema validation of payloads, dead-letter routing,
// the durable inbox that deduplicates redelivered messages, correlation and
// causation ids, trace propagation and the HTTP Idempotency-Key middleware.
//
// The contract it will keep (DESIGN.md §1, §5): records follow the
// CloudEvents 1.0 Kafka binding in binary mode with the partition key as the
// record key; delivery is at-least-once and effects happen once through the
// inbox, committed in the handler's own transaction; a record that cannot be
// decoded, fails its schema or has an unknown type goes to <topic>.dlq with
// the reason in its headers and never blocks its partition.
//
// The package is being built; today it holds no API.
package messaging
