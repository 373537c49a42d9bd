package pgtx_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/pgtx"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

// Rollback ends the transaction even when the caller's context has ended:
// nothing it wrote stays, and its connection serves the next transaction.
func TestRollbackWithAnEndedContext(t *testing.T) {
	t.Parallel()
	s := pgtest.NewSchema(t)
	_, err := s.Pool.Exec(t.Context(), `CREATE TABLE things (id int)`)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	tx, err := s.Pool.Begin(ctx)
	require.NoError(t, err)
	var pid uint32
	require.NoError(t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `INSERT INTO things VALUES (1)`)
	require.NoError(t, err)
	cancel()
	pgtx.Rollback(ctx, tx)

	var n int
	require.NoError(t, s.Pool.QueryRow(t.Context(), `SELECT count(*) FROM things`).Scan(&n))
	require.Zero(t, n, "the insert was rolled back")
	// A rollback run with the ended context would fail and close the
	// connection; this one went back to the pool, open.
	conns := s.Pool.AcquireAllIdle(t.Context())
	var pids []uint32
	for _, c := range conns {
		pids = append(pids, c.Conn().PgConn().PID())
		c.Release()
	}
	require.Contains(t, pids, pid, "the transaction's connection is back in the pool, open")
}
