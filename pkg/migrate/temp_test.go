package migrate_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/migrate"
)

// TestTempSchema: a temporary schema holds dtx's tables at the latest
// version, its pool resolves unqualified names in it, and Close drops it.
func TestTempSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := migrate.NewTempSchema(ctx, os.Getenv("DTX_DATABASE_URL"), "tmp_")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(s.Name, "tmp_"), s.Name)
	rep, err := migrate.StatusPool(ctx, s.Pool, migrate.Config{Schema: s.Name})
	require.NoError(t, err)
	require.Equal(t, rep.Latest, rep.Current)
	_, err = s.Pool.Exec(ctx, "CREATE TABLE mine (id int)")
	require.NoError(t, err)

	check, err := migrate.NewTempSchema(ctx, os.Getenv("DTX_DATABASE_URL"), "tmp_")
	require.NoError(t, err)
	defer func() { require.NoError(t, check.Close(ctx)) }()
	var n int
	require.NoError(t, check.Pool.QueryRow(ctx,
		"SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'mine'", s.Name).Scan(&n))
	require.Equal(t, 1, n, "the unqualified table lands in the temporary schema")

	require.NoError(t, s.Close(ctx))
	require.NoError(t, check.Pool.QueryRow(ctx,
		"SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", s.Name).Scan(&n))
	require.Zero(t, n, "Close drops the schema")

	_, err = migrate.NewTempSchema(ctx, os.Getenv("DTX_DATABASE_URL"), "Bad-")
	require.Error(t, err)
}
