package messaging_test

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/protocol/kafka_sarama/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/pkg/messaging"
)

// The tests of this file go through a real Kafka broker: dtx envelopes,
// written as dtx's publisher writes them, are read by the CloudEvents Go SDK,
// and events written by the SDK are read by Decode.

const interopTimeout = 30 * time.Second

// toRecord writes msg as dtx's publisher does: MetadataPartitionKey becomes
// the record key, every other metadata entry but the receive-only ones a
// header.
func toRecord(msg *message.Message, topic string) *kgo.Record {
	r := &kgo.Record{Topic: topic, Value: msg.Payload}
	if k, ok := msg.Metadata[messaging.MetadataPartitionKey]; ok {
		r.Key = []byte(k)
	}
	for _, k := range slices.Sorted(maps.Keys(msg.Metadata)) {
		if k == messaging.MetadataPartitionKey || strings.HasPrefix(k, messaging.ReceiveOnlyPrefix) {
			continue
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(msg.Metadata[k])})
	}
	return r
}

// fromRecord reads r as dtx's subscriber does: headers become metadata, the
// record key MetadataPartitionKey, and the record's place the receive-only
// metadata.
func fromRecord(r *kgo.Record) *message.Message {
	msg := message.NewMessage("", r.Value)
	for _, h := range r.Headers {
		msg.Metadata[h.Key] = string(h.Value)
	}
	msg.UUID = msg.Metadata[messaging.HeaderID]
	if r.Key != nil {
		msg.Metadata[messaging.MetadataPartitionKey] = string(r.Key)
	}
	msg.Metadata[messaging.MetadataKafkaTopic] = r.Topic
	msg.Metadata[messaging.MetadataKafkaPartition] = strconv.Itoa(int(r.Partition))
	msg.Metadata[messaging.MetadataKafkaOffset] = strconv.FormatInt(r.Offset, 10)
	return msg
}

// toConsumerMessage turns a franz-go record into the sarama message the
// CloudEvents SDK's Kafka binding reads.
func toConsumerMessage(r *kgo.Record) *sarama.ConsumerMessage {
	cm := &sarama.ConsumerMessage{
		Key: r.Key, Value: r.Value, Topic: r.Topic,
		Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp,
	}
	for _, h := range r.Headers {
		cm.Headers = append(cm.Headers, &sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
	}
	return cm
}

// roundTripKafka produces records to a new topic and returns them as
// consumed, in order.
func roundTripKafka(t *testing.T, records []*kgo.Record) []*kgo.Record {
	t.Helper()
	topic := kafkatest.NewTopic(t, 1)
	for _, r := range records {
		r.Topic = topic
	}
	cl := kafkatest.NewClient(t,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	ctx, cancel := context.WithTimeout(t.Context(), interopTimeout)
	defer cancel()
	require.NoError(t, cl.ProduceSync(ctx, records...).FirstErr())

	var got []*kgo.Record
	for len(got) < len(records) {
		fetches := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "records not consumed in time")
		for _, fe := range fetches.Errors() {
			require.NoError(t, fe.Err, "fetch from %s/%d", fe.Topic, fe.Partition)
		}
		got = append(got, fetches.Records()...)
	}
	require.Len(t, got, len(records))
	return got
}

// TestCloudEventsSDKReadsEnvelopes publishes envelopes through Kafka as
// dtx's publisher does and reads them with the CloudEvents Go SDK.
func TestCloudEventsSDKReadsEnvelopes(t *testing.T) {
	t.Parallel()
	envelopes := []messaging.Envelope{
		fullEnvelope(),
		{ID: "minimal-1", Type: "inventory.stock.release", Source: "/orchestrator",
			Data: json.RawMessage(`{"order_id":"ord-1","reason":"timeout"}`)},
		{ID: "text-1", Type: "note.taken", Source: "urn:dtx:test", DataContentType: "text/plain; charset=utf-8",
			Time: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), PartitionKey: "ключ", Data: json.RawMessage("plain text ✓")},
	}
	var records []*kgo.Record
	for _, e := range envelopes {
		msg, err := e.ToMessage()
		require.NoError(t, err)
		records = append(records, toRecord(msg, ""))
	}

	for i, r := range roundTripKafka(t, records) {
		e := envelopes[i]
		cm := toConsumerMessage(r)
		m := kafka_sarama.NewMessageFromConsumerMessage(cm)
		require.Equal(t, binding.EncodingBinary, m.ReadEncoding(), e.ID)
		ev, err := binding.ToEvent(t.Context(), m)
		require.NoError(t, err, e.ID)
		require.NoError(t, ev.Validate(), e.ID)

		require.Equal(t, "1.0", ev.SpecVersion())
		require.Equal(t, e.ID, ev.ID())
		require.Equal(t, e.Type, ev.Type())
		require.Equal(t, e.Source, ev.Source())
		require.Equal(t, e.Subject, ev.Subject())
		require.True(t, e.Time.Equal(ev.Time()), "time: want %s, got %s", e.Time, ev.Time())
		wantCT := e.DataContentType
		if wantCT == "" {
			wantCT = messaging.ContentTypeJSON
		}
		require.Equal(t, wantCT, ev.DataContentType())
		require.Equal(t, e.DataSchema, ev.DataSchema())
		require.Equal(t, []byte(e.Data), ev.Data())
		require.Equal(t, e.PartitionKey, string(cm.Key), "record key")

		// Every dtx extension and every custom one arrives; the SDK adds
		// the record's place as kafkatopic, kafkapartition, kafkaoffset.
		want := map[string]any{
			"kafkatopic":     r.Topic,
			"kafkapartition": strconv.Itoa(int(r.Partition)),
			"kafkaoffset":    strconv.FormatInt(r.Offset, 10),
		}
		for name, value := range map[string]string{
			"correlationid": e.CorrelationID,
			"causationid":   e.CausationID,
			"sagaid":        e.SagaID,
			"traceparent":   e.TraceParent,
			"tracestate":    e.TraceState,
			"partitionkey":  e.PartitionKey,
		} {
			if value != "" {
				want[name] = value
			}
		}
		if e.SchemaVersion > 0 {
			want["schemaversion"] = strconv.Itoa(e.SchemaVersion)
		}
		for name, value := range e.Extensions {
			want[name] = value
		}
		require.Equal(t, want, ev.Extensions(), e.ID)
	}
}

