package inbox_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
)

// insertRows adds n records of consumer expiring at now() + offset.
func (f *fixture) insertRows(t *testing.T, consumer string, n int, offset string) {
	t.Helper()
	_, err := f.schema.Pool.Exec(t.Context(), `
		INSERT INTO inbox (consumer, message_id, expires_at)
		SELECT $1, $1 || '-' || $3::text || '-' || i, now() + $3::interval
		FROM generate_series(1, $2::int) AS i`, consumer, n, offset)
	require.NoError(t, err)
}

func TestSweepDeletesExpiredRowsInBatches(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ib := f.inbox(t, inbox.Config{SweepBatchSize: 10})
	ctx := t.Context()

	f.insertRows(t, "consumer-a", 15, "-1 minute")
	f.insertRows(t, "gone-consumer", 10, "-1 day") // Every consumer's expired rows go.
	f.insertRows(t, "consumer-a", 5, "1 minute")
	f.insertRows(t, "gone-consumer", 3, "1 day")

	n, err := ib.SweepBatch(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 10, n, "one statement deletes one batch")

	n, err = ib.Sweep(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 15, n, "Sweep repeats the statement until nothing expired is left")
	require.Zero(t, f.count(t, "SELECT count(*) FROM inbox WHERE expires_at < now()"))
	require.Equal(t, 8, f.count(t, "SELECT count(*) FROM inbox"), "rows that have not expired stay")

	n, err = ib.Sweep(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestSweepSkipsLockedRows(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ib := f.inbox(t, inbox.Config{})
	ctx := t.Context()
	f.insertRows(t, "consumer-a", 3, "-1 minute")

	tx := pgtest.Tx(t, f.schema.Pool)
	_, err := tx.Exec(ctx, "SELECT 1 FROM inbox WHERE message_id = 'consumer-a--1 minute-1' FOR UPDATE")
	require.NoError(t, err)

	n, err := ib.Sweep(ctx)
	require.NoError(t, err, "Sweep does not wait for the lock")
	require.EqualValues(t, 2, n)

	require.NoError(t, tx.Rollback(ctx))
	n, err = ib.Sweep(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

func TestSweeper(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ib := f.inbox(t, inbox.Config{SweepInterval: time.Second})
	ctx := t.Context()
	ib.Stop() // Harmless before Start.

	f.insertRows(t, "consumer-a", 3, "-1 minute")
	f.insertRows(t, "consumer-a", 2, "1 hour")
	require.NoError(t, ib.Start(ctx))
	require.ErrorIs(t, ib.Start(ctx), inbox.ErrAlreadyStarted)
	require.Eventually(t, func() bool {
		return f.count(t, "SELECT count(*) FROM inbox") == 2
	}, waitFor, 5*time.Millisecond, "the first sweep runs at once")

	// Rows that expire later go at a later sweep.
	_, err := f.schema.Pool.Exec(ctx, "UPDATE inbox SET expires_at = now() - interval '1 second'")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return f.count(t, "SELECT count(*) FROM inbox") == 0
	}, waitFor, 10*time.Millisecond)

	ib.Stop()
	ib.Stop()
	require.NoError(t, ib.Start(ctx), "Start works again after Stop")
	ib.Stop()
}
