package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/internal/txlog"
	"github.com/vextrus/dtx/pkg/migrate"
)

// Defaults and limits of Config.
const (
	// DefaultName names the lease and the checkpoint when Config.Name is
	// empty.
	DefaultName = "outbox-relay"
	// DefaultBatchSize is the most rows read and published at once when
	// Config.BatchSize is zero.
	DefaultBatchSize = txlog.DefaultBatchSize
	// MaxBatchSize is the largest Config.BatchSize accepted.
	MaxBatchSize = txlog.MaxBatchSize
	// DefaultPollInterval is Config.PollInterval's default.
	DefaultPollInterval = time.Second
	// DefaultLeaseDuration is Config.LeaseDuration's default.
	DefaultLeaseDuration = 10 * time.Second
	// DefaultMaxBackoff is Config.MaxBackoff's default.
	DefaultMaxBackoff = 10 * time.Second
	// DefaultProduceTimeout is Config.ProduceTimeout's default.
	DefaultProduceTimeout = 10 * time.Second
	// DefaultPruneInterval is Config.PruneInterval's default.
	DefaultPruneInterval = time.Minute
)

// minBackoff is the first pause after a failure; it doubles up to
// Config.MaxBackoff.
const minBackoff = 100 * time.Millisecond

// Config configures a Relay.
type Config struct {
	// Schema is the PostgreSQL schema holding the outbox, outbox_rejected,
	// outbox_held, relay_leases and txlog_checkpoints tables.
	// Defaults to "dtx"; must pass migrate.ValidateSchemaName.
	Schema string

	// Name names the lease replicas compete for and the checkpoint the
	// holder advances: replicas with the same Name take turns publishing the
	// same outbox. Defaults to DefaultName ("outbox-relay"); 1 to 255 bytes
	// of UTF-8 without NUL.
	Name string

	// Holder names this replica in the lease row and in outbox_rejected.
	// It is informational: fencing rests on the lease's token, so two
	// replicas with the same Holder still exclude each other. Defaults to
	// the host name; 1 to 255 bytes.
	Holder string

	// BatchSize is the most rows the relay reads and publishes at once.
	// Defaults to DefaultBatchSize (500); must be between 1 and MaxBatchSize
	// (10000).
	BatchSize int

	// PollInterval is the longest the relay waits for new rows without a
	// notification: the fallback when notifications are lost. Rows held
	// back by an open transaction are polled for more often (200ms, or
	// PollInterval if shorter). Defaults to DefaultPollInterval (1s);
	// between 10ms and 1m.
	PollInterval time.Duration

	// LeaseDuration is how long the lease lasts after each renewal; a
	// standby takes over at most this long after the holder died (at once
	// after a holder that drained). Defaults to DefaultLeaseDuration (10s);
	// between 1s and 5m.
	LeaseDuration time.Duration

	// LeaseRenewInterval is the pause between two renewals of a held
	// lease. Defaults to LeaseDuration/3; between 100ms and LeaseDuration/2.
	LeaseRenewInterval time.Duration

	// MaxBackoff caps the pause after a failed read, publish or checkpoint:
	// the pause starts at 100ms and doubles, with jitter, up to it.
	// Defaults to DefaultMaxBackoff (10s); between 100ms and 5m.
	MaxBackoff time.Duration

	// ProduceTimeout bounds how long a record may wait for the broker's
	// acknowledgement (each produce's deadline; the relay disables franz-go's
	// RecordDeliveryTimeout, which counts from the record's timestamp, the
	// row's created_at) and how long a
	// drain waits for the batch in flight. Defaults to DefaultProduceTimeout
	// (10s); between 1s and 5m.
	ProduceTimeout time.Duration

	// PruneInterval is the pause between two runs of the outbox's retention,
	// which deletes the rows every registered reader has passed.
	// Defaults to DefaultPruneInterval (1m); between 1s and 24h.
	PruneInterval time.Duration

	// Logger receives lease transitions (info), rejected rows (error) and
	// failures (warn). Defaults to no logging.
	Logger *slog.Logger

	// Registerer receives the relay's metrics (see the package docs) and a
	// txlog.Collector of the outbox log. Defaults to none: metrics are kept
	// but not exported.
	Registerer prometheus.Registerer

	// TracerProvider records a PRODUCER span "publish <topic>" for each row
	// whose headers carry a sampled W3C trace context (see the package
	// docs). Defaults to the global provider, otel.GetTracerProvider(); with
	// a no-op provider (go.opentelemetry.io/otel/trace/noop) the relay does
	// no span work at all.
	TracerProvider trace.TracerProvider
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = migrate.DefaultSchema
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Holder == "" {
		c.Holder, _ = os.Hostname()
		if c.Holder == "" {
			c.Holder = "outbox-relay"
		}
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = DefaultLeaseDuration
	}
	if c.LeaseRenewInterval == 0 {
		c.LeaseRenewInterval = c.LeaseDuration / 3
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.ProduceTimeout == 0 {
		c.ProduceTimeout = DefaultProduceTimeout
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = DefaultPruneInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
}

func (c *Config) validate() error {
	var errs []error
	if err := migrate.ValidateSchemaName(c.Schema); err != nil {
		errs = append(errs, fmt.Errorf("relay: Schema: %w", err))
	}
	if err := txlog.ValidateName(c.Name); err != nil {
		errs = append(errs, fmt.Errorf("relay: Name: %w", err))
	}
	if err := txlog.ValidateName(c.Holder); err != nil {
		errs = append(errs, fmt.Errorf("relay: Holder: %w", err))
	}
	if c.BatchSize < 1 || c.BatchSize > MaxBatchSize {
		errs = append(errs, fmt.Errorf("relay: BatchSize: %d is outside 1..%d", c.BatchSize, MaxBatchSize))
	}
	between := func(field string, d, lo, hi time.Duration) {
		if d < lo || d > hi {
			errs = append(errs, fmt.Errorf("relay: %s: %s is outside %s..%s", field, d, lo, hi))
		}
	}
	between("PollInterval", c.PollInterval, 10*time.Millisecond, time.Minute)
	between("LeaseDuration", c.LeaseDuration, time.Second, 5*time.Minute)
	between("LeaseRenewInterval", c.LeaseRenewInterval, 100*time.Millisecond, max(c.LeaseDuration/2, 100*time.Millisecond))
	between("MaxBackoff", c.MaxBackoff, minBackoff, 5*time.Minute)
	between("ProduceTimeout", c.ProduceTimeout, time.Second, 5*time.Minute)
	between("PruneInterval", c.PruneInterval, time.Second, 24*time.Hour)
	return errors.Join(errs...)
}

// Validate returns the error New would return for c: nil if c, with its
// zero fields set to their defaults, is valid; otherwise an error naming
// every invalid field.
func (c Config) Validate() error {
	c.setDefaults()
	return c.validate()
}
