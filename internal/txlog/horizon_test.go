package txlog_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/internal/txlog"
)

func TestHorizonConfig(t *testing.T) {
	t.Parallel()
	_, err := txlog.NewHorizonWatch(nil, txlog.HorizonConfig{})
	require.ErrorContains(t, err, "db is nil")
	_, err = txlog.NewHorizonWatch(&fakeHorizonDB{}, txlog.HorizonConfig{})
	require.ErrorContains(t, err, "Logs: no log to watch")
	_, err = txlog.NewHorizonWatch(&fakeHorizonDB{}, txlog.HorizonConfig{
		Logs:          []txlog.HorizonLog{{Log: "outbox"}, {Schema: "dtx", Log: "outbox"}, {Schema: "Bad", Log: "b-ad"}},
		Interval:      time.Hour,
		WarnAfter:     -time.Second,
		WarnEvery:     time.Millisecond,
		NotReadyAfter: 48 * time.Hour,
	})
	for _, want := range []string{
		"Logs[1]: dtx.outbox is listed twice", "Logs[2].Schema:", "Logs[2].Log:",
		"Interval: 1h0m0s is outside 10ms..1m0s", "WarnAfter: -1s is outside", "WarnEvery: 1ms is outside",
		"NotReadyAfter: 48h0m0s is more than 24h0m0s",
	} {
		require.ErrorContains(t, err, want)
	}
	require.NotContains(t, err.Error(), "Logs[0]")
}

// fakeHorizonDB answers a HorizonWatch's look with a scripted horizon, and
// its look-up of the blocker with a scripted session.
type fakeHorizonDB struct {
	txlog.Querier // Exec and Query are not used.

	mu      sync.Mutex
	xmin    uint64
	waiting []bool
	blocker *txlog.Blocker
	lookups int
	fail    error
}

func (f *fakeHorizonDB) set(xmin uint64, waiting ...bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.xmin, f.waiting = xmin, waiting
}

func (f *fakeHorizonDB) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return fakeRow{err: f.fail}
	}
	if strings.Contains(sql, "pg_stat_activity") {
		f.lookups++
		if f.blocker == nil {
			return fakeRow{err: pgx.ErrNoRows}
		}
		b := f.blocker
		return fakeRow{vals: []any{b.PID, b.Database, b.Role, b.Application, b.PreparedGID}}
	}
	return fakeRow{vals: []any{f.xmin, append([]bool(nil), f.waiting...)}}
}

type fakeRow struct {
	vals []any
	err  error
}

