package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
)

// countingStore counts the events ReadStream returns; its SnapshotStore
// methods are the Store's.
type countingStore struct {
	*postgres.Store
	read atomic.Int64
}

func (c *countingStore) ReadStream(ctx context.Context, p eventstore.ReadStreamParams) ([]eventstore.RecordedEvent, error) {
	evs, err := c.Store.ReadStream(ctx, p)
	c.read.Add(int64(len(evs)))
	return evs, err
}

// snapshotted is the accounts aggregate with a snapshot every n events.
func snapshotted(n int64) eventstore.Aggregate[account] {
	agg := accounts
	agg.Snapshot = eventstore.EveryN(n)
	return agg
}

func deposit(amount int) eventstore.DecideFunc[account] {
	return func(account) ([]eventstore.EventData, error) {
		return []eventstore.EventData{{Type: "account.deposited", Data: json.RawMessage(fmt.Sprintf(`{"amount": %d}`, amount))}}, nil
	}
}

// snapshotVersions returns the versions of the stream's stored snapshots.
func snapshotVersions(t *testing.T, f *fixture, streamID string) []int64 {
	t.Helper()
	rows, err := f.pool.Query(t.Context(), "SELECT version FROM snapshots WHERE stream_id = $1 ORDER BY version", streamID)
	require.NoError(t, err)
	var vs []int64
	for rows.Next() {
		var v int64
		require.NoError(t, rows.Scan(&v))
		vs = append(vs, v)
	}
	require.NoError(t, rows.Err())
	return vs
}

func TestSnapshotLoadReadsOnlyEventsAfterIt(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	ctx := t.Context()
	agg := snapshotted(3)
	for i := 1; i <= 7; i++ {
		l, err := eventstore.Update(ctx, f.store, agg, "account-1", deposit(i))
		require.NoError(t, err)
		require.Equal(t, int64(i), l.Version)
		require.Equal(t, int64(i/3*3), l.SnapshotVersion, "version %d", i)
	}
	require.Equal(t, []int64{3, 6}, snapshotVersions(t, f, "account-1"), "EveryN(3) snapshots at 3 and 6")

	full, err := eventstore.Load(ctx, f.store, accounts, "account-1")
	require.NoError(t, err)
	require.Equal(t, eventstore.Loaded[account]{State: account{Balance: 28}, Version: 7}, full)

	cs := &countingStore{Store: f.store}
	l, err := eventstore.Load(ctx, cs, agg, "account-1")
	require.NoError(t, err)
	require.Equal(t, full.State, l.State, "the same state as a full replay")
	require.Equal(t, int64(7), l.Version)
	require.Equal(t, int64(6), l.SnapshotVersion)
	require.Equal(t, int64(1), cs.read.Load(), "only the event after the snapshot is read")

	// Without snapshots on, the same store replays everything.
	cs.read.Store(0)
	_, err = eventstore.Load(ctx, cs, accounts, "account-1")
	require.NoError(t, err)
	require.Equal(t, int64(7), cs.read.Load())
}

func TestSnapshotOfAnotherSchemaVersionIsIgnored(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	ctx := t.Context()
	for i := 1; i <= 4; i++ {
		_, err := eventstore.Update(ctx, f.store, snapshotted(2), "account-1", deposit(i))
		require.NoError(t, err)
	}
	require.Equal(t, []int64{2, 4}, snapshotVersions(t, f, "account-1"))

	// The state's shape changed: version 2 ignores version 1's snapshots.
	v2 := snapshotted(100)
	v2.SnapshotSchemaVersion = 2
	cs := &countingStore{Store: f.store}
	l, err := eventstore.Load(ctx, cs, v2, "account-1")
	require.NoError(t, err)
	require.Equal(t, eventstore.Loaded[account]{State: account{Balance: 10}, Version: 4}, l)
	require.Equal(t, int64(4), cs.read.Load(), "a full replay")

	// A snapshot that does not decode is reported and replayed past.
	_, err = f.pool.Exec(ctx, `INSERT INTO snapshots (stream_id, version, type, schema_version, data)
		VALUES ('account-1', 3, 'account', 2, '{"Owner": "x"}')`)
	require.NoError(t, err)
	var reported []error
	v2.SnapshotErrorFunc = func(_ context.Context, streamID string, err error) {
		require.Equal(t, "account-1", streamID)
		reported = append(reported, err)
	}
	cs.read.Store(0)
	l, err = eventstore.Load(ctx, cs, v2, "account-1")
	require.NoError(t, err)
	require.Equal(t, eventstore.Loaded[account]{State: account{Balance: 10}, Version: 4}, l)
	require.Equal(t, int64(4), cs.read.Load())
	require.Len(t, reported, 1)
	require.ErrorContains(t, reported[0], "decode the snapshot at version 3")
}

