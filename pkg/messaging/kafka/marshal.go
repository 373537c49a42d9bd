package kafka

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/messaging"
)

// toRecord turns msg into a record of topic: the payload is the value,
// metadata messaging.MetadataPartitionKey is the key, the UUID is header
// ce_id, and every other metadata entry is a header, in key order, except
// the receive-only ones (prefix messaging.ReceiveOnlyPrefix).
func toRecord(topic string, msg *message.Message) (*kgo.Record, error) {
	if msg.UUID == "" {
		return nil, fmt.Errorf("%w: empty UUID: it is written as header %s, which every record carries", ErrInvalidMessage, messaging.HeaderID)
	}
	if id, ok := msg.Metadata[messaging.HeaderID]; ok && id != msg.UUID {
		return nil, fmt.Errorf("%w: message %s has metadata %s %q: the two must be equal", ErrInvalidMessage, msg.UUID, messaging.HeaderID, id)
	}

	r := &kgo.Record{Topic: topic, Value: msg.Payload}
	if key := msg.Metadata[messaging.MetadataPartitionKey]; key != "" {
		r.Key = []byte(key)
	}

	keys := make([]string, 0, len(msg.Metadata))
	for k := range msg.Metadata {
		if k == messaging.HeaderID || k == messaging.MetadataPartitionKey || strings.HasPrefix(k, messaging.ReceiveOnlyPrefix) {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	r.Headers = make([]kgo.RecordHeader, 0, len(keys)+1)
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: messaging.HeaderID, Value: []byte(msg.UUID)})
	for _, k := range keys {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(msg.Metadata[k])})
	}
	return r, nil
}

// toMessage turns a record consumed by group into a message. Headers become
// metadata (the last of repeated keys wins); the key becomes
// messaging.MetadataPartitionKey and where the record came from the
// messaging.MetadataKafka* entries, replacing headers of those names; the
// UUID is header ce_id, or recordID(r) when the record has none.
func toMessage(r *kgo.Record, group string) *message.Message {
	md := make(message.Metadata, len(r.Headers)+5)
	for _, h := range r.Headers {
		md[h.Key] = string(h.Value)
	}
	delete(md, messaging.MetadataPartitionKey)
	if len(r.Key) > 0 {
		md[messaging.MetadataPartitionKey] = string(r.Key)
	}
	md[messaging.MetadataKafkaTopic] = r.Topic
	md[messaging.MetadataKafkaPartition] = strconv.FormatInt(int64(r.Partition), 10)
	md[messaging.MetadataKafkaOffset] = strconv.FormatInt(r.Offset, 10)
	md[messaging.MetadataKafkaConsumerGroup] = group

	id := md[messaging.HeaderID]
	if id == "" {
		id = recordID(r)
	}
	msg := message.NewMessage(id, r.Value)
	msg.Metadata = md
	return msg
}

// recordID is the UUID of a message whose record has no ce_id header:
// "<topic>/<partition>/<offset>", the same on every delivery of the record.
func recordID(r *kgo.Record) string {
	return r.Topic + "/" + strconv.FormatInt(int64(r.Partition), 10) + "/" + strconv.FormatInt(r.Offset, 10)
}
