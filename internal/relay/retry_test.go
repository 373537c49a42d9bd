package relay_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

// A broker that refuses every record for a reason that is not the record's
// fault (its clock disagrees with the timestamps, the relay may not write
// the topic) makes the relay retry, loudly, without setting any row aside;
// once the fault clears, every row is published once, in order, stamped
// with its created_at.
func TestRetriesRefusalsOfTheEnvironment(t *testing.T) {
	t.Parallel()
	for _, fault := range []*kerr.Error{kerr.InvalidTimestamp, kerr.TopicAuthorizationFailed} {
		t.Run(fault.Message, func(t *testing.T) {
			t.Parallel()
			c, err := kfake.NewCluster(kfake.NumBrokers(1))
			require.NoError(t, err)
			t.Cleanup(c.Close)
			addrs := c.ListenAddrs()
			topic := kafkatest.TopicName(t)
			createTopic(t, addrs, topic, 3)

			var faulty atomic.Bool
			var refused atomic.Int64
			faulty.Store(true)
			c.ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				if !faulty.Load() {
					return nil, nil, false
				}
				refused.Add(1)
				return produceError(req.(*kmsg.ProduceRequest), fault.Code), nil, true
			})

			f := &fixture{schema: pgtest.NewSchema(t), topic: topic}
			want := numbered("m", 30, 3)
			// A row stamped two hours back, first of its partition: its
			// record carries that time, not the relay's clock, and is not
			// timed out for its age when produced again.
			_, err = f.schema.Pool.Exec(context.Background(),
				`INSERT INTO outbox (topic, key, headers, payload, created_at) VALUES ($1, 'k0', '{}', 'old', now() - interval '2 hours')`, topic)
			require.NoError(t, err)
			for i := 0; i < len(want); i += 10 {
				f.insertTx(t, want[i:i+10]...)
			}
			created := map[string]time.Time{}
			rows, err := f.schema.Pool.Query(context.Background(), "SELECT convert_from(payload, 'UTF8'), created_at FROM outbox")
			require.NoError(t, err)
			for rows.Next() {
				var p string
				var at time.Time
				require.NoError(t, rows.Scan(&p, &at))
				created[p] = at
			}
			require.NoError(t, rows.Err())
			require.Len(t, created, 31)

			rr := f.start(t, f.config("r1"), kgo.SeedBrokers(addrs...))
			require.Eventually(t, func() bool {
				return refused.Load() >= 4 &&
					rr.metricLabel(t, "dtx_relay_publish_retries_total", "reason", fault.Message) >= 3
			}, waitFor, 20*time.Millisecond, "the relay retries")
			var rejected int
			require.NoError(t, f.schema.Pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox_rejected").Scan(&rejected))
			require.Zero(t, rejected, "no row is set aside")
			require.Zero(t, rr.metric(t, "dtx_relay_rejected_total", ""))
			require.Zero(t, f.checkpoint(t).TxID, "the checkpoint stays before the refused rows")
			logs := rr.logs.String()
			require.Contains(t, logs, "level=WARN msg=\"relay: publishing failed")
			require.Contains(t, logs, "topic="+topic)
			require.Contains(t, logs, "reason="+fault.Message)
			health := rr.relay.Health()
			require.ErrorContains(t, health, "publishing of every topic stopped", "the relay's health says it is stopped")
			require.ErrorContains(t, health, fmt.Sprintf("topic %q (%s)", topic, fault.Message))
			var held int
			require.NoError(t, f.schema.Pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox_held").Scan(&held))
			require.Zero(t, held, "a fault of every topic holds nothing")
			warnings := strings.Count(logs, "msg=\"relay: publishing failed")
			retries := rr.metricLabel(t, "dtx_relay_publish_retries_total", "reason", fault.Message)
			require.Less(t, float64(warnings), retries, "warnings are rate-limited")

			faulty.Store(false)
			f.waitCheckpoint(t)
			require.Eventually(t, func() bool { return rr.relay.Health() == nil }, waitFor, 20*time.Millisecond, "healthy again")
			cons := &consumer{cl: newKfakeConsumer(t, addrs, topic)}
			recs := cons.until(t, len(want)+1)
			recs = append(recs, cons.more(t, 500*time.Millisecond)...)
			require.Len(t, recs, len(want)+1, "every row is published exactly once")
			keys := byKey(recs)
			for k := range 3 {
				var exp []string
				if k == 0 {
					exp = append(exp, "old")
				}
				for i := k; i < len(want); i += 3 {
					exp = append(exp, want[i].Payload)
				}
				require.Equal(t, exp, keys[fmt.Sprintf("k%d", k)], "key k%d in order", k)
			}
			for _, r := range recs {
				require.Equal(t, created[string(r.Value)].UnixMilli(), r.Timestamp.UnixMilli(),
					"record %s is stamped with its row's created_at", r.Value)
			}
		})
	}
}

// produceError answers req with code for every partition.
func produceError(req *kmsg.ProduceRequest, code int16) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition, sp.ErrorCode = rp.Partition, code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// createTopic creates topic with partitions on the brokers at addrs.
func createTopic(t *testing.T, addrs []string, topic string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	res, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic)
	require.NoError(t, err)
	require.NoError(t, res.Err)
}

// newKfakeConsumer reads topic from its start on the brokers at addrs.
func newKfakeConsumer(t *testing.T, addrs []string, topic string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// metricLabel returns the value of counter name summed over the series
// whose label has value.
func (rr *running) metricLabel(t testing.TB, name, label, value string) float64 {
	t.Helper()
	mfs, err := rr.reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
