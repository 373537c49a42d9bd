package orchestrator_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// shopDefinition is a three-step saga: reserve (compensated by release),
// charge (compensated by refund) and confirm (no compensation).
func shopDefinition(mod func(*saga.Definition)) *saga.Definition {
	retry := saga.RetryPolicy{Attempts: 2, Backoff: 100 * time.Millisecond, Multiplier: 1, MaxBackoff: time.Second}
	def := &saga.Definition{
		Name: "shop", Version: 1,
		Triggers: []saga.Trigger{{Topic: "shop.commands", Type: "shop.order.place", SagaID: "$.order_id"}},
		Steps: []saga.Step{
			{
				Name:    "reserve",
				Action:  saga.Command{Topic: "inv.commands", Type: "inv.reserve", Payload: map[string]any{"order_id": "$.order_id"}},
				Success: []string{"inv.reserved"}, Failure: []string{"inv.failed"},
				Timeout: 30 * time.Second, Retry: retry,
				Compensation: &saga.Compensation{
					Command: saga.Command{Topic: "inv.commands", Type: "inv.release", Payload: map[string]any{"order_id": "$.order_id"}},
					Success: []string{"inv.released"}, Failure: []string{"inv.release_failed"},
					Timeout: 30 * time.Second, Retry: saga.RetryPolicy{Attempts: 1, Backoff: 100 * time.Millisecond, Multiplier: 1, MaxBackoff: time.Second},
				},
			},
			{
				Name:    "charge",
				Action:  saga.Command{Topic: "pay.commands", Type: "pay.charge"},
				Success: []string{"pay.charged"}, Failure: []string{"pay.declined"},
				Timeout: 30 * time.Second, Retry: retry,
				Compensation: &saga.Compensation{
					Command: saga.Command{Topic: "pay.commands", Type: "pay.refund"},
					Success: []string{"pay.refunded"}, Timeout: 30 * time.Second, Retry: retry,
				},
			},
			{
				Name:    "confirm",
				Action:  saga.Command{Topic: "shop.commands", Type: "shop.order.confirm", Payload: map[string]any{"order_id": "$.order_id", "payment": "$.payment_id"}},
				Success: []string{"shop.order.confirmed"},
				Timeout: 30 * time.Second, Retry: retry,
			},
		},
	}
	if mod != nil {
		mod(def)
	}
	def.SetDefaults()
	return def
}

type fixture struct {
	t      *testing.T
	schema *pgtest.Schema
	o      *orchestrator.Orchestrator
	seen   int64 // outbox position read so far
}

func setup(t *testing.T, def *saga.Definition) *fixture {
	t.Helper()
	schema := pgtest.NewSchema(t)
	f := &fixture{t: t, schema: schema}
	f.o = f.newOrchestrator(def)
	f.run(f.o)
	return f
}

func (f *fixture) newOrchestrator(def *saga.Definition) *orchestrator.Orchestrator {
	f.t.Helper()
	reg, err := saga.NewRegistry(def)
	require.NoError(f.t, err)
	o, err := orchestrator.New(f.schema.Pool, orchestrator.Config{Schema: f.schema.Name, Definitions: reg, ScanInterval: 20 * time.Millisecond})
	require.NoError(f.t, err)
	return o
}

func (f *fixture) run(o *orchestrator.Orchestrator) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		require.NoError(f.t, <-done)
	})
}

// record is an outbox row as a participant would receive it.
type record struct {
	Topic, Key, Type, SagaID, Step, Phase string
	Attempt                               int
	Payload                               map[string]any
	Headers                               map[string]string
}

// records returns the outbox rows written since the last call.
func (f *fixture) records() []record {
	f.t.Helper()
	rows, err := f.schema.Pool.Query(context.Background(),
		`SELECT position, topic, coalesce(key, ''), headers, payload FROM outbox WHERE position > $1 ORDER BY position`, f.seen)
	require.NoError(f.t, err)
	var out []record
	for rows.Next() {
		var r record
		var pos int64
		var payload []byte
		require.NoError(f.t, rows.Scan(&pos, &r.Topic, &r.Key, &r.Headers, &payload))
		f.seen = max(f.seen, pos)
		require.NoError(f.t, json.Unmarshal(payload, &r.Payload))
		r.Type, r.SagaID = r.Headers[messaging.HeaderType], r.Headers[messaging.HeaderSagaID]
		r.Step, r.Phase = r.Headers[saga.HeaderStep], r.Headers[saga.HeaderPhase]
		r.Attempt, _ = strconv.Atoi(r.Headers[saga.HeaderAttempt])
		out = append(out, r)
	}
	require.NoError(f.t, rows.Err())
	return out
}

