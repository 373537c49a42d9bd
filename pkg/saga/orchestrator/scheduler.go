package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/pkg/saga"
)

// schedule fires due sagas until ctx ends: every ScanInterval it claims up
// to MaxBatch sagas whose due_at passed (FOR UPDATE SKIP LOCKED, by the
// database's clock) and ticks them through the workers; a full claim is
// followed at once by the next.
func (o *Orchestrator) schedule(ctx context.Context) {
	t := time.NewTicker(o.cfg.ScanInterval)
	defer t.Stop()
	for {
		n, err := o.Tick(ctx)
		if err != nil && ctx.Err() == nil {
			o.cfg.Logger.WarnContext(ctx, "orchestrator: scheduler pass failed; retrying at the next scan", "err", err)
		}
		if err == nil && n == o.cfg.MaxBatch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick runs one scheduler pass: it claims the sagas that are due and ticks
// them (through Run's workers when Run runs, else in a transaction of its
// own). It returns how many it claimed. Tests and tools use it to drive the
// scheduler deterministically.
func (o *Orchestrator) Tick(ctx context.Context) (int, error) {
	var ids []string
	rows, err := o.pool.Query(ctx, o.q.claim, o.cfg.MaxBatch, o.cfg.ClaimDuration.Microseconds())
	if err == nil {
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		return 0, fmt.Errorf("orchestrator: claim due sagas: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	o.m.ticks.Add(float64(len(ids)))
	items := make([]*item, len(ids))
	for i, id := range ids {
		items[i] = newItem(kindTick, id)
		items[i].input = saga.Tick{}
	}
	o.mu.Lock()
	running := o.running
	o.mu.Unlock()
	if running {
		return len(ids), o.submit(ctx, items...)
	}
	if err := o.inTx(ctx, items); err != nil {
		return len(ids), err
	}
	return len(ids), nil
}
