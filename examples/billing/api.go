package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/idempotency"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

// invoice is an invoice request as the API takes it and the trigger event
// carries it (contracts/billing.invoice.requested.v1.json).
type invoice struct {
	ID          string `json:"invoice_id"`
	CustomerID  string `json:"customer_id"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
}

var currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)

// api serves the billing HTTP API.
type api struct {
	st          store
	pool        *pgxpool.Pool
	outbox      *outbox.Outbox
	schemas     *messaging.SchemaRegistry // the outbox's: checks the trigger before anything is written
	eventsTopic string                    // the saga's trigger topic, billing.events
	log         *slog.Logger
}

// routes returns the API's handler. POST /invoices runs behind the
// Idempotency-Key middleware (mw), which opens the transaction the handler
// writes in and stores the response in it.
func (a *api) routes(mw func(http.Handler) http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /invoices", mw(http.HandlerFunc(a.requestInvoice)))
	mux.HandleFunc("GET /invoices/{id}", a.getInvoice)
	return mux
}

// requestInvoice records an invoice request and, in the same transaction,
// writes its trigger event to the outbox: both commit, or neither does. A
// retry with the same Idempotency-Key gets the stored response and starts
// nothing.
//
// The middleware keeps the handler's writes only with a 2xx answer: a 4xx
// is stored as the request's answer without them, and a 5xx rolls
// everything back and stores nothing. Everything that can refuse the
// request, the trigger event's schema included, is still checked before the
// first write, so that no work is undone; a failure after it answers 500,
// so that a retry with the key runs the handler again.
func (a *api) requestInvoice(w http.ResponseWriter, r *http.Request) {
	tx, ok := idempotency.TxFromRequest(r)
	if !ok { // The middleware requires the key; this is a wiring mistake.
		problem(w, http.StatusInternalServerError, "no transaction: the handler must run behind the idempotency middleware")
		return
	}

	// 1. Check the request and build the trigger event; nothing is written yet.
	var in invoice
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		problem(w, http.StatusBadRequest, "the body is not an invoice request: "+err.Error())
		return
	}
	if in.CustomerID == "" || in.AmountCents <= 0 || !currencyRE.MatchString(in.Currency) {
		problem(w, http.StatusUnprocessableEntity, "customer_id, a positive amount_cents and a currency (ISO 4217) are required")
		return
	}
	in.ID = uuid.NewString()
	// The trigger event of the billing-invoice saga: its type and topic are
	// the saga's triggers, its invoice_id the saga id.
	requested, err := messaging.NewEnvelope("billing.invoice.requested", "/billing/api", struct {
		invoice
		RequestedAt time.Time `json:"requested_at"`
	}{in, time.Now().UTC()})
	if err != nil {
		problem(w, http.StatusInternalServerError, err.Error())
		return
	}
	requested.PartitionKey = in.ID
	requested.Subject = in.ID
	if err := requested.Validate(); err != nil {
		problem(w, http.StatusInternalServerError, err.Error())
		return
	}
	// The outbox would refuse an event that fails its schema, but only
	// after the invoice row is written: check it first, and answer 422.
	if err := a.schemas.ValidateEnvelope(requested); err != nil {
		status := http.StatusInternalServerError // no schema: the service's mistake
		if errors.Is(err, messaging.ErrSchemaViolation) {
			status = http.StatusUnprocessableEntity
		}
		a.log.InfoContext(r.Context(), "billing: invoice request refused", "err", err)
		problem(w, status, err.Error())
		return
	}

	// 2. Write: lock the key first, so the relay publishes this invoice's
	// messages in commit order; then the business row; then the event.
	ctx := r.Context()
	if err := a.outbox.Lock(ctx, tx, a.eventsTopic, in.ID); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.st.insertInvoice(ctx, tx, in); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.outbox.WriteEnvelopes(ctx, tx, a.eventsTopic, requested); err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.InfoContext(ctx, "billing: invoice requested", "invoice_id", in.ID, "customer_id", in.CustomerID, "message_id", requested.ID)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", "/invoices/"+in.ID)
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]string{"invoice_id": in.ID, "saga_id": in.ID, "status": "requested"})
}

// fail answers a failure after the handler has written: always 500, so the
// middleware rolls the transaction back and stores nothing, and a retry
// with the key runs the handler again.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	a.log.ErrorContext(r.Context(), "billing: request failed; rolled back", "err", err)
	problem(w, http.StatusInternalServerError, "the invoice could not be recorded")
}

func (a *api) getInvoice(w http.ResponseWriter, r *http.Request) {
	v, ok, err := a.st.view(r.Context(), a.pool, r.PathValue("id"))
	switch {
	case err != nil:
		a.log.ErrorContext(r.Context(), "billing: read invoice", "err", err)
		problem(w, http.StatusInternalServerError, "cannot read the invoice")
	case !ok:
		problem(w, http.StatusNotFound, "no such invoice")
	default:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
}

// problem writes an RFC 9457 problem response.
func problem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"title": http.StatusText(status), "status": status, "detail": detail})
}
