package sagatest_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/sagatest"
)

func orderToCash(t *testing.T) *saga.Definition {
	t.Helper()
	def, err := saga.LoadFile(filepath.Join("..", "testdata", "valid", "order-to-cash.yaml"))
	require.NoError(t, err)
	return def
}

func order() map[string]any {
	return map[string]any{
		"order_id": "order-1", "customer_id": "c-1", "total": 1999, "currency": "EUR",
		"lines":            []any{map[string]any{"sku": "A-1", "quantity": 2}},
		"shipping_address": map[string]any{"city": "Lyon"},
	}
}

// setup returns a harness whose participants all succeed at once and
// whose compensations all succeed.
func setup(t *testing.T) *sagatest.Harness {
	t.Helper()
	h := sagatest.New(t, orderToCash(t))
	h.On("inventory.stock.reserve", sagatest.ReplyWith("inventory.stock.reserved", map[string]any{"reservation_id": "r1"}))
	h.On("accounting.payment.charge", sagatest.ReplyWith("accounting.payment.charged", map[string]any{"payment_id": "p1"}))
	h.On("delivery.shipment.schedule", sagatest.ReplyWith("delivery.shipment.scheduled", map[string]any{"shipment_id": "sh1"}))
	h.On("sales.order.confirm", sagatest.ReplyWith("sales.order.confirmed", nil))
	h.On("inventory.stock.release", sagatest.ReplyWith("inventory.stock.released", nil))
	h.On("accounting.payment.refund", sagatest.ReplyWith("accounting.payment.refunded", nil))
	h.On("delivery.shipment.cancel", sagatest.ReplyWith("delivery.shipment.cancelled", nil))
	return h
}

func TestHappyPath(t *testing.T) {
	t.Parallel()
	h := setup(t)
	start := h.Now()
	s := h.Start("order-1", order())
	h.RequireStatus(saga.StatusCompleted)
	require.Equal(t, []string{
		"inventory.stock.reserve", "accounting.payment.charge", "delivery.shipment.schedule", "sales.order.confirm",
	}, h.SentTypes())
	require.Equal(t, start, h.Now(), "instant replies take no time")
	require.Equal(t, map[string]any{"reservation_id": "r1"}, s.Data["reservation"])
	require.Equal(t, "p1", s.Data["payment_id"])
	require.Equal(t, "sh1", s.Data["shipment_id"])
	sent := h.Sent()
	require.Equal(t, "order-1", sent[0].Key)
	require.Equal(t, map[string]any{"order_id": "order-1", "lines": order()["lines"]}, sent[0].Payload)
	require.Equal(t, map[string]any{"order_id": "order-1", "saga_id": "order-1"}, sent[3].Payload)
	var types []string
	for _, e := range h.Events() {
		types = append(types, e.Type)
	}
	require.Equal(t, []string{
		saga.EventStarted, saga.EventStepCompleted, saga.EventStepCompleted, saga.EventStepCompleted,
		saga.EventStepCompleted, saga.EventCompleted,
	}, types)
	require.True(t, s.WakeAt().IsZero())
}

func TestPaymentDeclinedReleasesStock(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.On("accounting.payment.charge", sagatest.ReplyWith("accounting.payment.declined", nil))
	s := h.Start("order-1", order())
	h.RequireStatus(saga.StatusCompensated)
	require.Equal(t, "step charge-payment failed: accounting.payment.declined", s.Reason)
	require.Equal(t, []string{"inventory.stock.reserve", "accounting.payment.charge", "inventory.stock.release"}, h.SentTypes())
	release := h.Sent()[2]
	require.Equal(t, saga.PhaseCompensation, release.Phase)
	require.Equal(t, "reserve-stock", release.Step)
	require.Equal(t, map[string]any{"order_id": "order-1", "reason": "order saga compensated"}, release.Payload)
}

func TestDeliveryNeverAnswers(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.On("delivery.shipment.schedule", sagatest.NoReply())
	start := h.Now()
	s := h.Start("order-1", order())
	h.RequireStatus(saga.StatusCompensated)
	require.Equal(t, "step schedule-delivery timed out after 3 attempts", s.Reason)
	require.Equal(t, []string{
		"inventory.stock.reserve", "accounting.payment.charge",
		"delivery.shipment.schedule", "delivery.shipment.schedule", "delivery.shipment.schedule",
		// The delivery's outcome is unknown: it is cancelled too.
		"delivery.shipment.cancel", "accounting.payment.refund", "inventory.stock.release",
	}, h.SentTypes())
	for i, c := range h.Sent()[2:5] {
		require.Equal(t, i+1, c.Attempt)
	}
	// 30s per attempt, 1s then 2s of backoff.
	require.Equal(t, start.Add(93*time.Second), h.Now())
	timedOut := 0
	for _, e := range h.Timeline() {
		if e.Outcome == saga.OutcomeTimedOut {
			require.Equal(t, "schedule-delivery", e.Step)
			timedOut++
		}
	}
	require.Equal(t, 3, timedOut)
}

