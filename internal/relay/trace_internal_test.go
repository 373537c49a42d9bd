package relay

import (
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// The cheap test of a traceparent's sampled flag agrees with W3C Trace
// Context on the flags, and lets through nothing shorter or of another
// shape, so that no span work is done for such rows.
func TestSampledTraceParent(t *testing.T) {
	const ids = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
	for flags, want := range map[string]bool{
		"00": false, "01": true, "02": false, "03": true, "09": true, "0a": false,
		"0b": true, "0d": true, "0f": true, "ff": true, "fe": false, "10": false,
	} {
		require.Equal(t, want, sampledTraceParent([]byte("00-"+ids+"-"+flags)), flags)
	}
	for _, v := range []string{
		"", "00", "00-" + ids + "-1", "00-" + ids + "01", "00_" + ids + "-01",
		"00-4bf92f3577b34da6a3ce929d0e0e473600f067aa0ba902b7--01",
	} {
		require.False(t, sampledTraceParent([]byte(v)), v)
	}
	require.True(t, sampledTraceParent([]byte("01-"+ids+"-01-later")), "a later version may append fields")
}

// No tracer, hence no span work, with the no-op provider.
func TestNewTracer(t *testing.T) {
	require.Nil(t, newTracer(noop.NewTracerProvider()))
	require.Nil(t, newTracer(nil))
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	require.NotNil(t, newTracer(tp))
}
