package service

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/migrate"
)

// holdMigrationLock takes, on a connection of its own, the advisory lock
// that migrating schema takes (pkg/migrate keys it by the text
// "dtx/migrate/<schema>"), as another replica applying the migrations does.
// It returns the function that releases it.
func holdMigrationLock(t *testing.T, schema string) func() {
	t.Helper()
	conn := pgtest.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtextextended($1, 0))", "dtx/migrate/"+schema)
	require.NoError(t, err)
	return func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var released bool
		require.NoError(t, conn.QueryRow(ctx, "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
			"dtx/migrate/"+schema).Scan(&released))
		require.True(t, released)
	}
}

// waitForLockWaiter waits until a session of the binary app is blocked on an
// advisory lock: it is waiting for the migration lock.
func waitForLockWaiter(t *testing.T, conn *pgx.Conn, app string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var n int
		err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks l
			JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = $1`, "dtx-"+app).Scan(&n)
		return err == nil && n > 0
	}, 30*time.Second, 20*time.Millisecond, "the binary never waited for the migration lock")
}

// tableExists reports whether schema.table exists.
func tableExists(t *testing.T, conn *pgx.Conn, schema, table string) bool {
	t.Helper()
	var exists bool
	require.NoError(t, conn.QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL",
		pgx.Identifier{schema, table}.Sanitize()).Scan(&exists))
	return exists
}

// While another replica holds the migration lock, a binary started with
// --migrate is not ready, though PostgreSQL and Kafka answer: its tables do
// not exist yet. Once the lock is released it migrates, starts its work loop
// and only then turns ready.
func TestNotReadyUntilMigrated(t *testing.T) {
	t.Parallel()
	schema := pgtest.NewSchemaName(t)
	release := holdMigrationLock(t, schema)
	probe := pgtest.Connect(t)

	const name = "migrate-ready-test"
	started := make(chan struct{})
	app := App{Name: name, DefaultAdminAddr: ":0", RunFunc: func(ctx context.Context, env *Env) error {
		close(started)
		<-ctx.Done()
		return nil
	}}
	r := runAppEnv(t, app, "10s", map[string]string{"DTX_MIGRATE": "true", "DTX_SCHEMA": schema})
	waitForLockWaiter(t, probe, name)

	// PostgreSQL and Kafka answer, but the migrations are not applied.
	require.Eventually(t, func() bool {
		_, rep := readyz(t, r.admin)
		return rep.Checks["postgres"] == "ok" && rep.Checks["kafka"] == "ok"
	}, 30*time.Second, 50*time.Millisecond)
	require.Never(t, func() bool {
		code, rep := readyz(t, r.admin)
		return code != http.StatusServiceUnavailable || rep.Ready
	}, time.Second, 50*time.Millisecond, "ready while the migration lock is held elsewhere")
	code, rep := readyz(t, r.admin)
	require.Equal(t, http.StatusServiceUnavailable, code, rep)
	require.Contains(t, rep.Checks["startup"], "migration", rep)
	require.False(t, tableExists(t, probe, schema, "schema_version"))
	select {
	case <-started:
		t.Fatal("the work loop started before the migrations were applied")
	default:
	}

	release()
	require.Eventually(t, func() bool {
		code, _ := readyz(t, r.admin)
		return code == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "not ready after the migrations: %s", r.logs)
	require.True(t, tableExists(t, probe, schema, "schema_version"))
	_, rep = readyz(t, r.admin)
	require.NotContains(t, rep.Checks, "startup")
	select {
	case <-started:
	default:
		t.Fatal("ready before the work loop started")
	}

	r.cancel()
	require.Equal(t, ExitOK, r.wait(), r.logs.String())
}

// A shutdown while the binary waits for the migration lock is a clean
// drain: exit code 0 within the drain timeout, the work loop never started.
func TestShutdownDuringMigrationExitsZero(t *testing.T) {
	t.Parallel()
	schema := pgtest.NewSchemaName(t)
	release := holdMigrationLock(t, schema)
	t.Cleanup(release)
	probe := pgtest.Connect(t)

	const name = "migrate-shutdown-test"
	app := App{Name: name, DefaultAdminAddr: ":0", RunFunc: func(context.Context, *Env) error {
		t.Error("the work loop started though the migrations were not applied")
		return nil
	}}
	r := runAppEnv(t, app, "5s", map[string]string{"DTX_MIGRATE": "true", "DTX_SCHEMA": schema})
	waitForLockWaiter(t, probe, name)

	began := time.Now()
	r.cancel() // the shutdown signal
	require.Equal(t, ExitOK, r.wait(), r.logs.String())
	require.Less(t, time.Since(began), 5*time.Second, "exit within the drain timeout")
	require.Contains(t, r.logs.String(), "stopped cleanly")
	require.False(t, tableExists(t, probe, schema, "schema_version"))
}

// errConnClosed is what the migration library returns when a cancellation
// closed the connection between two of its statements (it ignores the error
// of the statement that was interrupted): it does not wrap context.Canceled.
var errConnClosed = errors.New("conn closed")

// A shutdown that interrupts the migration is a clean drain even when the
// error the interruption causes does not say it was a cancellation.
func TestShutdownDuringMigrationExitsZeroWhateverTheError(t *testing.T) {
	t.Parallel()
	schema := pgtest.NewSchemaName(t)
	release := holdMigrationLock(t, schema)
	t.Cleanup(release)
	probe := pgtest.Connect(t)

	const name = "migrate-interrupted-test"
	app := App{Name: name, DefaultAdminAddr: ":0", RunFunc: func(context.Context, *Env) error {
		t.Error("the work loop started though the migrations were not applied")
		return nil
	}}
	app.migrateFunc = func(ctx context.Context, pool *pgxpool.Pool, cfg migrate.Config) error {
		if err := migrate.UpPool(ctx, pool, cfg); err != nil {
			return errConnClosed
		}
		return nil
	}
	r := runAppEnv(t, app, "5s", map[string]string{"DTX_MIGRATE": "true", "DTX_SCHEMA": schema})
	waitForLockWaiter(t, probe, name)

	r.cancel() // the shutdown signal
	require.Equal(t, ExitOK, r.wait(), r.logs.String())
	require.Contains(t, r.logs.String(), "stopped cleanly")
	require.Contains(t, r.logs.String(), "migrations interrupted by the shutdown")
}
