package projection_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
	"github.com/vextrus/dtx/pkg/projection"
)

const (
	typePlaced    = "order.placed"
	typeCancelled = "order.cancelled"
	typeUnknown   = "order.noted"
)

// orderCounts counts the open orders of each customer in order_counts and
// logs every applied event in order_log, where an event applied twice shows.
type orderCounts struct {
	name   string
	suffix string
}

var _ projection.RebuildableProjection = orderCounts{}

func (p orderCounts) Name() string      { return p.name }
func (p orderCounts) Handles() []string { return []string{typePlaced, typeCancelled} }
func (p orderCounts) Tables() []string  { return []string{"order_counts", "order_log"} }

func (p orderCounts) Shadow(suffix string) projection.Projection {
	p.suffix = suffix
	return p
}

func (p orderCounts) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	var data struct {
		Customer string `json:"customer"`
	}
	if err := json.Unmarshal(ev.Data, &data); err != nil {
		return err
	}
	delta := 1
	if ev.Type == typeCancelled {
		delta = -1
	}
	counts := pgx.Identifier{"order_counts" + p.suffix}.Sanitize()
	if _, err := tx.Exec(ctx, `INSERT INTO `+counts+` (customer, orders) VALUES ($1, $2)
		ON CONFLICT (customer) DO UPDATE SET orders = `+counts+`.orders + EXCLUDED.orders`, data.Customer, delta); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+pgx.Identifier{"order_log" + p.suffix}.Sanitize()+` (event_id) VALUES ($1)`, ev.ID)
	return err
}

type fixture struct {
	pool  *pgxpool.Pool
	store *postgres.Store
	reg   *prometheus.Registry
	proj  orderCounts
}

func setup(t *testing.T) *fixture {
	t.Helper()
	s := pgtest.NewSchema(t)
	store, err := postgres.New(s.Pool, postgres.Config{Schema: s.Name})
	require.NoError(t, err)
	f := &fixture{pool: s.Pool, store: store, reg: prometheus.NewRegistry(), proj: orderCounts{name: "orders-per-customer"}}
	f.createTables(t, "")
	return f
}

func (f *fixture) createTables(t *testing.T, suffix string) {
	t.Helper()
	_, err := f.pool.Exec(t.Context(), fmt.Sprintf(`
		CREATE TABLE order_counts%[1]s (customer text PRIMARY KEY, orders bigint NOT NULL);
		CREATE TABLE order_log%[1]s (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id text NOT NULL)`, suffix))
	require.NoError(t, err)
}

func (f *fixture) runner(t *testing.T, reg prometheus.Registerer) *projection.Runner {
	t.Helper()
	r, err := projection.New(f.store, f.pool, projection.Config{BatchSize: 7, PollInterval: 50 * time.Millisecond, Registerer: reg})
	require.NoError(t, err)
	return r
}

// run runs r until the returned stop is called (or the test ends), and
// returns Run's result from stop.
func run(t *testing.T, r *projection.Runner, ps ...projection.Projection) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, ps...) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// appendOrders appends n events, to streams of customers c0..c4 in turn,
// cancelling every third order; and an unknown event every fifth. It
// returns the position of the last event and the number of order events.
func (f *fixture) appendOrders(t *testing.T, from, n int) (last eventstore.Position, orders int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		customer := fmt.Sprintf("c%d", i%5)
		events := []eventstore.EventData{{Type: typePlaced, Data: json.RawMessage(`{"customer":"` + customer + `"}`)}}
		if i%3 == 0 {
			events = append(events, eventstore.EventData{Type: typeCancelled, Data: json.RawMessage(`{"customer":"` + customer + `"}`)})
		}
		if i%5 == 0 {
			events = append(events, eventstore.EventData{Type: typeUnknown, Data: json.RawMessage(`{}`)})
		}
		res, err := f.store.Append(t.Context(), eventstore.AppendParams{
			StreamID: fmt.Sprintf("order-%d", i), StreamType: "order", Expected: eventstore.Any, Events: events,
		})
		require.NoError(t, err)
		last = res.Position
		orders += 1 + boolInt(i%3 == 0)
	}
	return last, orders
}

