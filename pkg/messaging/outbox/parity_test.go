package outbox_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

// The outbox row of a message holds the record that the kafka package's
// Publisher writes for the same message: same key, headers and value.
func TestRowEqualsKafkaPublisherRecord(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	topic := kafkatest.NewTopic(t, 1)

	env := envelope(t, 42, "order-42")
	env.Subject = "order-42"
	env.CorrelationID = "corr"
	env.CausationID = "cause"
	env.SagaID = "saga"
	env.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	env.Extensions = map[string]string{"tenant": "acme"}
	keyed, err := env.ToMessage()
	require.NoError(t, err)
	keyed.Metadata["x-custom"] = "value with \"quotes\", <html> & \n"
	keyed.Metadata[messaging.MetadataKafkaOffset] = "7" // receive-only: dropped by both
	unkeyed := newMessage(t, 43, "")

	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: kafka.ClientConfig{Brokers: kafkatest.Brokers()}})
	require.NoError(t, err)
	require.NoError(t, pub.Publish(topic, keyed.Copy(), unkeyed.Copy()))
	require.NoError(t, pub.Close())

	tx := f.begin(t)
	require.NoError(t, f.ob.Write(context.Background(), tx, topic, keyed.Copy(), unkeyed.Copy()))
	require.NoError(t, tx.Commit(t.Context()))
	rows := f.rows(t)
	require.Len(t, rows, 2)

	cl := kafkatest.NewClient(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < 2 {
		fs := cl.PollFetches(ctx)
		require.NoError(t, fs.Err0())
		recs = append(recs, fs.Records()...)
	}
	require.Len(t, recs, 2)

	for i, rec := range recs {
		headers := make(map[string]string, len(rec.Headers))
		for _, h := range rec.Headers {
			headers[h.Key] = string(h.Value)
		}
		require.Equal(t, headers, rows[i].Headers, "record %d", i)
		require.Equal(t, rec.Value, rows[i].Payload, "record %d", i)
		if rec.Key == nil {
			require.Nil(t, rows[i].Key, "record %d", i)
		} else {
			require.NotNil(t, rows[i].Key, "record %d", i)
			require.Equal(t, string(rec.Key), *rows[i].Key, "record %d", i)
		}
	}
	require.Equal(t, "order-42", string(recs[0].Key))
	require.Equal(t, "value with \"quotes\", <html> & \n", rows[0].Headers["x-custom"])
}
