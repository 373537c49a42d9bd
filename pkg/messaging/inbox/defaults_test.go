package inbox_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/sweep"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
)

// The sweeper's limits this package states are the sweeper's own.
func TestSweepDefaultsAreTheSweepers(t *testing.T) {
	t.Parallel()
	require.Equal(t, sweep.DefaultInterval, inbox.DefaultSweepInterval)
	require.Equal(t, sweep.DefaultBatchSize, inbox.DefaultSweepBatchSize)
	require.Equal(t, sweep.MaxBatchSize, inbox.MaxSweepBatchSize)
}
