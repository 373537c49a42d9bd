package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
)

// readByPositionOnly is the reader docs/architecture.md#the-log forbids: it takes events
// whose position is above the last one it read. It exists to show what
// ReadAll protects against.
func readByPositionOnly(ctx context.Context, t *testing.T, f *fixture, after int64) (ids []string, last int64) {
	t.Helper()
	rows, err := f.pool.Query(ctx, "SELECT event_id, position FROM events WHERE position > $1 ORDER BY position", after)
	require.NoError(t, err)
	defer rows.Close()
	last = after
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id, &last))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	return ids, last
}

// readAllIDs reads every event ReadAll returns after *after now, and moves
// *after on.
func readAllIDs(t *testing.T, s *postgres.Store, after *eventstore.Position) []string {
	t.Helper()
	var ids []string
	for {
		b, err := s.ReadAll(t.Context(), eventstore.ReadAllParams{After: *after})
		require.NoError(t, err)
		for _, ev := range b.Events {
			ids = append(ids, ev.ID)
		}
		*after = b.End
		if !b.Full {
			return ids
		}
	}
}

// readAllUntil reads with readAllIDs until n events arrived or a deadline
// passed: transactions of other tests, in the same cluster, may hold the
// horizon back for a while.
func readAllUntil(t *testing.T, s *postgres.Store, after *eventstore.Position, n int) []string {
	t.Helper()
	var got []string
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); <-tick.C {
		if got = append(got, readAllIDs(t, s, after)...); len(got) >= n {
			break
		}
	}
	return got
}

// A transaction that appends and stays open while others commit is read by
// ReadAll once it commits: once, and before the events of the transactions
// that began after it. A reader going by position alone misses it.
func TestReadAllDoesNotSkipLateCommit(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	ctx := t.Context()
	appendOne := func(s eventstore.Store, stream, id string) {
		t.Helper()
		e := event(t, "test.happened", map[string]string{"id": id})
		e.ID = id
		_, err := s.Append(ctx, eventstore.AppendParams{StreamID: stream, StreamType: "test",
			Expected: eventstore.Any, Events: []eventstore.EventData{e}})
		require.NoError(t, err)
	}

	var after eventstore.Position
	var naiveAfter int64
	appendOne(f.store, "s-0", "e-before")
	require.Equal(t, []string{"e-before"}, readAllUntil(t, f.store, &after, 1))
	naive, naiveAfter := readByPositionOnly(ctx, t, f, naiveAfter)
	require.Equal(t, []string{"e-before"}, naive)

	// The slow transaction inserts first (lower position) and stays open.
	slow := pgtest.Tx(t, f.pool)
	appendOne(f.store.WithTx(slow), "s-slow", "e-slow")
	// Others commit meanwhile.
	appendOne(f.store, "s-1", "e-fast-1")
	appendOne(f.store, "s-2", "e-fast-2")

	require.Empty(t, readAllIDs(t, f.store, &after), "events behind the open transaction are held back")
	naive, naiveAfter = readByPositionOnly(ctx, t, f, naiveAfter)
	require.Equal(t, []string{"e-fast-1", "e-fast-2"}, naive, "the position reader reads past the open transaction")

	require.NoError(t, slow.Commit(ctx))
	require.Equal(t, []string{"e-slow", "e-fast-1", "e-fast-2"}, readAllUntil(t, f.store, &after, 3),
		"the late commit is read, once, in order")
	require.Empty(t, readAllIDs(t, f.store, &after), "nothing twice")

	naive, _ = readByPositionOnly(ctx, t, f, naiveAfter)
	require.NotContains(t, naive, "e-slow", "the position reader skipped the late commit (G5, docs/guarantees.md)")
}
