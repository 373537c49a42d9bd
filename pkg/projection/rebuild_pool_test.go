package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/eventstore/postgres"
	"github.com/vextrus/dtx/pkg/projection"
)

// A rebuild needs at most two connections of its pool: the session that
// holds its lock and the swap's transaction. The swap reads the last events
// in its own transaction: with a pool of two it would otherwise wait for ever
// for a third connection while holding the locks every live batch waits for.
func TestRebuildNeedsNoThirdConnection(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, orders := f.appendOrders(t, 0, 30)

	cfg := f.pool.Config().Copy()
	cfg.MaxConns = 2
	small, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(small.Close)
	var schema string
	require.NoError(t, small.QueryRow(t.Context(), "SELECT current_schema()").Scan(&schema))
	store, err := postgres.New(small, postgres.Config{Schema: schema})
	require.NoError(t, err)
	r, err := projection.New(store, small, projection.Config{BatchSize: 7, PollInterval: 50 * time.Millisecond})
	require.NoError(t, err)

	// A deadline, so that a regression fails in seconds and rolls the swap's
	// transaction back instead of holding the cluster's horizon.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, r.Rebuild(ctx, f.proj), "the rebuild finishes with a pool of two connections")
	f.requireLogOnce(t, "order_log", orders)
	require.Equal(t, f.scratch(t), f.counts(t, "order_counts"))
}
