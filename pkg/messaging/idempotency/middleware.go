package idempotency

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/internal/pgtx"
	"github.com/vextrus/dtx/pkg/messaging"
)

// Header names.
const (
	// HeaderKey is the request header that carries the idempotency key.
	HeaderKey = "Idempotency-Key"
	// HeaderReplayed is set to "true" on a response replayed from the store.
	HeaderReplayed = "Idempotent-Replayed"
)

// Defaults and limits of MiddlewareConfig.
const (
	// DefaultScope is the scope of keys when MiddlewareConfig.Scope is empty.
	DefaultScope = "default"
	// MaxScopeLen is the longest MiddlewareConfig.Scope, in bytes.
	MaxScopeLen = 128
	// MaxKeyLen is the longest idempotency key, in bytes.
	MaxKeyLen = 255
	// DefaultMaxBodyBytes is the default of MiddlewareConfig.MaxRequestBytes
	// and MaxResponseBytes: 1 MiB.
	DefaultMaxBodyBytes = 1 << 20
	// MaxMaxBodyBytes is the largest MaxRequestBytes and MaxResponseBytes
	// accepted: 64 MiB.
	MaxMaxBodyBytes = 64 << 20
)

// maxScopeColumn is the longest scope the table takes.
const maxScopeColumn = 255

// MiddlewareConfig configures one mount of the middleware.
type MiddlewareConfig struct {
	// Scope names the mount: keys of different scopes never meet, so two
	// APIs may reuse each other's keys. Defaults to DefaultScope ("default");
	// 1 to MaxScopeLen bytes of printable ASCII without spaces.
	Scope string

	// ScopeFunc returns the principal a request acts for, such as the
	// authenticated user or tenant id: keys are kept per principal, so one
	// caller is never served another's stored response. A request with a
	// key whose principal is empty is refused with 400 (nothing runs). A
	// principal that is not UTF-8, contains NUL or does not fit the table
	// is stored as its SHA-256. Defaults to AuthorizationPrincipal: the
	// caller is who its Authorization header says, and a request without
	// one is refused. Set it to SharedKeys only for a mount whose callers
	// may share keys (one trusted client).
	ScopeFunc func(r *http.Request) string

	// Methods are the request methods the middleware applies to; requests
	// with other methods pass through untouched. Defaults to POST and PATCH.
	// Methods are compared exactly, so give them in upper case.
	Methods []string

	// RequireKey makes a request without an Idempotency-Key header fail with
	// 400. Defaults to false: such a request passes through, without a
	// transaction (TxFromRequest reports none).
	RequireKey bool

	// MaxRequestBytes is the largest request body accepted: the body is read
	// in full to fingerprint it, and a longer one fails with 413. Defaults to
	// DefaultMaxBodyBytes (1 MiB); between 1 and MaxMaxBodyBytes.
	MaxRequestBytes int64

	// MaxResponseBytes is the largest response body that can be stored. A
	// handler that writes more has its transaction rolled back and the
	// request fails with 500. Defaults to DefaultMaxBodyBytes (1 MiB);
	// between 1 and MaxMaxBodyBytes.
	MaxResponseBytes int64

	// FingerprintHeaders names request headers that, besides the method, the
	// path with its query and the body, make up a request's fingerprint
	// (e.g. Content-Type): a retry that differs in them is refused with 422.
	// Defaults to none.
	FingerprintHeaders []string

	// TxOptions are the options of the request's transaction. Defaults to
	// the zero value: READ COMMITTED, read-write. It must not be read-only:
	// the response is stored in it.
	TxOptions pgx.TxOptions
}

func (c *MiddlewareConfig) setDefaults() {
	if c.Scope == "" {
		c.Scope = DefaultScope
	}
	if c.ScopeFunc == nil {
		c.ScopeFunc = AuthorizationPrincipal
	}
	if len(c.Methods) == 0 {
		c.Methods = []string{http.MethodPost, http.MethodPatch}
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxBodyBytes
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = DefaultMaxBodyBytes
	}
}

