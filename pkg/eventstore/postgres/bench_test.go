package postgres_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
)

// BenchmarkAppend measures events appended per second, with 32 writers each
// appending to its own stream, in transactions of 1 and of 100 events:
// through Store.Append (stream lock, version check, events and outbox rows),
// and beside it the baseline, raw pgx inserting the same events into the
// events table without lock, check or outbox: one row per transaction, or
// one multi-row INSERT (unnest) per transaction. It prints the ratio of
// each pair.
func BenchmarkAppend(b *testing.B) {
	s := pgtest.NewSchema(b)
	cfg := s.Config()
	cfg.MaxConns = 32
	pool, err := pgxpool.NewWithConfig(b.Context(), cfg)
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	store, err := postgres.New(pool, postgres.Config{Schema: s.Name})
	require.NoError(b, err)
	const rawInsert = `INSERT INTO events (stream_id, stream_type, version, event_id, type, schema_version, data)
		SELECT $1, 'bench', $2 + n, id, 'bench.happened', 1, d
		FROM unnest($3::text[], $4::jsonb[]) WITH ORDINALITY AS r(id, d, n)`
	data := json.RawMessage(`{"amount": 42, "currency": "EUR", "note": "a typical small event"}`)

	var streams atomic.Int64
	for _, size := range []int{1, 100} {
		rates := map[string]float64{}
		run := func(name string, appendOnce func(stream string, version int64) error) {
			b.Run(fmt.Sprintf("%s/events=%d", name, size), func(b *testing.B) {
				b.SetParallelism(16) // 16 × GOMAXPROCS(2) = 32 writers
				b.RunParallel(func(pb *testing.PB) {
					stream := "bench-" + strconv.FormatInt(streams.Add(1), 10)
					var version int64
					for pb.Next() {
						if err := appendOnce(stream, version); err != nil {
							b.Error(err)
							return
						}
						version += int64(size)
					}
				})
				rate := float64(b.N*size) / b.Elapsed().Seconds()
				b.ReportMetric(rate, "events/s")
				rates[name] = rate
			})
		}
		run("eventstore", func(stream string, _ int64) error {
			evs := make([]eventstore.EventData, size)
			for i := range evs {
				evs[i] = eventstore.EventData{Type: "bench.happened", Data: data}
			}
			_, err := store.Append(b.Context(), eventstore.AppendParams{StreamID: stream, StreamType: "bench",
				Expected: eventstore.Any, Events: evs})
			return err
		})
		run("raw-pgx", func(stream string, version int64) error {
			ids := make([]string, size)
			ds := make([][]byte, size)
			for i := range ids {
				ids[i], ds[i] = uuid.NewString(), data
			}
			return pgx.BeginFunc(b.Context(), pool, func(tx pgx.Tx) error {
				_, err := tx.Exec(b.Context(), rawInsert, stream, version, ids, ds)
				return err
			})
		})
		if rates["raw-pgx"] > 0 && rates["eventstore"] > 0 {
			b.Logf("events=%d: eventstore %.0f events/s, raw pgx %.0f events/s, ratio %.2f",
				size, rates["eventstore"], rates["raw-pgx"], rates["eventstore"]/rates["raw-pgx"])
		}
	}
}