// commands keeps the records that are commands (not lifecycle events).
func commands(rs []record) []record {
	var out []record
	for _, r := range rs {
		if r.Step != "" {
			out = append(out, r)
		}
	}
	return out
}

func types(rs []record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Type
	}
	return out
}

// replyMessage is what a participant sends in reply to cmd.
func replyMessage(t *testing.T, cmd record, typ string, data map[string]any) *messaging.Envelope {
	t.Helper()
	env, err := messaging.NewEnvelope(typ, "/test/participant", data)
	require.NoError(t, err)
	env.SagaID = cmd.SagaID
	env.PartitionKey = cmd.SagaID
	env.CorrelationID = cmd.Headers[messaging.HeaderCorrelationID]
	env.CausationID = cmd.Headers[messaging.HeaderID]
	env.Extensions = map[string]string{
		saga.ExtensionStep: cmd.Step, saga.ExtensionAttempt: strconv.Itoa(cmd.Attempt), saga.ExtensionPhase: cmd.Phase,
	}
	return &env
}

func (f *fixture) deliver(o *orchestrator.Orchestrator, env *messaging.Envelope) error {
	f.t.Helper()
	msg, err := env.ToMessage()
	require.NoError(f.t, err)
	msg.SetContext(context.Background())
	return o.Handle(msg)
}

func (f *fixture) reply(cmd record, typ string, data map[string]any) {
	f.t.Helper()
	require.NoError(f.t, f.deliver(f.o, replyMessage(f.t, cmd, typ, data)))
}

func (f *fixture) show(id string) orchestrator.Detail {
	f.t.Helper()
	d, err := f.o.Show(context.Background(), id)
	require.NoError(f.t, err)
	return d
}

// oneCommand returns the single command written since the last read.
func (f *fixture) oneCommand() record {
	f.t.Helper()
	cmds := commands(f.records())
	require.Len(f.t, cmds, 1, "want exactly one new command")
	return cmds[0]
}

func TestHappyPathCompletesAndRecordsTheTimeline(t *testing.T) {
	t.Parallel()
	f := setup(t, shopDefinition(nil))
	started, err := f.o.Start(context.Background(), nil, "shop", "order-1", map[string]any{"order_id": "order-1"}, orchestrator.StartParams{})
	require.NoError(t, err)
	require.True(t, started)

	rs := f.records()
	require.Equal(t, []string{"inv.reserve", saga.EventStarted}, types(rs))
	reserve := rs[0]
	require.Equal(t, "inv.commands", reserve.Topic)
	require.Equal(t, "order-1", reserve.Key)
	require.Equal(t, "order-1", reserve.SagaID)
	require.Equal(t, "reserve", reserve.Step)
	require.Equal(t, 1, reserve.Attempt)
	require.Equal(t, string(saga.PhaseAction), reserve.Phase)
	require.Equal(t, saga.DefaultReplyTopic, reserve.Headers[saga.HeaderReplyTo])
	require.Equal(t, map[string]any{"order_id": "order-1"}, reserve.Payload)
	require.Equal(t, saga.DefaultEventTopic, rs[1].Topic)

	f.reply(reserve, "inv.reserved", map[string]any{"reservation_id": "r-1"})
	charge := f.oneCommand()
	require.Equal(t, "pay.charge", charge.Type)
	require.Equal(t, "r-1", charge.Payload["reservation_id"], "reply data merges into the saga data")
	require.Equal(t, reserve.Headers[messaging.HeaderCorrelationID], charge.Headers[messaging.HeaderCorrelationID])

	f.reply(charge, "pay.charged", map[string]any{"payment_id": "p-1"})
	confirm := f.oneCommand()
	require.Equal(t, map[string]any{"order_id": "order-1", "payment": "p-1"}, confirm.Payload)

	f.reply(confirm, "shop.order.confirmed", nil)
	require.Empty(t, commands(f.records()))
	d := f.show("order-1")
	require.Equal(t, saga.StatusCompleted, d.Status)
	require.Nil(t, d.DueAt, "a completed saga is never due")
	require.Contains(t, d.Waiting, "ended")
	var outcomes []string
	for _, e := range d.Timeline {
		outcomes = append(outcomes, e.Step+":"+e.Outcome)
	}
	require.Contains(t, outcomes, "reserve:sent")
	require.Contains(t, outcomes, "charge:succeeded")
	require.Contains(t, outcomes, ":completed")

	started, err = f.o.Start(context.Background(), nil, "shop", "order-1", map[string]any{"order_id": "order-1"}, orchestrator.StartParams{})
	require.NoError(t, err)
	require.False(t, started, "a second start of the same saga id does nothing")
	require.Empty(t, f.records())
}

