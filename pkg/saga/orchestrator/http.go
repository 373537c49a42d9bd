package orchestrator

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/vextrus/dtx/pkg/saga"
)

// HTTPHandler serves the operator API under prefix (e.g. "/sagas"):
//
//	GET  {prefix}?status=&definition=&limit=&before=   list (JSON array of Summary)
//	GET  {prefix}/{id}                                  one saga with its timeline (Detail)
//	POST {prefix}/{id}/retry|abort|compensate?reason=   operate; returns the new state
//
// Errors are JSON objects {"error": "..."} with 400 (bad parameters), 404
// (no such saga), 409 (the operation does not apply) or 500.
func (o *Orchestrator) HTTPHandler(prefix string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix, func(w http.ResponseWriter, r *http.Request) {
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
		list, err := o.List(r.Context(), p)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("GET "+prefix+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		d, err := o.Show(r.Context(), r.PathValue("id"))
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	mux.HandleFunc("POST "+prefix+"/{id}/{op}", func(w http.ResponseWriter, r *http.Request) {
		st, err := o.Operate(r.Context(), r.PathValue("id"), Operation(r.PathValue("op")), r.URL.Query().Get("reason"))
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	return mux
}

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
