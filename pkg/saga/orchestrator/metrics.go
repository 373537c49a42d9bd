package orchestrator

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vextrus/dtx/pkg/saga"
)

type metrics struct {
	o         *Orchestrator
	messages  *prometheus.CounterVec
	events    *prometheus.CounterVec
	batchSize prometheus.Histogram
	ticks     prometheus.Counter
	refused   *prometheus.CounterVec
	pruned    prometheus.Counter
	instances *prometheus.Desc
}

func newMetrics(o *Orchestrator) *metrics {
	return &metrics{
		o: o,
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtx_saga_inputs_total",
			Help: "Inputs handled by the orchestrator (replies, triggers, ticks, operator commands) by kind and outcome (applied, duplicate, ignored, unknown_saga, unknown_definition: not applied, tried again).",
		}, []string{"kind", "outcome"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtx_saga_lifecycle_total",
			Help: "Saga lifecycle events (started, step_completed, compensating, completed, compensated, failed, ...) by definition.",
		}, []string{"definition", "event"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dtx_saga_batch_size",
			Help:    "Inputs handled per orchestrator transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		ticks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dtx_saga_due_claimed_total",
			Help: "Due sagas claimed by the scheduler (step timeouts, retry backoffs, saga deadlines).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtx_saga_commands_refused_total",
			Help: "Commands that could not be written (too_large for the outbox, schema, invalid), by definition and reason; each parked its saga as failed.",
		}, []string{"definition", "reason"}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dtx_saga_pruned_total",
			Help: "Finished sagas (completed, compensated, failed) deleted with their timelines once older than the retention.",
		}),
		instances: prometheus.NewDesc("dtx_saga_instances",
			"Sagas by definition and status, counted at each scrape.", []string{"definition", "status"}, nil),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.messages, m.events, m.batchSize, m.ticks, m.refused, m.pruned, m} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

var kindNames = map[kind]string{kindStart: "start", kindReply: "reply", kindTick: "tick", kindOperator: "operator"}

// observe counts a committed batch's items.
func (m *metrics) observe(batch []*item) {
	for _, it := range batch {
		if it.res.outcome != "" {
			m.messages.WithLabelValues(kindNames[it.kind], it.res.outcome).Inc()
		}
		if it.res.refused != "" {
			m.refused.WithLabelValues(it.res.refusedDef, it.res.refused).Inc()
		}
	}
}

func (m *metrics) lifecycle(def *saga.Definition, events []saga.LifecycleEvent) {
	for _, ev := range events {
		m.events.WithLabelValues(def.Name, ev.Type).Inc()
	}
}

// Describe implements prometheus.Collector for the instance counts.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.instances }

// Collect implements prometheus.Collector: it counts the sagas by status.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := m.o.pool.Query(ctx, m.o.q.counts)
	if err != nil {
		m.o.cfg.Logger.Warn("orchestrator: count sagas for the metrics", "err", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var def, status string
		var n int64
		if err := rows.Scan(&def, &status, &n); err != nil {
			return
		}
		ch <- prometheus.MustNewConstMetric(m.instances, prometheus.GaugeValue, float64(n), def, status)
	}
}
