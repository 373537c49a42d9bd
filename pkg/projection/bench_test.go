package projection_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
	"github.com/vextrus/dtx/pkg/projection"
)

// BenchmarkProjectorCatchUp measures how fast a projection catches up with
// the event store's global log from the first event: 50,000 events over 500
// streams, appended beforehand (10 events per append, the streams in turn),
// projected by Runner.CatchUp with the built-in stream_summaries projection
// (gap-safe reads, per-stream versions, checkpoint and one multi-row upsert
// per batch, all in one transaction per batch). Beside it the baseline:
// raw pgx writing the same read-model rows, a multi-row INSERT ... ON
// CONFLICT DO UPDATE per transaction of as many events as the runner's
// batch, from events already in memory. It prints the ratio.
func BenchmarkProjectorCatchUp(b *testing.B) {
	const (
		streams   = 500
		perAppend = 10
		total     = 50_000
	)
	s := pgtest.NewSchema(b)
	store, err := postgres.New(s.Pool, postgres.Config{Schema: s.Name})
	require.NoError(b, err)
	data := json.RawMessage(`{"amount": 42, "currency": "EUR", "note": "a typical small event"}`)

	// Append: each worker takes every 8th stream, round after round.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for round := range total / streams / perAppend {
				for st := w; st < streams; st += 8 {
					evs := make([]eventstore.EventData, perAppend)
					for i := range evs {
						evs[i] = eventstore.EventData{Type: fmt.Sprintf("bench.type%d", (round+i)%3), Data: data}
					}
					_, err := store.Append(b.Context(), eventstore.AppendParams{StreamID: fmt.Sprintf("bench-%d", st),
						StreamType: "bench", Expected: eventstore.Any, Events: evs})
					if err != nil {
						b.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	require.False(b, b.Failed())

	reset := func() {
		b.Helper()
		_, err := s.Pool.Exec(b.Context(), `TRUNCATE stream_summaries;
			DELETE FROM projection_streams; DELETE FROM txlog_checkpoints WHERE reader = 'stream_summaries'`)
		require.NoError(b, err)
	}
	requireAll := func() {
		b.Helper()
		var n, count int64
		require.NoError(b, s.Pool.QueryRow(b.Context(), "SELECT count(*), sum(event_count) FROM stream_summaries").Scan(&n, &count))
		require.Equal(b, int64(streams), n)
		require.Equal(b, int64(total), count)
	}

	p := projection.StreamSummaries(s.Name)
	r, err := projection.New(store, s.Pool, projection.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(b, err)
	batch := projection.DefaultBatchSize
	rates := map[string]float64{}
	b.Run("runner", func(b *testing.B) {
		var elapsed time.Duration
		for range b.N {
			reset()
			start := time.Now()
			require.NoError(b, r.CatchUp(b.Context(), p))
			elapsed += time.Since(start)
			requireAll()
		}
		rates["runner"] = float64(b.N*total) / elapsed.Seconds()
		b.ReportMetric(rates["runner"], "events/s")
	})

	// The baseline writes the same rows from memory.
	var events []eventstore.RecordedEvent
	for after := (eventstore.Position{}); ; {
		bt, err := store.ReadAll(b.Context(), eventstore.ReadAllParams{After: after, Limit: 10_000})
		require.NoError(b, err)
		events = append(events, bt.Events...)
		after = bt.End
		if !bt.Full {
			break
		}
	}
	require.Len(b, events, total)
	b.Run("raw-pgx", func(b *testing.B) {
		var elapsed time.Duration
		for range b.N {
			reset()
			start := time.Now()
			for i := 0; i < len(events); i += batch {
				err := pgx.BeginFunc(b.Context(), s.Pool, func(tx pgx.Tx) error {
					return rawUpsert(b, tx, events[i:min(i+batch, len(events))])
				})
				require.NoError(b, err)
			}
			elapsed += time.Since(start)
			requireAll()
		}
		rates["raw"] = float64(b.N*total) / elapsed.Seconds()
		b.ReportMetric(rates["raw"], "events/s")
	})
	if rates["raw"] > 0 && rates["runner"] > 0 {
		b.Logf("events=%d streams=%d batch=%d: runner %.0f events/s, raw pgx %.0f events/s, ratio %.2f",
			total, streams, batch, rates["runner"], rates["raw"], rates["runner"]/rates["raw"])
	}
}

// rawUpsert writes the stream_summaries rows of events with one statement,
// one row per stream.
func rawUpsert(b *testing.B, tx pgx.Tx, events []eventstore.RecordedEvent) error {
	b.Helper()
	at := map[string]int{}
	var (
		ids, types, lastTypes, lastIDs []string
		versions, counts               []int64
		updated                        []time.Time
	)
	for _, ev := range events {
		i, ok := at[ev.StreamID]
		if !ok {
			i = len(ids)
			at[ev.StreamID] = i
			ids, types, lastTypes, lastIDs = append(ids, ""), append(types, ""), append(lastTypes, ""), append(lastIDs, "")
			versions, counts, updated = append(versions, 0), append(counts, 0), append(updated, time.Time{})
		}
		ids[i], types[i], lastTypes[i], lastIDs[i] = ev.StreamID, ev.StreamType, ev.Type, ev.ID
		versions[i], updated[i] = ev.Version, ev.RecordedAt
		counts[i]++
	}
	_, err := tx.Exec(b.Context(), `INSERT INTO stream_summaries AS s
		(stream_id, stream_type, version, last_event_type, last_event_id, event_count, updated_at)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::timestamptz[])
		ON CONFLICT (stream_id) DO UPDATE SET stream_type = EXCLUDED.stream_type, version = EXCLUDED.version,
			last_event_type = EXCLUDED.last_event_type, last_event_id = EXCLUDED.last_event_id,
			event_count = s.event_count + EXCLUDED.event_count, updated_at = EXCLUDED.updated_at`,
		ids, types, versions, lastTypes, lastIDs, counts, updated)
	return err
}
