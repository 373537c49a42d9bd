package messaging

// Kafka record headers of the CloudEvents 1.0 Kafka protocol binding, binary
// mode, as dtx writes them. A Watermill message's metadata maps one to one to
// record headers, so these are also the metadata keys.
const (
	// HeaderID is the event id; it equals the Watermill message UUID.
	HeaderID = "ce_id"
	// HeaderType is the event or command type, e.g. "sales.order.placed".
	HeaderType = "ce_type"
	// HeaderSource names the producer, e.g. "/dtx/orchestrator".
	HeaderSource = "ce_source"
	// HeaderSpecVersion is the CloudEvents version, always "1.0".
	HeaderSpecVersion = "ce_specversion"
	// HeaderTime is the event time, RFC 3339.
	HeaderTime = "ce_time"
	// HeaderSubject is the entity the event is about (often the partition key).
	HeaderSubject = "ce_subject"
	// HeaderDataSchema names the payload's JSON Schema (type and version).
	HeaderDataSchema = "ce_dataschema"
	// HeaderContentType is the payload's media type ("application/json").
	HeaderContentType = "content-type"

	// HeaderCorrelationID (extension) ties every message of one business
	// transaction, e.g. a saga, together.
	HeaderCorrelationID = "ce_correlationid"
	// HeaderCausationID (extension) is the id of the message that caused this one.
	HeaderCausationID = "ce_causationid"
	// HeaderSagaID (extension) is the saga a command or reply belongs to.
	HeaderSagaID = "ce_sagaid"
	// HeaderTraceParent (extension) is the W3C traceparent of the producer's span.
	HeaderTraceParent = "ce_traceparent"
	// HeaderTraceState (extension) is the W3C tracestate.
	HeaderTraceState = "ce_tracestate"
)

// Metadata keys dtx uses on Watermill messages that are not record headers.
const (
	// MetadataPartitionKey holds the Kafka record key. A publisher writes it
	// as the key, not as a header; a subscriber sets it from the record key.
	MetadataPartitionKey = "dtx_partition_key"

	// MetadataKafkaTopic, MetadataKafkaPartition and MetadataKafkaOffset say
	// where a consumed message came from. Subscribers set them; publishers
	// never write them as headers.
	MetadataKafkaTopic     = "dtx_kafka_topic"
	MetadataKafkaPartition = "dtx_kafka_partition"
	MetadataKafkaOffset    = "dtx_kafka_offset"
	// MetadataKafkaConsumerGroup is the consumer group that received it.
	MetadataKafkaConsumerGroup = "dtx_kafka_consumer_group"

	// ReceiveOnlyPrefix starts every metadata key a subscriber sets and a
	// publisher drops.
	ReceiveOnlyPrefix = "dtx_kafka_"
)

// Dead-letter record headers, added to the original record's headers when a
// message is routed to its dead-letter topic.
const (
	HeaderDLQReason            = "dtx_dlq_reason"
	HeaderDLQOriginalTopic     = "dtx_dlq_original_topic"
	HeaderDLQOriginalPartition = "dtx_dlq_original_partition"
	HeaderDLQOriginalOffset    = "dtx_dlq_original_offset"
	HeaderDLQConsumerGroup     = "dtx_dlq_consumer_group"
	HeaderDLQTime              = "dtx_dlq_time"
)

// DeadLetterSuffix is appended to a topic's name to name its dead-letter topic.
const DeadLetterSuffix = ".dlq"
