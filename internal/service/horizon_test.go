package service

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHorizonSettingsDefaultsAndBounds(t *testing.T) {
	var h HorizonSettings
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	h.Register(fs, "rows")
	require.NoError(t, fs.Parse(nil))
	require.NoError(t, h.Validate())
	require.Equal(t, 30*time.Second, h.WarnEvery)

	require.NoError(t, fs.Parse([]string{"--horizon-warn-every=500ms", "--horizon-warn-after=0s", "--horizon-not-ready-after=-1s"}))
	err := h.Validate()
	require.ErrorContains(t, err, "horizon-warn-every (DTX_HORIZON_WARN_EVERY): 500ms is outside 1s..1h")
	require.ErrorContains(t, err, "horizon-warn-after (DTX_HORIZON_WARN_AFTER)")
	require.ErrorContains(t, err, "horizon-not-ready-after (DTX_HORIZON_NOT_READY_AFTER)")
}
