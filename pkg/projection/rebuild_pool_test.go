package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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
	last, orders := f.appendOrders(t, 0, 30)

	cfg := f.pool.Config().Copy()
	cfg.MaxConns = 2
	small, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(small.Close)
	var schema string
	require.NoError(t, small.QueryRow(t.Context(), "SELECT current_schema()").Scan(&schema))
	store, err := postgres.New(small, postgres.Config{Schema: schema})
	require.NoError(t, err)
	// A short SwapTimeout and a deadline, so that a regression fails in
	// seconds and rolls the swap's transaction back instead of holding the
	// cluster's horizon.
	r, err := projection.New(store, small, projection.Config{BatchSize: 7, PollInterval: 50 * time.Millisecond, SwapTimeout: 5 * time.Second})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, r.Rebuild(ctx, f.proj), "the rebuild finishes with a pool of two connections")
	// The rebuild reads up to the cluster's horizon, which another test's
	// open transaction may hold back: the live projection brings the rest.
	stop := run(t, r, f.proj)
	f.waitCheckpoint(t, f.proj.name, last)
	require.NoError(t, stop())
	f.requireLogOnce(t, "order_log", orders)
	require.Equal(t, f.scratch(t), f.counts(t, "order_counts"))
}

// A swap that cannot take its locks within Config.SwapTimeout (here a
// reader of the live table keeps a transaction open) fails with
// ErrSwapTimeout naming the projection, rolls back (it holds no lock after,
// the live tables are unchanged), and the next Rebuild resumes and swaps.
func TestRebuildSwapTimesOutRollsBackAndResumes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, orders := f.appendOrders(t, 0, 30)
	const timeout = time.Second
	r, err := projection.New(f.store, f.pool, projection.Config{BatchSize: 7, PollInterval: 50 * time.Millisecond, SwapTimeout: timeout})
	require.NoError(t, err)
	require.NoError(t, r.CatchUp(t.Context(), f.proj))
	// Damage the live table: it stays so until a swap succeeds.
	_, err = f.pool.Exec(t.Context(), "INSERT INTO order_counts VALUES ('bogus', 99)")
	require.NoError(t, err)
	damaged := f.counts(t, "order_counts")

	// A report reading the live table, in a read-only transaction (no
	// transaction id: it holds nobody's horizon).
	report, err := f.pool.BeginTx(t.Context(), pgx.TxOptions{AccessMode: pgx.ReadOnly})
	require.NoError(t, err)
	defer func() { _ = report.Rollback(context.Background()) }()
	_, err = report.Exec(t.Context(), "SELECT count(*) FROM order_counts")
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	began := time.Now()
	err = r.Rebuild(ctx, f.proj)
	took := time.Since(began)
	require.ErrorIs(t, err, projection.ErrSwapTimeout)
	require.ErrorContains(t, err, `rebuild "`+f.proj.name+`"`)
	require.ErrorContains(t, err, "SwapTimeout")
	require.Less(t, took, 10*time.Second, "the swap waited longer than its timeout")
	t.Logf("swap failed after %s: %v", took, err)

	// Rolled back: nobody holds the live tables exclusively, the live
	// checkpoint is free, the live table is as it was, the shadow remains.
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, f.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_locks
			WHERE relation = 'order_counts'::regclass AND mode = 'AccessExclusiveLock'`).Scan(&n))
		return n == 0
	}, 5*time.Second, 20*time.Millisecond, "the swap's transaction still holds the live table")
	require.NoError(t, pgx.BeginFunc(t.Context(), f.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(t.Context(), `SELECT 1 FROM txlog_checkpoints
			WHERE log_name = 'events' AND reader = $1 FOR UPDATE NOWAIT`, f.proj.name)
		return err
	}), "the live checkpoint is still locked")
	require.NoError(t, report.Rollback(t.Context()))
	require.Equal(t, damaged, f.counts(t, "order_counts"), "a failed swap changed the live table")
	var shadows int
	require.NoError(t, f.pool.QueryRow(t.Context(),
		"SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE '%_rebuild'").Scan(&shadows))
	require.Equal(t, 2, shadows, "the shadow tables are kept for the next Rebuild")

	// The next Rebuild resumes (a fresh one would fail on the existing
	// shadow tables) and swaps; the live projection goes on after it. (The
	// rebuild may stop short of the last events while a transaction
	// elsewhere in the cluster holds the horizon: the live one applies
	// them.)
	last, n := f.appendOrders(t, 100, 5)
	orders += n
	require.NoError(t, r.Rebuild(ctx, f.proj))
	stop := run(t, r, f.proj)
	f.waitCheckpoint(t, f.proj.name, last)
	require.NoError(t, stop())
	f.requireLogOnce(t, "order_log", orders)
	require.Equal(t, f.scratch(t), f.counts(t, "order_counts"))
}