func (c *MiddlewareConfig) validate() error {
	var errs []error
	if len(c.Scope) > MaxScopeLen || !isPrintableASCII(c.Scope, false) {
		errs = append(errs, fmt.Errorf("idempotency: Scope: %q is not 1 to %d bytes of printable ASCII without spaces", c.Scope, MaxScopeLen))
	}
	for _, m := range c.Methods {
		if !isPrintableASCII(m, false) {
			errs = append(errs, fmt.Errorf("idempotency: Methods: %q is not a method name", m))
		}
	}
	if c.MaxRequestBytes < 1 || c.MaxRequestBytes > MaxMaxBodyBytes {
		errs = append(errs, fmt.Errorf("idempotency: MaxRequestBytes: %d is outside 1..%d", c.MaxRequestBytes, MaxMaxBodyBytes))
	}
	if c.MaxResponseBytes < 1 || c.MaxResponseBytes > MaxMaxBodyBytes {
		errs = append(errs, fmt.Errorf("idempotency: MaxResponseBytes: %d is outside 1..%d", c.MaxResponseBytes, MaxMaxBodyBytes))
	}
	for _, h := range c.FingerprintHeaders {
		if !isPrintableASCII(h, false) {
			errs = append(errs, fmt.Errorf("idempotency: FingerprintHeaders: %q is not a header name", h))
		}
	}
	if c.TxOptions.AccessMode == pgx.ReadOnly {
		errs = append(errs, errors.New("idempotency: TxOptions: read-only transactions cannot store the response"))
	}
	return errors.Join(errs...)
}

// isPrintableASCII reports whether s is non-empty and made of printable
// ASCII, with spaces only if spaceOK.
func isPrintableASCII(s string, spaceOK bool) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if c > '~' || c < ' ' || (c == ' ' && !spaceOK) {
			return false
		}
	}
	return true
}

// AuthorizationPrincipal is the default MiddlewareConfig.ScopeFunc: the
// principal of a request is the SHA-256 of its Authorization header (an API
// key, a bearer token, basic credentials), "" when it has none. Two callers
// with different credentials never share a key; a caller whose credential
// changes between a request and its retry (a refreshed token) runs the
// retry again: give a ScopeFunc that returns the authenticated user's id
// when that matters.
func AuthorizationPrincipal(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(auth))
	return "authorization:" + hex.EncodeToString(sum[:])
}

// SharedKeys is a MiddlewareConfig.ScopeFunc for a mount whose callers all
// share one key space: any caller presenting a key (and the same request)
// gets the response stored for it, whoever sent it first. Use it only when
// every caller is one trusted client, such as a single upstream service.
func SharedKeys(*http.Request) string { return "shared" }

// Middleware returns HTTP middleware that makes requests with an
// Idempotency-Key header safe to retry, storing keys and responses in s.
// It checks cfg and fails with an error naming every invalid field. See the
// package documentation for what a request goes through.
func (s *Store) Middleware(cfg MiddlewareConfig) (func(http.Handler) http.Handler, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &middleware{store: s, cfg: cfg, methods: make(map[string]bool, len(cfg.Methods))}
	for _, meth := range cfg.Methods {
		m.methods[meth] = true
	}
	for _, h := range cfg.FingerprintHeaders {
		m.fpHeaders = append(m.fpHeaders, http.CanonicalHeaderKey(h))
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m.serve(w, r, next)
		})
	}, nil
}

// TxFromRequest returns the transaction of a request the middleware runs
// under an idempotency key. Effects written with it commit together with the
// stored response, or not at all. ok is false for requests the middleware
// passed through. The same transaction is what messaging.TxFromContext returns
// for r.Context(), so code that joins the caller's transaction works alike in
// HTTP and message handlers.
func TxFromRequest(r *http.Request) (tx pgx.Tx, ok bool) {
	return messaging.TxFromContext(r.Context())
}

type middleware struct {
	store     *Store
	cfg       MiddlewareConfig
	methods   map[string]bool
	fpHeaders []string
}