// waitReadable waits until the log reads through last: a transaction left
// open elsewhere in the cluster (another test's) holds back the events of
// younger ones, and what a Rebuild or a Run reads is only what the log
// reads.
func (f *fixture) waitReadable(t *testing.T, last eventstore.Position) {
	t.Helper()
	require.Eventually(t, func() bool {
		var at eventstore.Position
		for {
			b, err := f.store.ReadAll(t.Context(), eventstore.ReadAllParams{After: at})
			if err != nil {
				return false
			}
			at = b.End
			if !b.Full {
				return at.Compare(last) >= 0
			}
		}
	}, 30*time.Second, 20*time.Millisecond, "the appended events become readable")
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkpoint returns the reader's checkpoint, zero without one.
func (f *fixture) checkpoint(t *testing.T, reader string) eventstore.Position {
	t.Helper()
	var p eventstore.Position
	err := f.pool.QueryRow(t.Context(), `SELECT tx_id::text::bigint, position FROM txlog_checkpoints
		WHERE log_name = 'events' AND reader = $1`, reader).Scan(&p.TxID, &p.Pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Position{}
	}
	require.NoError(t, err)
	return p
}

func (f *fixture) waitCheckpoint(t *testing.T, reader string, pos eventstore.Position) {
	t.Helper()
	require.Eventually(t, func() bool {
		return f.checkpoint(t, reader).Compare(pos) >= 0
	}, 30*time.Second, 10*time.Millisecond, "waiting for %s to reach %s", reader, pos)
}

type countRow struct {
	Customer string
	Orders   int64
}

func (f *fixture) counts(t *testing.T, table string) []countRow {
	t.Helper()
	rows, err := f.pool.Query(t.Context(), "SELECT customer, orders FROM "+pgx.Identifier{table}.Sanitize()+" ORDER BY customer")
	require.NoError(t, err)
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[countRow])
	require.NoError(t, err)
	return all
}

