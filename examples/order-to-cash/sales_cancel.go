package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/saga"
)

const (
	// orderToCashDefinition is the name of the saga definition of
	// sagas/order-to-cash.yaml, whose saga id is the order id.
	orderToCashDefinition = "order-to-cash"
	// salesOutcomes names the sales service's consumer of the saga
	// lifecycle events: its consumer group is "<GroupPrefix>-sales-outcomes".
	salesOutcomes = serviceSales + "-outcomes"
	// maxCancelReason is the most characters of a reason OrderCancelled
	// carries (schema sales.order.cancelled.v1); a longer one is cut.
	maxCancelReason = 500
)

// sagaLifecycle is the payload of a saga lifecycle event (schemas
// dtx.saga.*.v1, which share one shape).
type sagaLifecycle struct {
	SagaID            string `json:"saga_id"`
	Definition        string `json:"definition"`
	DefinitionVersion int    `json:"definition_version"`
	Status            string `json:"status"`
	Step              string `json:"step,omitempty"`
	Reason            string `json:"reason,omitempty"`
	At                string `json:"at"`
}

// cancelOnCompensated is what a saga lifecycle event asks of sales: to
// cancel the order of an order-to-cash saga that compensated (a
// dtx.saga.compensated event, whose saga id is the order id), with the
// saga's reason. ok is false for every other event, which sales ignores. A
// compensated event whose payload does not decode is a permanent error.
func cancelOnCompensated(env messaging.Envelope) (cmd CancelOrder, ok bool, err error) {
	if env.Type != saga.EventCompensated {
		return CancelOrder{}, false, nil
	}
	var ev sagaLifecycle
	if err := json.Unmarshal(env.Data, &ev); err != nil {
		return CancelOrder{}, false, messaging.Permanent(fmt.Errorf("%s %q: payload: %w", env.Type, env.ID, err))
	}
	if ev.Definition != orderToCashDefinition {
		return CancelOrder{}, false, nil
	}
	if ev.SagaID == "" {
		return CancelOrder{}, false, messaging.Permanent(fmt.Errorf("%s %q: no saga_id", env.Type, env.ID))
	}
	return CancelOrder{OrderID: ev.SagaID, Reason: clip(ev.Reason, maxCancelReason)}, true, nil
}

// clip cuts s to at most n characters.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n])
}

// cancelOrder handles CancelOrder in tx: the Order aggregate appends
// OrderCancelled, at now, with the correlation and trace context of ctx.
// An order already cancelled appends nothing (a redelivered event); an order
// without stream (placed by the place subcommand, outside the aggregate) is
// left as it is; a confirmed order is refused for good (ErrOrderConfirmed,
// permanent).
func cancelOrder(ctx context.Context, events *orderEventStore, tx pgx.Tx, cmd CancelOrder, now time.Time) error {
	_, err := eventstore.Update(ctx, events.WithTx(tx), OrderAggregate, cmd.OrderID,
		DecideCancel(cmd.OrderID, cmd.Reason, now, metadata(ctx)))
	switch {
	case errors.Is(err, ErrOrderNotFound):
		return nil
	case errors.Is(err, ErrOrderConfirmed):
		return messaging.Permanent(err)
	}
	return err
}

// orderOutcomes is the sales service's consumer of the orchestrator's
// lifecycle events: choreography after the orchestration. When an
// order-to-cash saga compensated, it cancels the order through the Order
// aggregate, so that the order and its read model say cancelled.
type orderOutcomes struct {
	pool   *pgxpool.Pool
	events *orderEventStore
	logger *slog.Logger
	now    func() time.Time
}

// Handle handles one lifecycle event in a transaction of its own, begun
// with msg.Context() (which carries the event's consumer span, origin and
// envelope, put there by middleware.Standard). It is a Watermill
// message.NoPublishHandlerFunc. It returns nil for the events it ignores
// and once the order is cancelled, or was already; the error of an order it
// must not cancel is permanent, and logged.
func (o orderOutcomes) Handle(msg *message.Message) error {
	ctx := msg.Context()
	env, ok := middleware.EnvelopeFromContext(ctx)
	if !ok {
		var err error
		if env, err = messaging.Decode(msg); err != nil {
			return err
		}
	}
	cmd, ok, err := cancelOnCompensated(env)
	if err != nil || !ok {
		return err
	}
	err = pgx.BeginFunc(ctx, o.pool, func(tx pgx.Tx) error {
		return cancelOrder(ctx, o.events, tx, cmd, o.now())
	})
	if err != nil && messaging.IsPermanent(err) {
		o.logger.ErrorContext(ctx, "sales: cannot cancel the order of a compensated saga",
			"order_id", cmd.OrderID, "event_id", env.ID, "err", err)
	}
	return err
}
