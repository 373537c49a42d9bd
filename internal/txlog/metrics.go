package txlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults and limits of MetricsConfig.
const (
	// DefaultMetricsTimeout bounds the queries of one scrape when
	// MetricsConfig.Timeout is zero.
	DefaultMetricsTimeout = 5 * time.Second
)

// MetricsLog names a log whose readers a Collector reports.
type MetricsLog struct {
	// Schema is the schema of the log table and txlog_checkpoints.
	// Defaults to DefaultSchema ("dtx"); must pass migrate.ValidateSchemaName.
	Schema string

	// Log is the log table's name, without schema. Required; a plain
	// lower-case identifier.
	Log string

	// TimeColumn is a timestamptz column of the table set when the row is
	// written (the outbox's created_at, the event store's recorded_at), by
	// which dtx_txlog_reader_lag_seconds measures the age of a reader's next
	// row. Defaults to none: the lag in seconds is not reported, since no
	// one name fits every log. A plain lower-case identifier when set.
	TimeColumn string
}

// MetricsConfig configures a Collector.
type MetricsConfig struct {
	// Logs are the logs whose readers are reported. Defaults to none: only
	// dtx_txlog_oldest_open_tx_seconds is reported.
	Logs []MetricsLog

	// Timeout bounds the queries of one scrape; a scrape that runs out
	// reports what it has. Defaults to DefaultMetricsTimeout (5s); between
	// 10ms and 1 minute.
	Timeout time.Duration

	// Logger receives failed queries (warn). Defaults to no logging.
	Logger *slog.Logger
}

func (c *MetricsConfig) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultMetricsTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	for i := range c.Logs {
		if c.Logs[i].Schema == "" {
			c.Logs[i].Schema = DefaultSchema
		}
	}
}

func (c *MetricsConfig) validate() error {
	var errs []error
	for i, l := range c.Logs {
		errs = append(errs, validateTable(fmt.Sprintf("txlog: Logs[%d].", i), l.Schema, l.Log)...)
		if l.TimeColumn != "" {
			if err := validateIdentifier(l.TimeColumn); err != nil {
				errs = append(errs, fmt.Errorf("txlog: Logs[%d].TimeColumn: %w", i, err))
			}
		}
	}
	if c.Timeout < 10*time.Millisecond || c.Timeout > time.Minute {
		errs = append(errs, fmt.Errorf("txlog: Timeout: %s is outside 10ms..1m", c.Timeout))
	}
	return errors.Join(errs...)
}

// Collector is a prometheus.Collector that queries PostgreSQL at each scrape
// for how far the readers of some logs lag and what holds them back:
//
//   - dtx_txlog_reader_lag_rows{schema, log, reader}: for every reader
//     registered in txlog_checkpoints, an estimate of the rows it has not
//     read: the log's identity sequence's last value minus the position of
//     its checkpoint. It is read in constant time, and exact while rows are
//     written one transaction after another; with concurrent writers it
//     also counts positions of rows rolled back, and rows are not read in
//     position order, so it is off by about the rows in flight.
//   - dtx_txlog_reader_lag_seconds{schema, log, reader}: the age, by the
//     log's TimeColumn, of the next row the reader will read; 0 when it has
//     read every committed row. Reported only for logs with a TimeColumn.
//   - dtx_txlog_oldest_open_tx_seconds: the age, by xact_start, of the
//     oldest transaction holding a transaction id among those the role can
//     see the start of (prepared transactions included), 0 if none.
//     PostgreSQL shows xact_start of other roles' sessions only to members
//     of pg_read_all_stats (or pg_monitor) and superusers: for any other
//     role it leaves out every other role's transaction, and reads 0 while
//     such a transaction holds every reader back. It is kept for roles that
//     see everything; dtx_txlog_horizon_held_seconds of a HorizonWatch is
//     the signal that works for every role and counts only while rows of a
//     log actually wait. Read-only transactions hold no id and are not
//     counted.
//   - dtx_txlog_metrics_errors_total: queries of scrapes that failed. A
//     failed query is logged, and the scrape reports the rest.
//
// Register one Collector per registry (two would describe the oldest-open
// gauge twice) and list every log in it.
type Collector struct {
	db   Querier
	cfg  MetricsConfig
	logs []logQuery

	lagRows, lagSeconds, oldestTx, errorsDesc *prometheus.Desc
	oldestQuery                               string
	errors                                    atomic.Uint64
}

type logQuery struct {
	log       MetricsLog
	qualified string
	query     string
}