func TestDeclinedPaymentCompensatesInReverseOrder(t *testing.T) {
	t.Parallel()
	f := setup(t, shopDefinition(nil))
	_, err := f.o.Start(context.Background(), nil, "shop", "o-2", map[string]any{"order_id": "o-2"}, orchestrator.StartParams{})
	require.NoError(t, err)
	f.reply(f.oneCommand(), "inv.reserved", nil)
	f.reply(f.oneCommand(), "pay.declined", map[string]any{"reason": "insufficient funds"})

	rs := f.records()
	release := commands(rs)
	require.Len(t, release, 1, "the declined charge had no effect: only the reservation is undone")
	require.Equal(t, "inv.release", release[0].Type)
	require.Equal(t, string(saga.PhaseCompensation), release[0].Phase)
	require.Contains(t, types(rs), saga.EventCompensating)

	f.reply(release[0], "inv.released", nil)
	require.Contains(t, types(f.records()), saga.EventCompensated)
	require.Equal(t, saga.StatusCompensated, f.show("o-2").Status)
}

func TestDuplicateAndLateRepliesChangeNothing(t *testing.T) {
	t.Parallel()
	f := setup(t, shopDefinition(nil))
	_, err := f.o.Start(context.Background(), nil, "shop", "o-3", map[string]any{"order_id": "o-3"}, orchestrator.StartParams{})
	require.NoError(t, err)
	reserve := f.oneCommand()
	reserved := replyMessage(t, reserve, "inv.reserved", nil)
	require.NoError(t, f.deliver(f.o, reserved))
	charge := f.oneCommand()
	rev := f.show("o-3").Revision

	require.NoError(t, f.deliver(f.o, reserved), "the same message again: a duplicate")
	require.NoError(t, f.deliver(f.o, replyMessage(t, reserve, "inv.reserved", nil)), "a new message for a step already done: late")
	require.NoError(t, f.deliver(f.o, replyMessage(t, charge, "inv.reserved", nil)), "a reply type the step does not know")
	require.Empty(t, f.records())
	require.Equal(t, rev, f.show("o-3").Revision)
	require.Equal(t, "charge", f.show("o-3").Step)
}

