package txlog_test

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/txlog"
)

// gather scrapes reg and returns each sample's value by metric name and
// reader label ("" for metrics without one).
func gather(t testing.TB, reg *prometheus.Registry) map[string]map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]map[string]float64{}
	for _, fam := range families {
		byReader := map[string]float64{}
		for _, m := range fam.GetMetric() {
			var reader string
			for _, l := range m.GetLabel() {
				if l.GetName() == "reader" {
					reader = l.GetValue()
				}
			}
			byReader[reader] = value(m)
		}
		out[fam.GetName()] = byReader
	}
	return out
}

func value(m *dto.Metric) float64 {
	if g := m.GetGauge(); g != nil {
		return g.GetValue()
	}
	return m.GetCounter().GetValue()
}

func TestMetricsConfig(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, err := txlog.NewCollector(nil, txlog.MetricsConfig{})
	require.ErrorContains(t, err, "db is nil")
	_, err = txlog.NewCollector(f.pool, txlog.MetricsConfig{
		Logs:    []txlog.MetricsLog{{Log: "ok"}, {Schema: "Bad", Log: "b-ad", TimeColumn: "Created At"}},
		Timeout: time.Hour,
	})
	for _, want := range []string{"Logs[1].Schema:", "Logs[1].Log:", "Logs[1].TimeColumn:", "Timeout: 1h0m0s is outside 10ms..1m"} {
		require.ErrorContains(t, err, want)
	}
	require.NotContains(t, err.Error(), "Logs[0]")
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	c, err := txlog.NewCollector(f.pool, txlog.MetricsConfig{
		Logs:   []txlog.MetricsLog{{Schema: f.schema.Name, Log: f.log, TimeColumn: "created_at"}},
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))

	// No reader registered: nothing to report per reader.
	m := gather(t, reg)
	require.NotContains(t, m, "dtx_txlog_reader_lag_rows")
	require.Contains(t, m, "dtx_txlog_oldest_open_tx_seconds")
	require.Zero(t, m["dtx_txlog_metrics_errors_total"][""])

	_, err = f.reader.Register(ctx, f.pool)
	require.NoError(t, err)
	other := f.newReader(t, "other")
	_, err = other.Register(ctx, f.pool)
	require.NoError(t, err)
	m = gather(t, reg)
	require.Equal(t, map[string]float64{"r": 0, "other": 0}, m["dtx_txlog_reader_lag_rows"])
	require.Equal(t, map[string]float64{"r": 0, "other": 0}, m["dtx_txlog_reader_lag_seconds"], "nothing to read: no lag")

	// Five rows, written a moment ago, not read.
	_, err = f.pool.Exec(ctx, "INSERT INTO "+f.log+" (topic, created_at) SELECT 'old', now() - interval '1 minute'")
	require.NoError(t, err)
	f.insert(t, f.pool, "b", "c", "d", "e")
	m = gather(t, reg)
	require.Equal(t, map[string]float64{"r": 5, "other": 5}, m["dtx_txlog_reader_lag_rows"])
	require.GreaterOrEqual(t, m["dtx_txlog_reader_lag_seconds"]["r"], 60.0, "the oldest unread row is a minute old")

	// r reads three of them.
	rows := readN(t, f.reader, f.pool, txlog.Position{}, 5)
	_, err = f.reader.SaveCheckpoint(ctx, f.pool, rows[2].Position)
	require.NoError(t, err)
	m = gather(t, reg)
	require.Equal(t, map[string]float64{"r": 2, "other": 5}, m["dtx_txlog_reader_lag_rows"])
	require.Less(t, m["dtx_txlog_reader_lag_seconds"]["r"], 60.0, "r's next row is recent")
	require.GreaterOrEqual(t, m["dtx_txlog_reader_lag_seconds"]["other"], 60.0)

	_, err = f.reader.SaveCheckpoint(ctx, f.pool, rows[4].Position)
	require.NoError(t, err)
	m = gather(t, reg)
	require.Zero(t, m["dtx_txlog_reader_lag_rows"]["r"])
	require.Zero(t, m["dtx_txlog_reader_lag_seconds"]["r"])
}

func TestMetricsOldestOpenTransaction(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c, err := txlog.NewCollector(f.pool, txlog.MetricsConfig{})
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	oldest := func() float64 {
		return gather(t, reg)["dtx_txlog_oldest_open_tx_seconds"][""]
	}

	// A transaction holding an id, left open, shows up and grows. Other
	// tests hold transactions for moments only, so the gauge passing a
	// second is this one.
	tx := begin(t, f.pool)
	takeXID(t, tx)
	require.Eventually(t, func() bool { return oldest() >= 1 }, waitFor, 50*time.Millisecond)

	commit(t, tx)
	require.Eventually(t, func() bool { return oldest() < 1 }, waitFor, 50*time.Millisecond)
}

func TestMetricsErrors(t *testing.T) {
	t.Parallel()
	f := setup(t)
	var logs bytes.Buffer
	// The log table does not exist: its query fails, the rest is reported.
	c, err := txlog.NewCollector(f.pool, txlog.MetricsConfig{
		Logs:   []txlog.MetricsLog{{Schema: f.schema.Name, Log: "missing", TimeColumn: "created_at"}},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))

	m := gather(t, reg)
	require.InDelta(t, 1.0, m["dtx_txlog_metrics_errors_total"][""], 0)
	require.Contains(t, m, "dtx_txlog_oldest_open_tx_seconds")
	require.Contains(t, logs.String(), "txlog: metrics query failed")
	m = gather(t, reg)
	require.InDelta(t, 2.0, m["dtx_txlog_metrics_errors_total"][""], 0)
}
