package outbox_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

// BenchmarkWrite measures rows written per second by transactions of 1, 10
// and 100 messages, each with its own key: through Write (validation, key
// locks, one pipelined round trip), and beside it the baseline, raw pgx
// inserting the same rows with one plain INSERT per row, pipelined in one
// batch, without validation or locks. Compare rows/s at equal batch sizes.
func BenchmarkWrite(b *testing.B) {
	f := setup(b, outbox.Config{})
	const insert = "INSERT INTO outbox (topic, key, headers, payload) VALUES ($1, $2, $3, $4)"
	for _, size := range []int{1, 10, 100} {
		msgs := make([]*message.Message, size)
		keys := make([]string, size)
		headers := make([][]byte, size)
		for i := range msgs {
			msgs[i] = newMessage(b, i, "order-"+strconv.Itoa(i))
			keys[i] = msgs[i].Metadata[messaging.MetadataPartitionKey]
			h := map[string]string{}
			for k, v := range msgs[i].Metadata {
				if !strings.HasPrefix(k, "dtx_") {
					h[k] = v
				}
			}
			var err error
			headers[i], err = json.Marshal(h)
			require.NoError(b, err)
		}
		run := func(b *testing.B, write func(tx pgx.Tx) error) {
			_, err := f.pool.Exec(b.Context(), "TRUNCATE outbox")
			require.NoError(b, err)
			for b.Loop() {
				tx, err := f.pool.Begin(b.Context())
				require.NoError(b, err)
				require.NoError(b, write(tx))
				require.NoError(b, tx.Commit(b.Context()))
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "rows/s")
		}
		b.Run("outbox/batch="+strconv.Itoa(size), func(b *testing.B) {
			run(b, func(tx pgx.Tx) error { return f.ob.Write(b.Context(), tx, "bench", msgs...) })
		})
		b.Run("raw-pgx/batch="+strconv.Itoa(size), func(b *testing.B) {
			run(b, func(tx pgx.Tx) error {
				var batch pgx.Batch
				for i := range size {
					batch.Queue(insert, "bench", keys[i], headers[i], []byte(msgs[i].Payload))
				}
				return tx.SendBatch(b.Context(), &batch).Close()
			})
		})
	}
}