func (m *middleware) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if !m.methods[r.Method] {
		next.ServeHTTP(w, r)
		return
	}
	keys := r.Header.Values(HeaderKey)
	switch {
	case len(keys) == 0 && m.cfg.RequireKey:
		writeProblem(w, http.StatusBadRequest, "Idempotency-Key required",
			"This request must carry an Idempotency-Key header.")
		return
	case len(keys) == 0:
		next.ServeHTTP(w, r)
		return
	case len(keys) > 1:
		writeProblem(w, http.StatusBadRequest, "Invalid Idempotency-Key",
			"The request carries more than one Idempotency-Key header.")
		return
	}
	key := keys[0]
	if len(key) > MaxKeyLen || !isPrintableASCII(key, true) {
		writeProblem(w, http.StatusBadRequest, "Invalid Idempotency-Key",
			fmt.Sprintf("An Idempotency-Key is 1 to %d bytes of printable ASCII.", MaxKeyLen))
		return
	}

	if r.Body == nil { // Only requests built by hand have none.
		r.Body = http.NoBody
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, m.cfg.MaxRequestBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeProblem(w, http.StatusRequestEntityTooLarge, "Request body too large",
				fmt.Sprintf("A request with an Idempotency-Key may carry at most %d bytes.", m.cfg.MaxRequestBytes))
			return
		}
		writeProblem(w, http.StatusBadRequest, "Unreadable request body", "The request body could not be read.")
		return
	}
	_ = r.Body.Close() // Read in full; a close error changes nothing.
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))

	ctx := r.Context()
	scope, ok := m.scope(r)
	if !ok {
		writeProblem(w, http.StatusBadRequest, "Caller unknown",
			"An Idempotency-Key is kept per caller, and this request names none (send your credentials).")
		return
	}
	res, err := m.store.claim(ctx, scope, key, m.fingerprint(r, body))
	if err != nil {
		m.storeFailed(w, r, err)
		return
	}
	switch res.outcome {
	case completed:
		writeResponse(w, res.stored, true)
	case mismatch:
		writeProblem(w, http.StatusUnprocessableEntity, "Idempotency-Key reused",
			"This Idempotency-Key was used with a different request (method, path, body or headers).")
	case busy:
		w.Header().Set("Retry-After", "1")
		writeProblem(w, http.StatusConflict, "Request in progress",
			"A request with this Idempotency-Key is still being processed; retry later.")
	case claimed:
		m.run(w, r, next, scope, key, res.token)
	}
}

// run serves a request whose key the caller claimed, with token.
func (m *middleware) run(w http.ResponseWriter, r *http.Request, next http.Handler, scope, key string, token uint32) {
	ctx := r.Context()
	if m.store.hookAfterClaim != nil {
		m.store.hookAfterClaim()
	}
	tx, ok, err := m.store.begin(ctx, m.cfg.TxOptions, scope, key, token)
	if err != nil {
		m.store.release(ctx, scope, key, token)
		m.storeFailed(w, r, err)
		return
	}
	if !ok {
		writeProblem(w, http.StatusConflict, "Request superseded",
			"A retry with this Idempotency-Key took over while this request was delayed.")
		return
	}

	// Until the transaction commits, every way out, a panic included, rolls
	// it back and gives the key up: nothing of the request was committed.
	// It happens before the response is written, so that a client retrying
	// as soon as it reads the response finds the key free.
	done := false
	abort := func() {
		if !done {
			done = true
			pgtx.Rollback(ctx, tx)
			m.store.release(ctx, scope, key, token)
		}
	}
	defer abort()

	// The handler runs in a savepoint: an answer other than 2xx undoes its
	// writes, and the response alone is stored.
	sp, err := tx.Begin(ctx)
	if err != nil {
		abort()
		m.storeFailed(w, r, fmt.Errorf("idempotency: savepoint: %w", err))
		return
	}
	rec := newRecorder(m.cfg.MaxResponseBytes)
	next.ServeHTTP(rec, r.WithContext(messaging.ContextWithTx(ctx, sp)))

	if rec.overflow {
		abort()
		m.store.cfg.Logger.Error("idempotency: response too large to store; request rolled back",
			"scope", scope, "key", key, "max_response_bytes", m.cfg.MaxResponseBytes)
		writeProblem(w, http.StatusInternalServerError, "Response too large",
			"The response could not be stored, so the request was rolled back.")
		return
	}
	resp := rec.response()
	if !isFinal(resp.status) {
		// A server error, or a "try again later", is not the request's
		// answer: roll back and let the client retry with the same key.
		abort()
		rec.livePerCaller(w.Header())
		writeResponse(w, resp, false)
		return
	}
	if resp.status >= 200 && resp.status < 300 {
		err = sp.Commit(ctx) // RELEASE SAVEPOINT: the handler's writes stay.
	} else {
		err = sp.Rollback(ctx) // A 1xx, 3xx or 4xx answer: its writes go.
	}
	if err != nil {
		abort()
		m.storeFailed(w, r, fmt.Errorf("idempotency: end the handler's savepoint (did the handler end the transaction?): %w", err))
		return
	}
	if err := m.store.complete(ctx, tx, scope, key, token, resp); err != nil {
		abort()
		if errors.Is(err, errSuperseded) {
			writeProblem(w, http.StatusConflict, "Request superseded",
				"A retry with this Idempotency-Key took over while this request ran; nothing of it was kept.")
			return
		}
		m.storeFailed(w, r, err)
		return
	}
	done = true // Whatever Commit returns, the transaction has ended.
	if err := tx.Commit(ctx); err != nil {
		// Maybe committed, maybe not. release only deletes a claim that is
		// still running, so a committed response stays; the client's retry
		// gets it, or runs the request if nothing committed.
		m.store.release(ctx, scope, key, token)
		m.storeFailed(w, r, fmt.Errorf("idempotency: commit: %w", err))
		return
	}
	rec.livePerCaller(w.Header())
	writeResponse(w, resp, false)
}

