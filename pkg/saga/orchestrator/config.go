package orchestrator

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vextrus/dtx/internal/sweep"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/migrate"
	"github.com/vextrus/dtx/pkg/saga"
)

// Defaults and limits of Config.
const (
	DefaultSchema         = migrate.DefaultSchema
	DefaultConsumer       = saga.DefaultOrchestratorGroup
	DefaultSource         = "/dtx/orchestrator"
	DefaultMaxBatch       = 256
	MaxMaxBatch           = 5000
	DefaultBatchWindow    = 2 * time.Millisecond
	MaxBatchWindow        = time.Second
	DefaultWorkers        = 2
	MaxWorkers            = 64
	DefaultScanInterval   = 200 * time.Millisecond
	MinScanInterval       = 10 * time.Millisecond
	MaxScanInterval       = time.Minute
	DefaultClaimDuration  = 30 * time.Second
	MinClaimDuration      = time.Second
	DefaultInboxRetention = 7 * 24 * time.Hour
	// DefaultFinishedRetention is how long a finished saga is kept when
	// Config.FinishedRetention is zero.
	DefaultFinishedRetention = 30 * 24 * time.Hour
	// MinFinishedRetention is the shortest Config.FinishedRetention
	// accepted; it must also be at least Config.InboxRetention.
	MinFinishedRetention = time.Hour
)

