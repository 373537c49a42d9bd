package kafka_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
)

// TestDecodeRecordReadsWhatTheSubscriberDelivers publishes an envelope with
// every attribute set, reads its record with a plain franz-go client and
// requires that DecodeRecord returns the envelope published, and that
// RecordMessage is the message a Subscriber delivers for the same record.
func TestDecodeRecordReadsWhatTheSubscriberDelivers(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers()
	topic := kafkatest.NewTopic(t, 2)
	group := newGroup(t)
	pub := newPublisher(t, brokers)

	env, err := messaging.NewEnvelope("billing.invoice.requested", "/billing/api", map[string]any{"invoice_id": "inv-1", "amount": 42})
	require.NoError(t, err)
	env.PartitionKey = "inv-1"
	env.Subject = "inv-1"
	env.CorrelationID = "corr-1"
	env.CausationID = "cause-1"
	env.SagaID = "inv-1"
	env.DataSchema = "https://example.com/schemas/billing.invoice.requested.v1.json"
	env.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	env.Extensions = map[string]string{"tenant": "acme"}
	msg, err := env.ToMessage()
	require.NoError(t, err)
	require.NoError(t, pub.Publish(topic, msg))

	rec := readRaw(t, topic, 1)[0]
	got, err := kafka.DecodeRecord(rec)
	require.NoError(t, err)
	require.Equal(t, env, got)

	plain := kafka.RecordMessage(rec, "")
	require.Equal(t, env.ID, plain.UUID)
	require.Equal(t, topic, plain.Metadata.Get(messaging.MetadataKafkaTopic))
	require.NotContains(t, plain.Metadata, messaging.MetadataKafkaConsumerGroup, "no group was named")

	sub := newSubscriber(t, brokers, group)
	delivered := receive(t, subscribe(t, sub, topic))
	require.True(t, delivered.Ack())
	asSubscriber := kafka.RecordMessage(rec, group)
	require.Equal(t, delivered.UUID, asSubscriber.UUID)
	require.Equal(t, delivered.Metadata, asSubscriber.Metadata)
	require.Equal(t, delivered.Payload, asSubscriber.Payload)
}

// TestDecodeRecordRefusesForeignRecords requires a clear error, wrapping
// messaging.ErrInvalidEnvelope and naming the record and the header at
// fault, for records that are not dtx CloudEvents records.
func TestDecodeRecordRefusesForeignRecords(t *testing.T) {
	t.Parallel()
	valid := func() []kgo.RecordHeader {
		return []kgo.RecordHeader{
			{Key: messaging.HeaderSpecVersion, Value: []byte("1.0")},
			{Key: messaging.HeaderID, Value: []byte("m-1")},
			{Key: messaging.HeaderType, Value: []byte("billing.invoice.requested")},
			{Key: messaging.HeaderSource, Value: []byte("/billing/api")},
		}
	}
	for _, tc := range []struct {
		name   string
		record *kgo.Record
		field  string
	}{
		{"plain JSON", &kgo.Record{Value: []byte(`{"a":1}`)}, messaging.HeaderSpecVersion},
		{"other CloudEvents version", &kgo.Record{Headers: []kgo.RecordHeader{{Key: messaging.HeaderSpecVersion, Value: []byte("0.3")}}}, messaging.HeaderSpecVersion},
		{"no type", &kgo.Record{Headers: valid()[:2]}, messaging.HeaderType},
		{"value not JSON", &kgo.Record{Headers: valid(), Value: []byte("not json")}, "payload"},
		{"bad time", &kgo.Record{Headers: append(valid(), kgo.RecordHeader{Key: messaging.HeaderTime, Value: []byte("yesterday")}), Value: []byte(`{}`)}, messaging.HeaderTime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.record.Topic, tc.record.Partition, tc.record.Offset = "billing.events", 2, 17
			_, err := kafka.DecodeRecord(tc.record)
			require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)
			var de *messaging.DecodeError
			require.ErrorAs(t, err, &de, "want a *messaging.DecodeError, got %T", err)
			require.Equal(t, tc.field, de.Field)
			require.ErrorContains(t, err, "record billing.events/2/17 is not a dtx CloudEvents record")
		})
	}

	_, err := kafka.DecodeRecord(nil)
	require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)
	require.Nil(t, kafka.RecordMessage(nil, "g"))

	ok := &kgo.Record{Topic: "billing.events", Headers: valid(), Value: []byte(`{}`), Timestamp: time.Now()}
	env, err := kafka.DecodeRecord(ok)
	require.NoError(t, err)
	require.Equal(t, "m-1", env.ID)
	require.Equal(t, messaging.ContentTypeJSON, env.DataContentType)
}