// TestDecodeReadsCloudEventsSDKEvents writes events with the CloudEvents Go
// SDK's Kafka binding, sends them through Kafka and reads them with Decode
// as dtx's subscriber would.
func TestDecodeReadsCloudEventsSDKEvents(t *testing.T) {
	t.Parallel()
	full := event.New()
	full.SetID("sdk-1")
	full.SetType("inventory.stock.reserved")
	full.SetSource("https://inventory.example.com/")
	full.SetSubject("ord-1001")
	full.SetTime(time.Date(2026, 11, 23, 9, 15, 3, 250_000_000, time.UTC))
	full.SetDataSchema("https://github.com/vextrus/dtx/schemas/inventory.stock.reserved.v1.json")
	require.NoError(t, full.SetData(event.ApplicationJSON, map[string]any{"order_id": "ord-1001", "reservation_id": "res-1"}))
	for name, value := range map[string]any{
		"correlationid": "corr-9",
		"causationid":   "cause-9",
		"sagaid":        "saga-9",
		"traceparent":   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"tracestate":    "k=v",
		"schemaversion": 2, // an Integer attribute, written in decimal
		"partitionkey":  "ord-1001",
		"tenant":        "acme",
	} {
		full.SetExtension(name, value)
	}
	require.NoError(t, full.Validate())

	minimal := event.New()
	minimal.SetID("sdk-2")
	minimal.SetType("ping")
	minimal.SetSource("/sdk")

	wantFull := messaging.Envelope{
		ID:              "sdk-1",
		Type:            "inventory.stock.reserved",
		Source:          "https://inventory.example.com/",
		Subject:         "ord-1001",
		Time:            time.Date(2026, 11, 23, 9, 15, 3, 250_000_000, time.UTC),
		DataContentType: messaging.ContentTypeJSON,
		DataSchema:      "https://github.com/vextrus/dtx/schemas/inventory.stock.reserved.v1.json",
		SchemaVersion:   2,
		PartitionKey:    "ord-1001",
		CorrelationID:   "corr-9",
		CausationID:     "cause-9",
		SagaID:          "saga-9",
		TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		TraceState:      "k=v",
		Extensions:      map[string]string{"tenant": "acme"},
		Data:            json.RawMessage(`{"order_id":"ord-1001","reservation_id":"res-1"}`),
	}
	wantMinimal := messaging.Envelope{ID: "sdk-2", Type: "ping", Source: "/sdk", DataContentType: messaging.ContentTypeJSON}

	var records []*kgo.Record
	for _, ev := range []event.Event{full, minimal} {
		pm := &sarama.ProducerMessage{}
		require.NoError(t, kafka_sarama.WriteProducerMessage(t.Context(), binding.ToMessage(&ev), pm))
		r := &kgo.Record{}
		if pm.Key != nil {
			key, err := pm.Key.Encode()
			require.NoError(t, err)
			r.Key = key
		}
		if pm.Value != nil {
			value, err := pm.Value.Encode()
			require.NoError(t, err)
			r.Value = value
		}
		for _, h := range pm.Headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: string(h.Key), Value: h.Value})
		}
		records = append(records, r)
	}
	require.Equal(t, []byte("ord-1001"), records[0].Key, "the SDK maps partitionkey to the record key")

	got := roundTripKafka(t, records)
	for i, want := range []messaging.Envelope{wantFull, wantMinimal} {
		e, err := messaging.Decode(fromRecord(got[i]))
		require.NoError(t, err, want.ID)
		require.Equal(t, want, e)

		// And back: what Decode read, dtx writes again unchanged.
		msg, err := e.ToMessage()
		require.NoError(t, err)
		again, err := messaging.Decode(msg)
		require.NoError(t, err)
		require.Equal(t, e, again)
	}
}
