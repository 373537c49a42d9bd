package orchestrator_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

// pruneFixture is a schema and an orchestrator over it that does not Run,
// so that only the test's Prune calls delete.
type pruneFixture struct {
	t      *testing.T
	schema *pgtest.Schema
	o      *orchestrator.Orchestrator
	reg    *prometheus.Registry
}

func setupPrune(t *testing.T, mod func(*orchestrator.Config)) *pruneFixture {
	t.Helper()
	schema := pgtest.NewSchema(t)
	defs, err := saga.NewRegistry(shopDefinition(nil))
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	cfg := orchestrator.Config{Schema: schema.Name, Definitions: defs, Registerer: reg}
	if mod != nil {
		mod(&cfg)
	}
	o, err := orchestrator.New(schema.Pool, cfg)
	require.NoError(t, err)
	return &pruneFixture{t: t, schema: schema, o: o, reg: reg}
}

// insert writes a saga in status, last updated age ago, with three
// timeline entries.
func (f *pruneFixture) insert(id, status string, age time.Duration) {
	f.t.Helper()
	ctx := context.Background()
	_, err := f.schema.Pool.Exec(ctx, `
		INSERT INTO saga_instances (id, definition, definition_version, status, correlation_id, state, started_at, updated_at)
		VALUES ($1, 'shop', 1, $2, $1, '{}', now() - $3::interval - interval '1 minute', now() - $3::interval)`,
		id, status, age)
	require.NoError(f.t, err)
	_, err = f.schema.Pool.Exec(ctx, `
		INSERT INTO saga_history (saga_id, at, step, phase, outcome)
		SELECT $1, now() - $2::interval, 'reserve', 'action', o FROM unnest(ARRAY['sent', 'succeeded', 'completed']) AS o`,
		id, age)
	require.NoError(f.t, err)
}

// age sets a saga's last update age ago, as if nothing had touched it since.
func (f *pruneFixture) age(id string, age time.Duration) {
	f.t.Helper()
	tag, err := f.schema.Pool.Exec(context.Background(), `UPDATE saga_instances SET updated_at = now() - $2::interval WHERE id = $1`, id, age)
	require.NoError(f.t, err)
	require.EqualValues(f.t, 1, tag.RowsAffected(), id)
}

// remaining returns every saga id left with its number of timeline entries.
func (f *pruneFixture) remaining() map[string]int {
	f.t.Helper()
	rows, err := f.schema.Pool.Query(context.Background(), `
		SELECT s.id, (SELECT count(*) FROM saga_history h WHERE h.saga_id = s.id) FROM saga_instances s`)
	require.NoError(f.t, err)
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		require.NoError(f.t, rows.Scan(&id, &n))
		out[id] = n
	}
	require.NoError(f.t, rows.Err())
	return out
}

// orphans counts timeline entries whose saga is gone.
func (f *pruneFixture) orphans() int {
	f.t.Helper()
	var n int
	require.NoError(f.t, f.schema.Pool.QueryRow(context.Background(), `
		SELECT count(*) FROM saga_history h WHERE NOT EXISTS (SELECT FROM saga_instances s WHERE s.id = h.saga_id)`).Scan(&n))
	return n
}

const day = 24 * time.Hour

// Finished sagas older than the retention go with their timelines, in
// batches; newer finished sagas and running or compensating sagas of any age
// stay, and Show then says the pruned saga does not exist.
func TestPruneDeletesFinishedSagasPastTheRetention(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := setupPrune(t, func(c *orchestrator.Config) {
		c.FinishedRetention = 10 * day
		c.PruneBatchSize = 2 // four batches for the seven old ones
	})

	// Two sagas through the real path: one aborted (failed, terminal), one
	// left running; both then untouched for a year.
	for _, id := range []string{"real-aborted", "real-running"} {
		started, err := f.o.Start(ctx, nil, "shop", id, map[string]any{"order_id": id}, orchestrator.StartParams{})
		require.NoError(t, err)
		require.True(t, started)
	}
	_, err := f.o.Operate(ctx, "real-aborted", orchestrator.OpAbort, orchestrator.OperateParams{Reason: "test", Actor: "ops"})
	require.NoError(t, err)
	f.age("real-aborted", 365*day)
	f.age("real-running", 365*day)

	for _, status := range []string{"completed", "compensated", "failed"} {
		f.insert("old-"+status+"-1", status, 11*day)
		f.insert("old-"+status+"-2", status, 400*day)
		f.insert("new-"+status, status, 9*day)
	}
	f.insert("old-running", "running", 400*day)
	f.insert("old-compensating", "compensating", 400*day)
	before := f.remaining()

	n, err := f.o.Prune(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 7, n)

	kept := map[string]int{}
	for _, id := range []string{"real-running", "new-completed", "new-compensated", "new-failed", "old-running", "old-compensating"} {
		kept[id] = before[id]
	}
	require.Equal(t, kept, f.remaining(), "the kept sagas keep their whole timeline")
	require.Zero(t, f.orphans(), "a pruned saga's timeline goes with it")
	require.InDelta(t, 7, prunedTotal(t, f.reg), 0)

	_, err = f.o.Show(ctx, "real-aborted")
	require.ErrorIs(t, err, orchestrator.ErrUnknownSaga)

	n, err = f.o.Prune(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "nothing left to prune")
}