func TestSagaTimeout(t *testing.T) {
	t.Parallel()
	h := setup(t)
	// Every participant answers after 35s: each step times out once and is
	// retried, then the first attempt's late reply is accepted.
	h.On("inventory.stock.reserve", sagatest.ReplyAfter(35*time.Second, "inventory.stock.reserved", nil))
	h.On("accounting.payment.charge", sagatest.ReplyAfter(35*time.Second, "accounting.payment.charged", nil))
	h.On("delivery.shipment.schedule", sagatest.ReplyAfter(35*time.Second, "delivery.shipment.scheduled", nil))
	h.On("sales.order.confirm", sagatest.ReplyAfter(35*time.Second, "sales.order.confirmed", nil))
	start := h.Now()
	s := h.Start("order-1", order())
	h.RequireStatus(saga.StatusCompensated)
	require.Equal(t, "saga timed out", s.Reason)
	require.Equal(t, start.Add(2*time.Minute), h.Now())
	sent := h.SentTypes()
	require.Equal(t, []string{"delivery.shipment.cancel", "accounting.payment.refund", "inventory.stock.release"}, sent[len(sent)-3:])
	require.NotEmpty(t, h.Ignored(), "the replies to the retries came late")
}

func TestSequenceAndOperatorRetry(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.On("accounting.payment.charge", sagatest.Sequence(sagatest.NoReply(), sagatest.ReplyWith("accounting.payment.declined", nil)))
	h.On("inventory.stock.release", sagatest.NoReply())
	s := h.Start("order-1", order())
	h.RequireStatus(saga.StatusFailed)
	require.Equal(t, "compensation of step reserve-stock failed after 5 attempts: timeout", s.Reason)
	require.Equal(t, []int{0}, s.Pending)

	// An operator fixes inventory and retries.
	h.On("inventory.stock.release", sagatest.ReplyWith("inventory.stock.released", nil))
	h.Send(saga.Retry{Reason: "inventory is back"})
	h.RequireStatus(saga.StatusCompensated)
	types := h.SentTypes()
	require.Equal(t, []string{"inventory.stock.reserve", "accounting.payment.charge", "accounting.payment.charge"}, types[:3])
	require.Len(t, types, 3+5+1)
}

func TestStepAndAbort(t *testing.T) {
	t.Parallel()
	h := sagatest.New(t, orderToCash(t), sagatest.WithStart(time.Unix(0, 0).UTC()))
	h.On("inventory.stock.reserve", sagatest.ReplyAfter(time.Second, "inventory.stock.reserved", nil))
	h.On("accounting.payment.charge", sagatest.NoReply())
	s := h.Begin("order-1", order())
	require.Equal(t, saga.StatusRunning, s.Status)
	require.Equal(t, time.Unix(0, 0).UTC(), h.Now())
	require.True(t, h.Step()) // the reservation arrives
	require.Equal(t, time.Unix(1, 0).UTC(), h.Now())
	require.Equal(t, "charge-payment", h.State().StepName(orderToCash(t)))

	s = h.Send(saga.Abort{Reason: "fraud"})
	h.RequireStatus(saga.StatusFailed)
	require.Equal(t, "aborted: fraud", s.Reason)
	require.False(t, h.Step(), "a parked saga without pending compensations has nothing to do")
	require.Equal(t, []string{"inventory.stock.reserve", "accounting.payment.charge"}, h.SentTypes())
}

func TestStepCap(t *testing.T) {
	t.Parallel()
	ft := &fakeT{TB: t}
	h := sagatest.New(ft, orderToCash(t), sagatest.WithMaxSteps(2))
	h.On("inventory.stock.reserve", sagatest.NoReply())
	h.On("inventory.stock.release", sagatest.NoReply())
	func() {
		defer func() { _ = recover() }()
		h.Start("order-1", order())
	}()
	require.Contains(t, ft.fatal, "after 2 steps")
}

// fakeT records a fatal failure instead of failing the test.
type fakeT struct {
	testing.TB
	fatal string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	panic("fatal")
}