func (r fakeRow) Scan(dst ...any) error {
	if r.err != nil {
		return r.err
	}
	for i, v := range r.vals {
		switch d := dst[i].(type) {
		case *uint64:
			*d = v.(uint64)
		case *[]bool:
			*d = v.([]bool)
		case *int:
			*d = v.(int)
		case *string:
			*d = v.(string)
		default:
			return fmt.Errorf("fakeRow: cannot scan into %T", dst[i])
		}
	}
	return nil
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// heldGauge returns dtx_txlog_horizon_held_seconds by log.
func heldGauge(t testing.TB, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, fam := range families {
		if fam.GetName() != "dtx_txlog_horizon_held_seconds" {
			continue
		}
		for _, m := range fam.GetMetric() {
			var log string
			for _, l := range m.GetLabel() {
				if l.GetName() == "log" {
					log = l.GetValue()
				}
			}
			out[log] = m.GetGauge().GetValue()
		}
	}
	return out
}

// TestHorizonWatchRules drives a watch with a scripted horizon and a hand
// clock: the gauge counts only while rows wait, the warning is rate-limited
// and names the blocker, readiness fails after the bound, and all clears
// when the horizon moves.
func TestHorizonWatchRules(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := &fakeHorizonDB{blocker: &txlog.Blocker{PID: 4242, Database: "billing", Role: "report"}}
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	var logs syncBuffer
	w, err := txlog.NewHorizonWatch(db, txlog.HorizonConfig{
		Logs:          []txlog.HorizonLog{{Log: "outbox"}, {Log: "events"}},
		WarnAfter:     10 * time.Second,
		WarnEvery:     30 * time.Second,
		NotReadyAfter: time.Minute,
		Logger:        logs.logger(),
		NowFunc:       clock.Now,
	})
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(w))
	probe := func(d time.Duration) {
		t.Helper()
		clock.Add(d)
		require.NoError(t, w.Probe(ctx))
	}
	warnings := func() int { return strings.Count(logs.String(), txlog.HorizonWarnMsg) }

	// Before any look: nothing held, ready.
	require.Equal(t, map[string]float64{"outbox": 0, "events": 0}, heldGauge(t, reg))
	require.NoError(t, w.Check(ctx))

	// A transaction runs at the horizon (100), but no row waits behind it: however long it stays, nothing is held.
	db.set(100, false, false)
	probe(0)
	probe(5 * time.Minute)
	require.Equal(t, map[string]float64{"outbox": 0, "events": 0}, heldGauge(t, reg))
	require.NoError(t, w.Check(ctx))
	require.Zero(t, warnings())
	require.Zero(t, db.lookups, "no look-up while nothing waits")

	// A row of the outbox commits behind it: the gauge counts from when the
	// horizon was first seen there; the warning comes once past WarnAfter.
	db.set(100, true, false)
	probe(time.Second)
	require.InDelta(t, (5*time.Minute + time.Second).Seconds(), heldGauge(t, reg)["outbox"], 0.001)
	require.Zero(t, heldGauge(t, reg)["events"], "no row of events waits")
	require.Equal(t, 1, warnings())
	out := logs.String()
	for _, want := range []string{"level=WARN", "schema=dtx", "log=outbox", "pid=4242", "database=billing", "role=report",
		"held_for=5m1s", "xid=100", "idle_in_transaction_session_timeout", txlog.HorizonRunbook} {
		require.Contains(t, out, want)
	}
	err = w.Check(ctx)
	require.Error(t, err, "held longer than NotReadyAfter")
	for _, want := range []string{"dtx.outbox", "transaction 100", "pid 4242", `database "billing"`, `role "report"`,
		"5m1s", "idle_in_transaction_session_timeout", txlog.HorizonRunbook} {
		require.ErrorContains(t, err, want)
	}
	st := w.Status()
	require.Equal(t, uint64(100), st.Xmin)
	require.Equal(t, &txlog.Blocker{PID: 4242, Database: "billing", Role: "report"}, st.Blocker)
	require.Equal(t, 5*time.Minute+time.Second, st.HeldFor())

	// Looks every second: at most one warning per WarnEvery, and the
	// blocker is looked up once per horizon.
	for range 29 {
		probe(time.Second)
	}
	require.Equal(t, 1, warnings())
	probe(time.Second)
	require.Equal(t, 2, warnings())
	require.Equal(t, 1, db.lookups)

	// The transaction ends: the horizon moves past the rows, nothing waits.
	db.set(301, false, false)
	probe(time.Second)
	require.Equal(t, map[string]float64{"outbox": 0, "events": 0}, heldGauge(t, reg))
	require.NoError(t, w.Check(ctx))
	require.Contains(t, logs.String(), "the horizon moved on; rows of the log are readable again")
	require.Zero(t, w.Status().HeldFor())

	// A new horizon starts over: held for what this watch saw of it.
	db.set(400, false, true)
	probe(time.Second)
	require.Zero(t, heldGauge(t, reg)["events"], "first look at this horizon")
	probe(3 * time.Second)
	require.InDelta(t, 3.0, heldGauge(t, reg)["events"], 0.001)
	require.NoError(t, w.Check(ctx), "held for less than NotReadyAfter")

	// A failed look keeps the last status.
	db.mu.Lock()
	db.fail = errors.New("connection refused")
	db.mu.Unlock()
	clock.Add(time.Second)
	require.ErrorContains(t, w.Probe(ctx), "connection refused")
	require.InDelta(t, 3.0, heldGauge(t, reg)["events"], 0.001)
}

