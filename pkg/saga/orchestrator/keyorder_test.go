package orchestrator_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

// kycDefinition is a two-step saga whose commands are keyed by the customer,
// not by the saga: sagas of one customer share their commands' key.
func kycDefinition() *saga.Definition {
	def := &saga.Definition{
		Name: "kyc", Version: 1,
		Steps: []saga.Step{
			{
				Name:    "open",
				Action:  saga.Command{Topic: "kyc.commands", Type: "kyc.open", Key: "$.customer_id", Payload: map[string]any{"saga": "$saga.id"}},
				Success: []string{"kyc.opened"}, Timeout: time.Minute,
			},
			{
				Name:    "check",
				Action:  saga.Command{Topic: "kyc.commands", Type: "kyc.check", Key: "$.customer_id", Payload: map[string]any{"saga": "$saga.id"}},
				Success: []string{"kyc.checked"}, Timeout: time.Minute,
			},
		},
	}
	def.SetDefaults()
	return def
}

// keyLog returns the saga ids of the commands of type typ and key in the
// order the relay publishes them: the outbox log's (tx_id, position).
func (f *fixture) keyLog(typ, key string) []string {
	f.t.Helper()
	rows, err := f.schema.Pool.Query(context.Background(),
		`SELECT headers->>'ce_sagaid' FROM outbox WHERE key = $1 AND headers->>'ce_type' = $2 ORDER BY tx_id, position`, key, typ)
	require.NoError(f.t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(f.t, err)
	return ids
}

// blockedBy reports whether a backend waits for a lock held by pid.
func (f *fixture) blockedBy(pid uint32) bool {
	f.t.Helper()
	var n int
	require.NoError(f.t, f.schema.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))`, int(pid)).Scan(&n))
	return n > 0
}

// Commands of two sagas that share a key (a step's Key mapping, here the
// customer id) are published in the order their transactions commit. The
// interleaving is built deterministically: the batch handling saga 2's reply
// is held inside its transaction (a row lock on saga 2, as the scheduler's
// claim or any reader's SELECT ... FOR UPDATE would hold it) while saga 1's
// reply is handled. Whichever of the two commits first must come first in
// the outbox log, whose (tx_id, position) order the relay publishes.
func TestCommandsSharingAKeyKeepCommitOrderAcrossSagas(t *testing.T) {
	t.Parallel()
	f := setup(t, kycDefinition())
	ctx := context.Background()
	for _, id := range []string{"s1", "s2"} {
		started, err := f.o.Start(ctx, nil, "kyc", id, map[string]any{"customer_id": "c-1"}, orchestrator.StartParams{})
		require.NoError(t, err)
		require.True(t, started)
	}
	opened := map[string]record{}
	for _, c := range commands(f.records()) {
		require.Equal(t, "c-1", c.Key)
		opened[c.SagaID] = c
	}
	require.Len(t, opened, 2)

	// Hold saga 2's row.
	holder, err := f.schema.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer holder.Release()
	hold, err := holder.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = hold.Rollback(ctx) }()
	_, err = hold.Exec(ctx, `SELECT 1 FROM saga_instances WHERE id = 's2' FOR UPDATE`)
	require.NoError(t, err)
	holderPID := holder.Conn().PgConn().PID()

	// Saga 2's reply: its batch starts and waits for the row.
	second := make(chan error, 1)
	reply2 := replyMessage(t, opened["s2"], "kyc.opened", nil)
	go func() { second <- f.deliver(f.o, reply2) }()
	require.Eventually(t, func() bool { return f.blockedBy(holderPID) }, 10*time.Second, 5*time.Millisecond,
		"the batch of saga 2 never reached the held row")

	// Saga 1's reply, meanwhile.
	first := make(chan error, 1)
	reply1 := replyMessage(t, opened["s1"], "kyc.opened", nil)
	go func() { first <- f.deliver(f.o, reply1) }()
	var want []string
	select {
	case err := <-first:
		// Saga 1's batch committed while saga 2's is still open: saga 1's
		// command is first in commit order.
		require.NoError(t, err)
		want = []string{"s1", "s2"}
	case <-time.After(2 * time.Second):
		// Saga 1's batch waits: it may only be waiting for saga 2's, which
		// holds the key; then saga 2's commits first.
		require.Eventually(t, func() bool {
			var n int
			require.NoError(t, f.schema.Pool.QueryRow(ctx, `
				SELECT count(*) FROM pg_stat_activity AS w, pg_stat_activity AS b
				WHERE $1::int = ANY (pg_blocking_pids(b.pid)) AND b.pid = ANY (pg_blocking_pids(w.pid))`,
				int(holderPID)).Scan(&n))
			return n > 0
		}, 10*time.Second, 5*time.Millisecond, "saga 1's batch waits, but not for saga 2's")
		want = []string{"s2", "s1"}
	}
	require.NoError(t, hold.Rollback(ctx))
	require.NoError(t, <-second)
	if want[0] == "s2" {
		require.NoError(t, <-first)
	}
	require.Equal(t, want, f.keyLog("kyc.check", "c-1"),
		"the relay would publish the commands of key c-1 out of commit order")
	require.Equal(t, saga.StatusRunning, f.show("s1").Status)
	require.Equal(t, 1, f.show("s2").State.Step)
}

// A saga started in the caller's transaction, which wrote before the start
// and so already holds its transaction id, cannot take its commands' key
// locks before that id: if a younger transaction committed a command of the
// same key meanwhile, the start is refused with outbox.ErrKeyOrder (roll
// back and retry) rather than written out of order.
func TestStartInACallersTransactionRefusesAnInvertedKey(t *testing.T) {
	t.Parallel()
	f := setup(t, kycDefinition())
	ctx := context.Background()
	tx, err := f.schema.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	// The caller's own write comes first: the transaction gets its id.
	_, err = tx.Exec(ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)

	// Another saga of the customer commits a command of key c-1.
	_, err = f.o.Start(ctx, nil, "kyc", "s1", map[string]any{"customer_id": "c-1"}, orchestrator.StartParams{})
	require.NoError(t, err)

	_, err = f.o.Start(ctx, tx, "kyc", "s2", map[string]any{"customer_id": "c-1"}, orchestrator.StartParams{})
	require.ErrorIs(t, err, outbox.ErrKeyOrder)
	require.NoError(t, tx.Rollback(ctx))

	// Retried in a transaction that locks first, it is written after.
	require.NoError(t, pgx.BeginFunc(ctx, f.schema.Pool, func(tx pgx.Tx) error {
		_, err := f.o.Start(ctx, tx, "kyc", "s2", map[string]any{"customer_id": "c-1"}, orchestrator.StartParams{})
		return err
	}))
	require.Equal(t, []string{"s1", "s2"}, f.keyLog("kyc.open", "c-1"))
}
