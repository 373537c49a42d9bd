package sqlfile

import (
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

func TestLoader(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{"sql/a.sql": {Data: []byte("SELECT * FROM {{.schema}}.t JOIN {{.schema}}.u")}}
	l := NewLoader(fsys, "sql", "order")
	require.Equal(t, `SELECT * FROM "order".t JOIN "order".u`, l.Load("a.sql"))
	require.NoError(t, l.Err())
	require.Empty(t, l.Load("missing.sql"))
	require.ErrorContains(t, l.Err(), "embedded query missing.sql")
}