func TestHorizonWatchNeverNotReady(t *testing.T) {
	t.Parallel()
	db := &fakeHorizonDB{}
	clock := &fakeClock{now: time.Unix(0, 0)}
	w, err := txlog.NewHorizonWatch(db, txlog.HorizonConfig{
		Logs: []txlog.HorizonLog{{Log: "outbox"}}, NotReadyAfter: -1, NowFunc: clock.Now,
	})
	require.NoError(t, err)
	db.set(7, true)
	require.NoError(t, w.Probe(t.Context()))
	clock.Add(time.Hour)
	require.NoError(t, w.Probe(t.Context()))
	require.Equal(t, time.Hour, w.Status().HeldFor())
	require.Nil(t, w.Status().Blocker, "the transaction is not visible")
	require.NoError(t, w.Check(t.Context()))
}

// TestHorizonHeldByAnotherDatabase is the case the watch exists for: a
// transaction with an id, open in another database (as another role when
// the test may create one), holds rows of a log in this test's schema back.
// The gauge and the warning name it within seconds, the rows are not read;
// once it commits, they are.
//
// The open transaction stalls every log reader of the whole cluster,
// other packages' tests included, so it stays open only while the test
// asserts, a few seconds at most.
func TestHorizonHeldByAnotherDatabase(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	other := otherDatabase(t, f)

	var logs syncBuffer
	w, err := txlog.NewHorizonWatch(f.pool, txlog.HorizonConfig{
		Logs:          []txlog.HorizonLog{{Schema: f.schema.Name, Log: f.log}},
		Interval:      50 * time.Millisecond,
		WarnAfter:     200 * time.Millisecond,
		WarnEvery:     time.Second,
		NotReadyAfter: 300 * time.Millisecond,
		Logger:        logs.logger(),
	})
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(w))
	require.NoError(t, w.Start(ctx))
	t.Cleanup(w.Stop)

	// Open the blocking transaction, take its id, and commit rows after it.
	blocker := other.begin(t)
	pid := int(other.conn.PgConn().PID())
	held := time.Now()
	f.insert(t, f.pool, "a", "b", "c")

	// The watch names it within a second. A transaction of another test
	// (of any package) that took its id before this one holds the horizon
	// first, and the watch names that one; this one is named once it ends,
	// so wait that long too. Meanwhile this transaction holds back nothing
	// the older one does not.
	wantPID := fmt.Sprintf("pid=%d", pid)
	if !assert.Eventually(t, func() bool {
		return heldGauge(t, reg)[f.log] > 0 && strings.Contains(logs.String(), wantPID)
	}, waitFor, 20*time.Millisecond) {
		t.Fatalf("no warning naming %s; the watch logged:\n%s", wantPID, logs.String())
	}
	out := logs.String()
	require.Contains(t, out, "database="+other.name)
	require.Contains(t, out, "role="+other.role)
	require.Eventually(t, func() bool {
		err := w.Check(ctx)
		return err != nil && strings.Contains(err.Error(), fmt.Sprintf("pid %d", pid))
	}, waitFor, 20*time.Millisecond)
	err = w.Check(ctx)
	require.ErrorContains(t, err, fmt.Sprintf("database %q", other.name))
	st := w.Status()
	require.NotNil(t, st.Blocker)
	require.Equal(t, other.role, st.Blocker.Role)

	// Nothing is read past it.
	b := read(t, f.reader, f.pool, txlog.Position{})
	require.Empty(t, b.Rows, "rows behind an open transaction are never read")
	require.True(t, b.HorizonBlocked)

	require.NoError(t, blocker.Commit(ctx))
	t.Logf("the blocking transaction was open for %s", time.Since(held).Round(time.Millisecond))

	// Committed: the rows flow, the gauge drops, ready again.
	rows := readN(t, f.reader, f.pool, txlog.Position{}, 3)
	require.Equal(t, []string{"a", "b", "c"}, topics(rows))
	require.Eventually(t, func() bool {
		return heldGauge(t, reg)[f.log] == 0 && w.Check(ctx) == nil
	}, waitFor, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "the horizon moved on")
	}, waitFor, 20*time.Millisecond)
}

