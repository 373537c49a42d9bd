// Package wait holds the two waits dtx's loops share: a sleep that ends
// with its context, and an exponential backoff.
//
// Neither fails: Sleep reports whether it waited the full time, Backoff
// clamps its result to its bounds.
package wait

import (
	"context"
	"time"
)

// Sleep waits d or until ctx ends, and reports whether the full wait passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Backoff returns the wait before retry attempt (from 1): lo, doubling with
// each attempt, at most hi.
func Backoff(lo, hi time.Duration, attempt int) time.Duration {
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}
