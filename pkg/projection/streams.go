package projection

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/pkg/eventstore"
)

// StreamsTable is the table (migration 009) that holds, per projection and
// event stream, the version of the last event the projection's read model
// holds. Every source of a projection moves it in the transaction of the
// read model's changes; see the package documentation.
const StreamsTable = "projection_streams"

// BatchProjection is a Projection that can apply several events with one
// statement. The Runner calls ApplyBatch, instead of Apply for each event,
// with the events of one transaction that the projection handles, in order
// (several may belong to one stream).
type BatchProjection interface {
	Projection

	// ApplyBatch writes the effect of events, in their order, with tx, as
	// Apply of each in turn would. It must not commit or roll back tx. An
	// error rolls back the whole transaction.
	ApplyBatch(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) error
}

// streams runs the queries of projection_streams in one schema.
type streams struct {
	lock, update, versions string
}

func newStreams(schema string) streams {
	t := pgx.Identifier{schema, StreamsTable}.Sanitize()
	return streams{
		// Rows are locked in stream order, so that two transactions that
		// lock several rows never wait on each other in a cycle. A missing
		// row is created at version 0: no event of the stream applied.
		lock: `INSERT INTO ` + t + ` AS ps (projection, stream_id, version)
SELECT $1, s, 0 FROM unnest($2::text[]) AS s ORDER BY s
ON CONFLICT (projection, stream_id) DO UPDATE SET version = ps.version
RETURNING stream_id, version`,
		update: `UPDATE ` + t + ` AS ps SET version = v.version
FROM unnest($2::text[], $3::bigint[]) AS v(stream_id, version)
WHERE ps.projection = $1 AND ps.stream_id = v.stream_id`,
		versions: `SELECT stream_id, version FROM ` + t + ` WHERE projection = $1`,
	}
}

// lockVersions locks the rows of projection name for ids (creating those
// missing) and returns their versions.
func (s streams) lockVersions(ctx context.Context, tx pgx.Tx, name string, ids []string) (map[string]int64, error) {
	rows, err := tx.Query(ctx, s.lock, name, ids)
	if err != nil {
		return nil, fmt.Errorf("lock the stream versions: %w", err)
	}
	versions := make(map[string]int64, len(ids))
	var (
		id string
		v  int64
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &v}, func() error {
		versions[id] = v
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lock the stream versions: %w", err)
	}
	return versions, nil
}

// saveVersions sets the versions of the streams of projection name, whose
// rows tx has locked.
func (s streams) saveVersions(ctx context.Context, tx pgx.Tx, name string, versions map[string]int64) error {
	if len(versions) == 0 {
		return nil
	}
	ids := make([]string, 0, len(versions))
	vs := make([]int64, 0, len(versions))
	for id, v := range versions {
		ids = append(ids, id)
		vs = append(vs, v)
	}
	if _, err := tx.Exec(ctx, s.update, name, ids, vs); err != nil {
		return fmt.Errorf("save the stream versions: %w", err)
	}
	return nil
}

// streamIDs returns the distinct stream ids of events, sorted.
func streamIDs(events []eventstore.RecordedEvent) []string {
	ids := make([]string, 0, len(events))
	for _, ev := range events {
		ids = append(ids, ev.StreamID)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// fresh returns the events of events that lie after the versions of their
// streams, in order, and the versions moved past them. versions must hold
// every stream of events; it is updated.
func fresh(events []eventstore.RecordedEvent, versions map[string]int64) (kept []eventstore.RecordedEvent, moved map[string]int64) {
	kept = events[:0:0]
	moved = make(map[string]int64)
	for _, ev := range events {
		if ev.Version <= versions[ev.StreamID] {
			continue
		}
		versions[ev.StreamID] = ev.Version
		moved[ev.StreamID] = ev.Version
		kept = append(kept, ev)
	}
	return kept, moved
}

// applier applies events to one projection, counting them.
type applier struct {
	name    string
	p       Projection
	batch   BatchProjection // p, when it applies batches
	handled typeSet
	m       *metrics
}

func newApplier(p Projection, m *metrics) applier {
	a := applier{name: p.Name(), p: p, handled: handledSet(p), m: m}
	a.batch, _ = p.(BatchProjection)
	return a
}

// apply applies the events of handled types, in order, and skips and
// counts the others.
func (a applier) apply(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) error {
	handled := events
	if !a.handled[AllTypes] {
		handled = make([]eventstore.RecordedEvent, 0, len(events))
		for _, ev := range events {
			if a.handled.has(ev.Type) {
				handled = append(handled, ev)
			} else if a.m != nil {
				a.m.skipped.WithLabelValues(a.name, ev.Type).Inc()
			}
		}
	}
	if len(handled) == 0 {
		return nil
	}
	if a.batch != nil {
		if err := a.batch.ApplyBatch(ctx, tx, handled); err != nil {
			return fmt.Errorf("projection %q: apply %d events from %s (stream %q version %d): %w",
				a.name, len(handled), handled[0].ID, handled[0].StreamID, handled[0].Version, err)
		}
	} else {
		for _, ev := range handled {
			if err := a.p.Apply(ctx, tx, ev); err != nil {
				return fmt.Errorf("projection %q: apply event %s (%s, stream %q version %d): %w",
					a.name, ev.ID, ev.Type, ev.StreamID, ev.Version, err)
			}
		}
	}
	if a.m != nil {
		a.m.applied.WithLabelValues(a.name).Add(float64(len(handled)))
	}
	return nil
}