// otherDB is a database of its own, and the role its connection runs as.
type otherDB struct {
	name, role string
	conn       *pgx.Conn
}

// begin opens a transaction on the other database and makes it take an id.
// The connection closes at cleanup, which rolls it back if still open.
func (o *otherDB) begin(t testing.TB) pgx.Tx {
	t.Helper()
	tx, err := o.conn.Begin(t.Context())
	require.NoError(t, err)
	var xid uint64
	require.NoError(t, tx.QueryRow(t.Context(), "SELECT pg_current_xact_id()").Scan(&xid))
	return tx
}

// otherDatabase creates a database (and, if the test's role may, a role)
// for this test, connects to it, and drops both at cleanup, even when the
// test fails. It skips the test when the role may not create databases.
func otherDatabase(t testing.TB, f *fixture) *otherDB {
	t.Helper()
	ctx := context.Background()
	name := "t_hz_" + strings.TrimPrefix(f.schema.Name, "t_")
	if _, err := f.pool.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		if isInsufficientPrivilege(err) {
			t.Skipf("the test's role may not create a database (CREATEDB): %v", err)
		}
		require.NoError(t, err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := f.pool.Exec(cctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		require.NoError(t, err)
	})

	cfg, err := pgx.ParseConfig(pgtest.URL())
	require.NoError(t, err)
	cfg.Database = name
	role := cfg.User
	// Another role: the one case an unprivileged watcher cannot see
	// xact_start of. Creating it needs CREATEROLE.
	other, password := name, "pw_"+name
	_, err = f.pool.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", pgx.Identifier{other}.Sanitize(), password))
	switch {
	case isInsufficientPrivilege(err):
		t.Logf("the test's role %q may not create roles (CREATEROLE): the blocking transaction runs as %q in database %q",
			role, role, name)
	case err != nil:
		require.NoError(t, err)
	default:
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := f.pool.Exec(cctx, "DROP ROLE IF EXISTS "+pgx.Identifier{other}.Sanitize())
			require.NoError(t, err)
		})
		cfg.User, cfg.Password, role = other, password, other
	}

	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	// Registered last, so it runs first: the transaction ends before the
	// database and the role are dropped.
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = conn.Close(cctx) // Rolls back a transaction left open; nothing else to do.
	})
	return &otherDB{name: name, role: role, conn: conn}
}

func isInsufficientPrivilege(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}

// WatchHorizon wires a watch as a binary needs it: gauge registered, check
// added under HorizonCheck, looking until stopped.
func TestWatchHorizon(t *testing.T) {
	t.Parallel()
	db := &fakeHorizonDB{}
	db.set(5, true)
	reg := prometheus.NewPedanticRegistry()
	checks := map[string]func(context.Context) error{}
	w, err := txlog.WatchHorizon(t.Context(), db, reg, func(name string, fn func(context.Context) error) { checks[name] = fn },
		txlog.HorizonConfig{Logs: []txlog.HorizonLog{{Log: "outbox"}}, Interval: 10 * time.Millisecond, NotReadyAfter: 30 * time.Millisecond})
	require.NoError(t, err)
	defer w.Stop()
	require.Contains(t, checks, txlog.HorizonCheck)
	require.Eventually(t, func() bool {
		return heldGauge(t, reg)["outbox"] > 0 && checks[txlog.HorizonCheck](t.Context()) != nil
	}, waitFor, 10*time.Millisecond)
	require.ErrorIs(t, w.Start(t.Context()), txlog.ErrAlreadyStarted)
	w.Stop()
	w.Stop()

	_, err = txlog.WatchHorizon(t.Context(), db, reg, nil, txlog.HorizonConfig{Logs: []txlog.HorizonLog{{Log: "outbox"}}})
	require.ErrorContains(t, err, "register the gauge", "a second watch on one registry")
	_, err = txlog.WatchHorizon(t.Context(), db, nil, nil, txlog.HorizonConfig{})
	require.ErrorContains(t, err, "Logs: no log to watch")
}