// isFinal reports whether a response with status is the request's answer,
// stored and replayed: every status but 5xx and the client errors that ask
// for the same request again later (408 Request Timeout, 425 Too Early,
// 429 Too Many Requests). Replaying one of those would refuse the retry it
// asks for until the key expires.
func isFinal(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return false
	}
	return status < http.StatusInternalServerError
}

// storeFailed answers a request the store could not serve, with 503: the
// request did not take effect, or its retry with the same key will say so.
func (m *middleware) storeFailed(w http.ResponseWriter, r *http.Request, err error) {
	m.store.cfg.Logger.Error("idempotency: store failed", "method", r.Method, "path", r.URL.Path, "err", err)
	w.Header().Set("Retry-After", "1")
	writeProblem(w, http.StatusServiceUnavailable, "Idempotency store unavailable",
		"The request could not be processed; retry it with the same Idempotency-Key.")
}

// scope returns the stored scope of r: the mount's scope, and the principal
// after a space; false when ScopeFunc names no principal.
func (m *middleware) scope(r *http.Request) (string, bool) {
	p := m.cfg.ScopeFunc(r)
	if p == "" {
		return "", false
	}
	if len(m.cfg.Scope)+1+len(p) <= maxScopeColumn && utf8.ValidString(p) && !strings.Contains(p, "\x00") {
		return m.cfg.Scope + " " + p, true
	}
	sum := sha256.Sum256([]byte(p))
	return m.cfg.Scope + " sha256:" + hex.EncodeToString(sum[:]), true
}

// fingerprint returns the SHA-256 of what identifies r: its method, path,
// query, the configured headers and body, each prefixed with its length so
// no two requests share an encoding.
func (m *middleware) fingerprint(r *http.Request, body []byte) []byte {
	h := sha256.New()
	field := func(b []byte) {
		_ = binary.Write(h, binary.BigEndian, uint64(len(b))) // A hash does not fail.
		h.Write(b)
	}
	field([]byte("dtx-idempotency-v1"))
	field([]byte(r.Method))
	field([]byte(r.URL.EscapedPath()))
	field([]byte(r.URL.RawQuery))
	for _, name := range m.fpHeaders {
		field([]byte(name))
		values := r.Header.Values(name)
		_ = binary.Write(h, binary.BigEndian, uint64(len(values)))
		for _, v := range values {
			field([]byte(v))
		}
	}
	field(body)
	return h.Sum(nil)
}
