package relay

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Kinds of dtx_relay_errors_total.
const (
	errKindRead       = "read"       // reading the outbox failed
	errKindProduce    = "produce"    // the broker did not acknowledge a record: a timeout, or an error that is not the record's fault
	errKindCheckpoint = "checkpoint" // saving the checkpoint failed
	errKindFenced     = "fenced"     // the checkpoint was refused: the lease was lost
	errKindLease      = "lease"      // acquiring, renewing or releasing the lease failed
	errKindClient     = "client"     // the Kafka client was replaced: the broker refused its producer id (see clientStale)
)

type metrics struct {
	published      prometheus.Counter
	batchSize      prometheus.Histogram
	errors         *prometheus.CounterVec
	rejected       prometheus.Counter
	publishRetries *prometheus.CounterVec // by the failed row's topic and retryReason
	isLeader       prometheus.Gauge
	topicHeld      *prometheus.GaugeVec // rows in outbox_held, by topic
	commitToAck    prometheus.Histogram
	collectables   []prometheus.Collector
}

func newMetrics() *metrics {
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dtx_relay_published_total",
			Help: "Outbox rows the broker acknowledged.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dtx_relay_batch_size",
			Help:    "Rows per batch read from the outbox and published.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000},
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtx_relay_errors_total",
			Help: "Failures of the relay by kind: read, produce, checkpoint, fenced, lease, client (the Kafka client was replaced after the broker refused its producer id).",
		}, []string{"kind"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dtx_relay_rejected_total",
			Help: "Outbox rows the broker refused for good, moved to outbox_rejected.",
		}),
		publishRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtx_relay_publish_retries_total",
			Help: "Publishing retried from a row the broker did not accept, for a reason that is not the row's fault: by the row's topic and the Kafka error (or timeout, other).",
		}, []string{"topic", "reason"}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dtx_relay_is_leader",
			Help: "1 while this replica holds the relay lease and publishes, 0 on standby.",
		}),
		topicHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dtx_relay_topic_held",
			Help: "Rows of a held topic waiting in outbox_held (the broker does not take the topic for now), on the replica that publishes.",
		}, []string{"topic"}),
		commitToAck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dtx_relay_commit_to_ack_seconds",
			Help:    "Time from an outbox row's created_at to the broker's acknowledgement of its record.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16), // 1ms .. ~33s
		}),
	}
	for _, k := range []string{errKindRead, errKindProduce, errKindCheckpoint, errKindFenced, errKindLease, errKindClient} {
		m.errors.WithLabelValues(k)
	}
	m.collectables = []prometheus.Collector{m.published, m.batchSize, m.errors, m.rejected, m.publishRetries, m.isLeader, m.topicHeld, m.commitToAck}
	return m
}

// register registers every collector on reg, or none: on failure the ones
// registered already are unregistered again.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("relay: Registerer: metrics already registered (one relay per registry): %w", err)
			}
			return fmt.Errorf("relay: Registerer: %w", err)
		}
	}
	return nil
}
