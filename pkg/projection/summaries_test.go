package projection_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/projection"
)

type summaryRow struct {
	StreamID      string
	StreamType    string
	Version       int64
	LastEventType string
	LastEventID   string
	EventCount    int64
	UpdatedAt     time.Time
}

// summaries returns the rows of the stream_summaries table.
func (f *fixture) summaries(t *testing.T) []summaryRow {
	t.Helper()
	rows, err := f.pool.Query(t.Context(), `SELECT stream_id, stream_type, version, last_event_type,
		last_event_id, event_count, updated_at FROM stream_summaries ORDER BY stream_id`)
	require.NoError(t, err)
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[summaryRow])
	require.NoError(t, err)
	return all
}

// expectedSummaries computes the summaries of the events of types straight
// from the events table.
func (f *fixture) expectedSummaries(t *testing.T, types ...string) []summaryRow {
	t.Helper()
	rows, err := f.pool.Query(t.Context(), `SELECT DISTINCT ON (stream_id) stream_id, stream_type, version, type,
		event_id, count(*) OVER (PARTITION BY stream_id), recorded_at
		FROM events WHERE type = ANY($1) ORDER BY stream_id, version DESC`, types)
	require.NoError(t, err)
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[summaryRow])
	require.NoError(t, err)
	return all
}

func TestStreamSummariesMatchTheStoreAndRebuildEqualsLive(t *testing.T) {
	t.Parallel()
	f := setup(t)
	var schema string
	require.NoError(t, f.pool.QueryRow(t.Context(), "SELECT current_schema()").Scan(&schema))
	p := projection.StreamSummaries(schema, typeCancelled, typePlaced, typePlaced)
	require.Equal(t, []string{typeCancelled, typePlaced}, p.Handles())
	require.Equal(t, []string{schema + ".stream_summaries"}, p.Tables())

	r := f.runner(t, nil)
	stop := run(t, r, p)
	last, _ := f.appendOrders(t, 0, 30)
	// Streams with several appends: their rows must follow.
	for i := range 10 {
		res, err := f.store.Append(t.Context(), eventstore.AppendParams{
			StreamID: fmt.Sprintf("order-%d", i%4), StreamType: "order", Expected: eventstore.Any,
			Events: []eventstore.EventData{{Type: typePlaced, Data: json.RawMessage(`{"customer":"c9"}`)}},
		})
		require.NoError(t, err)
		last = res.Position
	}
	f.waitCheckpoint(t, projection.StreamSummariesName, last)
	live := f.summaries(t)
	require.Len(t, live, 30)
	require.Equal(t, f.expectedSummaries(t, typePlaced, typeCancelled), live)

	require.NoError(t, r.Rebuild(t.Context(), p))
	require.Equal(t, live, f.summaries(t))

	// The live projection goes on, on the rebuilt table.
	last, _ = f.appendOrders(t, 100, 5)
	f.waitCheckpoint(t, projection.StreamSummariesName, last)
	require.Equal(t, f.expectedSummaries(t, typePlaced, typeCancelled), f.summaries(t))
	require.NoError(t, stop())
}

// Built without types, stream_summaries counts every event of a stream,
// including types nobody listed.
func TestStreamSummariesWithoutTypesCountsEveryType(t *testing.T) {
	t.Parallel()
	f := setup(t)
	var schema string
	require.NoError(t, f.pool.QueryRow(t.Context(), "SELECT current_schema()").Scan(&schema))
	p := projection.StreamSummaries(schema)
	require.Equal(t, []string{projection.AllTypes}, p.Handles())

	r := f.runner(t, nil)
	stop := run(t, r, p)
	last, _ := f.appendOrders(t, 0, 20)
	f.waitCheckpoint(t, projection.StreamSummariesName, last)
	require.Equal(t, f.expectedSummaries(t, typePlaced, typeCancelled, typeUnknown), f.summaries(t))
	require.NotEqual(t, f.expectedSummaries(t, typePlaced, typeCancelled), f.summaries(t),
		"the fixture has streams with events of a third type")
	require.NoError(t, stop())
}
