package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/vextrus/dtx/internal/txlog"
)

// HorizonSettings are the flags of a binary that reads a log: how long rows
// may wait behind a transaction left open anywhere in the cluster before it
// warns, and before /readyz says so (see txlog.HorizonWatch).
type HorizonSettings struct {
	WarnAfter     time.Duration
	WarnEvery     time.Duration
	NotReadyAfter time.Duration
}

// Register declares --horizon-warn-after, --horizon-warn-every and
// --horizon-not-ready-after on fs; what names the rows in the help text ("events", "outbox rows").
func (h *HorizonSettings) Register(fs *flag.FlagSet, what string) {
	fs.DurationVar(&h.WarnAfter, "horizon-warn-after", txlog.DefaultHorizonWarnAfter,
		"warn (at most every --horizon-warn-every) when "+what+" wait this long behind a transaction left open in the cluster, naming its pid and database (1ms..1h; see "+txlog.HorizonRunbook+")")
	fs.DurationVar(&h.WarnEvery, "horizon-warn-every", txlog.DefaultHorizonWarnEvery,
		"the least time between two horizon warnings, whichever transaction they name (1s..1h)")
	fs.DurationVar(&h.NotReadyAfter, "horizon-not-ready-after", txlog.DefaultHorizonNotReadyAfter,
		"not ready (/readyz says why) while "+what+" wait this long behind a transaction left open in the cluster (0: never; at most 24h)")
}

// Validate checks both settings, naming the flag and its variable.
func (h *HorizonSettings) Validate() error {
	var errs []error
	if h.WarnAfter < time.Millisecond || h.WarnAfter > time.Hour {
		errs = append(errs, fmt.Errorf("horizon-warn-after (%s): %s is outside 1ms..1h", EnvName("horizon-warn-after"), h.WarnAfter))
	}
	if h.WarnEvery < time.Second || h.WarnEvery > time.Hour {
		errs = append(errs, fmt.Errorf("horizon-warn-every (%s): %s is outside 1s..1h", EnvName("horizon-warn-every"), h.WarnEvery))
	}
	if h.NotReadyAfter < 0 || h.NotReadyAfter > 24*time.Hour {
		errs = append(errs, fmt.Errorf("horizon-not-ready-after (%s): %s is outside 0..24h (0: never)", EnvName("horizon-not-ready-after"), h.NotReadyAfter))
	}
	return errors.Join(errs...)
}

// Watch starts watching the horizon of logs with env's pool: the gauge
// dtx_txlog_horizon_held_seconds on env's registry, the warning in env's
// log, and the txlog.HorizonCheck readiness check. Stop the watch when the
// work loop ends.
func (h *HorizonSettings) Watch(ctx context.Context, env *Env, logs ...txlog.HorizonLog) (*txlog.HorizonWatch, error) {
	notReadyAfter := h.NotReadyAfter
	if notReadyAfter == 0 {
		notReadyAfter = -1 // never
	}
	return txlog.WatchHorizon(ctx, env.Pool, env.Registry, env.AddReadyCheck, txlog.HorizonConfig{
		Logs:          logs,
		WarnAfter:     h.WarnAfter,
		WarnEvery:     h.WarnEvery,
		NotReadyAfter: notReadyAfter,
		Logger:        env.Logger,
	})
}
