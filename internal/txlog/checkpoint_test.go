package txlog_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/txlog"
)

func TestCheckpoints(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	r := f.reader

	load := func() txlog.Position {
		t.Helper()
		p, err := r.LoadCheckpoint(ctx, f.pool)
		require.NoError(t, err)
		return p
	}
	save := func(q txlog.Querier, p txlog.Position) bool {
		t.Helper()
		moved, err := r.SaveCheckpoint(ctx, q, p)
		require.NoError(t, err)
		return moved
	}

	require.Equal(t, txlog.Position{}, load(), "no checkpoint: the beginning")

	p1 := txlog.Position{TxID: 100, Pos: 7}
	require.True(t, save(f.pool, p1), "the first save creates the checkpoint")
	require.Equal(t, p1, load())
	require.False(t, save(f.pool, p1), "the same position does not move it")
	require.False(t, save(f.pool, txlog.Position{TxID: 99, Pos: 1000}), "an earlier transaction does not move it back")
	require.False(t, save(f.pool, txlog.Position{TxID: 100, Pos: 6}), "an earlier position does not move it back")
	require.False(t, save(f.pool, txlog.Position{}), "nor does the zero position")
	require.Equal(t, p1, load())

	p2 := txlog.Position{TxID: 100, Pos: 8}
	require.True(t, save(f.pool, p2))
	require.Equal(t, p2, load())
	p3 := txlog.Position{TxID: 1 << 40, Pos: 1}
	require.True(t, save(f.pool, p3), "a later transaction with a lower position moves it")
	require.Equal(t, p3, load())

	// In a transaction that rolls back, the save is undone.
	tx := begin(t, f.pool)
	require.True(t, save(tx, txlog.Position{TxID: 1 << 41, Pos: 1}))
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, p3, load())

	// Another reader, and the same reader name on another log, are separate.
	other := f.newReader(t, "other")
	p, err := other.LoadCheckpoint(ctx, f.pool)
	require.NoError(t, err)
	require.True(t, p.IsZero())
	createLog(t, f.pool, "second_log")
	onSecond, err := txlog.NewReader(txlog.Config{Schema: f.schema.Name, Log: "second_log", Reader: "r"}, (txlog.DestFunc[msg])(nil))
	require.NoError(t, err)
	p, err = onSecond.LoadCheckpoint(ctx, f.pool)
	require.NoError(t, err)
	require.True(t, p.IsZero())
}

func TestSaveCheckpointFenced(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	r := f.reader
	_, err := f.pool.Exec(ctx, "CREATE TABLE lease (holder text NOT NULL, token bigint NOT NULL)")
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, "INSERT INTO lease VALUES ('me', 1)")
	require.NoError(t, err)

	errLeaseLost := errors.New("lease lost")
	fence := func(holder string, token int64) txlog.FenceFunc {
		return func(ctx context.Context, tx pgx.Tx) error {
			var ok bool
			err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM lease WHERE holder = $1 AND token = $2 FOR SHARE)", holder, token).Scan(&ok)
			if err == nil && !ok {
				err = errLeaseLost
			}
			return err
		}
	}

	p1 := txlog.Position{TxID: 10, Pos: 1}
	tx := begin(t, f.pool)
	moved, err := r.SaveCheckpointFenced(ctx, tx, p1, fence("me", 1))
	require.NoError(t, err)
	require.True(t, moved)
	commit(t, tx)

	// A successor took the lease: the old holder's save is refused.
	_, err = f.pool.Exec(ctx, "UPDATE lease SET holder = 'successor', token = 2")
	require.NoError(t, err)
	tx = begin(t, f.pool)
	moved, err = r.SaveCheckpointFenced(ctx, tx, txlog.Position{TxID: 11, Pos: 1}, fence("me", 1))
	require.ErrorIs(t, err, errLeaseLost)
	require.ErrorContains(t, err, "fence")
	require.False(t, moved)
	require.NoError(t, tx.Rollback(ctx))
	cp, err := r.LoadCheckpoint(ctx, f.pool)
	require.NoError(t, err)
	require.Equal(t, p1, cp)

	_, err = r.SaveCheckpointFenced(ctx, begin(t, f.pool), p1, nil)
	require.ErrorContains(t, err, "FenceFunc is nil")
}

func TestRegister(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	r := f.reader

	created, err := r.Register(ctx, f.pool)
	require.NoError(t, err)
	require.True(t, created)
	created, err = r.Register(ctx, f.pool)
	require.NoError(t, err)
	require.False(t, created, "registered already")
	var n int
	require.NoError(t, f.pool.QueryRow(ctx, "SELECT count(*) FROM txlog_checkpoints WHERE log_name = $1 AND reader = 'r' AND tx_id = '0' AND position = 0", f.log).Scan(&n))
	require.Equal(t, 1, n, "registered at the beginning")

	p := txlog.Position{TxID: 5, Pos: 5}
	_, err = r.SaveCheckpoint(ctx, f.pool, p)
	require.NoError(t, err)
	created, err = r.Register(ctx, f.pool)
	require.NoError(t, err)
	require.False(t, created)
	cp, err := r.LoadCheckpoint(ctx, f.pool)
	require.NoError(t, err)
	require.Equal(t, p, cp, "Register leaves a checkpoint alone")

	existed, err := r.Unregister(ctx, f.pool)
	require.NoError(t, err)
	require.True(t, existed)
	existed, err = r.Unregister(ctx, f.pool)
	require.NoError(t, err)
	require.False(t, existed)
	cp, err = r.LoadCheckpoint(ctx, f.pool)
	require.NoError(t, err)
	require.True(t, cp.IsZero())
}

func TestConcurrentSaves(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	// Savers race with increasing positions; the checkpoint ends at the
	// highest, whatever the interleaving.
	const savers, saves = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, savers*saves)
	for s := range savers {
		wg.Go(func() {
			for i := range saves {
				_, err := f.reader.SaveCheckpoint(ctx, f.pool, txlog.Position{TxID: uint64(100 + i), Pos: int64(s)})
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	cp, err := f.reader.LoadCheckpoint(ctx, f.pool)
	require.NoError(t, err)
	require.Equal(t, txlog.Position{TxID: 100 + saves - 1, Pos: savers - 1}, cp)
}

func TestCheckpointConstraints(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	tx := begin(t, f.pool)
	exec := func(sql string, args ...any) error {
		sp, err := tx.Begin(ctx)
		require.NoError(t, err)
		defer func() { require.NoError(t, sp.Rollback(ctx)) }()
		_, err = sp.Exec(ctx, sql, args...)
		return err
	}
	const insert = "INSERT INTO txlog_checkpoints (log_name, reader, tx_id, position) VALUES ($1, $2, '1', $3)"
	require.NoError(t, exec(insert, "l", "r", 0))
	for _, args := range [][]any{
		{"", "r", 0},
		{strings.Repeat("l", 64), "r", 0},
		{"l", "", 0},
		{"l", strings.Repeat("r", 256), 0},
		{"l", "r", -1},
	} {
		var pgErr *pgconn.PgError
		require.ErrorAs(t, exec(insert, args...), &pgErr, "%q", args)
		require.Equal(t, "23514", pgErr.Code, pgErr.Message) // check_violation
	}
}
