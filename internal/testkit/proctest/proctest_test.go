package proctest

import (
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLogsWaitFor(t *testing.T) {
	t.Parallel()
	r, w := io.Pipe()
	l := NewLogs()
	done := make(chan struct{})
	go func() { l.Consume(r); close(done) }()
	go func() {
		_, _ = io.WriteString(w, "not json\n{\"msg\":\"ready\",\"n\":1}\n{\"msg\":\"ready\",\"n\":2}\n")
		_ = w.Close()
	}()
	require.InDelta(t, 2, l.WaitForNth(t, "ready", 2, 10*time.Second)["n"], 0)
	require.InDelta(t, 1, l.WaitFor(t, "ready", time.Second)["n"], 0)
	<-done
	require.Contains(t, l.String(), "not json\n")
}
