package kafka

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/messaging"
)

func TestToRecord(t *testing.T) {
	t.Parallel()
	msg := message.NewMessage("id-1", []byte(`{"a":1}`))
	msg.Metadata.Set(messaging.HeaderType, "sales.order.placed")
	msg.Metadata.Set(messaging.HeaderContentType, "application/json")
	msg.Metadata.Set(messaging.MetadataPartitionKey, "order-42")
	msg.Metadata.Set(messaging.MetadataKafkaOffset, "7")
	msg.Metadata.Set(messaging.MetadataKafkaTopic, "elsewhere")
	msg.Metadata.Set("x-empty", "")

	r, err := toRecord("orders", msg)
	require.NoError(t, err)
	require.Equal(t, "orders", r.Topic)
	require.Equal(t, []byte("order-42"), r.Key)
	require.Equal(t, []byte(msg.Payload), r.Value)
	require.Equal(t, []kgo.RecordHeader{
		{Key: messaging.HeaderID, Value: []byte("id-1")},
		{Key: messaging.HeaderType, Value: []byte("sales.order.placed")},
		{Key: messaging.HeaderContentType, Value: []byte("application/json")},
		{Key: "x-empty", Value: []byte("")},
	}, r.Headers)
}

func TestToRecordWithoutKey(t *testing.T) {
	t.Parallel()
	msg := message.NewMessage("id-1", nil)
	msg.Metadata.Set(messaging.MetadataPartitionKey, "")
	msg.Metadata.Set(messaging.HeaderID, "id-1") // equal: written once
	r, err := toRecord("t", msg)
	require.NoError(t, err)
	require.Nil(t, r.Key, "an empty partition key must leave the record unkeyed")
	require.Equal(t, []kgo.RecordHeader{{Key: messaging.HeaderID, Value: []byte("id-1")}}, r.Headers)
}

func TestToRecordRejects(t *testing.T) {
	t.Parallel()
	_, err := toRecord("t", message.NewMessage("", nil))
	require.ErrorIs(t, err, ErrInvalidMessage)
	require.ErrorContains(t, err, "empty UUID")

	msg := message.NewMessage("id-1", nil)
	msg.Metadata.Set(messaging.HeaderID, "id-2")
	_, err = toRecord("t", msg)
	require.ErrorIs(t, err, ErrInvalidMessage)
	require.ErrorContains(t, err, `"id-2"`)
}

func TestToMessage(t *testing.T) {
	t.Parallel()
	r := &kgo.Record{
		Topic: "orders", Partition: 3, Offset: 1234,
		Key:   []byte("order-42"),
		Value: []byte("payload"),
		Headers: []kgo.RecordHeader{
			{Key: messaging.HeaderID, Value: []byte("id-1")},
			{Key: "x-repeated", Value: []byte("first")},
			{Key: "x-repeated", Value: []byte("last")},
			{Key: messaging.MetadataKafkaOffset, Value: []byte("spoofed")},
		},
	}
	msg := toMessage(r, "billing")
	require.Equal(t, "id-1", msg.UUID)
	require.Equal(t, message.Payload("payload"), msg.Payload)
	require.Equal(t, message.Metadata{
		messaging.HeaderID:                   "id-1",
		"x-repeated":                         "last",
		messaging.MetadataPartitionKey:       "order-42",
		messaging.MetadataKafkaTopic:         "orders",
		messaging.MetadataKafkaPartition:     "3",
		messaging.MetadataKafkaOffset:        "1234",
		messaging.MetadataKafkaConsumerGroup: "billing",
	}, msg.Metadata)
}

func TestToMessageWithoutIDOrKey(t *testing.T) {
	t.Parallel()
	r := &kgo.Record{
		Topic: "orders", Partition: 0, Offset: 9,
		Headers: []kgo.RecordHeader{{Key: messaging.MetadataPartitionKey, Value: []byte("spoofed")}},
	}
	msg := toMessage(r, "g")
	require.Equal(t, "orders/0/9", msg.UUID)
	require.Equal(t, msg.UUID, toMessage(r, "g").UUID, "a redelivery must keep the id")
	require.NotContains(t, msg.Metadata, messaging.MetadataPartitionKey)
	require.NotContains(t, msg.Metadata, messaging.HeaderID)
}

func TestRoundTripKeepsMetadata(t *testing.T) {
	t.Parallel()
	in := message.NewMessage("id-1", []byte("p"))
	in.Metadata.Set(messaging.HeaderCorrelationID, "corr")
	in.Metadata.Set(messaging.MetadataPartitionKey, "k")
	r, err := toRecord("t", in)
	require.NoError(t, err)
	r.Partition, r.Offset = 1, 2
	out := toMessage(r, "g")
	require.Equal(t, in.UUID, out.UUID)
	require.Equal(t, in.Payload, out.Payload)
	for k, v := range in.Metadata {
		require.Equal(t, v, out.Metadata.Get(k), k)
	}

	// A consumed message published again keeps its id and key and drops
	// where it was read from.
	again, err := toRecord("t2", out)
	require.NoError(t, err)
	require.Equal(t, r.Key, again.Key)
	require.Equal(t, r.Headers, again.Headers)
}
