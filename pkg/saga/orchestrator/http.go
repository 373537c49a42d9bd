package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vextrus/dtx/pkg/saga"
)

// DefaultHTTPPrefix is the path the operator API is served under by default.
const DefaultHTTPPrefix = "/sagas"

// Limits of an operation's request body.
const (
	// MaxReasonLength is the most bytes an operation's reason may have.
	MaxReasonLength = 1000
	// maxByLength is the most bytes an operation's "by" may have.
	maxByLength = 200
	// maxBodyBytes bounds an operation's request body.
	maxBodyBytes = 16 << 10
)

// HTTPConfig configures the operator API of HTTPHandler.
type HTTPConfig struct {
	// Prefix is the path the API is served under. Defaults to "/sagas";
	// must start with "/" and not end with one.
	Prefix string

	// Authenticator decides who may call the API; every request, reads
	// included, goes through it. Required: NewTokenAuthenticator for bearer
	// tokens, LoopbackReadOnly for reads from this host without a
	// credential.
	Authenticator Authenticator
}

// OperationRequest is the JSON body of an operation (POST).
type OperationRequest struct {
	// Reason says why; required, at most MaxReasonLength bytes. The
	// timeline records it.
	Reason string `json:"reason"`
	// By says who operates, recorded in the timeline when the credential
	// names no one (else after the credential's name). Optional; at most
	// 200 bytes.
	By string `json:"by,omitempty"`
}

// HTTPHandler returns the operator API, served under cfg.Prefix (below,
// "/sagas"):
//
//	GET  /sagas?status=&definition=&limit=&before=   list (JSON array of Summary)
//	GET  /sagas/{id}                                  one saga with its timeline (Detail)
//	POST /sagas/{id}/retry|abort|compensate           operate; returns the new state
//
// Every request must pass cfg.Authenticator: without a credential it
// accepts, the answer is 401 with "WWW-Authenticate: Bearer". An operation
// must come with "Content-Type: application/json" and a body
// {"reason": "...", "by": "..."} (OperationRequest); anything else is
// refused with 415 or 400 and changes nothing, so that a page in a browser
// cannot make it (a form cannot send that content type, and a script of
// another origin cannot without the API's consent, which it never gives).
// The timeline records who operated (the credential's name, else "by")
// and the reason.
//
// Errors are JSON objects {"error": "..."} with 400 (bad parameters or
// body), 401 (no valid credential), 403 (a read-only caller operating),
// 404 (no such saga), 409 (the operation does not apply), 415 (not a JSON
// body) or 500. Refused credentials are logged (at most one WARN every 10
// seconds) and every request is counted by dtx_operator_requests_total{op,
// code} when Config.Registerer is set.
func (o *Orchestrator) HTTPHandler(cfg HTTPConfig) (http.Handler, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultHTTPPrefix
	}
	var errs []error
	if !strings.HasPrefix(cfg.Prefix, "/") || strings.HasSuffix(cfg.Prefix, "/") || strings.ContainsAny(cfg.Prefix, "{} ") {
		errs = append(errs, fmt.Errorf("orchestrator: HTTPConfig.Prefix: %q must start with / and not end with one", cfg.Prefix))
	}
	if cfg.Authenticator == nil {
		errs = append(errs, errors.New("orchestrator: HTTPConfig.Authenticator: required (NewTokenAuthenticator, or LoopbackReadOnly)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	h := &operatorAPI{o: o, prefix: cfg.Prefix, auth: cfg.Authenticator, mux: http.NewServeMux()}
	if err := h.registerMetrics(o.cfg.Registerer); err != nil {
		return nil, err
	}
	h.mux.HandleFunc("GET "+cfg.Prefix, h.list)
	h.mux.HandleFunc("GET "+cfg.Prefix+"/{id}", h.show)
	h.mux.HandleFunc("POST "+cfg.Prefix+"/{id}/{op}", h.operate)
	return h, nil
}

type operatorAPI struct {
	o        *Orchestrator
	prefix   string
	auth     Authenticator
	mux      *http.ServeMux
	requests *prometheus.CounterVec

	warnMu     sync.Mutex
	lastWarn   time.Time
	suppressed int
}

// authWarnEvery is the least time between two WARN lines about refused
// credentials: a client retrying a wrong token must not flood the log.
const authWarnEvery = 10 * time.Second

type principalKey struct{}

func (h *operatorAPI) registerMetrics(reg prometheus.Registerer) error {
	h.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dtx_operator_requests_total",
		Help: "Requests to the saga operator API by operation (list, show, retry, abort, compensate, other) and HTTP status code.",
	}, []string{"op", "code"})
	if reg == nil {
		return nil
	}
	if err := reg.Register(h.requests); err != nil {
		var already prometheus.AlreadyRegisteredError
		if !errors.As(err, &already) {
			return fmt.Errorf("orchestrator: register the operator API's metrics: %w", err)
		}
		// A second handler of the same orchestrator counts with the first.
		existing, ok := already.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return fmt.Errorf("orchestrator: register the operator API's metrics: %w", err)
		}
		h.requests = existing
	}
	return nil
}

