package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

// fakeClock stands in for time: sleeping advances it at once.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return ctx.Err()
}

func (c *fakeClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// retrySetup returns a Retry middleware on a fake clock, without jitter
// unless cfg sets it.
func retrySetup(t *testing.T, cfg middleware.RetryConfig) (message.HandlerMiddleware, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	cfg.NowFunc = clock.Now
	cfg.SleepFunc = clock.Sleep
	if cfg.Jitter == 0 {
		cfg.Jitter = middleware.NoJitter
	}
	mw, err := middleware.Retry(cfg)
	require.NoError(t, err)
	return mw, clock
}

// failing returns a handler that fails with the errors of errs in turn, then
// succeeds, and counts its calls.
func failing(calls *int, errs ...error) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		*calls++
		if *calls <= len(errs) {
			return []*message.Message{message.NewMessage("dropped", nil)}, errs[*calls-1]
		}
		return []*message.Message{message.NewMessage("out", nil)}, nil
	}
}

func TestRetryRetriesWithGrowingDelays(t *testing.T) {
	t.Parallel()
	mw, clock := retrySetup(t, middleware.RetryConfig{MaxAttempts: 5, InitialInterval: 10 * time.Millisecond})
	calls := 0
	out, err := mw(failing(&calls, errTransient, errTransient, errTransient))(message.NewMessage("m", nil))
	require.NoError(t, err)
	require.Len(t, out, 1)
	require.Equal(t, "out", out[0].UUID, "only the successful attempt's messages are returned")
	require.Equal(t, 4, calls)
	require.Equal(t, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}, clock.Sleeps())
}

func TestRetryExhausted(t *testing.T) {
	t.Parallel()
	mw, clock := retrySetup(t, middleware.RetryConfig{
		MaxAttempts: 6, InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond, Multiplier: 3,
	})
	calls := 0
	last := fmt.Errorf("attempt 6: %w", errTransient)
	out, err := mw(failing(&calls, errTransient, errTransient, errTransient, errTransient, errTransient, last))(message.NewMessage("m", nil))
	require.Nil(t, out)
	var exhausted *middleware.RetryExhaustedError
	require.ErrorAs(t, err, &exhausted)
	require.Equal(t, 6, exhausted.Attempts)
	require.Same(t, last, exhausted.Err)
	require.Equal(t, 190*time.Millisecond, exhausted.Elapsed)
	require.ErrorIs(t, err, errTransient)
	require.Contains(t, err.Error(), "retries exhausted after 6 attempts")
	require.True(t, messaging.IsRetryable(err), "the error stays what it was")
	require.Equal(t, 6, calls)
	// 10ms, times 3, capped at 50ms.
	require.Equal(t, []time.Duration{10 * time.Millisecond, 30 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond}, clock.Sleeps())
}

func TestRetryMaxElapsed(t *testing.T) {
	t.Parallel()
	mw, clock := retrySetup(t, middleware.RetryConfig{
		MaxAttempts: 100, InitialInterval: 40 * time.Millisecond, MaxElapsed: 100 * time.Millisecond,
	})
	calls := 0
	h := func(msg *message.Message) ([]*message.Message, error) {
		calls++
		_ = clock.Sleep(context.Background(), 5*time.Millisecond) // the handler takes 5ms
		return nil, errTransient
	}
	_, err := mw(h)(message.NewMessage("m", nil))
	var exhausted *middleware.RetryExhaustedError
	require.ErrorAs(t, err, &exhausted)
	// Attempt 1 ends at 5ms, waits 40ms; attempt 2 ends at 50ms, and its
	// 80ms wait would end at 130ms, past 100ms.
	require.Equal(t, 2, calls)
	require.Equal(t, 2, exhausted.Attempts)
	require.Equal(t, 50*time.Millisecond, exhausted.Elapsed)
	require.Equal(t, []time.Duration{5 * time.Millisecond, 40 * time.Millisecond, 5 * time.Millisecond}, clock.Sleeps())
}

