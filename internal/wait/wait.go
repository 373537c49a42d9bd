// Package wait holds the waits dtx's loops share: a sleep that ends with
// its context, an exponential backoff (by attempt, or Doubling, which keeps
// its state) and a jitter.
//
// Neither fails: Sleep reports whether it waited the full time, Backoff
// clamps its result to its bounds.
package wait

import (
	"context"
	"math/rand/v2"
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

// Doubling is an exponential backoff that keeps its own state, for loops
// that retry one thing: Next returns the wait before the next retry, Min at
// first, doubling with each call up to Max; Reset, after a success, starts
// again from Min. The zero value waits 0: set Min and Max.
type Doubling struct {
	Min, Max time.Duration
	next     time.Duration // 0: Min
}

// Next returns the wait before the next retry and doubles the one after.
func (d *Doubling) Next() time.Duration {
	w := d.Peek()
	d.next = min(w*2, d.Max)
	return w
}

// Peek returns what Next would return, without doubling.
func (d *Doubling) Peek() time.Duration {
	if d.next == 0 {
		return min(d.Min, d.Max)
	}
	return d.next
}

// Reset starts the backoff again from Min.
func (d *Doubling) Reset() { d.next = 0 }

// Jitter returns d moved at random by up to 20% either way, so that
// replicas that failed together do not retry together.
func Jitter(d time.Duration) time.Duration {
	spread := int64(d) / 5
	if spread <= 0 {
		return d
	}
	return d - time.Duration(spread) + time.Duration(rand.Int64N(2*spread+1))
}
