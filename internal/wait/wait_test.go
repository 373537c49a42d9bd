package wait_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/wait"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	lo, hi := 10*time.Millisecond, 70*time.Millisecond
	var got []time.Duration
	for attempt := 1; attempt <= 5; attempt++ {
		got = append(got, wait.Backoff(lo, hi, attempt))
	}
	require.Equal(t, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, hi, hi}, got)
}

func TestSleep(t *testing.T) {
	t.Parallel()
	require.True(t, wait.Sleep(context.Background(), time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.False(t, wait.Sleep(ctx, time.Hour), "a done context ends the wait")
}

func TestDoubling(t *testing.T) {
	t.Parallel()
	d := wait.Doubling{Min: 10 * time.Millisecond, Max: 70 * time.Millisecond}
	require.Equal(t, 10*time.Millisecond, d.Peek())
	var got []time.Duration
	for range 5 {
		got = append(got, d.Next())
	}
	require.Equal(t, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 70 * time.Millisecond, 70 * time.Millisecond}, got)
	d.Reset()
	require.Equal(t, 10*time.Millisecond, d.Next(), "Reset starts from Min")
}

func TestJitter(t *testing.T) {
	t.Parallel()
	for range 1000 {
		j := wait.Jitter(time.Second)
		require.GreaterOrEqual(t, j, 800*time.Millisecond)
		require.LessOrEqual(t, j, 1200*time.Millisecond)
	}
	require.Equal(t, time.Duration(3), wait.Jitter(3), "too short to move")
}