// NewCollector returns a Collector running its queries on db (typically a
// *pgxpool.Pool). It checks cfg and fails with an error naming every invalid
// field; it does not touch the database. Register it on the process's
// registry: reg.Register(c).
func NewCollector(db Querier, cfg MetricsConfig) (*Collector, error) {
	if db == nil {
		return nil, errors.New("txlog: collector: db is nil")
	}
	cfg.Logs = append([]MetricsLog(nil), cfg.Logs...)
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Collector{
		db:  db,
		cfg: cfg,
		lagRows: prometheus.NewDesc("dtx_txlog_reader_lag_rows",
			"Estimated rows of the log the reader has not read yet.", []string{"schema", "log", "reader"}, nil),
		lagSeconds: prometheus.NewDesc("dtx_txlog_reader_lag_seconds",
			"Age of the next row the reader will read, 0 when it has read every committed row.", []string{"schema", "log", "reader"}, nil),
		oldestTx: prometheus.NewDesc("dtx_txlog_oldest_open_tx_seconds",
			"Age of the oldest open transaction holding a transaction id whose start the role may see (all of them only with pg_read_all_stats); see dtx_txlog_horizon_held_seconds.", nil, nil),
		errorsDesc: prometheus.NewDesc("dtx_txlog_metrics_errors_total",
			"Metrics queries that failed.", nil, nil),
	}
	var errs []error
	for _, l := range cfg.Logs {
		lagSeconds := "NULL::float8"
		if l.TimeColumn != "" {
			sub, err := loadQuery("lag_seconds.sql", l.Schema, l.Log, nil, "{{.time_column}}", pgx.Identifier{l.TimeColumn}.Sanitize())
			errs = append(errs, err)
			lagSeconds = sub
		}
		q, err := loadQuery("metrics_lag.sql", l.Schema, l.Log, nil, "{{.lag_seconds}}", lagSeconds)
		errs = append(errs, err)
		c.logs = append(c.logs, logQuery{log: l, qualified: pgx.Identifier{l.Schema, l.Log}.Sanitize(), query: q})
	}
	var err error
	c.oldestQuery, err = loadQuery("metrics_oldest_tx.sql", DefaultSchema, "unused", nil)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lagRows
	ch <- c.lagSeconds
	ch <- c.oldestTx
	ch <- c.errorsDesc
}

// Collect implements prometheus.Collector: it runs one query per log and one
// for the oldest transaction, all within Timeout.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	for _, l := range c.logs {
		if err := c.collectLog(ctx, ch, l); err != nil {
			c.failed(err)
		}
	}
	var oldest float64
	if err := c.db.QueryRow(ctx, c.oldestQuery).Scan(&oldest); err != nil {
		c.failed(fmt.Errorf("txlog: metrics: oldest open transaction: %w", err))
	} else {
		ch <- prometheus.MustNewConstMetric(c.oldestTx, prometheus.GaugeValue, oldest)
	}
	ch <- prometheus.MustNewConstMetric(c.errorsDesc, prometheus.CounterValue, float64(c.errors.Load()))
}

// collectLog reports the lag of every reader of one log. Nothing is sent
// unless the query succeeds, so a scrape never holds half a log.
func (c *Collector) collectLog(ctx context.Context, ch chan<- prometheus.Metric, l logQuery) error {
	rows, err := c.db.Query(ctx, l.query, l.log.Log, l.qualified)
	if err != nil {
		return fmt.Errorf("txlog: metrics: log %s: %w", l.qualified, err)
	}
	var metrics []prometheus.Metric
	var reader string
	var lagRows float64
	var lagSeconds *float64
	_, err = pgx.ForEachRow(rows, []any{&reader, &lagRows, &lagSeconds}, func() error {
		metrics = append(metrics, prometheus.MustNewConstMetric(c.lagRows, prometheus.GaugeValue, lagRows, l.log.Schema, l.log.Log, reader))
		if l.log.TimeColumn != "" {
			var s float64
			if lagSeconds != nil {
				s = *lagSeconds
			}
			metrics = append(metrics, prometheus.MustNewConstMetric(c.lagSeconds, prometheus.GaugeValue, s, l.log.Schema, l.log.Log, reader))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("txlog: metrics: log %s: %w", l.qualified, err)
	}
	for _, m := range metrics {
		ch <- m
	}
	return nil
}

func (c *Collector) failed(err error) {
	c.errors.Add(1)
	c.cfg.Logger.Warn("txlog: metrics query failed", "err", err)
}
