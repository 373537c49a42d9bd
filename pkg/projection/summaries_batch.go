package projection

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/pkg/eventstore"
)

var _ BatchProjection = Summaries{}

// ApplyBatch applies events as Apply of each in turn would, with one
// statement: one row per stream, its last event in events and the number
// of its events added to event_count.
func (s Summaries) ApplyBatch(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) error {
	if len(events) == 1 {
		return s.Apply(ctx, tx, events[0])
	}
	at := make(map[string]int, len(events)) // stream → index in the columns
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
			ids = append(ids, ev.StreamID)
			types = append(types, "")
			lastTypes = append(lastTypes, "")
			lastIDs = append(lastIDs, "")
			versions = append(versions, 0)
			counts = append(counts, 0)
			updated = append(updated, time.Time{})
		}
		types[i], lastTypes[i], lastIDs[i] = ev.StreamType, ev.Type, ev.ID
		versions[i], updated[i] = ev.Version, ev.RecordedAt
		counts[i]++
	}
	t := pgx.Identifier{s.schema, s.table}.Sanitize()
	_, err := tx.Exec(ctx, `INSERT INTO `+t+` AS s
		(stream_id, stream_type, version, last_event_type, last_event_id, event_count, updated_at)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::timestamptz[])
		ON CONFLICT (stream_id) DO UPDATE SET
			stream_type = EXCLUDED.stream_type,
			version = EXCLUDED.version,
			last_event_type = EXCLUDED.last_event_type,
			last_event_id = EXCLUDED.last_event_id,
			event_count = s.event_count + EXCLUDED.event_count,
			updated_at = EXCLUDED.updated_at`,
		ids, types, versions, lastTypes, lastIDs, counts, updated)
	if err != nil {
		return fmt.Errorf("projection %s: %d streams: %w", StreamSummariesName, len(ids), err)
	}
	return nil
}
