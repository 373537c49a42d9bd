package fault

import (
	"context"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

// Another replica holds the migration lock of a new schema, as during a
// rollout. A relay started with DTX_MIGRATE=true waits for it: /readyz is
// 503 and says it is applying migrations; SIGTERM then ends it with exit 0
// within its drain timeout. A second relay, started while the lock is held
// and kept running once it is released, migrates, turns ready and publishes.
func TestSigtermDuringStartupMigration(t *testing.T) {
	t.Parallel()
	schema := pgtest.NewSchemaName(t)
	probe := pgtest.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := probe.Exec(ctx, "SELECT pg_advisory_lock(hashtextextended($1, 0))", "dtx/migrate/"+schema)
	require.NoError(t, err)
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		_, err := probe.Exec(ctx, "SELECT pg_advisory_unlock(hashtextextended($1, 0))", "dtx/migrate/"+schema)
		require.NoError(t, err)
	}
	t.Cleanup(release)

	waiting := func() int {
		var n int
		require.NoError(t, probe.QueryRow(ctx, `SELECT count(*) FROM pg_locks l
			JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = 'dtx-outbox-relay'
			AND a.datname = current_database()`).Scan(&n))
		return n
	}
	opts := relayOpts{dbURL: pgtest.URL(), schema: schema, brokers: joinBrokers(kafkatest.Brokers()), env: []string{"DTX_MIGRATE=true"}}

	opts.name = "relay-migrate-term"
	p := startRelay(t, opts)
	require.Eventually(t, func() bool { return waiting() >= 1 }, 30*time.Second, 20*time.Millisecond,
		"the relay waits for the migration lock")
	code, body := p.get("/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Contains(t, body, "applying migrations", "/readyz says why it is not ready")

	p.signal(t, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the relay did not exit within 30s of SIGTERM during its start-up migration")
	}
	require.Equal(t, 0, p.cmd.ProcessState.ExitCode(), "exit code of a shutdown during start-up; log:\n%s", p.logs.String())

	opts.name = "relay-migrate-wait"
	p = startRelay(t, opts)
	require.Eventually(t, func() bool { return waiting() >= 1 }, 30*time.Second, 20*time.Millisecond)
	code, _ = p.get("/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	release()
	p.logs.WaitFor(t, msgAcquired, 60*time.Second)
	require.Eventually(t, func() bool {
		code, _ := p.get("/readyz")
		return code == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "the relay turns ready once it has migrated")
	p.stop(t)
}
