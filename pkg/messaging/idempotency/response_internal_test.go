package idempotency

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStoredHeaders(t *testing.T) {
	t.Parallel()
	h := http.Header{
		"Content-Type":      {"application/json"},
		"Set-Cookie":        {"a=1", "b=2"},
		"Connection":        {"keep-alive, X-Private"},
		"X-Private":         {"per connection"},
		"Keep-Alive":        {"timeout=5"},
		"Transfer-Encoding": {"chunked"},
		"Content-Length":    {"12"},
		"Trailer":           {"X-Checksum"},
		"Trailer:X-Sum":     {"1"},
		HeaderReplayed:      {"true"},
		"X-Empty":           {},
		"Location":          {"/orders/1"},
	}
	require.Equal(t, map[string][]string{
		"Content-Type": {"application/json"},
		"Location":     {"/orders/1"},
	}, storedHeaders(h), "per-caller headers (Set-Cookie) are never stored")
}

func TestRecorder(t *testing.T) {
	t.Parallel()

	rec := newRecorder(5)
	rec.WriteHeader(http.StatusEarlyHints) // Informational: dropped.
	rec.WriteHeader(http.StatusAccepted)
	rec.WriteHeader(http.StatusOK) // Superfluous: ignored.
	n, err := rec.Write([]byte("<p>hi"))
	require.NoError(t, err)
	require.Equal(t, 5, n)
	resp := rec.response()
	require.Equal(t, http.StatusAccepted, resp.status)
	require.Equal(t, []byte("<p>hi"), resp.body)
	require.Equal(t, []string{"text/html; charset=utf-8"}, resp.headers["Content-Type"], "sniffed as net/http would")

	_, err = rec.Write([]byte("!"))
	require.ErrorIs(t, err, errResponseTooLarge)
	require.True(t, rec.overflow)

	empty := newRecorder(5).response()
	require.Equal(t, http.StatusOK, empty.status)
	require.Empty(t, empty.headers)
	require.NotNil(t, empty.body)

	noContent := newRecorder(5)
	noContent.WriteHeader(http.StatusNoContent)
	_, _ = noContent.Write([]byte("x"))
	require.Empty(t, noContent.response().body)

	require.Panics(t, func() { newRecorder(5).WriteHeader(99) })
}
