package txlog_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/internal/txlog"
)

// newListener starts a Listener on pool, stopped at cleanup, and waits until
// it listens.
func newListener(t testing.TB, pool *pgxpool.Pool, cfg txlog.ListenerConfig) *txlog.Listener {
	t.Helper()
	l, err := txlog.NewListener(pool, cfg)
	require.NoError(t, err)
	require.NoError(t, l.Start(context.Background()))
	t.Cleanup(l.Stop)
	require.Eventually(t, l.Connected, waitFor, 10*time.Millisecond, "the listener connects")
	return l
}

// wait runs sub.Wait, bounded by waitFor.
func wait(t testing.TB, sub *txlog.Subscription, blocked bool) (txlog.Wake, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	start := time.Now()
	w, err := sub.Wait(ctx, blocked)
	require.NoError(t, err)
	return w, time.Since(start)
}

// requireNoWake checks that sub does not wake by notification within a
// moment; its poll interval must be longer than that. The one short poll
// that follows a notification (EchoInterval) is allowed.
func requireNoWake(t testing.TB, sub *txlog.Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	for polls := 0; ; polls++ {
		w, err := sub.Wait(ctx, false)
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			return
		}
		require.Equal(t, txlog.WakePolled, w, "woke by notification")
		require.Zero(t, polls, "polled again after the echo poll")
	}
}

// After a wake-up by notification, the next Wait polls within EchoInterval
// (a writer that committed while another notified did not notify itself);
// the one after waits the full poll interval again.
func TestWaitPollsOnceSoonAfterANotification(t *testing.T) {
	t.Parallel()
	f := setup(t)
	channel := f.schema.Name + ".echo"
	l := newListener(t, f.pool, txlog.ListenerConfig{Channel: channel, PollInterval: time.Minute})
	sub := l.Subscribe()
	defer sub.Close()
	require.NoError(t, txlog.Notify(t.Context(), f.pool, channel))
	w, _ := wait(t, sub, false)
	require.Equal(t, txlog.WakeNotified, w)
	w, d := wait(t, sub, false)
	require.Equal(t, txlog.WakePolled, w)
	require.Less(t, d, 5*time.Second)
	requireNoWake(t, sub)
}

