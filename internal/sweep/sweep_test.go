package sweep

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSetDefaultsAndValidate(t *testing.T) {
	t.Parallel()
	var interval time.Duration
	var batch int
	SetDefaults(&interval, &batch)
	require.Equal(t, DefaultInterval, interval)
	require.Equal(t, DefaultBatchSize, batch)
	require.Empty(t, Validate("x: ", "Interval", "BatchSize", interval, batch))

	errs := Validate("inbox: ", "SweepInterval", "SweepBatchSize", time.Millisecond, MaxBatchSize+1)
	require.Len(t, errs, 2)
	require.ErrorContains(t, errs[0], "inbox: SweepInterval: 1ms is outside 1s..24h0m0s")
	require.ErrorContains(t, errs[1], "inbox: SweepBatchSize: 100001 is outside 1..100000")
}

// Sweep runs batches until one deletes fewer rows than the batch size, and
// reports what it deleted also when a batch fails.
func TestSweepRunsBatchesUntilShort(t *testing.T) {
	t.Parallel()
	remaining := int64(25)
	var calls int
	s := New(Config{Name: "test", Interval: time.Hour, BatchSize: 10, Logger: slog.New(slog.DiscardHandler),
		BatchFunc: func(_ context.Context, limit int) (int64, error) {
			calls++
			n := min(remaining, int64(limit))
			remaining -= n
			return n, nil
		}})
	n, err := s.Sweep(t.Context())
	require.NoError(t, err)
	require.Equal(t, int64(25), n)
	require.Equal(t, 3, calls, "10 + 10 + 5: the short batch ends the sweep")

	boom := errors.New("boom")
	calls = 0
	s = New(Config{Name: "test", Interval: time.Hour, BatchSize: 10, Logger: slog.New(slog.DiscardHandler),
		BatchFunc: func(context.Context, int) (int64, error) {
			calls++
			if calls == 2 {
				return 0, boom
			}
			return 10, nil
		}})
	n, err = s.Sweep(t.Context())
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "test: sweep: boom")
	require.Equal(t, int64(10), n)
}

func TestStartStop(t *testing.T) {
	t.Parallel()
	swept := make(chan struct{}, 1)
	s := New(Config{Name: "test", Interval: time.Hour, BatchSize: 10, Logger: slog.New(slog.DiscardHandler),
		BatchFunc: func(context.Context, int) (int64, error) {
			select {
			case swept <- struct{}{}:
			default:
			}
			return 0, nil
		}})
	require.NoError(t, s.Start(t.Context()))
	require.ErrorIs(t, s.Start(t.Context()), ErrAlreadyStarted)
	<-swept // Run sweeps at once.
	s.Stop()
	s.Stop() // safe twice
	require.NoError(t, s.Start(t.Context()), "a stopped sweeper starts again")
	s.Stop()
}
