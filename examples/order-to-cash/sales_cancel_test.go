package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/idempotency"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/schemas"
)

// lifecycleEnvelope is a saga lifecycle event as the orchestrator writes
// it: typ, keyed and subjected by the saga id, with payload data.
func lifecycleEnvelope(t *testing.T, typ string, data map[string]any) messaging.Envelope {
	t.Helper()
	env, err := messaging.NewEnvelope(typ, "/dtx/orchestrator", data)
	require.NoError(t, err)
	if id, ok := data["saga_id"].(string); ok {
		env.Subject, env.PartitionKey, env.SagaID = id, id, id
	}
	env.CorrelationID = "corr-" + env.ID
	return env
}

func lifecycleData(definition, sagaID, status, reason string) map[string]any {
	d := map[string]any{"saga_id": sagaID, "definition": definition, "definition_version": 1,
		"status": status, "step": "charge-payment", "at": "2026-11-23T09:15:06Z"}
	if reason != "" {
		d["reason"] = reason
	}
	return d
}

// TestSalesCancelLifecycleFilter: of the lifecycle events, sales acts on
// the compensated ones of order-to-cash sagas only, and what it appends
// then follows the schema of sales.order.cancelled.
func TestSalesCancelLifecycleFilter(t *testing.T) {
	t.Parallel()
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	require.NoError(t, err)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	placed := OrderState{OrderID: "ord-1", Status: OrderStatusPlaced}
	cancelledData := func(t *testing.T, cmd CancelOrder) orderCancelled {
		t.Helper()
		evs, err := DecideCancel(cmd.OrderID, cmd.Reason, now, eventstore.Metadata{})(placed)
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.NoError(t, reg.Validate(EventOrderCancelled, 1, evs[0].Data), "the schema of %s", EventOrderCancelled)
		var d orderCancelled
		require.NoError(t, json.Unmarshal(evs[0].Data, &d))
		return d
	}

	t.Run("a compensated order-to-cash saga cancels its order", func(t *testing.T) {
		data := lifecycleData(orderToCashDefinition, "ord-1", "compensated", "step charge-payment failed: card declined")
		env := lifecycleEnvelope(t, saga.EventCompensated, data)
		require.NoError(t, reg.Validate(env.Type, 1, env.Data), "the test's event follows its schema")
		cmd, ok, err := cancelOnCompensated(env)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, CancelOrder{OrderID: "ord-1", Reason: "step charge-payment failed: card declined"}, cmd)
		d := cancelledData(t, cmd)
		require.Equal(t, orderCancelled{OrderID: "ord-1", Reason: cmd.Reason, CancelledAt: "2026-01-02T03:04:05Z"}, d)
	})
	t.Run("without a reason the event has none", func(t *testing.T) {
		cmd, ok, err := cancelOnCompensated(lifecycleEnvelope(t, saga.EventCompensated,
			lifecycleData(orderToCashDefinition, "ord-1", "compensated", "")))
		require.NoError(t, err)
		require.True(t, ok)
		require.Empty(t, cancelledData(t, cmd).Reason)
	})
	t.Run("a long reason is cut to what the schema allows", func(t *testing.T) {
		long := strings.Repeat("é", maxCancelReason+10)
		cmd, ok, err := cancelOnCompensated(lifecycleEnvelope(t, saga.EventCompensated,
			lifecycleData(orderToCashDefinition, "ord-1", "compensated", long)))
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, strings.Repeat("é", maxCancelReason), cancelledData(t, cmd).Reason)
	})
	t.Run("another definition's compensated saga is ignored", func(t *testing.T) {
		_, ok, err := cancelOnCompensated(lifecycleEnvelope(t, saga.EventCompensated,
			lifecycleData("billing", "ord-1", "compensated", "declined")))
		require.NoError(t, err)
		require.False(t, ok)
	})
	t.Run("other lifecycle events are ignored", func(t *testing.T) {
		for typ, status := range map[string]string{
			saga.EventStarted: "running", saga.EventStepCompleted: "running", saga.EventStepFailed: "compensating",
			saga.EventCompensating: "compensating", saga.EventCompleted: "completed", saga.EventFailed: "failed",
		} {
			_, ok, err := cancelOnCompensated(lifecycleEnvelope(t, typ, lifecycleData(orderToCashDefinition, "ord-1", status, "x")))
			require.NoError(t, err, typ)
			require.False(t, ok, typ)
		}
	})
	t.Run("a compensated event that does not decode is permanent", func(t *testing.T) {
		env := lifecycleEnvelope(t, saga.EventCompensated, lifecycleData(orderToCashDefinition, "ord-1", "compensated", ""))
		env.Data = json.RawMessage(`{"saga_id": 7}`)
		_, _, err := cancelOnCompensated(env)
		require.Error(t, err)
		require.True(t, messaging.IsPermanent(err), "%v", err)
		env.Data = json.RawMessage(`{"definition":"order-to-cash"}`)
		_, _, err = cancelOnCompensated(env)
		require.True(t, messaging.IsPermanent(err), "%v", err)
	})
	t.Run("Handle acknowledges ignored events without a database", func(t *testing.T) {
		o := orderOutcomes{logger: slog.New(slog.DiscardHandler), now: time.Now} // no pool: any use would panic
		for _, env := range []messaging.Envelope{
			lifecycleEnvelope(t, saga.EventCompleted, lifecycleData(orderToCashDefinition, "ord-1", "completed", "")),
			lifecycleEnvelope(t, saga.EventCompensated, lifecycleData("billing", "ord-1", "compensated", "x")),
		} {
			msg, err := env.ToMessage()
			require.NoError(t, err)
			require.NoError(t, o.Handle(msg), env.Type)
		}
	})
}

