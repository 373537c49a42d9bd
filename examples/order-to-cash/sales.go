package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/vextrus/dtx/pkg/eventstore"
)

// The sales order's event types. OrderPlaced is the saga's trigger
// (sagas/order-to-cash.yaml), with the payload of schemas
// sales.order.placed.v1; OrderConfirmed is what the sales participant
// replies to sales.order.confirm; OrderCancelled is what sales appends when
// the order's saga compensated.
const (
	EventOrderPlaced    = "sales.order.placed"
	EventOrderConfirmed = "sales.order.confirmed"
	EventOrderCancelled = "sales.order.cancelled"
)

// OrderStreamType is the stream type of sales orders in the event store. A
// stream's id is its order id, so the outbox records of its events are
// keyed and subjected by the order id, as the saga's trigger expects.
const OrderStreamType = "sales.order"

// Order statuses, in the aggregate and the order-status read model.
const (
	OrderStatusPlaced    = "placed"
	OrderStatusConfirmed = "confirmed"
	OrderStatusCancelled = "cancelled"
)

// Errors of the Order aggregate's commands.
var (
	// ErrOrderExists refuses to place an order whose id is taken.
	ErrOrderExists = errors.New("sales: order already placed")
	// ErrOrderNotFound refuses to confirm or cancel an order never placed.
	ErrOrderNotFound = errors.New("sales: order not found")
	// ErrOrderCancelled refuses to confirm a cancelled order.
	ErrOrderCancelled = errors.New("sales: order is cancelled")
	// ErrOrderConfirmed refuses to cancel a confirmed order.
	ErrOrderConfirmed = errors.New("sales: order is confirmed")
	// ErrInvalidOrder refuses an order whose lines or total are wrong.
	ErrInvalidOrder = errors.New("sales: invalid order")
)

// OrderLine is one line of an order to place.
type OrderLine struct {
	// SKU is the stock keeping unit ordered.
	SKU string `json:"sku"`
	// Quantity is how many units; at least 1.
	Quantity int64 `json:"quantity"`
	// UnitPrice is the price of one unit in minor units of the currency.
	UnitPrice int64 `json:"unit_price"`
}

// PlaceOrder is the command sales.order.place (schemas
// sales.order.place.v1): place an order for a customer.
type PlaceOrder struct {
	// OrderID is the new order's id, chosen by the caller.
	OrderID string `json:"order_id"`
	// CustomerID is who orders and pays.
	CustomerID string `json:"customer_id"`
	// Currency is the ISO 4217 code of the prices.
	Currency string `json:"currency"`
	// Lines are what is ordered, one per SKU.
	Lines []OrderLine `json:"lines"`
	// ShippingAddress is where the order goes: name, line1, city,
	// postal_code, country (and optionally line2, region).
	ShippingAddress map[string]any `json:"shipping_address"`
	// Note is free text, optional.
	Note string `json:"note,omitempty"`
}

// PartitionKey makes the order id the command's key (cqrs.Keyed).
func (c PlaceOrder) PartitionKey() string { return c.OrderID }

// CancelOrder is the Order aggregate's command to cancel an order, which
// sales handles when the order's saga compensated (see orderOutcomes): it
// appends OrderCancelled, decided by DecideCancel.
type CancelOrder struct {
	// OrderID is the order to cancel: the id of its stream and its saga.
	OrderID string
	// Reason says why, e.g. why the saga compensated; optional.
	Reason string
}

// OrderState is the Order aggregate's state, rebuilt from its events.
type OrderState struct {
	// OrderID is "" until the order is placed.
	OrderID string `json:"order_id"`
	// Status is "" (not placed), placed, confirmed or cancelled.
	Status string `json:"status"`
	// CustomerID, Currency and TotalAmount are the placed order's.
	CustomerID  string `json:"customer_id"`
	Currency    string `json:"currency"`
	TotalAmount int64  `json:"total_amount"`
}

// orderConfirmed and orderCancelled are the payloads of OrderConfirmed and
// OrderCancelled.
type orderConfirmed struct {
	OrderID     string `json:"order_id"`
	ConfirmedAt string `json:"confirmed_at"`
}

type orderCancelled struct {
	OrderID     string `json:"order_id"`
	Reason      string `json:"reason,omitempty"`
	CancelledAt string `json:"cancelled_at"`
}

// OrderAggregate rebuilds an order from its stream.
var OrderAggregate = eventstore.Aggregate[OrderState]{
	StreamType: OrderStreamType,
	ApplyFunc:  applyOrder,
}

