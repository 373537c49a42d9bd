package txlog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/txlog"
)

// BenchmarkReadBatch reads a log of 100,000 rows (100 transactions of 1,000
// rows, 100-byte payloads) batch after batch, starting over at the end, and
// reports rows per second. The baseline reads the same rows with the query
// gap safety replaces: by position alone, through an index on position.
// "caught-up" is the cost of one poll of a reader that has read everything.
func BenchmarkReadBatch(b *testing.B) {
	const txs, rowsPerTx = 100, 1000
	f := setup(b)
	ctx := context.Background()
	for range txs {
		_, err := f.pool.Exec(ctx, "INSERT INTO "+f.log+" (topic, payload) SELECT 'topic-' || (i % 16), convert_to(repeat('x', 100), 'UTF8') FROM generate_series(1, $1) i", rowsPerTx)
		require.NoError(b, err)
	}
	_, err := f.pool.Exec(ctx, "CREATE UNIQUE INDEX ON "+f.log+" (position)")
	require.NoError(b, err)
	_, err = f.pool.Exec(ctx, "VACUUM ANALYZE "+f.log)
	require.NoError(b, err)
	// Every row must be below the horizon before measuring.
	require.Eventually(b, func() bool {
		r := f.newReader(b, "probe", func(c *txlog.Config) { c.BatchSize = txlog.MaxBatchSize })
		n := 0
		var after txlog.Position
		for {
			batch, err := r.ReadBatch(ctx, f.pool, after)
			require.NoError(b, err)
			n += len(batch.Rows)
			after = batch.End
			if !batch.Full {
				return n == txs*rowsPerTx
			}
		}
	}, waitFor, 50*time.Millisecond)

	// A reader that has read everything polls: an empty read, two statements.
	b.Run("caught-up", func(b *testing.B) {
		r := f.newReader(b, "bench")
		end := f.allPositions(b)[txs*rowsPerTx-1]
		for b.Loop() {
			batch, err := r.ReadBatch(ctx, f.pool, end)
			if err != nil || len(batch.Rows) > 0 {
				b.Fatal(err, len(batch.Rows))
			}
		}
	})

	for _, size := range []int{100, 500, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			r := f.newReader(b, "bench", func(c *txlog.Config) { c.BatchSize = size })
			var after txlog.Position
			rows := 0
			start := time.Now()
			for b.Loop() {
				batch, err := r.ReadBatch(ctx, f.pool, after)
				if err != nil {
					b.Fatal(err)
				}
				rows += len(batch.Rows)
				after = batch.End
				if !batch.Full {
					after = txlog.Position{}
				}
			}
			b.ReportMetric(float64(rows)/time.Since(start).Seconds(), "rows/s")
		})
		b.Run(fmt.Sprintf("baseline-by-position/batch=%d", size), func(b *testing.B) {
			var after int64
			rows := 0
			start := time.Now()
			for b.Loop() {
				res, err := f.pool.Query(ctx, "SELECT tx_id, position, topic, payload FROM "+f.log+" WHERE position > $1 ORDER BY position LIMIT $2", after, size)
				if err != nil {
					b.Fatal(err)
				}
				// Collected like ReadBatch does, for a like-for-like comparison.
				out := make([]txlog.Row[msg], 0, 64)
				var row txlog.Row[msg]
				_, err = pgx.ForEachRow(res, []any{&row.Position.TxID, &row.Position.Pos, &row.Value.Topic, &row.Value.Payload}, func() error {
					out = append(out, row)
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				n := len(out)
				if n > 0 {
					after = out[n-1].Position.Pos
				}
				rows += n
				if n < size {
					after = 0
				}
			}
			b.ReportMetric(float64(rows)/time.Since(start).Seconds(), "rows/s")
		})
	}
}
