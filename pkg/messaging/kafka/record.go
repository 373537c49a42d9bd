package kafka

import (
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/messaging"
)

// RecordMessage returns the Watermill message that a Subscriber of consumer
// group group delivers for r, for programs that consume with a franz-go
// client of their own: the payload is the value, the headers are metadata
// (the last of repeated keys wins), the key is
// messaging.MetadataPartitionKey, the topic, partition and offset are the
// messaging.MetadataKafka* entries (and the group
// messaging.MetadataKafkaConsumerGroup unless group is ""), and the UUID is
// header ce_id, or "<topic>/<partition>/<offset>" when the record has none.
// The message's context is context.Background; the caller acks by
// committing the record, not through the message. It returns nil for a nil
// record.
func RecordMessage(r *kgo.Record, group string) *message.Message {
	if r == nil {
		return nil
	}
	msg := toMessage(r, group)
	if group == "" {
		delete(msg.Metadata, messaging.MetadataKafkaConsumerGroup)
	}
	return msg
}

// DecodeRecord returns the dtx envelope of r, decoded exactly as a
// Subscriber followed by messaging.Decode (the middleware's decoding)
// decodes it: RecordMessage, then messaging.Decode. Use it in a plain
// franz-go consumer to read what dtx producers (the outbox relay, the
// Publisher, the orchestrator's lifecycle events) write.
//
// A record that is not a CloudEvents 1.0 record in binary mode that dtx
// accepts (no ce_specversion header, a missing ce_id, ce_type or ce_source,
// a malformed attribute, a value that is not JSON under a JSON content
// type; see messaging.Decode) fails with an error naming the record's
// topic, partition and offset that wraps messaging.ErrInvalidEnvelope and
// the *messaging.DecodeError naming the header at fault. Such a record
// stays invalid however often it is read: skip it or set it aside.
func DecodeRecord(r *kgo.Record) (messaging.Envelope, error) {
	if r == nil {
		return messaging.Envelope{}, fmt.Errorf("kafka: decode record: %w", &messaging.DecodeError{Reason: "no record"})
	}
	env, err := messaging.Decode(RecordMessage(r, ""))
	if err != nil { // a *messaging.DecodeError, which wraps ErrInvalidEnvelope
		return messaging.Envelope{}, fmt.Errorf("kafka: record %s is not a dtx CloudEvents record: %w", recordID(r), err)
	}
	return env, nil
}
