package idempotency

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// errResponseTooLarge is what a handler's Write returns past MaxResponseBytes.
var errResponseTooLarge = errors.New("idempotency: response exceeds MaxResponseBytes")

// recorder is the http.ResponseWriter handlers write to under an idempotency
// key. It buffers the whole response: nothing reaches the client before the
// request's transaction commits. It supports neither Flush nor Hijack, and
// drops trailers and informational (1xx) responses.
type recorder struct {
	header   http.Header
	status   int
	body     bytes.Buffer
	max      int64
	overflow bool
}

func newRecorder(maxBytes int64) *recorder {
	return &recorder{header: make(http.Header), max: maxBytes}
}

// Header implements http.ResponseWriter.
func (rec *recorder) Header() http.Header { return rec.header }

// WriteHeader implements http.ResponseWriter. Like net/http it panics on a
// code outside 100..999 and keeps the first final status written.
func (rec *recorder) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if rec.status != 0 || code < http.StatusOK {
		return
	}
	rec.status = code
}

// Write implements http.ResponseWriter.
func (rec *recorder) Write(p []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.overflow || int64(rec.body.Len())+int64(len(p)) > rec.max {
		rec.overflow = true
		return 0, errResponseTooLarge
	}
	return rec.body.Write(p)
}

// response returns what the handler wrote, as it is stored and sent.
func (rec *recorder) response() *storedResponse {
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	body := bytes.Clone(rec.body.Bytes())
	if status == http.StatusNoContent || status == http.StatusNotModified {
		body = nil
	}
	headers := storedHeaders(rec.header)
	if len(body) > 0 && len(rec.header.Values("Content-Type")) == 0 {
		// What net/http would send; stored so that every replay says the same.
		headers["Content-Type"] = []string{http.DetectContentType(body)}
	}
	if body == nil {
		body = []byte{}
	}
	return &storedResponse{status: status, headers: headers, body: body}
}

// livePerCaller copies the per-caller headers the handler set (see
// isPerCaller) to dst: they go with the response to the caller that made
// the request, and are not stored.
func (rec *recorder) livePerCaller(dst http.Header) {
	for name, values := range rec.header {
		if name = http.CanonicalHeaderKey(name); isPerCaller(name) && len(values) > 0 {
			dst[name] = slices.Clone(values)
		}
	}
}

// isHopByHop reports whether name (canonical) concerns one connection, not
// the response (RFC 9110, section 7.6.1), or is Content-Length, which
// net/http computes when the response is sent.
func isHopByHop(name string) bool {
	switch name {
	case "Connection", "Content-Length", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// isPerCaller reports whether name (canonical) is meant for the one client
// that received the response, such as a cookie: it is never stored nor
// replayed, so a retry (or another caller's request that found the key)
// never receives it.
func isPerCaller(name string) bool {
	switch name {
	case "Set-Cookie", "Set-Cookie2", "Authentication-Info", "Clear-Site-Data":
		return true
	}
	return false
}

// storedHeaders returns the headers of h that are stored with a response:
// all but hop-by-hop headers (including those that the Connection header
// names), per-caller headers (isPerCaller), trailers and HeaderReplayed.
func storedHeaders(h http.Header) map[string][]string {
	named := map[string]bool{}
	for _, v := range h.Values("Connection") {
		for name := range strings.SplitSeq(v, ",") {
			named[http.CanonicalHeaderKey(strings.TrimSpace(name))] = true
		}
	}
	out := make(map[string][]string, len(h))
	for name, values := range h {
		name = http.CanonicalHeaderKey(name)
		if isHopByHop(name) || isPerCaller(name) || named[name] || name == HeaderReplayed ||
			strings.HasPrefix(name, http.TrailerPrefix) || len(values) == 0 {
			continue
		}
		out[name] = append(out[name], values...)
	}
	return out
}

// writeResponse sends resp to w, marked as replayed if replayed. Headers that
// middleware in front of this one set on w stay, unless resp has its own.
func writeResponse(w http.ResponseWriter, resp *storedResponse, replayed bool) {
	dst := w.Header()
	for name, values := range resp.headers {
		dst[name] = slices.Clone(values)
	}
	if replayed {
		dst.Set(HeaderReplayed, "true")
	}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body) // The client went away; nothing else to do.
}

// problem is an RFC 9457 problem details object.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// writeProblem answers with an application/problem+json body.
func writeProblem(w http.ResponseWriter, status int, title, detail string) {
	body, _ := json.Marshal(problem{Type: "about:blank", Title: title, Status: status, Detail: detail}) // Strings only: cannot fail.
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
