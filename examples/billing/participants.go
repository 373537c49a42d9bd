package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/saga/participant"
)

// creditLimitCents is the most a customer may have reserved for one
// invoice; a larger amount is refused (the saga's first step fails).
const creditLimitCents = 1_000_000

// blockedPrefix starts the id of a customer whose account is blocked: the
// invoice cannot be issued (the second step fails and the saga releases the
// credit).
const blockedPrefix = "blocked-"

// newParticipants returns the service's two saga participants: credit
// (reserve and release credit) and invoicing (issue and void invoices).
// Each handles a command in one transaction with the barrier row, its
// effects and its reply, which leaves through replies (the outbox).
func newParticipants(pool *pgxpool.Pool, dtxSchema string, replies *outbox.Outbox, st store, log *slog.Logger) (credit, invoicing *participant.Participant, err error) {
	credit, err = participant.New(pool, participant.Config{
		Name: "billing-credit", Schema: dtxSchema, Outbox: replies, Source: "/billing/credit", Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	invoicing, err = participant.New(pool, participant.Config{
		Name: "billing-invoicing", Schema: dtxSchema, Outbox: replies, Source: "/billing/invoicing", Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	h := handlers{st: st}
	credit.Action("billing.credit.reserve", h.reserveCredit)
	credit.Compensation("billing.credit.release", "billing.credit.released", h.releaseCredit, nothingTo("released_at"))
	invoicing.Action("billing.invoice.issue", h.issueInvoice)
	invoicing.Compensation("billing.invoice.void", "billing.invoice.voided", h.voidInvoice, nothingTo("voided_at"))
	return credit, invoicing, nil
}

// handlers are the participants' command handlers. Each runs in the
// command's transaction behind the barrier: what it writes through tx
// commits with the reply, once.
type handlers struct{ st store }

// command is the union of the command payloads (contracts/billing.*.json).
type command struct {
	InvoiceID     string `json:"invoice_id"`
	CustomerID    string `json:"customer_id"`
	AmountCents   int64  `json:"amount_cents"`
	Currency      string `json:"currency"`
	ReservationID string `json:"reservation_id"`
}

func decode(cmd participant.Command) (command, error) {
	var c command
	if err := json.Unmarshal(cmd.Data, &c); err != nil {
		// The payload passed its schema, so this does not heal: dead-letter it.
		return c, messaging.Permanent(fmt.Errorf("%s %s: payload: %w", cmd.Type, cmd.Envelope.ID, err))
	}
	return c, nil
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func (h handlers) reserveCredit(ctx context.Context, tx pgx.Tx, cmd participant.Command) (participant.Reply, error) {
	c, err := decode(cmd)
	if err != nil {
		return participant.Reply{}, err
	}
	if c.AmountCents > creditLimitCents {
		return participant.Reply{}, participant.Reject("billing.credit.refused",
			map[string]any{"invoice_id": c.InvoiceID, "reason": fmt.Sprintf("%d cents is over the credit limit of %d", c.AmountCents, creditLimitCents)})
	}
	reservation := uuid.NewString()
	if _, err := tx.Exec(ctx, h.st.sql(`INSERT INTO {{schema}}.credit_reservations (invoice_id, reservation_id, customer_id, amount_cents)
		VALUES ($1, $2, $3, $4)`), c.InvoiceID, reservation, c.CustomerID, c.AmountCents); err != nil {
		return participant.Reply{}, err
	}
	return participant.Reply{Type: "billing.credit.reserved",
		Data: map[string]any{"invoice_id": c.InvoiceID, "reservation_id": reservation, "reserved_at": now()}}, nil
}

func (h handlers) releaseCredit(ctx context.Context, tx pgx.Tx, cmd participant.Command) (any, error) {
	c, err := decode(cmd)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, h.st.sql(`UPDATE {{schema}}.credit_reservations SET released_at = now()
		WHERE invoice_id = $1 AND released_at IS NULL`), c.InvoiceID); err != nil {
		return nil, err
	}
	return map[string]any{"invoice_id": c.InvoiceID, "released_at": now()}, nil
}

func (h handlers) issueInvoice(ctx context.Context, tx pgx.Tx, cmd participant.Command) (participant.Reply, error) {
	c, err := decode(cmd)
	if err != nil {
		return participant.Reply{}, err
	}
	if strings.HasPrefix(c.CustomerID, blockedPrefix) {
		return participant.Reply{}, participant.Reject("billing.invoice.rejected",
			map[string]any{"invoice_id": c.InvoiceID, "reason": "the customer's account is blocked"})
	}
	var number int64
	err = tx.QueryRow(ctx, h.st.sql(`INSERT INTO {{schema}}.issued_invoices (invoice_id) VALUES ($1) RETURNING invoice_number`),
		c.InvoiceID).Scan(&number)
	if err != nil {
		return participant.Reply{}, err
	}
	return participant.Reply{Type: "billing.invoice.issued",
		Data: map[string]any{"invoice_id": c.InvoiceID, "invoice_number": fmt.Sprintf("INV-%06d", number), "issued_at": now()}}, nil
}

func (h handlers) voidInvoice(ctx context.Context, tx pgx.Tx, cmd participant.Command) (any, error) {
	c, err := decode(cmd)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, h.st.sql(`UPDATE {{schema}}.issued_invoices SET voided_at = now()
		WHERE invoice_id = $1 AND voided_at IS NULL`), c.InvoiceID); err != nil {
		return nil, err
	}
	return map[string]any{"invoice_id": c.InvoiceID, "voided_at": now()}, nil
}

// nothingTo builds the success reply of a compensation that found nothing
// to undo (its action never ran here, or was rejected): the invoice id and
// atField = now.
func nothingTo(atField string) participant.ReplyDataFunc {
	return func(cmd participant.Command) any {
		var c command
		_ = json.Unmarshal(cmd.Data, &c) // the command passed its schema
		return map[string]any{"invoice_id": c.InvoiceID, atField: now()}
	}
}
