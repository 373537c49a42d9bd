package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/relay"
	"github.com/vextrus/dtx/internal/service"
	"github.com/vextrus/dtx/internal/txlog"
)

const summary = `outbox-relay publishes the transactional outbox to Kafka: it tails the outbox log in
PostgreSQL in commit order, produces each batch with an idempotent producer (acks=all),
and advances its checkpoint only once the broker acknowledged the batch. Woken by
LISTEN/NOTIFY with a polling fallback; per-key order; several replicas may run, fenced
by a lease: one publishes, the others stand by (and report ready) until it is gone.
Records the broker refuses for good are moved to outbox_rejected with the reason.
A topic the broker does not take for now (missing, not authorized) is held: its rows
wait in outbox_held, in order, and are retried while the other topics are published;
/readyz reports it (check "relay"), as it reports a fault that stops publishing.
A transaction left open anywhere in the cluster holds back every row committed after
it: the relay then publishes nothing and waits, and says so (a warning naming the
blocking pid and database, dtx_txlog_horizon_held_seconds; see ` + txlog.HorizonRunbook + `).`

// readyCheck names the relay's readiness check: not ready while a topic is
// held or publishing is stopped by a fault of the broker (see relay.Health).
const readyCheck = "relay"

// settings are the relay's own flags.
type settings struct {
	batchSize     int
	pollInterval  time.Duration
	leaseDuration time.Duration
	relayName     string
	horizon       service.HorizonSettings
}

func (st *settings) flags(s *service.Settings) {
	fs := s.FlagSet()
	fs.IntVar(&st.batchSize, "batch-size", relay.DefaultBatchSize,
		fmt.Sprintf("most outbox rows read and published at once (1..%d)", relay.MaxBatchSize))
	fs.DurationVar(&st.pollInterval, "poll-interval", relay.DefaultPollInterval,
		"longest wait for new rows without a notification (10ms..1m)")
	fs.DurationVar(&st.leaseDuration, "lease-duration", relay.DefaultLeaseDuration,
		"how long the publishing replica's lease lasts after each renewal; a standby takes over at most this long after it died (1s..5m)")
	fs.StringVar(&st.relayName, "relay-name", relay.DefaultName,
		"name of the lease and checkpoint: replicas with the same name take turns publishing the same outbox")
	st.horizon.Register(fs, "outbox rows")
}

// validate checks each setting alone, with the relay's own rules, so that
// the error names its flag. Zero is not taken for "the default" here.
func (st *settings) validate() error {
	var errs []error
	for _, c := range []struct {
		flag, field string
		zero        string // the error when the value is the zero value
		cfg         relay.Config
	}{
		{"batch-size", "BatchSize", zeroIf(st.batchSize == 0, "must not be 0"), relay.Config{BatchSize: st.batchSize}},
		{"poll-interval", "PollInterval", zeroIf(st.pollInterval == 0, "must not be 0"), relay.Config{PollInterval: st.pollInterval}},
		{"lease-duration", "LeaseDuration", zeroIf(st.leaseDuration == 0, "must not be 0"), relay.Config{LeaseDuration: st.leaseDuration}},
		{"relay-name", "Name", zeroIf(st.relayName == "", "must not be empty"), relay.Config{Name: st.relayName}},
	} {
		err := c.cfg.Validate()
		if c.zero != "" {
			err = errors.New(c.zero)
		}
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), "relay: "+c.field+": ")
			errs = append(errs, fmt.Errorf("%s (%s): %s", c.flag, service.EnvName(c.flag), msg))
		}
	}
	if err := st.horizon.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func zeroIf(isZero bool, msg string) string {
	if isZero {
		return msg
	}
	return ""
}

// run is the binary's work loop. The relay gets a Kafka client of its own
// (env.Kafka serves the readiness check and keeps franz-go's producer
// defaults; the relay's needs its delivery timeout, no linger and the
// murmur2 partitioner, see relay.New).
func (st *settings) run(ctx context.Context, env *service.Env) error {
	r, err := relay.New(env.Pool, append(env.Config.KafkaOpts(),
		kgo.SeedBrokers(env.Config.KafkaBrokers...),
		kgo.ClientID("dtx-outbox-relay"),
	), relay.Config{
		Schema:        env.Config.Schema,
		Name:          st.relayName,
		Holder:        env.Config.InstanceID,
		BatchSize:     st.batchSize,
		PollInterval:  st.pollInterval,
		LeaseDuration: st.leaseDuration,
		Logger:        env.Logger,
		Registerer:    env.Registry,
	})
	if err != nil {
		return err
	}
	env.AddReadyCheck(readyCheck, func(context.Context) error { return r.Health() })
	// Rows waiting behind a transaction left open are not read at all, so
	// the relay, idle, would say nothing of them: the watch names the
	// transaction, and /readyz says so after --horizon-not-ready-after.
	horizon, err := st.horizon.Watch(ctx, env, txlog.HorizonLog{Schema: env.Config.Schema, Log: outboxLog})
	if err != nil {
		return err
	}
	defer horizon.Stop()
	return r.Run(ctx)
}

// outboxLog is the outbox log's table (migration 004).
const outboxLog = "outbox"

func main() {
	var st settings
	service.Main(service.App{
		Name:             "outbox-relay",
		Summary:          summary,
		DefaultAdminAddr: ":8082",
		FlagsFunc:        st.flags,
		ValidateFunc:     st.validate,
		ReadyChecksFunc:  func() []string { return []string{readyCheck, txlog.HorizonCheck} },
		RunFunc:          st.run,
	})
}