func TestSnapshotFuncPolicy(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	ctx := t.Context()
	type call struct{ version, since int64 }
	var calls []call
	agg := accounts
	agg.Snapshot = eventstore.SnapshotFunc(func(state any, version, since int64) bool {
		calls = append(calls, call{version, since})
		return state.(account).Balance >= 5
	})
	for i := 1; i <= 4; i++ {
		_, err := eventstore.Update(ctx, f.store, agg, "account-1", deposit(2))
		require.NoError(t, err)
	}
	// Balances 2, 4, 6, 8: snapshots once the balance reached 5.
	require.Equal(t, []call{{1, 1}, {2, 2}, {3, 3}, {4, 1}}, calls)
	require.Equal(t, []int64{3, 4}, snapshotVersions(t, f, "account-1"))
}

// badCodec encodes a string PostgreSQL's jsonb refuses, so the save fails
// in the database.
type badCodec struct{ eventstore.JSONCodec[account] }

func (badCodec) Encode(account) (json.RawMessage, error) {
	return json.RawMessage(`{"Balance": 0, "x": "\u0000"}`), nil
}

func TestSnapshotInCallersTransaction(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	ctx := t.Context()
	agg := snapshotted(1)

	// Rolled back: neither the events nor the snapshot remain.
	tx, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	l, err := eventstore.Update(ctx, f.store.WithTx(tx), agg, "account-1", deposit(5))
	require.NoError(t, err)
	require.Equal(t, int64(1), l.SnapshotVersion)
	require.Empty(t, snapshotVersions(t, f, "account-1"), "not visible before commit")
	require.NoError(t, tx.Rollback(ctx))
	require.Empty(t, snapshotVersions(t, f, "account-1"))

	// Committed: both.
	tx, err = f.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = eventstore.Update(ctx, f.store.WithTx(tx), agg, "account-1", deposit(5))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, []int64{1}, snapshotVersions(t, f, "account-1"))

	// A save the database refuses costs neither the append nor the
	// transaction, which commits without the snapshot.
	var mu sync.Mutex
	var reported []error
	agg.SnapshotCodec = badCodec{}
	agg.SnapshotErrorFunc = func(_ context.Context, _ string, err error) {
		mu.Lock()
		defer mu.Unlock()
		reported = append(reported, err)
	}
	tx, err = f.pool.Begin(ctx)
	require.NoError(t, err)
	l, err = eventstore.Update(ctx, f.store.WithTx(tx), agg, "account-1", deposit(1))
	require.NoError(t, err)
	require.Equal(t, int64(2), l.Version)
	require.Equal(t, int64(1), l.SnapshotVersion)
	require.NoError(t, tx.Commit(ctx))
	require.Len(t, reported, 1)
	require.Equal(t, []int64{1}, snapshotVersions(t, f, "account-1"))

	// The same outside a transaction.
	l, err = eventstore.Update(ctx, f.store, agg, "account-1", deposit(1))
	require.NoError(t, err)
	require.Equal(t, int64(3), l.Version)
	require.Len(t, reported, 2)
	full, err := eventstore.Load(ctx, f.store, snapshotted(1), "account-1")
	require.NoError(t, err)
	require.Equal(t, eventstore.Loaded[account]{State: account{Balance: 7}, Version: 3, SnapshotVersion: 1}, full)
}
