package txlog_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/txlog"
)

func TestCheckTable(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	exec := func(sql string) {
		t.Helper()
		_, err := f.pool.Exec(ctx, sql)
		require.NoError(t, err)
	}

	require.NoError(t, f.reader.CheckTable(ctx, f.pool))
	require.NoError(t, txlog.CheckTable(ctx, f.pool, f.schema.Name, f.log))

	// bigserial and a unique index instead of identity and primary key do.
	exec(`CREATE TABLE serial_log (
		tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
		position bigserial,
		data jsonb)`)
	exec("CREATE UNIQUE INDEX ON serial_log (tx_id, position)")
	require.NoError(t, txlog.CheckTable(ctx, f.pool, f.schema.Name, "serial_log", "data"))

	var tableErr *txlog.TableError
	err := txlog.CheckTable(ctx, f.pool, f.schema.Name, f.log, "topic", "nope")
	require.ErrorAs(t, err, &tableErr)
	require.Equal(t, []string{`no payload column "nope"`}, tableErr.Problems)
	require.Equal(t, pgx.Identifier{f.schema.Name, f.log}.Sanitize(), tableErr.Table)

	err = txlog.CheckTable(ctx, f.pool, f.schema.Name, "missing")
	require.ErrorAs(t, err, &tableErr)
	require.ErrorContains(t, err, "does not exist")

	exec(`CREATE TABLE bad_log (
		tx_id bigint,
		position integer,
		data text)`)
	exec("CREATE INDEX ON bad_log (tx_id, position)")
	err = txlog.CheckTable(ctx, f.pool, f.schema.Name, "bad_log")
	require.ErrorAs(t, err, &tableErr)
	require.Equal(t, []string{
		"tx_id is bigint, not xid8",
		"tx_id may be NULL",
		`tx_id defaults to "", not pg_current_xact_id()`,
		"position is integer, not bigint",
		"position is neither an identity column nor filled from a sequence",
		"no valid unique index on (tx_id, position), both ascending",
	}, tableErr.Problems)
	require.ErrorContains(t, err, "is not a log table: tx_id is bigint")

	exec("CREATE TABLE bare_log (data text)")
	err = txlog.CheckTable(ctx, f.pool, f.schema.Name, "bare_log")
	require.ErrorAs(t, err, &tableErr)
	require.Equal(t, []string{
		"no column tx_id (xid8 NOT NULL DEFAULT pg_current_xact_id())",
		"no column position (bigint GENERATED ALWAYS AS IDENTITY)",
		"no valid unique index on (tx_id, position), both ascending",
	}, tableErr.Problems)

	// Index in the wrong column order, or descending, or partial.
	for i, idx := range []string{"(position, tx_id)", "(tx_id DESC, position DESC)", "(tx_id, position) WHERE position > 0"} {
		name := pgx.Identifier{"idx_log_" + string(rune('a'+i))}.Sanitize()
		exec("CREATE TABLE " + name + " (tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(), position bigint GENERATED ALWAYS AS IDENTITY)")
		exec("CREATE UNIQUE INDEX ON " + name + " " + idx)
		err = txlog.CheckTable(ctx, f.pool, f.schema.Name, "idx_log_"+string(rune('a'+i)))
		require.ErrorAs(t, err, &tableErr, idx)
		require.Equal(t, []string{"no valid unique index on (tx_id, position), both ascending"}, tableErr.Problems, idx)
	}

	require.ErrorContains(t, txlog.CheckTable(ctx, f.pool, "", "Bad-Name"), "Log:")
}