func TestListenerConfig(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(t.Context(), pgtest.URL()) // Lazy: never connects here.
	require.NoError(t, err)
	defer pool.Close()

	_, err = txlog.NewListener(nil, txlog.ListenerConfig{Channel: "c"})
	require.ErrorContains(t, err, "pool is nil")
	_, err = txlog.NewListener(pool, txlog.ListenerConfig{})
	require.ErrorContains(t, err, "Channel:")
	_, err = txlog.NewListener(pool, txlog.ListenerConfig{
		Channel:             "Bad Channel",
		PollInterval:        2 * time.Hour,
		BlockedPollInterval: 3 * time.Hour,
		MinReconnectDelay:   time.Minute,
		MaxReconnectDelay:   time.Second,
	})
	for _, want := range []string{"Channel:", "PollInterval: 2h0m0s is outside", "BlockedPollInterval:", "MinReconnectDelay: 1m0s is outside 1ms..1s"} {
		require.ErrorContains(t, err, want)
	}
	_, err = txlog.NewListener(pool, txlog.ListenerConfig{Channel: "c", PollInterval: time.Second, BlockedPollInterval: 2 * time.Second})
	require.ErrorContains(t, err, "BlockedPollInterval: 2s is outside 1ms..1s")

	// A short PollInterval lowers the default BlockedPollInterval with it.
	l, err := txlog.NewListener(pool, txlog.ListenerConfig{Channel: "c", PollInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	sub := l.Subscribe()
	defer sub.Close()
	w, d := wait(t, sub, true)
	require.Equal(t, txlog.WakePolled, w)
	require.Less(t, d, time.Second)

	require.Equal(t, "polled", txlog.WakePolled.String())
	require.Equal(t, "notified", txlog.WakeNotified.String())
	require.Equal(t, "Wake(0)", txlog.Wake(0).String())
}

func TestWaitWakesOnNotify(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	const channel = "test_notify"
	// The poll interval is far longer than the test: a prompt wake-up can
	// only come from a notification. Subscribed once the Listener listens,
	// the subscriptions hold no wake-up of its connecting.
	l := newListener(t, f.pool, txlog.ListenerConfig{Channel: channel, PollInterval: time.Minute})
	sub := l.Subscribe()
	defer sub.Close()
	other := l.Subscribe()
	defer other.Close()

	require.NoError(t, txlog.Notify(ctx, f.pool, channel))
	w, d := wait(t, sub, false)
	require.Equal(t, txlog.WakeNotified, w)
	require.Less(t, d, 10*time.Second)
	w, _ = wait(t, other, false)
	require.Equal(t, txlog.WakeNotified, w, "every subscription wakes")

	// In a transaction, notifications are delivered at commit, once.
	tx := begin(t, f.pool)
	f.insert(t, tx, "row")
	for range 3 {
		require.NoError(t, txlog.Notify(ctx, tx, channel))
	}
	requireNoWake(t, sub)
	commit(t, tx)
	w, _ = wait(t, sub, false)
	require.Equal(t, txlog.WakeNotified, w)
	requireNoWake(t, sub)

	// A rolled-back transaction notifies nobody.
	tx = begin(t, f.pool)
	require.NoError(t, txlog.Notify(ctx, tx, channel))
	require.NoError(t, tx.Rollback(ctx))
	requireNoWake(t, sub)

	// Nor do other channels.
	require.NoError(t, txlog.Notify(ctx, f.pool, "some_other_channel"))
	requireNoWake(t, sub)

	require.ErrorContains(t, txlog.Notify(ctx, f.pool, "Not A Channel"), "channel")
}

func TestWaitNotifiedByTrigger(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	const channel = "test_trigger"
	_, err := f.pool.Exec(ctx, fmt.Sprintf("CREATE TRIGGER test_log_notify AFTER INSERT ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s('%s')",
		f.log, pgx.Identifier{f.schema.Name, "txlog_notify"}.Sanitize(), channel))
	require.NoError(t, err)
	l := newListener(t, f.pool, txlog.ListenerConfig{Channel: channel, PollInterval: time.Minute})
	sub := l.Subscribe()
	defer sub.Close()

	f.insert(t, f.pool, "row")
	w, _ := wait(t, sub, false)
	require.Equal(t, txlog.WakeNotified, w)
}

func TestWaitPolls(t *testing.T) {
	t.Parallel()
	f := setup(t)
	// Never started: no notification can come, only polls.
	l, err := txlog.NewListener(f.pool, txlog.ListenerConfig{Channel: "test_poll", PollInterval: 30 * time.Millisecond})
	require.NoError(t, err)
	sub := l.Subscribe()
	defer sub.Close()
	for range 3 {
		w, d := wait(t, sub, false)
		require.Equal(t, txlog.WakePolled, w)
		require.GreaterOrEqual(t, d, 30*time.Millisecond)
	}

	// While rows wait behind the horizon, the short interval applies.
	l, err = txlog.NewListener(f.pool, txlog.ListenerConfig{Channel: "test_poll", PollInterval: time.Minute, BlockedPollInterval: 20 * time.Millisecond})
	require.NoError(t, err)
	sub = l.Subscribe()
	defer sub.Close()
	w, d := wait(t, sub, true)
	require.Equal(t, txlog.WakePolled, w)
	require.Less(t, d, 10*time.Second)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = sub.Wait(ctx, false)
	require.ErrorIs(t, err, context.Canceled)
}

func TestSubscriptionClose(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const channel = "test_close"
	l := newListener(t, f.pool, txlog.ListenerConfig{Channel: channel, PollInterval: time.Minute})
	closed := l.Subscribe()
	open := l.Subscribe()
	defer open.Close()
	closed.Close()
	closed.Close() // Idempotent.

	require.NoError(t, txlog.Notify(t.Context(), f.pool, channel))
	w, _ := wait(t, open, false)
	require.Equal(t, txlog.WakeNotified, w)
	requireNoWake(t, closed)
}

func TestListenerStartStop(t *testing.T) {
	t.Parallel()
	f := setup(t)
	l, err := txlog.NewListener(f.pool, txlog.ListenerConfig{Channel: "test_start"})
	require.NoError(t, err)
	l.Stop() // Without Start: nothing to do.
	require.NoError(t, l.Start(t.Context()))
	require.ErrorIs(t, l.Start(t.Context()), txlog.ErrAlreadyStarted)
	require.Eventually(t, l.Connected, waitFor, 10*time.Millisecond)
	l.Stop()
	l.Stop()
	require.False(t, l.Connected())

	// Started again after Stop, and at once after its context ended.
	ctx, cancel := context.WithCancel(t.Context())
	require.NoError(t, l.Start(ctx))
	require.Eventually(t, l.Connected, waitFor, 10*time.Millisecond)
	cancel()
	require.NoError(t, l.Start(t.Context()))
	require.Eventually(t, l.Connected, waitFor, 10*time.Millisecond)
	l.Stop()
}

// TestListenerReconnects drops the listening connection from the server's
// side: the Listener must listen again and wake on notifications as before.
func TestListenerReconnects(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	const channel = "test_reconnect"
	l := newListener(t, f.pool, txlog.ListenerConfig{Channel: channel, PollInterval: time.Minute, MinReconnectDelay: 20 * time.Millisecond})
	sub := l.Subscribe()
	defer sub.Close()

	pid := listenerPID(t, f, channel, 0)
	var terminated bool
	require.NoError(t, f.pool.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&terminated))
	require.True(t, terminated)

	newPID := listenerPID(t, f, channel, pid)
	require.NotEqual(t, pid, newPID)
	require.Eventually(t, l.Connected, waitFor, 10*time.Millisecond)
	// Reconnecting wakes subscribers: notifications may have been missed.
	w, _ := wait(t, sub, false)
	require.Equal(t, txlog.WakeNotified, w)

	require.NoError(t, txlog.Notify(ctx, f.pool, channel))
	w, d := wait(t, sub, false)
	require.Equal(t, txlog.WakeNotified, w)
	require.Less(t, d, 10*time.Second)
}

// listenerPID waits for the backend that listens on channel, other than
// not, and returns its pid.
func listenerPID(t testing.TB, f *fixture, channel string, not uint32) uint32 {
	t.Helper()
	var pid uint32
	require.Eventually(t, func() bool {
		err := f.pool.QueryRow(context.Background(),
			"SELECT pid FROM pg_stat_activity WHERE query = $1 AND pid <> $2 AND state = 'idle'",
			"LISTEN "+pgx.Identifier{channel}.Sanitize(), not).Scan(&pid)
		return err == nil
	}, waitFor, 10*time.Millisecond)
	return pid
}

// TestListenerSurvivesRestart stops and starts a PostgreSQL server of its
// own under a Listener: while it is down, subscriptions still wake by
// polling; once it is back, the Listener listens again by itself.
func TestListenerSurvivesRestart(t *testing.T) {
	t.Parallel()
	c := pgtest.NewCluster(t)
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, c.URL())
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	const channel = "test_restart"
	const poll = 100 * time.Millisecond
	l := newListener(t, pool, txlog.ListenerConfig{Channel: channel, PollInterval: poll,
		MinReconnectDelay: 20 * time.Millisecond, MaxReconnectDelay: 200 * time.Millisecond})
	sub := l.Subscribe()
	defer sub.Close()

	c.Stop()
	require.Eventually(t, func() bool { return !l.Connected() }, waitFor, 10*time.Millisecond)
	for range 3 {
		w, _ := wait(t, sub, false)
		require.Equal(t, txlog.WakePolled, w, "polling goes on while the server is down")
	}

	c.Start()
	require.Eventually(t, l.Connected, waitFor, 10*time.Millisecond, "the listener is back by itself")
	waitNotified(t, sub) // The reconnection's wake-up.
	require.NoError(t, txlog.Notify(ctx, pool, channel))
	waitNotified(t, sub)
}

// waitNotified waits until sub wakes by a notification, ignoring polls.
func waitNotified(t testing.TB, sub *txlog.Subscription) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		if w, _ := wait(t, sub, false); w == txlog.WakeNotified {
			return
		}
	}
	t.Fatal("no notification by the deadline")
}

func TestListenerLogs(t *testing.T) {
	t.Parallel()
	f := setup(t)
	var logs syncBuffer
	const channel = "test_logs"
	newListener(t, f.pool, txlog.ListenerConfig{Channel: channel, MinReconnectDelay: 20 * time.Millisecond, Logger: logs.logger()})
	pid := listenerPID(t, f, channel, 0)
	_, err := f.pool.Exec(t.Context(), "SELECT pg_terminate_backend($1)", pid)
	require.NoError(t, err)
	listenerPID(t, f, channel, pid)
	require.Eventually(t, func() bool {
		return strings.Count(logs.String(), `msg="txlog: listening" channel=test_logs`) == 2
	}, waitFor, 10*time.Millisecond, "listening, twice")
	require.Contains(t, logs.String(), `level=WARN msg="txlog: listening connection failed; polling until it is back" channel=test_logs retry_in=20ms`)
}
