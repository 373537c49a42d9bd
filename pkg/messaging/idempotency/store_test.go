package idempotency_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging/idempotency"
)

func TestConfig(t *testing.T) {
	t.Parallel()
	s := pgtest.NewSchema(t)

	_, err := idempotency.NewStore(s.Pool, idempotency.Config{})
	require.NoError(t, err, "the defaults are valid")
	_, err = idempotency.NewStore(nil, idempotency.Config{})
	require.Error(t, err)

	for _, tc := range []struct {
		name string
		cfg  idempotency.Config
		want []string
	}{
		{"bad schema", idempotency.Config{Schema: "x-y"}, []string{"Schema:"}},
		{"short TTL", idempotency.Config{TTL: time.Second}, []string{"TTL: 1s is shorter than 1m0s"}},
		{"short running timeout", idempotency.Config{RunningTimeout: time.Millisecond}, []string{"RunningTimeout: 1ms is shorter than 1s"}},
		{"running timeout past TTL", idempotency.Config{TTL: time.Hour, RunningTimeout: 2 * time.Hour}, []string{"RunningTimeout: 2h0m0s is not shorter than TTL"}},
		{"several", idempotency.Config{Schema: "pg_catalog", SweepInterval: 48 * time.Hour, SweepBatchSize: idempotency.MaxSweepBatchSize + 1}, []string{
			"Schema:", "SweepInterval: 48h0m0s is outside", "SweepBatchSize: 100001 is outside",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := idempotency.NewStore(s.Pool, tc.cfg)
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

// insertKeys adds n completed keys of scope expiring at now() + offset.
func (f *fixture) insertKeys(t *testing.T, scope string, n int, offset string) {
	t.Helper()
	f.exec(t, `
		INSERT INTO idempotency_keys (scope, key, request_fingerprint, state, response_status, response_headers, response_body, expires_at)
		SELECT $1, 'k' || $3::text || i, '\x01', 'completed', 201, '{}', '', now() + $3::interval
		FROM generate_series(1, $2::int) AS i`, scope, n, offset)
}

func TestSweepDeletesExpiredKeysInBatches(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{SweepBatchSize: 10})
	ctx := t.Context()
	f.insertKeys(t, "a", 15, "-1 minute")
	f.insertKeys(t, "b", 10, "-1 day")
	f.insertKeys(t, "a", 5, "1 minute")

	n, err := f.store.SweepBatch(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 10, n, "one statement deletes one batch")
	n, err = f.store.Sweep(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 15, n)
	require.Equal(t, 5, f.count(t, "SELECT count(*) FROM idempotency_keys"), "keys that have not expired stay")
	require.Zero(t, f.count(t, "SELECT count(*) FROM idempotency_keys WHERE expires_at < now()"))

	// A row that a request holds is skipped, without waiting.
	f.insertKeys(t, "c", 2, "-1 minute")
	tx := pgtest.Tx(t, f.schema.Pool)
	_, err = tx.Exec(ctx, "SELECT 1 FROM idempotency_keys WHERE scope = 'c' AND key = 'k-1 minute1' FOR UPDATE")
	require.NoError(t, err)
	n, err = f.store.Sweep(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	require.NoError(t, tx.Rollback(ctx))
	n, err = f.store.Sweep(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

func TestSweeper(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{SweepInterval: time.Second})
	ctx := t.Context()
	f.store.Stop() // Harmless before Start.

	f.insertKeys(t, "a", 3, "-1 minute")
	f.insertKeys(t, "a", 2, "1 hour")
	require.NoError(t, f.store.Start(ctx))
	require.ErrorIs(t, f.store.Start(ctx), idempotency.ErrAlreadyStarted)
	require.Eventually(t, func() bool {
		return f.count(t, "SELECT count(*) FROM idempotency_keys") == 2
	}, waitFor, 5*time.Millisecond, "the first sweep runs at once")

	f.exec(t, "UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
	require.Eventually(t, func() bool {
		return f.count(t, "SELECT count(*) FROM idempotency_keys") == 0
	}, waitFor, 10*time.Millisecond, "and the next after SweepInterval")

	f.store.Stop()
	f.store.Stop()
	require.NoError(t, f.store.Start(ctx), "Start works again after Stop")
	f.store.Stop()
}
