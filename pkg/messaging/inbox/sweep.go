package inbox

import (
	"context"
	"fmt"
	"time"
)

// Sweep deletes the expired records of every consumer in the table, not only
// the Inbox's own, so records of a consumer that no longer runs go too. Each
// statement deletes at most Config.SweepBatchSize rows and commits on its own;
// Sweep repeats it until a statement finds fewer rows than that. Rows that a
// concurrent transaction holds locked are skipped, so Sweep never waits on
// other work and several replicas may sweep at once. It returns the number of
// rows deleted, also when it fails part way.
func (i *Inbox) Sweep(ctx context.Context) (deleted int64, err error) {
	for {
		n, err := i.sweepBatch(ctx)
		deleted += n
		if err != nil {
			return deleted, err
		}
		if n < int64(i.cfg.SweepBatchSize) {
			return deleted, nil
		}
	}
}

// sweepBatch runs one DELETE statement of Sweep.
func (i *Inbox) sweepBatch(ctx context.Context) (int64, error) {
	tag, err := i.pool.Exec(ctx, i.q.sweep, i.cfg.SweepBatchSize)
	if err != nil {
		return 0, fmt.Errorf("inbox: sweep expired records: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Run sweeps at once and then every Config.SweepInterval until ctx is done,
// and returns nil then. A failed sweep is logged and retried at the next
// interval: a database outage does not end Run.
func (i *Inbox) Run(ctx context.Context) error {
	ticker := time.NewTicker(i.cfg.SweepInterval)
	defer ticker.Stop()
	for {
		n, err := i.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			i.cfg.Logger.Warn("inbox: sweep failed", "consumer", i.cfg.Consumer, "deleted", n, "err", err)
		case n > 0:
			i.cfg.Logger.Debug("inbox: swept expired records", "consumer", i.cfg.Consumer, "deleted", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// Start runs Run in a goroutine the Inbox owns, until ctx is done or Stop is
// called. It fails with ErrAlreadyStarted if that goroutine is still running.
func (i *Inbox) Start(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.done != nil {
		select {
		case <-i.done:
			// Ended with its context; Stop was not called. Start afresh.
			i.stop()
		default:
			return ErrAlreadyStarted
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	i.stop, i.done = cancel, done
	go func() {
		defer close(done)
		_ = i.Run(ctx) // Run returns only nil.
	}()
	return nil
}

// Stop ends the goroutine Start began and waits for it; a sweep in progress
// is interrupted. It is safe to call more than once, and without Start.
func (i *Inbox) Stop() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.done == nil {
		return
	}
	i.stop()
	<-i.done
	i.stop, i.done = nil, nil
}
