package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/vextrus/dtx/internal/sweep"
)

// newPruner returns the sweeper of finished sagas; nil when pruning is
// disabled.
func (o *Orchestrator) newPruner() *sweep.Sweeper {
	if o.cfg.DisablePruning {
		return nil
	}
	return sweep.New(sweep.Config{
		Name: "orchestrator: prune finished sagas", Interval: o.cfg.PruneInterval, BatchSize: o.cfg.PruneBatchSize,
		Logger: o.cfg.Logger, BatchFunc: o.pruneBatch,
	})
}

// Prune deletes the finished sagas (completed, compensated or failed) whose
// last update is older than Config.FinishedRetention, with their timelines,
// in transactions of at most Config.PruneBatchSize sagas each, and returns
// how many it deleted, also when it fails part way. Running and compensating
// sagas are never deleted, nor a saga that another transaction holds at
// that moment (a batch handling it, an operator's command, another
// replica's Prune): the next Prune looks again. Run calls Prune every
// Config.PruneInterval; with Config.DisablePruning it deletes nothing.
func (o *Orchestrator) Prune(ctx context.Context) (int64, error) {
	if o.pruner == nil {
		return 0, nil
	}
	return o.pruner.Sweep(ctx)
}

// pruneBatch deletes at most limit finished sagas in one transaction: it
// row-locks candidates, skipping locked ones, then deletes each whose
// advisory lock it gets without waiting (see sql/prune.sql).
func (o *Orchestrator) pruneBatch(ctx context.Context, limit int) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, batchTimeout)
	defer cancel()
	tx, err := o.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rows, err := tx.Query(ctx, o.q.pruneCandidates, o.cfg.FinishedRetention.Microseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("find finished sagas: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("find finished sagas: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("find finished sagas: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	keys := make([]int64, len(ids))
	for i, id := range ids {
		keys[i] = lockKey(o.cfg.Schema, id)
	}
	tag, err := tx.Exec(ctx, o.q.prune, ids, keys)
	if err != nil {
		return 0, fmt.Errorf("delete %d finished sagas: %w", len(ids), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	n := tag.RowsAffected()
	o.m.pruned.Add(float64(n))
	return n, nil
}

// prune runs Prune at once and then every Config.PruneInterval until ctx
// ends. A failed prune is logged and tried again at the next interval.
func (o *Orchestrator) prune(ctx context.Context) {
	if o.pruner == nil {
		return
	}
	ticker := time.NewTicker(o.cfg.PruneInterval)
	defer ticker.Stop()
	for {
		n, err := o.pruner.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			o.cfg.Logger.WarnContext(ctx, "orchestrator: prune finished sagas failed", "pruned", n, "err", err)
		case n > 0:
			o.cfg.Logger.InfoContext(ctx, "orchestrator: pruned finished sagas", "pruned", n, "older_than", o.cfg.FinishedRetention.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
