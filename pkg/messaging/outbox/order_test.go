package outbox_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

// The tests of this file run two transactions, A and B, that both write
// key K of one topic. They control the interleaving step by step from the
// test goroutine, except where one of them must wait for a lock: that one
// runs in a goroutine, and the test waits until PostgreSQL shows it
// waiting.

const orderTopic = "orders"

// businessWrite is a service's own change: it gives tx its transaction id.
func businessWrite(t *testing.T, tx pgx.Tx, id string) {
	t.Helper()
	_, err := tx.Exec(t.Context(), "INSERT INTO business (id) VALUES ($1)", id)
	require.NoError(t, err)
}

// writeK writes one message of key K whose payload names the writer.
func writeK(t *testing.T, ob *outbox.Outbox, tx pgx.Tx, writer int) error {
	t.Helper()
	return ob.Write(t.Context(), tx, orderTopic, newMessage(t, writer, "K"))
}

// relayOrder returns the writers of K's rows in the order the relay reads
// them, (tx_id, position).
func (f *fixture) relayOrder(t *testing.T) []string {
	t.Helper()
	var writers []string
	for _, r := range f.rows(t) {
		writers = append(writers, string(r.Payload))
	}
	return writers
}

// waitUntilBlocked waits until the backend of tx waits for a lock.
func (f *fixture) waitUntilBlocked(t *testing.T, tx pgx.Tx) {
	t.Helper()
	pid := tx.Conn().PgConn().PID()
	require.Eventually(t, func() bool {
		var waiting bool
		err := f.pool.QueryRow(t.Context(),
			"SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)", pid).Scan(&waiting)
		return err == nil && waiting
	}, waitFor, 5*time.Millisecond)
}

const (
	writerA = `{"n":1}`
	writerB = `{"n":2}`
)

// The inversion: B writes its own state first (and so gets its id), then A
// writes K and commits, then B writes K and commits. A committed first, but
// B's id is lower, so the relay reads B's message first.
func TestKeyOrderInvertedWhenLockedAfterFirstWrite(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{KeyOrder: outbox.KeyOrderUnchecked})
	a, b := f.begin(t), f.begin(t)

	businessWrite(t, b, "b")
	require.NoError(t, writeK(t, f.ob, a, 1))
	require.NoError(t, a.Commit(t.Context()))
	require.NoError(t, writeK(t, f.ob, b, 2))
	require.NoError(t, b.Commit(t.Context()))

	require.Equal(t, []string{writerB, writerA}, f.relayOrder(t), "commit order was A, B")
	require.InDelta(t, 1.0, outbox.RiskCount(f.ob, "unchecked"), 0)
}

// KeyOrderVerify refuses B's write in the same interleaving.
func TestKeyOrderVerifyRefusesInversion(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	a, b := f.begin(t), f.begin(t)

	businessWrite(t, b, "b")
	require.NoError(t, writeK(t, f.ob, a, 1))
	require.NoError(t, a.Commit(t.Context()))
	err := writeK(t, f.ob, b, 2)
	require.ErrorIs(t, err, outbox.ErrKeyOrder)
	var n int
	require.NoError(t, b.QueryRow(t.Context(), "SELECT count(*) FROM outbox WHERE tx_id = pg_current_xact_id()").Scan(&n))
	require.Zero(t, n, "the refused write wrote nothing")
	require.NoError(t, b.Rollback(t.Context()))
	require.InDelta(t, 1.0, outbox.RiskCount(f.ob, "inverted"), 0)

	// Lock also checks.
	c := f.begin(t)
	businessWrite(t, c, "c")
	d := f.begin(t)
	require.NoError(t, writeK(t, f.ob, d, 3))
	require.NoError(t, d.Commit(t.Context()))
	require.ErrorIs(t, f.ob.Lock(t.Context(), c, orderTopic, "K"), outbox.ErrKeyOrder)
}

// The same while B waits for A's lock: B had its id, A locks K and writes,
// B's write waits for the lock, A commits, B's write is refused.
func TestKeyOrderVerifyRefusesInversionAfterWaiting(t *testing.T) {
	t.Parallel()
	for _, mode := range []outbox.KeyOrder{outbox.KeyOrderVerify, outbox.KeyOrderUnchecked} {
		t.Run(mode.String(), func(t *testing.T) {
			f := setup(t, outbox.Config{KeyOrder: mode})
			a, b := f.begin(t), f.begin(t)
			businessWrite(t, b, "b")
			require.NoError(t, writeK(t, f.ob, a, 1))

			done := make(chan error, 1)
			msg := newMessage(t, 2, "K")
			go func() { done <- f.ob.Write(t.Context(), b, orderTopic, msg) }()
			f.waitUntilBlocked(t, b)
			require.NoError(t, a.Commit(t.Context()))
			err := <-done
			if mode == outbox.KeyOrderVerify {
				require.ErrorIs(t, err, outbox.ErrKeyOrder)
				require.NoError(t, b.Rollback(t.Context()))
				require.Equal(t, []string{writerA}, f.relayOrder(t))
				return
			}
			require.NoError(t, err)
			require.NoError(t, b.Commit(t.Context()))
			require.Equal(t, []string{writerB, writerA}, f.relayOrder(t), "inverted: commit order was A, B")
		})
	}
}

