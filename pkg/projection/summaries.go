package projection

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/pkg/eventstore"
)

// StreamSummariesName is the name (checkpoint reader) of the projection
// StreamSummaries returns.
const StreamSummariesName = "stream_summaries"

// StreamSummariesTable is the table (migration 006) the projection
// StreamSummaries returns writes, in its schema.
const StreamSummariesTable = "stream_summaries"

// Summaries is the built-in stream_summaries projection: one row per event
// stream in the table stream_summaries of its schema (migration 006) with
// the stream's type, the version, type and id of its last event, its event
// count and the recorded_at of its last event (updated_at, so that a
// rebuild yields the same rows). It is a RebuildableProjection.
//
// Built without types it counts every event, so version and event_count
// describe each whole stream; built with types it counts only those and
// skips the others.
type Summaries struct {
	schema string
	table  string
	types  []string
}

var _ RebuildableProjection = Summaries{}

// StreamSummaries returns the stream_summaries projection of the event
// types types (every type when none are given), writing to the
// stream_summaries table of schema (which must hold the events; migration
// 006 creates the table).
func StreamSummaries(schema string, types ...string) Summaries {
	if len(types) == 0 {
		types = []string{AllTypes}
	}
	ts := slices.Clone(types)
	slices.Sort(ts)
	return Summaries{schema: schema, table: StreamSummariesTable, types: slices.Compact(ts)}
}

// Name returns StreamSummariesName.
func (s Summaries) Name() string { return StreamSummariesName }

// Handles returns the event types s was built with, sorted.
func (s Summaries) Handles() []string { return slices.Clone(s.types) }

// Tables returns the schema-qualified stream_summaries table.
func (s Summaries) Tables() []string { return []string{s.schema + "." + s.table} }

// Shadow returns s writing to the table whose name has suffix appended.
func (s Summaries) Shadow(suffix string) Projection {
	s.table += suffix
	return s
}

// Apply makes ev the last event of its stream's row, adding the row at the
// stream's first event.
func (s Summaries) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	t := pgx.Identifier{s.schema, s.table}.Sanitize()
	_, err := tx.Exec(ctx, `INSERT INTO `+t+` AS s
		(stream_id, stream_type, version, last_event_type, last_event_id, event_count, updated_at)
		VALUES ($1, $2, $3, $4, $5, 1, $6)
		ON CONFLICT (stream_id) DO UPDATE SET
			stream_type = EXCLUDED.stream_type,
			version = EXCLUDED.version,
			last_event_type = EXCLUDED.last_event_type,
			last_event_id = EXCLUDED.last_event_id,
			event_count = s.event_count + 1,
			updated_at = EXCLUDED.updated_at`,
		ev.StreamID, ev.StreamType, ev.Version, ev.Type, ev.ID, ev.RecordedAt)
	if err != nil {
		return fmt.Errorf("projection %s: stream %q: %w", StreamSummariesName, ev.StreamID, err)
	}
	return nil
}
