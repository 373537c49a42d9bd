package pgtest_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestURL(t *testing.T) {
	t.Setenv(pgtest.EnvURL, "")
	require.Equal(t, pgtest.DefaultURL, pgtest.URL())

	t.Setenv(pgtest.EnvURL, "postgres://someone@db.example:6543/x")
	require.Equal(t, "postgres://someone@db.example:6543/x", pgtest.URL())
}

func TestNewSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	s := pgtest.NewSchema(t)
	require.Regexp(t, `^t_[0-9a-f]{16}$`, s.Name)

	var searchPath string
	require.NoError(t, s.Pool.QueryRow(ctx, "SHOW search_path").Scan(&searchPath))
	require.Equal(t, s.Name, searchPath)

	// Unqualified names resolve to the schema's migrated tables.
	_, err := s.Pool.Exec(ctx, "INSERT INTO inbox (consumer, message_id, expires_at) VALUES ('c', 'm', now() + interval '1 hour')")
	require.NoError(t, err)
	var n int
	require.NoError(t, s.Pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{s.Name, "inbox"}.Sanitize()).Scan(&n))
	require.Equal(t, 1, n)

	// Another schema is another world.
	other := pgtest.NewSchema(t)
	require.NotEqual(t, s.Name, other.Name)
	require.NoError(t, other.Pool.QueryRow(ctx, "SELECT count(*) FROM inbox").Scan(&n))
	require.Equal(t, 0, n)

	// Config builds pools on the same schema.
	cfg := s.Config()
	require.Equal(t, s.Name, cfg.ConnConfig.RuntimeParams["search_path"])
}

func TestNewSchemaIsDroppedAtCleanup(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("inner", func(t *testing.T) {
		s := pgtest.NewSchema(t)
		name = s.Name
		require.True(t, schemaExists(t, name))
	})
	require.NotEmpty(t, name)
	require.False(t, schemaExists(t, name), "schema %s survived its test", name)
}

func TestNewSchemaName(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("inner", func(t *testing.T) {
		name = pgtest.NewSchemaName(t)
		require.Regexp(t, `^t_[0-9a-f]{16}$`, name)
		require.False(t, schemaExists(t, name), "the name must be unused")
		conn := pgtest.Connect(t)
		_, err := conn.Exec(t.Context(), "CREATE SCHEMA "+name)
		require.NoError(t, err)
	})
	require.False(t, schemaExists(t, name), "schema %s survived its test", name)
}

func TestTx(t *testing.T) {
	t.Parallel()
	s := pgtest.NewSchema(t)
	ctx := t.Context()

	t.Run("rolled back at cleanup", func(t *testing.T) {
		tx := pgtest.Tx(t, s.Pool)
		_, err := tx.Exec(ctx, "INSERT INTO inbox (consumer, message_id, expires_at) VALUES ('c', 'rolled-back', now())")
		require.NoError(t, err)
	})
	t.Run("committed by the test", func(t *testing.T) {
		tx := pgtest.Tx(t, s.Pool)
		_, err := tx.Exec(ctx, "INSERT INTO inbox (consumer, message_id, expires_at) VALUES ('c', 'committed', now())")
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
	})
	t.Run("nested in a transaction", func(t *testing.T) {
		outer := pgtest.Tx(t, s.Pool)
		inner := pgtest.Tx(t, outer)
		_, err := inner.Exec(ctx, "INSERT INTO inbox (consumer, message_id, expires_at) VALUES ('c', 'savepoint', now())")
		require.NoError(t, err)
	})

	var ids []string
	rows, err := s.Pool.Query(ctx, "SELECT message_id FROM inbox ORDER BY message_id")
	require.NoError(t, err)
	ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"committed"}, ids)
}

func TestConnectFailureSaysWhatToDo(t *testing.T) {
	// Not parallel: it changes the environment.
	t.Setenv(pgtest.EnvURL, "postgres://dtx:s3cret-pw@127.0.0.1:1/dtx?sslmode=disable&connect_timeout=2")
	r := runRecorded(t, func(tb testing.TB) { pgtest.Connect(tb) })
	require.True(t, r.failed, "Connect should fail the test")
	require.Contains(t, r.msg, "make deps")
	require.Contains(t, r.msg, "127.0.0.1:1")
	require.NotContains(t, r.msg, "s3cret-pw")
}

func schemaExists(t *testing.T, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := pgtest.Connect(t)
	var exists bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", name).Scan(&exists))
	return exists
}

// recorder records a Fatal or a Skip instead of ending the real test. Like
// testing's, they end the calling goroutine, so fn runs in one of its own.
type recorder struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func runRecorded(t *testing.T, fn func(testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}

func (r *recorder) Fatal(args ...any) {
	r.failed, r.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) { r.Fatal(fmt.Sprintf(format, args...)) }

func (r *recorder) Skip(args ...any) {
	r.skipped, r.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) { r.Skip(fmt.Sprintf(format, args...)) }