func TestRetryJitter(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		rand float64
		want []time.Duration
	}{
		{"low", 0, []time.Duration{75 * time.Millisecond, 150 * time.Millisecond}},
		{"middle", 0.5, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}},
		{"high", 0.999999, []time.Duration{124999950 * time.Nanosecond, 249999900 * time.Nanosecond}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mw, clock := retrySetup(t, middleware.RetryConfig{
				MaxAttempts: 3, InitialInterval: 100 * time.Millisecond, Jitter: 0.25,
				RandFunc: func() float64 { return tt.rand },
			})
			calls := 0
			_, err := mw(failing(&calls, errTransient, errTransient, errTransient))(message.NewMessage("m", nil))
			require.Error(t, err)
			sleeps := clock.Sleeps()
			require.Len(t, sleeps, len(tt.want))
			for i := range sleeps {
				require.InDelta(t, float64(tt.want[i]), float64(sleeps[i]), float64(time.Microsecond), "delay %d", i)
			}
		})
	}

	// The default random source stays within the bounds.
	mw, clock := retrySetup(t, middleware.RetryConfig{MaxAttempts: 50, InitialInterval: time.Second, MaxInterval: time.Second, Jitter: 0.5, MaxElapsed: middleware.NoLimit})
	calls := 0
	_, err := mw(func(*message.Message) ([]*message.Message, error) { calls++; return nil, errTransient })(message.NewMessage("m", nil))
	require.Error(t, err)
	require.Equal(t, 50, calls)
	for _, d := range clock.Sleeps() {
		require.GreaterOrEqual(t, d, 500*time.Millisecond)
		require.LessOrEqual(t, d, 1500*time.Millisecond)
	}
}

func TestRetryPermanentNotRetried(t *testing.T) {
	t.Parallel()
	mw, clock := retrySetup(t, middleware.RetryConfig{})
	for _, perm := range []error{
		messaging.Permanent(errors.New("bad order")),
		fmt.Errorf("decode: %w", &messaging.DecodeError{Field: messaging.HeaderType, Reason: "missing"}),
	} {
		calls := 0
		out, err := mw(failing(&calls, perm))(message.NewMessage("m", nil))
		require.Nil(t, out)
		require.Same(t, perm, err, "returned untouched, for DeadLetter")
		require.Equal(t, 1, calls)
	}
	require.Empty(t, clock.Sleeps())
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	mw, err := middleware.Retry(middleware.RetryConfig{InitialInterval: time.Hour, MaxElapsed: middleware.NoLimit})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msg := message.NewMessage("m", nil)
	msg.SetContext(ctx)
	failed := make(chan struct{})
	calls := 0
	h := func(*message.Message) ([]*message.Message, error) {
		calls++
		close(failed)
		return nil, errTransient
	}
	done := make(chan error, 1)
	go func() {
		_, err := mw(h)(msg)
		done <- err
	}()
	<-failed
	cancel() // the partition is revoked while Retry waits an hour
	select {
	case err := <-done:
		require.ErrorIs(t, err, errTransient)
		require.NotErrorAs(t, err, new(*middleware.RetryExhaustedError), "a revoked message must not be dead-lettered")
	case <-time.After(waitFor):
		t.Fatal("Retry did not stop when the message's context ended")
	}
	require.Equal(t, 1, calls)

	// A handler failing because the context has ended is not retried either.
	calls = 0
	_, err = mw(func(m *message.Message) ([]*message.Message, error) {
		calls++
		return nil, m.Context().Err()
	})(msg)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 1, calls)
}

func TestRetryResetsContext(t *testing.T) {
	t.Parallel()
	type key struct{}
	mw, _ := retrySetup(t, middleware.RetryConfig{MaxAttempts: 3, InitialInterval: time.Millisecond})
	var seen []any
	h := func(msg *message.Message) ([]*message.Message, error) {
		seen = append(seen, msg.Context().Value(key{}))
		msg.SetContext(context.WithValue(msg.Context(), key{}, len(seen)))
		if len(seen) < 3 {
			return nil, errTransient
		}
		return nil, nil
	}
	_, err := mw(h)(message.NewMessage("m", nil))
	require.NoError(t, err)
	require.Equal(t, []any{nil, nil, nil}, seen)
}

func TestRetryConfigValidation(t *testing.T) {
	t.Parallel()
	_, err := middleware.Retry(middleware.RetryConfig{
		MaxAttempts:     -1,
		InitialInterval: time.Second,
		MaxInterval:     time.Millisecond,
		Multiplier:      0.5,
		Jitter:          2,
	})
	require.Error(t, err)
	for _, field := range []string{"MaxAttempts", "MaxInterval", "Multiplier", "Jitter"} {
		require.Contains(t, err.Error(), field)
	}
	_, err = middleware.Retry(middleware.RetryConfig{MaxAttempts: middleware.MaxMaxAttempts + 1})
	require.ErrorContains(t, err, "MaxAttempts")
	_, err = middleware.Retry(middleware.RetryConfig{InitialInterval: -time.Second})
	require.ErrorContains(t, err, "InitialInterval")

	// A large InitialInterval lifts the default MaxInterval with it.
	_, err = middleware.Retry(middleware.RetryConfig{InitialInterval: time.Minute})
	require.NoError(t, err)
}