func TestStepTimeoutRetriesThenCompensatesByTheDatabaseClock(t *testing.T) {
	t.Parallel()
	f := setup(t, shopDefinition(func(d *saga.Definition) { d.Steps[1].Timeout = 300 * time.Millisecond }))
	_, err := f.o.Start(context.Background(), nil, "shop", "o-4", map[string]any{"order_id": "o-4"}, orchestrator.StartParams{})
	require.NoError(t, err)
	f.reply(f.oneCommand(), "inv.reserved", nil)

	// charge never replies: attempt 1, a retry after the backoff, then
	// compensation of both steps (the charge's outcome is unknown).
	var cmds []record
	require.Eventually(t, func() bool {
		cmds = append(cmds, commands(f.records())...)
		return len(cmds) >= 3
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, []string{"pay.charge", "pay.charge", "pay.refund"}, types(cmds))
	require.Equal(t, []int{1, 2, 1}, []int{cmds[0].Attempt, cmds[1].Attempt, cmds[2].Attempt})
	d := f.show("o-4")
	require.Equal(t, saga.StatusCompensating, d.Status)
	require.Contains(t, d.Reason, "timed out")

	f.reply(cmds[2], "pay.refunded", nil)
	release := f.oneCommand()
	require.Equal(t, "inv.release", release.Type)
	f.reply(release, "inv.released", nil)
	require.Equal(t, saga.StatusCompensated, f.show("o-4").Status)
}

func TestSagaDeadlineCompensates(t *testing.T) {
	t.Parallel()
	f := setup(t, shopDefinition(func(d *saga.Definition) { d.Timeout = 400 * time.Millisecond }))
	_, err := f.o.Start(context.Background(), nil, "shop", "o-5", map[string]any{"order_id": "o-5"}, orchestrator.StartParams{})
	require.NoError(t, err)
	f.reply(f.oneCommand(), "inv.reserved", nil)
	f.oneCommand() // charge, never answered

	var cmds []record
	require.Eventually(t, func() bool {
		cmds = append(cmds, commands(f.records())...)
		return len(cmds) >= 1
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, "pay.refund", cmds[0].Type)
	d := f.show("o-5")
	require.Equal(t, saga.StatusCompensating, d.Status)
	require.Contains(t, d.Reason, "saga timed out")
}

func TestParkedSagaResumesOnRetryAndOperatorsSeeIt(t *testing.T) {
	t.Parallel()
	f := setup(t, shopDefinition(nil))
	_, err := f.o.Start(context.Background(), nil, "shop", "o-6", map[string]any{"order_id": "o-6"}, orchestrator.StartParams{})
	require.NoError(t, err)
	f.reply(f.oneCommand(), "inv.reserved", nil)
	f.reply(f.oneCommand(), "pay.declined", nil)
	release := f.oneCommand()
	f.reply(release, "inv.release_failed", map[string]any{"error": "warehouse offline"})

	d := f.show("o-6")
	require.Equal(t, saga.StatusFailed, d.Status, "the release's only attempt failed: parked")
	require.Nil(t, d.DueAt)
	require.Contains(t, d.Waiting, "operator")

	api, err := f.o.HTTPHandler(orchestrator.HTTPConfig{Authenticator: orchestrator.LoopbackReadOnly()})
	require.NoError(t, err)
	srv := httptest.NewServer(api)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/sagas?status=failed")
	require.NoError(t, err)
	var list []orchestrator.Summary
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	require.NoError(t, resp.Body.Close())
	require.Len(t, list, 1)
	require.Equal(t, "o-6", list[0].ID)

	st, err := f.o.Operate(context.Background(), "o-6", orchestrator.OpRetry, orchestrator.OperateParams{Reason: "warehouse back"})
	require.NoError(t, err)
	require.Equal(t, saga.StatusCompensating, st.Status)
	again := f.oneCommand()
	require.Equal(t, "inv.release", again.Type)
	f.reply(again, "inv.released", nil)
	require.Equal(t, saga.StatusCompensated, f.show("o-6").Status)

	_, err = f.o.Operate(context.Background(), "o-6", orchestrator.OpAbort, orchestrator.OperateParams{})
	require.ErrorIs(t, err, orchestrator.ErrIgnored, "an ended saga cannot be aborted")
	resp, err = http.Get(srv.URL + "/sagas/nope")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestAbortStopsWithoutCompensating(t *testing.T) {
	t.Parallel()
	f := setup(t, shopDefinition(nil))
	_, err := f.o.Start(context.Background(), nil, "shop", "o-7", map[string]any{"order_id": "o-7"}, orchestrator.StartParams{})
	require.NoError(t, err)
	f.reply(f.oneCommand(), "inv.reserved", nil)
	f.oneCommand()
	st, err := f.o.Operate(context.Background(), "o-7", orchestrator.OpAbort, orchestrator.OperateParams{Reason: "customer called"})
	require.NoError(t, err)
	require.Equal(t, saga.StatusFailed, st.Status)
	require.Empty(t, commands(f.records()))
	_, err = f.o.Operate(context.Background(), "o-7", orchestrator.OpRetry, orchestrator.OperateParams{})
	require.ErrorIs(t, err, orchestrator.ErrIgnored, "nothing to resume after an abort")
	_, err = f.o.Operate(context.Background(), "nope", orchestrator.OpAbort, orchestrator.OperateParams{})
	require.ErrorIs(t, err, orchestrator.ErrUnknownSaga)
}

func TestTriggerStartsOneSagaPerMappedID(t *testing.T) {
	t.Parallel()
	f := setup(t, shopDefinition(nil))
	place := func() *messaging.Envelope {
		env, err := messaging.NewEnvelope("shop.order.place", "/test/client", map[string]any{"order_id": "o-8", "amount": 1999})
		require.NoError(t, err)
		return &env
	}
	first := place()
	require.NoError(t, f.deliver(f.o, first))
	require.NoError(t, f.deliver(f.o, place()), "a second command for the same order")
	cmds := commands(f.records())
	require.Len(t, cmds, 1)
	require.Equal(t, "o-8", cmds[0].SagaID)
	require.Equal(t, first.ID, cmds[0].Headers[messaging.HeaderCausationID])
	require.Equal(t, first.ID, cmds[0].Headers[messaging.HeaderCorrelationID])
	d := f.show("o-8")
	require.Equal(t, json.Number("1999"), d.State.Data["amount"], "numbers stay exact")
}

func TestMalformedRepliesArePermanentErrors(t *testing.T) {
	t.Parallel()
	f := setup(t, shopDefinition(nil))
	env := replyMessage(t, record{SagaID: "x", Step: "reserve", Phase: "action", Attempt: 1}, "inv.reserved", nil)
	env.Extensions[saga.ExtensionAttempt] = "zero"
	require.True(t, messaging.IsPermanent(f.deliver(f.o, env)))
	env = replyMessage(t, record{SagaID: "x", Step: "reserve", Phase: "sideways", Attempt: 1}, "inv.reserved", nil)
	require.True(t, messaging.IsPermanent(f.deliver(f.o, env)))
	env = replyMessage(t, record{SagaID: "x", Step: "reserve", Phase: "action", Attempt: 1}, "inv.reserved", nil)
	env.Data = json.RawMessage(`[1,2]`)
	require.True(t, messaging.IsPermanent(f.deliver(f.o, env)))
}

// Two replicas handle the same replies at once: every transition happens
// once, so every command is written once.
func TestTwoReplicasApplyEachTransitionOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, shopDefinition(nil))
	second := f.newOrchestrator(shopDefinition(nil))
	f.run(second)
	const n = 40
	for i := range n {
		id := "r-" + strconv.Itoa(i)
		_, err := f.o.Start(context.Background(), nil, "shop", id, map[string]any{"order_id": id}, orchestrator.StartParams{})
		require.NoError(t, err)
	}
	replies := map[string]string{"inv.reserve": "inv.reserved", "pay.charge": "pay.charged", "shop.order.confirm": "shop.order.confirmed"}
	sent := map[string]int{}
	for round := 0; round < 3; round++ {
		cmds := commands(f.records())
		require.Len(t, cmds, n, "round %d: one command per saga", round)
		var wg sync.WaitGroup
		for _, c := range cmds {
			sent[c.Type]++
			env := replyMessage(t, c, replies[c.Type], map[string]any{"payment_id": "p"})
			for _, o := range []*orchestrator.Orchestrator{f.o, second} {
				wg.Go(func() { require.NoError(t, f.deliver(o, env)) })
			}
		}
		wg.Wait()
	}
	require.Empty(t, commands(f.records()))
	require.Equal(t, map[string]int{"inv.reserve": n, "pay.charge": n, "shop.order.confirm": n}, sent)
	var completed int
	require.NoError(t, f.schema.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM saga_instances WHERE status = 'completed'`).Scan(&completed))
	require.Equal(t, n, completed)
}

// Starting in the caller's transaction: the saga exists if and only if the
// transaction commits.
func TestStartInTheCallersTransaction(t *testing.T) {
	t.Parallel()
	f := setup(t, shopDefinition(nil))
	ctx := context.Background()
	tx, err := f.schema.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	started, err := f.o.Start(ctx, tx, "shop", "o-9", map[string]any{"order_id": "o-9"}, orchestrator.StartParams{})
	require.NoError(t, err)
	require.True(t, started)
	require.NoError(t, tx.Rollback(ctx))
	_, err = f.o.Show(ctx, "o-9")
	require.ErrorIs(t, err, orchestrator.ErrUnknownSaga)
	require.Empty(t, f.records())

	require.NoError(t, pgx.BeginFunc(ctx, f.schema.Pool, func(tx pgx.Tx) error {
		_, err := f.o.Start(ctx, tx, "shop", "o-9", map[string]any{"order_id": "o-9"}, orchestrator.StartParams{})
		return err
	}))
	require.Equal(t, saga.StatusRunning, f.show("o-9").Status)
}

// The commands a reply causes continue the trace of the span that handled
// the reply, so that one saga is one trace across processes.
func TestCommandsContinueTheTrace(t *testing.T) {
	t.Parallel()
	f := setup(t, shopDefinition(nil))
	_, err := f.o.Start(context.Background(), nil, "shop", "o-10", map[string]any{"order_id": "o-10"}, orchestrator.StartParams{})
	require.NoError(t, err)
	reserve := f.oneCommand()

	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})
	msg, err := replyMessage(t, reserve, "inv.reserved", nil).ToMessage()
	require.NoError(t, err)
	msg.SetContext(trace.ContextWithSpanContext(context.Background(), sc))
	require.NoError(t, f.o.Handle(msg))

	charge := f.oneCommand()
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", charge.Headers[messaging.HeaderTraceParent])
	require.Equal(t, reserve.Headers[messaging.HeaderCorrelationID], charge.Headers[messaging.HeaderCorrelationID])
	require.Equal(t, msg.UUID, charge.Headers[messaging.HeaderCausationID])
}
