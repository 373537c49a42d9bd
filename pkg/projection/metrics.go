package projection

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vextrus/dtx/internal/txlog"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
)

// metrics are a Runner's counters and gauges. behind is computed at each
// scrape from the database, for the projections the Runner has run.
type metrics struct {
	applied *prometheus.CounterVec
	skipped *prometheus.CounterVec
	// duplicates counts events skipped as their streams' versions already
	// held them.
	duplicates *prometheus.CounterVec
	lag        *prometheus.GaugeVec

	pool    *pgxpool.Pool
	timeout time.Duration
	logger  *slog.Logger
	behind  *prometheus.Desc
	query   string

	mu    sync.Mutex
	names []string
}

func newMetrics(pool *pgxpool.Pool, schema string, timeout time.Duration, logger *slog.Logger) *metrics {
	return &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtx_projection_applied_total",
			Help: "Events a projection applied (a batch that is retried counts again).",
		}, []string{"projection"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtx_projection_skipped_total",
			Help: "Events of types a projection does not handle, skipped.",
		}, []string{"projection", "type"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtx_projection_duplicates_total",
			Help: "Events a projection received again (a redelivery, or an event another source applied) and skipped.",
		}, []string{"projection"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dtx_projection_lag_seconds",
			Help: "Age of the last event a projection handled, when it handled it.",
		}, []string{"projection"}),
		behind: prometheus.NewDesc("dtx_projection_events_behind",
			"Committed events after a projection's checkpoint.", []string{"projection"}, nil),
		pool:    pool,
		timeout: timeout,
		logger:  logger,
		query:   behindQuery(schema),
	}
}

// behindQuery counts, for each named reader, the events after its
// checkpoint. Every row it counts is committed; rows of transactions still
// running are not visible to it.
func behindQuery(schema string) string {
	return `SELECT c.reader, (SELECT count(*) FROM ` + pgx.Identifier{schema, postgres.LogName}.Sanitize() + ` e
	WHERE (e.tx_id, e.position) > (c.tx_id, c.position))
FROM ` + pgx.Identifier{schema, "txlog_checkpoints"}.Sanitize() + ` c
WHERE c.log_name = '` + postgres.LogName + `' AND c.reader = ANY($1)`
}

// register registers the Runner's metrics and, for the event store's log
// in schema, the log's own (see txlog.Collector: the lag of every
// registered reader of the log, and the oldest open transaction).
func (m *metrics) register(reg prometheus.Registerer, schema string) error {
	logMetrics, err := txlog.NewCollector(m.pool, txlog.MetricsConfig{
		Logs:    []txlog.MetricsLog{{Schema: schema, Log: postgres.LogName, TimeColumn: "recorded_at"}},
		Timeout: m.timeout,
		Logger:  m.logger,
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.applied, m.skipped, m.duplicates, m.lag, m, logMetrics} {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}

// track adds a projection to those whose distance is reported.
func (m *metrics) track(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Contains(m.names, name) {
		m.names = append(m.names, name)
	}
}

// Describe implements prometheus.Collector for dtx_projection_events_behind.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.behind }

// Collect implements prometheus.Collector: one query for every tracked
// projection with a checkpoint. A failed query is logged and reports
// nothing.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	names := slices.Clone(m.names)
	m.mu.Unlock()
	if len(names) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()
	rows, err := m.pool.Query(ctx, m.query, names)
	if err != nil {
		m.logger.Warn("projection: metrics: events behind", "err", err)
		return
	}
	type behind struct {
		Reader string
		Count  int64
	}
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[behind])
	if err != nil {
		m.logger.Warn("projection: metrics: events behind", "err", err)
		return
	}
	for _, b := range all {
		ch <- prometheus.MustNewConstMetric(m.behind, prometheus.GaugeValue, float64(b.Count), b.Reader)
	}
}