// TestSalesCancelOrder handles compensated events against the Order
// aggregate's event store: a placed order is cancelled once however often
// the event comes, an order without stream is skipped, and a confirmed one
// is refused for good.
func TestSalesCancelOrder(t *testing.T) {
	t.Parallel()
	db := pgtest.NewSchema(t)
	const topic = "sales.events"
	events, err := newOrderEvents(db.Pool, db.Name, topic)
	require.NoError(t, err)
	ctx := context.Background()
	o := orderOutcomes{pool: db.Pool, events: events, logger: slog.New(slog.DiscardHandler),
		now: func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }}
	place := func(id string) {
		t.Helper()
		_, err := eventstore.Update(ctx, events, OrderAggregate, id, DecidePlace(testOrder(id), time.Now(), eventstore.Metadata{}))
		require.NoError(t, err)
	}
	stream := func(id string) []eventstore.RecordedEvent {
		t.Helper()
		evs, err := events.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: id})
		require.NoError(t, err)
		return evs
	}
	// handle delivers env through the middleware that RunServices's stack
	// runs before the handler: tracing, correlation, validation.
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	require.NoError(t, err)
	stack := middleware.Tracing(nil, nil)(middleware.Correlation(middleware.Validate(reg)(
		func(msg *message.Message) ([]*message.Message, error) { return nil, o.Handle(msg) })))
	handle := func(env messaging.Envelope) error {
		t.Helper()
		msg, err := env.ToMessage()
		require.NoError(t, err)
		msg.SetContext(ctx)
		_, err = stack(msg)
		return err
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	compensated := func(id string) messaging.Envelope {
		env := lifecycleEnvelope(t, saga.EventCompensated, lifecycleData(orderToCashDefinition, id, "compensated", "payment declined"))
		env.TraceParent = "00-" + traceID + "-00f067aa0ba902b7-01"
		return env
	}

	place("ord-c-1")
	env := compensated("ord-c-1")
	require.NoError(t, handle(env))
	require.NoError(t, handle(env), "the same event again")
	require.NoError(t, handle(compensated("ord-c-1")), "another compensated event of the saga")
	evs := stream("ord-c-1")
	require.Len(t, evs, 2)
	require.Equal(t, []string{EventOrderPlaced, EventOrderCancelled}, []string{evs[0].Type, evs[1].Type})
	require.JSONEq(t, `{"order_id":"ord-c-1","reason":"payment declined","cancelled_at":"2026-01-02T03:04:05Z"}`, string(evs[1].Data))
	require.Equal(t, env.CorrelationID, evs[1].Metadata.CorrelationID)
	require.Equal(t, env.ID, evs[1].Metadata.CausationID)
	require.Contains(t, evs[1].Metadata.TraceParent, traceID, "the event's trace continues")
	l, err := eventstore.Load(ctx, events, OrderAggregate, "ord-c-1")
	require.NoError(t, err)
	require.Equal(t, OrderStatusCancelled, l.State.Status)
	// Its outbox record goes to the sales events topic, keyed by the order.
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE topic = $1 AND key = $2 AND headers->>'ce_type' = $3`,
		topic, "ord-c-1", EventOrderCancelled).Scan(&n))
	require.Equal(t, 1, n)

	// An order placed outside the aggregate has no stream: skipped.
	require.NoError(t, handle(compensated("ord-placed-elsewhere")))
	require.Empty(t, stream("ord-placed-elsewhere"))

	// A confirmed order is not cancelled: a permanent error.
	place("ord-c-2")
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return confirmOrder(ctx, events, tx, "ord-c-2") }))
	err = handle(compensated("ord-c-2"))
	require.ErrorIs(t, err, ErrOrderConfirmed)
	require.True(t, messaging.IsPermanent(err), "%v", err)
	require.Len(t, stream("ord-c-2"), 2)
}

// TestSalesCancelEndToEnd places an order through the API whose payment is
// declined, with the relay, the orchestrator and the services running: the
// saga compensates, sales cancels the order (once, though the compensated
// event is delivered twice), and GET shows it cancelled beside its
// compensated saga. The cancellation continues the order's correlation.
func TestSalesCancelEndToEnd(t *testing.T) {
	t.Parallel()
	db := pgtest.NewSchema(t)
	exampleSchema := pgtest.NewSchemaName(t)
	topics := newTestTopics(t)
	groupPrefix, reg, logger := startSagaSide(t, db, topics)
	outcomesGroup := groupPrefix + "-" + salesOutcomes
	client := kafkatest.NewClient(t, kgo.ConsumeTopics(topics.Events), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	adm := kadm.NewClient(client)
	// Registered before the services start, so it runs after they stopped.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := adm.DeleteGroup(ctx, outcomesGroup); err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
			t.Logf("delete group %s: %v", outcomesGroup, err)
		}
	})
	api, c := newTestSalesAPI(t, db, exampleSchema, topics.SalesEvents)
	background(t, "services", func(ctx context.Context) error {
		return RunServices(ctx, ServicesConfig{
			Pool: db.Pool, Schema: db.Name, ExampleSchema: exampleSchema,
			Brokers: kafkatest.Brokers(), Topics: topics, GroupPrefix: groupPrefix, Schemas: reg, Logger: logger,
		})
	})

	o := testOrder("ord-cancel-1")
	o.CustomerID = "cus-declined-0001"
	body, err := json.Marshal(o)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, c.url+"/orders", strings.NewReader(string(body)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.caller)
	req.Header.Set(idempotency.HeaderKey, "key-cancel-1")
	res, resBody := c.do(req)
	require.Equal(t, http.StatusCreated, res.StatusCode, resBody)
	correlationID := res.Header.Get(middleware.HeaderHTTPCorrelationID)
	require.NotEmpty(t, correlationID)

	v := c.view(o.OrderID, waitFor, func(v OrderView) bool {
		return v.Status == OrderStatusCancelled && v.Saga != nil && v.Saga.Status == saga.StatusCompensated
	})
	require.Equal(t, orderToCashDefinition, v.Saga.Definition)
	require.Equal(t, correlationID, v.Saga.CorrelationID)

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	stream := func() []eventstore.RecordedEvent {
		t.Helper()
		evs, err := api.events.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: o.OrderID})
		require.NoError(t, err)
		return evs
	}
	evs := stream()
	require.Len(t, evs, 2)
	require.Equal(t, []string{EventOrderPlaced, EventOrderCancelled}, []string{evs[0].Type, evs[1].Type})

	// The compensated event as the orchestrator published it: the
	// cancellation carries its reason, is caused by it, and continues the
	// order's correlation.
	var compensated *kgo.Record
	for compensated == nil {
		fs := client.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "no %s record for %s", saga.EventCompensated, o.OrderID)
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == o.OrderID && recordHeader(r, messaging.HeaderType) == saga.EventCompensated {
				compensated = r
			}
		})
	}
	var lc sagaLifecycle
	require.NoError(t, json.Unmarshal(compensated.Value, &lc))
	require.NotEmpty(t, lc.Reason)
	var d orderCancelled
	require.NoError(t, json.Unmarshal(evs[1].Data, &d))
	require.Equal(t, orderCancelled{OrderID: o.OrderID, Reason: lc.Reason, CancelledAt: d.CancelledAt}, d)
	require.Equal(t, recordHeader(compensated, messaging.HeaderID), evs[1].Metadata.CausationID)
	require.Equal(t, correlationID, evs[1].Metadata.CorrelationID)

	// The compensated event delivered again: once the sales consumer has
	// passed it, the stream still holds one cancellation.
	dup := &kgo.Record{Topic: compensated.Topic, Key: compensated.Key, Value: compensated.Value, Headers: compensated.Headers}
	require.NoError(t, client.ProduceSync(ctx, dup).FirstErr())
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		offsets, err := adm.FetchOffsets(ctx, outcomesGroup)
		if !assert.NoError(ct, err) {
			return
		}
		at, ok := offsets.Lookup(dup.Topic, dup.Partition)
		if assert.True(ct, ok, "no committed offset") {
			assert.Greater(ct, at.At, dup.Offset)
		}
	}, waitFor, 100*time.Millisecond)
	require.Len(t, stream(), 2)
	v = c.view(o.OrderID, waitFor, func(v OrderView) bool { return v.Status == OrderStatusCancelled })
	require.Equal(t, saga.StatusCompensated, v.Saga.Status)
}

// recordHeader returns the value of r's header key, or "".
func recordHeader(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