// prunedTotal returns dtx_saga_pruned_total.
func prunedTotal(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		if mf.GetName() == "dtx_saga_pruned_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("dtx_saga_pruned_total is not registered")
	return 0
}

// The default retention is 30 days.
func TestPruneKeepsThirtyDaysByDefault(t *testing.T) {
	t.Parallel()
	f := setupPrune(t, nil)
	f.insert("29d", "completed", 29*day)
	f.insert("31d", "completed", 31*day)
	n, err := f.o.Prune(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	require.Equal(t, map[string]int{"29d": 3}, f.remaining())
}

// With pruning disabled nothing is deleted, however old.
func TestPruneDisabledDeletesNothing(t *testing.T) {
	t.Parallel()
	f := setupPrune(t, func(c *orchestrator.Config) { c.DisablePruning = true })
	for _, status := range []string{"completed", "compensated", "failed"} {
		f.insert(status, status, 3650*day)
	}
	before := f.remaining()
	n, err := f.o.Prune(t.Context())
	require.NoError(t, err)
	require.Zero(t, n)
	require.Equal(t, before, f.remaining())
	require.Zero(t, prunedTotal(t, f.reg))
}

// A saga another transaction holds is skipped without waiting: a row lock
// (a writer of the saga, another replica's pruner) or its advisory lock (a
// batch that loaded it and may write it back). The next prune takes it.
func TestPruneSkipsHeldSagasWithoutWaiting(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := setupPrune(t, func(c *orchestrator.Config) { c.FinishedRetention = 10 * day })
	f.insert("row-locked", "completed", 20*day)
	f.insert("advisory-locked", "failed", 20*day)
	f.insert("free", "compensated", 20*day)

	holder, err := f.schema.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(context.WithoutCancel(ctx)) }()
	_, err = holder.Exec(ctx, `SELECT FROM saga_instances WHERE id = 'row-locked' FOR UPDATE`)
	require.NoError(t, err)
	_, err = holder.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, orchestrator.LockKey(f.schema.Name, "advisory-locked"))
	require.NoError(t, err)

	pruneCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := f.o.Prune(pruneCtx)
	require.NoError(t, err, "Prune must not wait for the holder")
	require.EqualValues(t, 1, n)
	require.Equal(t, map[string]int{"row-locked": 3, "advisory-locked": 3}, f.remaining())

	require.NoError(t, holder.Rollback(ctx))
	n, err = f.o.Prune(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	require.Empty(t, f.remaining())
}

// Run prunes beside its other work and logs each prune that deleted
// something.
func TestRunPrunes(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	f := setupPrune(t, func(c *orchestrator.Config) {
		c.FinishedRetention = 10 * day
		c.PruneInterval = time.Second
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	f.insert("old", "completed", 20*day)
	f.insert("new", "completed", day)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.o.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	require.Eventually(t, func() bool { return len(f.remaining()) == 1 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, map[string]int{"new": 3}, f.remaining())
	require.Eventually(t, func() bool {
		return bytes.Contains(logs.Bytes(), []byte(`level=INFO msg="orchestrator: pruned finished sagas" pruned=1 older_than=240h0m0s`))
	}, 5*time.Second, 20*time.Millisecond, "%s", &logs)
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }

func TestPruneConfigErrorsNameTheSetting(t *testing.T) {
	t.Parallel()
	defs, err := saga.NewRegistry(shopDefinition(nil))
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		mod  func(*orchestrator.Config)
		want string
	}{
		{"negative", func(c *orchestrator.Config) { c.FinishedRetention = -time.Hour },
			"orchestrator: Config.FinishedRetention: -1h0m0s is negative: set DisablePruning to keep finished sagas forever"},
		{"below 1h", func(c *orchestrator.Config) { c.FinishedRetention = time.Minute },
			"orchestrator: Config.FinishedRetention: 1m0s is below 1h0m0s"},
		{"below the inbox's", func(c *orchestrator.Config) { c.FinishedRetention = 2 * day },
			"orchestrator: Config.FinishedRetention: 48h0m0s is shorter than InboxRetention (168h0m0s)"},
		{"set while disabled", func(c *orchestrator.Config) { c.DisablePruning, c.FinishedRetention = true, 40*day },
			"orchestrator: Config.FinishedRetention: 960h0m0s is set but DisablePruning is true"},
		{"batch size", func(c *orchestrator.Config) { c.PruneBatchSize = -1 },
			"orchestrator: Config.PruneBatchSize: -1 is outside 1..100000"},
		{"interval", func(c *orchestrator.Config) { c.PruneInterval = time.Millisecond },
			"orchestrator: Config.PruneInterval: 1ms is outside 1s..24h0m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := orchestrator.Config{Definitions: defs}
			tc.mod(&cfg)
			_, err := orchestrator.New(nil, cfg)
			require.ErrorContains(t, err, tc.want)
		})
	}
	// A longer inbox retention lengthens the default, so that it stays valid.
	_, err = orchestrator.New(nil, orchestrator.Config{Definitions: defs, InboxRetention: 60 * day})
	require.EqualError(t, err, "orchestrator: pool: required")
	_, err = orchestrator.New(nil, orchestrator.Config{Definitions: defs, DisablePruning: true})
	require.EqualError(t, err, "orchestrator: pool: required")
}
