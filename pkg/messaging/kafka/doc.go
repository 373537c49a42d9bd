// Package kafka is a Watermill Pub/Sub for Apache Kafka built on franz-go: a
// message.Publisher that writes records with an idempotent producer and a
// message.Subscriber that reads them as a member of a consumer group,
// committing an offset only once its message has been acked.
//
// # Records and messages
//
// A Watermill message is written as one record, in the CloudEvents Kafka
// binding's binary mode:
//
//   - the payload is the record's value;
//   - metadata messaging.MetadataPartitionKey ("dtx_partition_key") is the
//     record's key, not a header; without it (or when it is empty) the
//     record has no key;
//   - the message UUID is header ce_id (messaging.HeaderID). Metadata ce_id,
//     if present, must equal the UUID: Publish refuses the call otherwise
//     (ErrInvalidMessage), as it does for an empty UUID;
//   - every other metadata entry is a header of the same name, in key order,
//     except those starting with messaging.ReceiveOnlyPrefix ("dtx_kafka_"),
//     which only a subscriber sets.
//
// A consumed record becomes a message the other way round: its headers are
// the metadata (the last of repeated headers wins), its key is
// messaging.MetadataPartitionKey, and the subscriber adds where it came from:
// messaging.MetadataKafkaTopic, MetadataKafkaPartition, MetadataKafkaOffset
// and MetadataKafkaConsumerGroup, replacing headers of those names. The UUID
// is header ce_id; a record without one (written by another producer) gets
// "<topic>/<partition>/<offset>", so every delivery of that record, on any
// member, carries the same id and an inbox can deduplicate it. A message
// consumed and published again keeps its id, key and headers.
//
// # Publishing
//
// Publish returns once every record of the call has been acknowledged by
// all in-sync replicas (acks=all), or has failed. The producer is
// idempotent: retries after a lost response neither duplicate nor reorder
// records. Records of one partition are written in the order they were
// given, within a call and across calls of one goroutine; records of
// concurrent calls share batches. A record whose key is set goes to the
// partition murmur2 gives it, as the Java client places it, or the one
// sarama gives it with SaramaCompatibleHashing. Unkeyed records fill one
// partition's batch and then move on (franz-go's uniform-bytes
// partitioner).
//
// A failed record fails its call with a *PublishError naming it; records
// before and after it may have been written. Publish retries what the
// broker reports as retriable for up to DeliveryTimeout; a record that
// times out takes the records buffered after it for its partition with it,
// so a later record is never written after an earlier failed one.
//
// # Subscribing
//
// Each Subscribe call joins the consumer group with a client of its own and
// starts one goroutine per partition assigned to it. A partition's goroutine
// delivers its messages in offset order, one at a time: the next only after
// the previous one is acked (MaxInFlightPerPartition raises this, giving up
// handling in order). A nacked message is delivered again, as a new message
// with the same UUID and metadata, after NackResendDelay; its partition
// waits meanwhile, and other partitions go on. Records are fetched ahead of
// delivery, up to ReadAheadPerPartition per partition, beyond which fetching
// from that partition pauses; a partition whose handler is slow or stuck
// never holds up the others.
//
// Order: messages of one partition, and so of one key, are handled in the
// order they were written. Nothing is promised across partitions.
//
// Commits: an offset is marked for commit once its message and every earlier
// message of its partition have been acked. Marked offsets are committed
// every CommitInterval, when partitions are revoked (before their next owner
// starts reading them) and when a subscription ends. A partition starts at
// its committed offset, or, for a group that has none, at InitialOffset
// (the earliest record by default).
//
// # What may be delivered twice
//
// Delivery is at least once; handlers make effects happen once by recording
// what they processed (an inbox) in the same transaction as the effect.
// A message is delivered again, with the same UUID, when:
//
//   - it was nacked;
//   - its partition was revoked before it was acked: the rebalance cancels
//     its context, drops it and the partition's other unacked messages, and
//     the partition's next owner delivers them; an ack that comes after is
//     ignored;
//   - it was acked after the last commit and then the member crashed, or
//     lost its partitions (its session expired), which leaves no chance to
//     commit: the next owner starts at the last committed offset;
//   - a commit failed (it is logged; Close returns the final one's error).
//
// # Lifecycle and how it fails
//
// A subscription ends when its Subscribe context ends or Close is called: it
// stops delivering, cancels the contexts of messages not yet acked (acks made
// before that are kept), commits what was acked, leaves the group and then
// closes its channel, so a closed channel means the offsets are committed.
// Close does this for every subscription and returns once all goroutines
// have ended; Publisher.Close waits for Publish calls in progress. Both are
// safe to call more than once; calls after Close return ErrPublisherClosed
// or ErrSubscriberClosed.
//
// Neither constructor contacts Kafka. When the brokers are unreachable,
// franz-go reconnects by itself: Publish calls wait until DeliveryTimeout,
// subscriptions log fetch errors through the Logger and resume where they
// were. Nothing panics on bad input: a record of any shape becomes a message.
//
// The Subscriber never creates topics: provision them beforehand (package
// topic, or `dtxctl topics apply`); a subscription to a missing topic
// receives nothing until the topic exists. TLS and SASL (PLAIN,
// SCRAM-SHA-256, SCRAM-SHA-512) are set in ClientConfig; any other franz-go
// option can be passed in ClientConfig.Opts.
//
// # Sharing topics with watermill-kafka
//
// With SaramaCompatibleHashing, keys map to the partitions sarama (and so
// watermill-kafka) picks, so order per key holds across both. watermill-kafka
// keeps the message UUID in a header of its own (_watermill_message_uuid):
// its consumers find the UUID of a dtx record in metadata ce_id, and dtx
// consumers give a watermill-kafka record the id "<topic>/<partition>/<offset>"
// and its UUID header as metadata.
package kafka
