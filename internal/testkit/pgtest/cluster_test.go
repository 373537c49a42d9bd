package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/migrate"
)

func TestCluster(t *testing.T) {
	t.Parallel()
	c := pgtest.NewCluster(t)
	require.Contains(t, c.URL(), "127.0.0.1:")

	conn := connectTo(t, c.URL())
	require.NoError(t, migrate.Up(t.Context(), conn, migrate.Config{}))
	_, err := conn.Exec(t.Context(), "INSERT INTO dtx.inbox (consumer, message_id, expires_at) VALUES ('c', 'kept', now() + interval '1 day')")
	require.NoError(t, err)

	c.Stop()
	c.Stop() // Idempotent.
	// The stopped server no longer answers: the open session is gone and a
	// new one is refused.
	require.Error(t, conn.Ping(t.Context()))
	_, err = tryConnect(c.URL())
	require.Error(t, err)

	c.Start()
	c.Start() // Idempotent.
	conn = connectTo(t, c.URL())
	var id string
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT message_id FROM dtx.inbox").Scan(&id))
	require.Equal(t, "kept", id, "data survives a restart")
}

func TestClusterIsRemovedAtCleanup(t *testing.T) {
	t.Parallel()
	var url string
	t.Run("inner", func(t *testing.T) {
		c := pgtest.NewCluster(t)
		url = c.URL()
		connectTo(t, url)
	})
	if url == "" {
		t.Skip("the inner test was skipped")
	}
	_, err := tryConnect(url)
	require.Error(t, err, "the cluster still answers after its test")
}

func connectTo(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := tryConnect(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func tryConnect(url string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return pgx.Connect(ctx, url)
}

func TestClusterWithoutBinaries(t *testing.T) {
	// Not parallel: it changes the environment.
	t.Setenv(pgtest.EnvBinDir, t.TempDir())

	t.Run("skips", func(t *testing.T) {
		t.Setenv("CI", "")
		r := runRecorded(t, func(tb testing.TB) { pgtest.NewCluster(tb) })
		require.True(t, r.skipped)
		require.False(t, r.failed)
		require.Contains(t, r.msg, pgtest.EnvBinDir)
	})
	t.Run("fails on CI", func(t *testing.T) {
		t.Setenv("CI", "true")
		r := runRecorded(t, func(tb testing.TB) { pgtest.NewCluster(tb) })
		require.True(t, r.failed)
		require.Contains(t, r.msg, "CI=true")
	})
}