func applyOrder(s OrderState, ev eventstore.RecordedEvent) (OrderState, error) {
	switch ev.Type {
	case EventOrderPlaced:
		var p placedOrder
		if err := json.Unmarshal(ev.Data, &p); err != nil {
			return s, fmt.Errorf("%s: %w", ev.Type, err)
		}
		return OrderState{OrderID: p.OrderID, Status: OrderStatusPlaced, CustomerID: p.CustomerID,
			Currency: p.Currency, TotalAmount: p.TotalAmount}, nil
	case EventOrderConfirmed:
		s.Status = OrderStatusConfirmed
	case EventOrderCancelled:
		s.Status = OrderStatusCancelled
	default:
		return s, fmt.Errorf("order stream %q: unknown event type %q", ev.StreamID, ev.Type)
	}
	return s, nil
}

// DecidePlace returns the OrderPlaced event of cmd, placed at now, for an
// order not placed yet: ErrOrderExists otherwise. The event's payload is the
// saga trigger's (sales.order.placed v1): the lines priced, the total
// summed.
func DecidePlace(cmd PlaceOrder, now time.Time, meta eventstore.Metadata) eventstore.DecideFunc[OrderState] {
	return func(s OrderState) ([]eventstore.EventData, error) {
		if s.Status != "" {
			return nil, fmt.Errorf("%w: %q is %s", ErrOrderExists, cmd.OrderID, s.Status)
		}
		if len(cmd.Lines) == 0 {
			return nil, fmt.Errorf("%w: %q has no lines", ErrInvalidOrder, cmd.OrderID)
		}
		p := placedOrder{OrderID: cmd.OrderID, CustomerID: cmd.CustomerID, Currency: cmd.Currency,
			ShippingAddress: cmd.ShippingAddress, PlacedAt: now.UTC().Format(time.RFC3339Nano)}
		for _, l := range cmd.Lines {
			if l.Quantity < 1 || l.UnitPrice < 0 {
				return nil, fmt.Errorf("%w: %q: line %s: quantity %d, unit price %d", ErrInvalidOrder, cmd.OrderID, l.SKU, l.Quantity, l.UnitPrice)
			}
			p.Lines = append(p.Lines, line{SKU: l.SKU, Quantity: l.Quantity, UnitPrice: l.UnitPrice, LineTotal: l.Quantity * l.UnitPrice})
			p.TotalAmount += l.Quantity * l.UnitPrice
		}
		return event(EventOrderPlaced, p, meta)
	}
}

// DecideConfirm confirms a placed order. Confirming a confirmed order
// changes nothing (a redelivered command); a cancelled one is refused with
// ErrOrderCancelled, one never placed with ErrOrderNotFound.
func DecideConfirm(orderID string, now time.Time, meta eventstore.Metadata) eventstore.DecideFunc[OrderState] {
	return func(s OrderState) ([]eventstore.EventData, error) {
		switch s.Status {
		case "":
			return nil, fmt.Errorf("%w: %q", ErrOrderNotFound, orderID)
		case OrderStatusConfirmed:
			return nil, nil
		case OrderStatusCancelled:
			return nil, fmt.Errorf("%w: cannot confirm %q", ErrOrderCancelled, orderID)
		}
		return event(EventOrderConfirmed, orderConfirmed{OrderID: orderID, ConfirmedAt: now.UTC().Format(time.RFC3339Nano)}, meta)
	}
}

// DecideCancel cancels a placed order. Cancelling a cancelled order changes
// nothing; a confirmed one is refused with ErrOrderConfirmed, one never
// placed with ErrOrderNotFound.
func DecideCancel(orderID, reason string, now time.Time, meta eventstore.Metadata) eventstore.DecideFunc[OrderState] {
	return func(s OrderState) ([]eventstore.EventData, error) {
		switch s.Status {
		case "":
			return nil, fmt.Errorf("%w: %q", ErrOrderNotFound, orderID)
		case OrderStatusCancelled:
			return nil, nil
		case OrderStatusConfirmed:
			return nil, fmt.Errorf("%w: cannot cancel %q", ErrOrderConfirmed, orderID)
		}
		return event(EventOrderCancelled, orderCancelled{OrderID: orderID, Reason: reason,
			CancelledAt: now.UTC().Format(time.RFC3339Nano)}, meta)
	}
}

func event(typ string, v any, meta eventstore.Metadata) ([]eventstore.EventData, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", typ, err)
	}
	return []eventstore.EventData{{Type: typ, Data: data, Metadata: meta}}, nil
}