// requireLogOnce checks that table holds want events, each once.
func (f *fixture) requireLogOnce(t *testing.T, table string, want int) {
	t.Helper()
	var n, distinct int
	require.NoError(t, f.pool.QueryRow(t.Context(),
		"SELECT count(*), count(DISTINCT event_id) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n, &distinct))
	require.Equal(t, distinct, n, "an event was applied twice")
	require.Equal(t, want, n)
}

// scratch projects every event from the first into fresh tables with
// suffix "_scratch" and returns their counts.
func (f *fixture) scratch(t *testing.T) []countRow {
	t.Helper()
	f.createTables(t, "_scratch")
	p := f.proj.Shadow("_scratch")
	// Every event appended so far, once the log lets it be read: a
	// transaction left open elsewhere in the cluster (another test's) holds
	// back what ReadAll returns (see waitReadable).
	var total, read int
	require.NoError(t, f.pool.QueryRow(t.Context(), "SELECT count(*) FROM events").Scan(&total))
	deadline := time.Now().Add(30 * time.Second)
	var after eventstore.Position
	for {
		b, err := f.store.ReadAll(t.Context(), eventstore.ReadAllParams{After: after})
		require.NoError(t, err)
		read += len(b.Events)
		require.NoError(t, pgx.BeginFunc(t.Context(), f.pool, func(tx pgx.Tx) error {
			for _, ev := range b.Events {
				if ev.Type == typePlaced || ev.Type == typeCancelled {
					if err := p.Apply(t.Context(), tx, ev); err != nil {
						return err
					}
				}
			}
			return nil
		}))
		after = b.End
		if !b.Full && read >= total {
			return f.counts(t, "order_counts_scratch")
		}
		if !b.Full {
			require.True(t, time.Now().Before(deadline), "the log let %d of %d events be read", read, total)
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// metric returns the value of the counter or gauge of name whose labels
// include labels, or -1 when there is none.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
	metrics:
		for _, m := range fam.GetMetric() {
			for k, v := range labels {
				if !hasLabel(m, k, v) {
					continue metrics
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

func TestRunAppliesEveryEventOnceAndSkipsUnknownTypes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	last, orders := f.appendOrders(t, 0, 40)
	stop := run(t, f.runner(t, f.reg), f.proj)

	f.waitCheckpoint(t, f.proj.name, last)
	require.NoError(t, stop())

	f.requireLogOnce(t, "order_log", orders)
	require.Equal(t, f.scratch(t), f.counts(t, "order_counts"))
	labels := map[string]string{"projection": f.proj.name}
	require.InDelta(t, float64(orders), metric(t, f.reg, "dtx_projection_applied_total", labels), 0)
	require.InDelta(t, 8, metric(t, f.reg, "dtx_projection_skipped_total",
		map[string]string{"projection": f.proj.name, "type": typeUnknown}), 0)
	require.InDelta(t, 0, metric(t, f.reg, "dtx_projection_events_behind", labels), 0)
	require.GreaterOrEqual(t, metric(t, f.reg, "dtx_projection_lag_seconds", labels), 0.0)
}

func TestRestartResumesWithoutReapplying(t *testing.T) {
	t.Parallel()
	f := setup(t)
	last, orders := f.appendOrders(t, 0, 20)
	stop := run(t, f.runner(t, nil), f.proj)
	f.waitCheckpoint(t, f.proj.name, last)
	require.NoError(t, stop())

	last, more := f.appendOrders(t, 20, 20)
	reg := prometheus.NewRegistry()
	r := f.runner(t, reg)
	labels := map[string]string{"projection": f.proj.name}
	r2 := run(t, r, f.proj)
	f.waitCheckpoint(t, f.proj.name, last)
	require.Eventually(t, func() bool {
		return metric(t, reg, "dtx_projection_events_behind", labels) == 0
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, r2())

	f.requireLogOnce(t, "order_log", orders+more)
	require.InDelta(t, float64(more), metric(t, reg, "dtx_projection_applied_total", labels), 0, "only the new events are applied after the restart")
	require.Equal(t, f.scratch(t), f.counts(t, "order_counts"))
}

func TestTwoRunnersApplyOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	stop1 := run(t, f.runner(t, nil), f.proj)
	stop2 := run(t, f.runner(t, nil), f.proj)
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	var last eventstore.Position
	for w := range 3 {
		wg.Go(func() {
			p, n := f.appendOrders(t, w*100, 20)
			mu.Lock()
			defer mu.Unlock()
			total += n
			if p.Compare(last) > 0 {
				last = p
			}
		})
	}
	wg.Wait()
	f.waitCheckpoint(t, f.proj.name, last)
	require.NoError(t, stop1())
	require.NoError(t, stop2())

	f.requireLogOnce(t, "order_log", total)
	require.Equal(t, f.scratch(t), f.counts(t, "order_counts"))
}

func TestRebuildWhileEventsArrive(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, orders := f.appendOrders(t, 0, 30)
	r := f.runner(t, nil)
	stop := run(t, r, f.proj)

	// Append while the rebuild runs.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	appended := 0
	wg.Go(func() {
		for i := 1000; ctx.Err() == nil; i++ {
			_, n := f.appendOrders(t, i, 1)
			appended += n
		}
	})
	// Damage the live table: the rebuild must bring it back.
	_, err := f.pool.Exec(t.Context(), "INSERT INTO order_counts VALUES ('bogus', 99) ON CONFLICT DO NOTHING")
	require.NoError(t, err)
	require.NoError(t, r.Rebuild(t.Context(), f.proj))
	cancel()
	wg.Wait()
	t.Logf("%d order events appended during the rebuild", appended)
	orders += appended

	// The live projection goes on, on the new tables.
	last, more := f.appendOrders(t, 2000, 10)
	orders += more
	f.waitCheckpoint(t, f.proj.name, last)
	require.NoError(t, stop())

	f.requireLogOnce(t, "order_log", orders)
	want := f.scratch(t)
	require.Equal(t, want, f.counts(t, "order_counts"))
	require.NotContains(t, want, countRow{Customer: "bogus", Orders: 99})
	var shadows int
	require.NoError(t, f.pool.QueryRow(t.Context(),
		"SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE '%_rebuild'").Scan(&shadows))
	require.Zero(t, shadows, "shadow tables left")
	var readers int
	require.NoError(t, f.pool.QueryRow(t.Context(),
		"SELECT count(*) FROM txlog_checkpoints WHERE reader LIKE '%.rebuild-%'").Scan(&readers))
	require.Zero(t, readers, "rebuild checkpoint left")

	// A second rebuild, with no live projection running, gives the same.
	require.NoError(t, r.Rebuild(t.Context(), f.proj))
	require.Equal(t, want, f.counts(t, "order_counts"))
	f.requireLogOnce(t, "order_log", orders)
}

func TestRebuildResumesAfterCancel(t *testing.T) {
	t.Parallel()
	f := setup(t)
	last, orders := f.appendOrders(t, 0, 30)
	f.waitReadable(t, last)
	r := f.runner(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.Error(t, r.Rebuild(ctx, f.proj))
	require.NoError(t, r.Rebuild(t.Context(), f.proj))
	f.requireLogOnce(t, "order_log", orders)
	require.Equal(t, f.scratch(t), f.counts(t, "order_counts"))
}

func TestRebuildRefusesAConcurrentRebuild(t *testing.T) {
	t.Parallel()
	f := setup(t)
	var schema string
	require.NoError(t, f.pool.QueryRow(t.Context(), "SELECT current_schema()").Scan(&schema))
	conn, err := f.pool.Acquire(t.Context())
	require.NoError(t, err)
	defer conn.Release()
	key := "dtx.projection.rebuild:" + schema + ":" + f.proj.name
	_, err = conn.Exec(t.Context(), "SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
	require.NoError(t, err)
	defer func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
		require.NoError(t, err)
	}()
	require.ErrorIs(t, f.runner(t, nil).Rebuild(t.Context(), f.proj), projection.ErrRebuildRunning)
}

func TestRebuildRefusesAForeignShadowTable(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.createTables(t, projection.ShadowSuffix)
	_, err := f.pool.Exec(t.Context(), "INSERT INTO order_counts_rebuild VALUES ('keep', 1)")
	require.NoError(t, err)
	require.ErrorContains(t, f.runner(t, nil).Rebuild(t.Context(), f.proj), "already exists")
	require.Equal(t, []countRow{{Customer: "keep", Orders: 1}}, f.counts(t, "order_counts_rebuild"))
}

func TestConfigAndProjectionsAreValidated(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, err := projection.New(f.store, f.pool, projection.Config{BatchSize: -1, PollInterval: time.Nanosecond, SwapTimeout: 2 * time.Hour})
	require.ErrorContains(t, err, "BatchSize")
	require.ErrorContains(t, err, "PollInterval")
	require.ErrorContains(t, err, "SwapTimeout")

	r := f.runner(t, nil)
	err = r.Run(t.Context(), f.proj, f.proj, projection.Handlers{})
	require.ErrorContains(t, err, "used twice")
	require.ErrorContains(t, err, "Name")
	require.ErrorContains(t, err, "handles no event type")
}

func TestHandlers(t *testing.T) {
	t.Parallel()
	var got []string
	h := projection.Handlers{ProjectionName: "h", Funcs: map[string]projection.ApplyFunc{
		"b": func(_ context.Context, _ pgx.Tx, ev eventstore.RecordedEvent) error {
			got = append(got, ev.ID)
			return nil
		},
		"a": nil,
	}}
	require.Equal(t, "h", h.Name())
	require.Equal(t, []string{"a", "b"}, h.Handles())
	require.NoError(t, h.Apply(t.Context(), nil, eventstore.RecordedEvent{ID: "1", Type: "b"}))
	require.Equal(t, []string{"1"}, got)
	require.ErrorIs(t, h.Apply(t.Context(), nil, eventstore.RecordedEvent{Type: "c"}), projection.ErrUnhandledType)
}

// An event whose transaction commits late is applied once, in its place:
// the events committed after it wait until it commits. A runner ordering by
// position alone would apply them first and skip it.
//
// Not parallel: its open transaction holds back the horizon of every reader
// of the cluster, and the rebuild tests expect to read everything.
func TestRunAppliesALateCommitOnceInItsPlace(t *testing.T) { //nolint:paralleltest // see above
	f := setup(t)
	ctx := t.Context()
	_, before := f.appendOrders(t, 0, 3)

	tx, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	late, err := f.store.AppendTx(ctx, tx, eventstore.AppendParams{StreamID: "order-late", StreamType: "order",
		Expected: eventstore.NoStream, Events: []eventstore.EventData{{Type: typePlaced, Data: json.RawMessage(`{"customer":"late"}`)}}})
	require.NoError(t, err)
	_, after := f.appendOrders(t, 3, 5)

	run(t, f.runner(t, nil), f.proj)
	logged := func() int {
		var n int
		require.NoError(t, f.pool.QueryRow(ctx, "SELECT count(*) FROM order_log").Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return logged() == before }, 30*time.Second, 10*time.Millisecond)
	require.Never(t, func() bool { return logged() > before }, 500*time.Millisecond, 20*time.Millisecond,
		"events committed after the open transaction wait for it")

	require.NoError(t, tx.Commit(ctx))
	require.Eventually(t, func() bool { return logged() == before+1+after }, 30*time.Second, 10*time.Millisecond)
	f.requireLogOnce(t, "order_log", before+1+after)

	var lateSeq int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT l.seq FROM order_log l JOIN events e ON e.event_id = l.event_id
		WHERE e.stream_id = 'order-late'`).Scan(&lateSeq))
	require.Equal(t, before+1, lateSeq, "the late event is applied in its place in the global order, %v", late.Position)
}
