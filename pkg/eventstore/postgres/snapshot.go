package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/internal/txlog"
	"github.com/vextrus/dtx/pkg/eventstore"
)

var (
	_ eventstore.SnapshotStore = (*Store)(nil)
	_ eventstore.SnapshotStore = txStore{}
)

// LoadSnapshot returns the snapshot of p.StreamID with p's type and schema
// version at the highest version (up to p.MaxVersion when set), on the
// pool; false when there is none. See eventstore.SnapshotStore.
func (s *Store) LoadSnapshot(ctx context.Context, p eventstore.LoadSnapshotParams) (eventstore.Snapshot, bool, error) {
	return s.loadSnapshot(ctx, s.pool, p)
}

// SaveSnapshot stores snap on the pool, in a statement of its own,
// replacing a snapshot of the same stream and version. See
// eventstore.SnapshotStore.
func (s *Store) SaveSnapshot(ctx context.Context, snap eventstore.Snapshot) error {
	return s.saveSnapshot(ctx, s.pool, snap)
}

func (s *Store) loadSnapshot(ctx context.Context, q txlog.Querier, p eventstore.LoadSnapshotParams) (eventstore.Snapshot, bool, error) {
	if p.StreamID == "" || p.Type == "" || p.SchemaVersion < 1 || p.MaxVersion < 0 {
		return eventstore.Snapshot{}, false, fmt.Errorf("eventstore/postgres: load snapshot: StreamID %q, Type %q, SchemaVersion %d, MaxVersion %d: want a stream, a type, a schema version from 1 and a max version from 0",
			p.StreamID, p.Type, p.SchemaVersion, p.MaxVersion)
	}
	snap := eventstore.Snapshot{StreamID: p.StreamID, Type: p.Type, SchemaVersion: p.SchemaVersion}
	err := q.QueryRow(ctx, s.q.snapshotLoad, p.StreamID, p.Type, p.SchemaVersion, p.MaxVersion).Scan(&snap.Version, &snap.Data)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Snapshot{}, false, nil
	}
	if err != nil {
		return eventstore.Snapshot{}, false, fmt.Errorf("eventstore/postgres: load snapshot of %q: %w", p.StreamID, err)
	}
	return snap, true, nil
}

func (s *Store) saveSnapshot(ctx context.Context, q txlog.Querier, snap eventstore.Snapshot) error {
	if err := snap.Validate(); err != nil {
		return err
	}
	if _, err := q.Exec(ctx, s.q.snapshotSave, snap.StreamID, snap.Version, snap.Type, snap.SchemaVersion, []byte(snap.Data)); err != nil {
		return fmt.Errorf("eventstore/postgres: save snapshot of %q at version %d: %w", snap.StreamID, snap.Version, err)
	}
	return nil
}

// LoadSnapshot reads in the transaction: see Store.LoadSnapshot.
func (t txStore) LoadSnapshot(ctx context.Context, p eventstore.LoadSnapshotParams) (eventstore.Snapshot, bool, error) {
	return t.s.loadSnapshot(ctx, t.tx, p)
}

// SaveSnapshot writes in the transaction, under a savepoint: the snapshot
// commits with the transaction, and a failed save is rolled back to the
// savepoint and leaves the transaction usable, so that a snapshot never
// costs the caller its append.
func (t txStore) SaveSnapshot(ctx context.Context, snap eventstore.Snapshot) error {
	if err := snap.Validate(); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, t.tx, func(sp pgx.Tx) error {
		return t.s.saveSnapshot(ctx, sp, snap)
	})
}
