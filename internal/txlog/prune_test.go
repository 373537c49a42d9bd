package txlog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/txlog"
)

func TestPrunerConfig(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, err := txlog.NewPruner(nil, txlog.PrunerConfig{Log: "l"})
	require.ErrorContains(t, err, "db is nil")
	_, err = txlog.NewPruner(f.pool, txlog.PrunerConfig{Schema: "pg_x", Log: "", Interval: time.Millisecond, BatchSize: txlog.MaxPruneBatchSize + 1})
	for _, want := range []string{"Schema:", "Log:", "Interval: 1ms is outside 1s..24h", "BatchSize: 100001 is outside 1..100000"} {
		require.ErrorContains(t, err, want)
	}
}

func TestPrune(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	p, err := txlog.NewPruner(f.pool, txlog.PrunerConfig{Schema: f.schema.Name, Log: f.log, BatchSize: 3})
	require.NoError(t, err)
	prune := func() int64 {
		t.Helper()
		n, err := p.Prune(ctx)
		require.NoError(t, err)
		return n
	}
	count := func() int {
		t.Helper()
		var n int
		require.NoError(t, f.pool.QueryRow(ctx, "SELECT count(*) FROM "+f.log).Scan(&n))
		return n
	}

	for i := range 10 {
		f.insert(t, f.pool, fmt.Sprint(i))
	}
	rows := readN(t, f.reader, f.pool, txlog.Position{}, 10)

	require.Zero(t, prune(), "no reader registered: nothing goes")
	require.Equal(t, 10, count())

	r, s := f.reader, f.newReader(t, "s")
	_, err = r.Register(ctx, f.pool)
	require.NoError(t, err)
	_, err = s.SaveCheckpoint(ctx, f.pool, rows[5].Position)
	require.NoError(t, err)
	require.Zero(t, prune(), "r has read nothing")

	_, err = r.SaveCheckpoint(ctx, f.pool, rows[3].Position)
	require.NoError(t, err)
	require.Equal(t, int64(4), prune(), "the rows both have passed, in batches of 3")
	require.Equal(t, rowPositions(rows[4:]), f.allPositions(t))

	// A row another transaction holds locked is skipped, not waited for.
	_, err = r.SaveCheckpoint(ctx, f.pool, rows[9].Position)
	require.NoError(t, err)
	locker := begin(t, f.pool)
	_, err = locker.Exec(ctx, "SELECT 1 FROM "+f.log+" WHERE position = $1 FOR UPDATE", rows[4].Position.Pos)
	require.NoError(t, err)
	require.Equal(t, int64(1), prune(), "s is at row 5: rows 4 (locked) and 5 remain candidates")
	require.NoError(t, locker.Rollback(ctx))
	require.Equal(t, int64(1), prune())
	require.Equal(t, rowPositions(rows[6:]), f.allPositions(t))

	// Retiring the lagging reader frees the rest.
	existed, err := s.Unregister(ctx, f.pool)
	require.NoError(t, err)
	require.True(t, existed)
	require.Equal(t, int64(4), prune())
	require.Zero(t, count())

	// With every reader gone, new rows stay whatever their age.
	f.insert(t, f.pool, "kept")
	_, err = r.Unregister(ctx, f.pool)
	require.NoError(t, err)
	require.Zero(t, prune())
	require.Equal(t, 1, count())

	// Another log's readers do not count.
	createLog(t, f.pool, "second_log")
	other, err := txlog.NewReader(txlog.Config{Schema: f.schema.Name, Log: "second_log", Reader: "r"}, (txlog.DestFunc[msg])(nil))
	require.NoError(t, err)
	_, err = other.SaveCheckpoint(ctx, f.pool, txlog.Position{TxID: 1 << 62, Pos: 1})
	require.NoError(t, err)
	require.Zero(t, prune())
	require.Equal(t, 1, count())
}

func TestPrunerRuns(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	p, err := txlog.NewPruner(f.pool, txlog.PrunerConfig{Schema: f.schema.Name, Log: f.log, Interval: time.Second})
	require.NoError(t, err)
	p.Stop() // Without Start: nothing to do.
	require.NoError(t, p.Start(ctx))
	require.ErrorIs(t, p.Start(ctx), txlog.ErrAlreadyStarted)
	defer p.Stop()

	f.insert(t, f.pool, "a", "b")
	rows := readN(t, f.reader, f.pool, txlog.Position{}, 2)
	_, err = f.reader.SaveCheckpoint(ctx, f.pool, rows[1].Position)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var n int
		return f.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+f.log).Scan(&n) == nil && n == 0
	}, waitFor, 50*time.Millisecond, "the running pruner deletes what was read")
	p.Stop()
	p.Stop()
}