// opOf names what r asks for, for the metrics: a bounded set of labels.
func (h *operatorAPI) opOf(r *http.Request) string {
	rest, ok := strings.CutPrefix(r.URL.Path, h.prefix)
	if !ok {
		return "other"
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	switch {
	case r.Method == http.MethodGet && rest == "":
		return "list"
	case r.Method == http.MethodGet && len(parts) == 1 && parts[0] != "":
		return "show"
	case r.Method == http.MethodPost && len(parts) == 2:
		switch op := Operation(parts[1]); op {
		case OpRetry, OpAbort, OpCompensate:
			return string(op)
		}
	}
	return "other"
}

// ServeHTTP authenticates r, then routes it.
func (h *operatorAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	defer func() { h.requests.WithLabelValues(h.opOf(r), strconv.Itoa(rec.code)).Inc() }()
	p, err := h.auth.Authenticate(r)
	if err != nil {
		h.warnRefused(r, err)
		rec.Header().Set("WWW-Authenticate", `Bearer realm="dtx-operator"`)
		writeError(rec, http.StatusUnauthorized, errors.New("a valid operator credential is required (Authorization: Bearer <token>)"))
		return
	}
	if r.Method == http.MethodPost && p.ReadOnly {
		writeError(rec, http.StatusForbidden, errors.New("read-only access: operations need a token (the orchestrator's --operator-token-file)"))
		return
	}
	h.mux.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
}

// warnRefused logs a refused credential, at most once every authWarnEvery,
// with how many were refused silently since the last line.
func (h *operatorAPI) warnRefused(r *http.Request, err error) {
	h.warnMu.Lock()
	now := time.Now()
	if !h.lastWarn.IsZero() && now.Sub(h.lastWarn) < authWarnEvery {
		h.suppressed++
		h.warnMu.Unlock()
		return
	}
	suppressed := h.suppressed
	h.lastWarn, h.suppressed = now, 0
	h.warnMu.Unlock()
	h.o.cfg.Logger.WarnContext(r.Context(), "orchestrator: operator API refused a request without a valid credential",
		"remote_addr", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
		"has_authorization", r.Header.Get("Authorization") != "", "err", err, "refused_since_last_warning", suppressed)
}

func (h *operatorAPI) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := ListParams{Status: saga.Status(q.Get("status")), Definition: q.Get("definition")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, errors.New("limit: not a number"))
			return
		}
		p.Limit = n
	}
	if v := q.Get("before"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, errors.New("before: not an RFC 3339 time"))
			return
		}
		p.Before = t
	}
	list, err := h.o.List(r.Context(), p)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *operatorAPI) show(w http.ResponseWriter, r *http.Request) {
	d, err := h.o.Show(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (h *operatorAPI) operate(w http.ResponseWriter, r *http.Request) {
	req, code, err := decodeOperation(w, r)
	if err != nil {
		writeError(w, code, err)
		return
	}
	p, _ := r.Context().Value(principalKey{}).(Principal)
	st, err := h.o.Operate(r.Context(), r.PathValue("id"), Operation(r.PathValue("op")),
		OperateParams{Reason: req.Reason, Actor: actor(p.Name, req.By)})
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// decodeOperation reads an operation's body: JSON, by its content type and
// its content, with a reason. It returns the status code to answer with
// when the body is refused.
func decodeOperation(w http.ResponseWriter, r *http.Request) (OperationRequest, int, error) {
	var req OperationRequest
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return req, http.StatusUnsupportedMediaType,
			errors.New(`an operation needs "Content-Type: application/json" and a JSON body {"reason": "..."}`)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, http.StatusBadRequest, fmt.Errorf(`the body is not a JSON object {"reason": "...", "by": "..."}: %w`, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, http.StatusBadRequest, errors.New("the body holds more than one JSON value")
	}
	req.Reason, req.By = strings.TrimSpace(req.Reason), strings.TrimSpace(req.By)
	switch {
	case req.Reason == "":
		return req, http.StatusBadRequest, errors.New(`reason: required: say why, for the saga's timeline`)
	case len(req.Reason) > MaxReasonLength:
		return req, http.StatusBadRequest, fmt.Errorf("reason: %d bytes, at most %d", len(req.Reason), MaxReasonLength)
	case len(req.By) > maxByLength:
		return req, http.StatusBadRequest, fmt.Errorf("by: %d bytes, at most %d", len(req.By), maxByLength)
	}
	return req, 0, nil
}

// actor is who the timeline records: the credential's name, with what the
// request says after it when it says something else; else what the
// request says; else that the credential had no name.
func actor(name, by string) string {
	switch {
	case name != "" && by != "" && by != name:
		return name + " (by " + by + ")"
	case name != "":
		return name
	case by != "":
		return by
	}
	return "unnamed credential"
}

// statusRecorder remembers the status code written, for the metrics.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrUnknownSaga):
		return http.StatusNotFound
	case errors.Is(err, ErrIgnored):
		return http.StatusConflict
	case errors.Is(err, ErrUnknownDefinition):
		return http.StatusConflict
	case errors.Is(err, ErrUnknownOperation):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