// Lock first: B locks K before its own write; A's write of K waits for B to
// commit, and then gets a higher id. The relay reads B, then A: commit
// order.
func TestKeyOrderKeptWhenLockedFirst(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{KeyOrder: outbox.KeyOrderUnchecked})
	a, b := f.begin(t), f.begin(t)

	require.NoError(t, f.ob.Lock(t.Context(), b, orderTopic, "K"))
	businessWrite(t, b, "b")
	done := make(chan error, 1)
	msg := newMessage(t, 1, "K")
	go func() {
		err := f.ob.Write(t.Context(), a, orderTopic, msg)
		if err == nil {
			err = a.Commit(t.Context())
		}
		done <- err
	}()
	f.waitUntilBlocked(t, a)
	require.NoError(t, writeK(t, f.ob, b, 2))
	require.NoError(t, b.Commit(t.Context()))
	require.NoError(t, <-done)

	require.Equal(t, []string{writerB, writerA}, f.relayOrder(t), "commit order was B, A")
	for _, result := range []string{"verified", "inverted", "unverified", "unchecked"} {
		require.Zero(t, outbox.RiskCount(f.ob, result), result)
	}
}

// Many writers of K at once, each writing its own state between Lock and
// Write: the relay order always equals the commit order. Writers hold K's
// lock from Lock to commit, so the order in which they take a number from a
// sequence after Lock is their commit order; each message carries its
// number.
func TestKeyOrderLockFirstManyWriters(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	_, err := f.pool.Exec(t.Context(), "CREATE SEQUENCE commit_order")
	require.NoError(t, err)
	const writers = 8
	errs := make(chan error, writers)
	for range writers {
		go func() {
			errs <- func() error {
				tx, err := f.pool.Begin(t.Context())
				if err != nil {
					return err
				}
				defer tx.Rollback(t.Context()) //nolint:errcheck // after Commit it has nothing to do
				if err := f.ob.Lock(t.Context(), tx, orderTopic, "K"); err != nil {
					return err
				}
				var n int
				if err := tx.QueryRow(t.Context(), "INSERT INTO business (id) VALUES (nextval('commit_order')) RETURNING id::int").Scan(&n); err != nil {
					return err
				}
				env, err := messaging.NewEnvelope(testType, "/test/outbox", map[string]int{"n": n})
				if err != nil {
					return err
				}
				env.PartitionKey = "K"
				if err := f.ob.WriteEnvelopes(t.Context(), tx, orderTopic, env); err != nil {
					return err
				}
				return tx.Commit(t.Context())
			}()
		}()
	}
	for range writers {
		require.NoError(t, <-errs)
	}
	var want []string
	for n := 1; n <= writers; n++ {
		want = append(want, `{"n":`+strconv.Itoa(n)+`}`)
	}
	require.Equal(t, want, f.relayOrder(t))
	require.Zero(t, outbox.RiskCount(f.ob, "verified"))
}

// A transaction that writes K twice, or writes new keys after its own change
// with no concurrent writer, passes the check. Only the first lock of a key
// taken after the transaction got its id is a risk: L and M, not K again.
func TestKeyOrderVerifyPassesWithoutConflict(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	tx := f.begin(t)
	require.NoError(t, writeK(t, f.ob, tx, 1))
	require.NoError(t, writeK(t, f.ob, tx, 2))
	businessWrite(t, tx, "x")
	require.NoError(t, f.ob.Write(t.Context(), tx, orderTopic, newMessage(t, 3, "L")))
	require.NoError(t, f.ob.Lock(t.Context(), tx, orderTopic, "M", "", "M"))
	require.NoError(t, tx.Commit(t.Context()))
	require.Len(t, f.rows(t), 3)
	require.InDelta(t, 2.0, outbox.RiskCount(f.ob, "verified"), 0)
}

// Above READ COMMITTED the check cannot see other commits: the write goes
// through and the risk is counted as unverified.
func TestKeyOrderUnverifiedAtRepeatableRead(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	tx, err := f.pool.BeginTx(t.Context(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer tx.Rollback(t.Context()) //nolint:errcheck // after Commit it has nothing to do
	businessWrite(t, tx, "x")
	require.NoError(t, writeK(t, f.ob, tx, 1))
	require.NoError(t, tx.Commit(t.Context()))
	require.InDelta(t, 1.0, outbox.RiskCount(f.ob, "unverified"), 0)
}

func TestLockValidates(t *testing.T) {
	t.Parallel()
	f := setup(t, outbox.Config{})
	tx := f.begin(t)
	require.ErrorIs(t, f.ob.Lock(t.Context(), tx, "bad topic", "k"), outbox.ErrInvalidTopic)
	require.ErrorIs(t, f.ob.Lock(t.Context(), tx, "t", "a\x00"), outbox.ErrInvalidMessage)
	require.ErrorIs(t, f.ob.Lock(t.Context(), nil, "t", "k"), outbox.ErrNoTransaction)
	require.NoError(t, f.ob.Lock(t.Context(), tx, "t"))
}