// Config configures an Orchestrator.
type Config struct {
	// Schema is the PostgreSQL schema of the saga tables, the inbox and the
	// outbox. Defaults to "dtx".
	Schema string

	// Definitions are the saga definitions the orchestrator runs, every
	// version of them that in-flight sagas may still use. Required.
	Definitions *saga.Registry

	// Schemas, if set, validates every command and lifecycle event before it
	// is written to the outbox (docs/architecture.md#payloads-and-schemas). A command that fails its schema
	// parks its saga as Failed with the reason: the definition's mapping is
	// wrong and resending it would not help. Defaults to nil: no validation.
	Schemas *messaging.SchemaRegistry

	// Consumer is the orchestrator's name in the inbox. Replicas share it.
	// Defaults to "dtx-orchestrator"; saga.Names(prefix).OrchestratorGroup
	// is a deployment's.
	Consumer string

	// ReplyTopic is the topic participants reply to (sent in every command as
	// header ce_sagareplyto, which participants reply to). Defaults to
	// saga.DefaultReplyTopic; saga.Names(prefix).Replies is a deployment's.
	ReplyTopic string

	// EventTopic is the topic of saga lifecycle events. Defaults to
	// saga.DefaultEventTopic; saga.Names(prefix).Events is a deployment's.
	// Set DisableEvents to write none.
	EventTopic string

	// DisableEvents turns the lifecycle events off. Defaults to false.
	DisableEvents bool

	// Source is the CloudEvents source of what the orchestrator writes.
	// Defaults to "/dtx/orchestrator".
	Source string

	// MaxBatch is the most messages handled in one transaction. Defaults to
	// 256; must be between 1 and 5000.
	MaxBatch int

	// BatchWindow is how long a worker waits for more messages after the
	// first one of a batch. Defaults to 2ms; 0 takes what is queued and goes;
	// at most 1s.
	BatchWindow time.Duration

	// Workers is how many batches are in flight at once. Defaults to 2; must
	// be between 1 and 64.
	Workers int

	// ScanInterval is how often the scheduler looks for due sagas (step
	// timeouts, retry backoffs, saga deadlines). Defaults to 200ms; must be
	// between 10ms and 1m.
	ScanInterval time.Duration

	// ClaimDuration is how long a scheduler's claim on a due saga lasts: if
	// the claimer dies before ticking it, another replica ticks it that much
	// later. Defaults to 30s; at least 1s.
	ClaimDuration time.Duration

	// InboxRetention is how long handled message ids are kept for
	// deduplication. Defaults to 7 days; at least 1h.
	InboxRetention time.Duration

	// FinishedRetention is how long a finished saga (completed, compensated
	// or failed) is kept after its last update; then Run's pruner deletes it
	// with its timeline. Running and compensating sagas are never deleted.
	// Defaults to 30 days (DefaultFinishedRetention), or InboxRetention if
	// that is longer; at least 1h and at least InboxRetention, so that a
	// trigger redelivered while its message id is still remembered never
	// starts a pruned saga again. A negative value is refused: set
	// DisablePruning to keep finished sagas forever.
	FinishedRetention time.Duration

	// DisablePruning keeps finished sagas forever: Run prunes nothing. Then
	// FinishedRetention must be left zero. Defaults to false.
	DisablePruning bool

	// PruneInterval is the pause between two prunes of Run. Defaults to 1
	// minute; between 1s and 24h.
	PruneInterval time.Duration

	// PruneBatchSize is the most sagas one prune transaction deletes (with
	// their timelines). Defaults to 1000; between 1 and 100000.
	PruneBatchSize int

	// Logger receives the orchestrator's logs. Defaults to slog.Default().
	Logger *slog.Logger

	// Registerer, if set, receives the orchestrator's metrics.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.Consumer == "" {
		c.Consumer = DefaultConsumer
	}
	if c.ReplyTopic == "" {
		c.ReplyTopic = saga.DefaultReplyTopic
	}
	if c.EventTopic == "" {
		c.EventTopic = saga.DefaultEventTopic
	}
	if c.Source == "" {
		c.Source = DefaultSource
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.BatchWindow == 0 {
		c.BatchWindow = DefaultBatchWindow
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.ScanInterval == 0 {
		c.ScanInterval = DefaultScanInterval
	}
	if c.ClaimDuration == 0 {
		c.ClaimDuration = DefaultClaimDuration
	}
	if c.InboxRetention == 0 {
		c.InboxRetention = DefaultInboxRetention
	}
	if c.FinishedRetention == 0 && !c.DisablePruning {
		c.FinishedRetention = max(DefaultFinishedRetention, c.InboxRetention)
	}
	sweep.SetDefaults(&c.PruneInterval, &c.PruneBatchSize)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("orchestrator: Config.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Definitions == nil {
		bad("Definitions", "required")
	}
	if c.MaxBatch < 1 || c.MaxBatch > MaxMaxBatch {
		bad("MaxBatch", "%d is outside 1..%d", c.MaxBatch, MaxMaxBatch)
	}
	if c.BatchWindow < 0 || c.BatchWindow > MaxBatchWindow {
		bad("BatchWindow", "%s is outside 0..%s", c.BatchWindow, MaxBatchWindow)
	}
	if c.Workers < 1 || c.Workers > MaxWorkers {
		bad("Workers", "%d is outside 1..%d", c.Workers, MaxWorkers)
	}
	if c.ScanInterval < MinScanInterval || c.ScanInterval > MaxScanInterval {
		bad("ScanInterval", "%s is outside %s..%s", c.ScanInterval, MinScanInterval, MaxScanInterval)
	}
	if c.ClaimDuration < MinClaimDuration {
		bad("ClaimDuration", "%s is below %s", c.ClaimDuration, MinClaimDuration)
	}
	if c.InboxRetention < time.Hour {
		bad("InboxRetention", "%s is below 1h", c.InboxRetention)
	}
	switch {
	case c.DisablePruning && c.FinishedRetention != 0:
		bad("FinishedRetention", "%s is set but DisablePruning is true: leave it zero to keep finished sagas forever", c.FinishedRetention)
	case c.DisablePruning:
	case c.FinishedRetention < 0:
		bad("FinishedRetention", "%s is negative: set DisablePruning to keep finished sagas forever", c.FinishedRetention)
	case c.FinishedRetention < MinFinishedRetention:
		bad("FinishedRetention", "%s is below %s", c.FinishedRetention, MinFinishedRetention)
	case c.FinishedRetention < c.InboxRetention:
		bad("FinishedRetention", "%s is shorter than InboxRetention (%s): a redelivered trigger could start a pruned saga again", c.FinishedRetention, c.InboxRetention)
	}
	errs = append(errs, sweep.Validate("orchestrator: Config.", "PruneInterval", "PruneBatchSize", c.PruneInterval, c.PruneBatchSize)...)
	for _, t := range []struct{ field, topic string }{{"ReplyTopic", c.ReplyTopic}, {"EventTopic", c.EventTopic}} {
		if len(t.topic) > 249 {
			bad(t.field, "%d bytes, at most 249", len(t.topic))
		}
	}
	return errors.Join(errs...)
}
