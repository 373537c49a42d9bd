package middleware_test

import (
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

// TestKafkaDeadLetterNotSilent consumes, on real Kafka with the Standard
// stack given a Logger and a Registerer (as every dtx binary runs it), a
// record of a type no schema knows: it lands in <topic>.dlq with its reason
// header, one WARN line names its type, topic, partition, offset, reason and
// cause, and dtx_dead_letters_total{reason="unknown_type"} is 1.
func TestKafkaDeadLetterNotSilent(t *testing.T) {
	t.Parallel()
	f := setupKafka(t, 1)
	var logs logBuffer
	reg := prometheus.NewRegistry()
	r := standardRouter(t, f, middleware.StackConfig{Logger: newLogger(&logs), Registerer: reg})
	r.AddConsumerHandler("billing", f.topic, f.subscriber(t), func(*message.Message) error {
		t.Error("a message of an unknown type reached the handler")
		return nil
	})
	runRouter(t, r)

	unknown := envelopeMessage(t, "billing.invoice.create", []byte(`{"order_id":"ord-1"}`))
	offset := f.produce(t, 0, record(unknown))

	dead := f.readAll(t, f.dlq, 1)
	h := headers(dead[0])
	const cause = `messaging: type "billing.invoice.create" version 1: no schema for message type`
	require.Contains(t, h[messaging.HeaderDLQReason], cause)
	require.Equal(t, strconv.FormatInt(offset, 10), h[messaging.HeaderDLQOriginalOffset])

	// The warning is logged after the dead letter is published.
	var recs []map[string]any
	require.Eventually(t, func() bool {
		recs = logs.records(t, middleware.DeadLetterLogMsg)
		return len(recs) > 0
	}, waitFor, pollEvery)
	require.Len(t, recs, 1)
	w := recs[0]
	require.Equal(t, "WARN", w["level"])
	require.Equal(t, "billing.invoice.create", w["type"])
	require.Equal(t, f.topic, w["topic"])
	require.Equal(t, "0", w["partition"])
	require.Equal(t, strconv.FormatInt(offset, 10), w["offset"])
	require.Equal(t, f.dlq, w["dead_letter_topic"])
	require.Equal(t, middleware.CauseUnknownType, w["reason"])
	require.Contains(t, w["cause"], cause)
	require.Equal(t, unknown.UUID, w["message_id"])

	// The counter is incremented after the dead letter is published.
	counted := func() map[string]float64 {
		families, err := reg.Gather()
		require.NoError(t, err)
		got := map[string]float64{}
		for _, fam := range families {
			if fam.GetName() != middleware.DeadLettersMetric {
				continue
			}
			for _, m := range fam.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				got[labels["topic"]+"/"+labels["reason"]] = m.GetCounter().GetValue()
			}
		}
		return got
	}
	require.Eventually(t, func() bool { return len(counted()) > 0 }, waitFor, pollEvery)
	require.Equal(t, map[string]float64{f.topic + "/" + middleware.CauseUnknownType: 1}, counted())
}
