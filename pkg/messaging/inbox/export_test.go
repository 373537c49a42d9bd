package inbox

import "context"

// SweepBatch runs one DELETE statement of Sweep.
func (i *Inbox) SweepBatch(ctx context.Context) (int64, error) {
	return i.sweeper.Batch(ctx)
}
