package participant_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/participant"
)

const (
	reserveType  = "stock.reserve"
	releaseType  = "stock.release"
	reservedType = "stock.reserved"
	releasedType = "stock.released"
	refusedType  = "stock.out_of_stock"
	orchestrator = "/test/orchestrator"
)

// fixture is a migrated schema with a table "reservations", the effect of
// the stock participant, and handlers that count their calls.
type fixture struct {
	schema *pgtest.Schema
	ob     *outbox.Outbox
	p      *participant.Participant

	actions, compensations atomic.Int32
	// reject makes the action write its effect and then reject.
	reject atomic.Bool
	// fail makes the handlers fail with errBoom.
	fail atomic.Bool
}

var errBoom = errors.New("boom")

func setup(t *testing.T) *fixture {
	t.Helper()
	s := pgtest.NewSchema(t)
	_, err := s.Pool.Exec(t.Context(), `CREATE TABLE reservations (saga_id text NOT NULL, qty int NOT NULL)`)
	require.NoError(t, err)
	ob, err := outbox.New(outbox.Config{Schema: s.Name})
	require.NoError(t, err)
	f := &fixture{schema: s, ob: ob}
	f.p = f.participant(t, "stock")
	return f
}

// participant returns a Participant named name with the fixture's handlers.
func (f *fixture) participant(t *testing.T, name string) *participant.Participant {
	t.Helper()
	p, err := participant.New(f.schema.Pool, participant.Config{Name: name, Schema: f.schema.Name, Outbox: f.ob})
	require.NoError(t, err)
	p.Action(reserveType, func(ctx context.Context, tx pgx.Tx, cmd participant.Command) (participant.Reply, error) {
		f.actions.Add(1)
		if f.fail.Load() {
			return participant.Reply{}, errBoom
		}
		var in struct{ Qty int }
		if err := json.Unmarshal(cmd.Data, &in); err != nil {
			return participant.Reply{}, messaging.Permanent(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO reservations (saga_id, qty) VALUES ($1, $2)", cmd.SagaID, in.Qty); err != nil {
			return participant.Reply{}, err
		}
		if f.reject.Load() {
			return participant.Reply{}, fmt.Errorf("wrapped: %w", participant.Reject(refusedType, map[string]string{"reason": "none left"}))
		}
		return participant.Reply{Type: reservedType, Data: map[string]int{"reserved": in.Qty}}, nil
	})
	p.Compensation(releaseType, releasedType, func(ctx context.Context, tx pgx.Tx, cmd participant.Command) (any, error) {
		f.compensations.Add(1)
		if f.fail.Load() {
			return nil, errBoom
		}
		_, err := tx.Exec(ctx, "DELETE FROM reservations WHERE saga_id = $1", cmd.SagaID)
		return nil, err
	}, nil)
	return p
}

// cmdOpts describes a command; zero fields take test defaults.
type cmdOpts struct {
	typ, sagaID, step, replyTo string
	phase                      saga.Phase
	attempt                    int
}

// command returns a saga command as a subscriber delivers it.
func command(t *testing.T, o cmdOpts) *message.Message {
	t.Helper()
	if o.typ == "" {
		o.typ = reserveType
		if o.phase == saga.PhaseCompensation {
			o.typ = releaseType
		}
	}
	if o.phase == "" {
		o.phase = saga.PhaseAction
	}
	if o.step == "" {
		o.step = "reserve"
	}
	if o.attempt == 0 {
		o.attempt = 1
	}
	env, err := messaging.NewEnvelope(o.typ, orchestrator, map[string]int{"qty": 3})
	require.NoError(t, err)
	env.SagaID = o.sagaID
	env.PartitionKey = o.sagaID
	env.CorrelationID = "corr-" + o.sagaID
	env.Extensions = map[string]string{
		"sagastep":    o.step,
		"sagaattempt": strconv.Itoa(o.attempt),
		"sagaphase":   string(o.phase),
		"sagareplyto": o.replyTo,
	}
	msg, err := env.ToMessage()
	require.NoError(t, err)
	msg.SetContext(t.Context())
	return msg
}

// redeliver is how a subscriber hands the same record over again.
func redeliver(t *testing.T, msg *message.Message) *message.Message {
	c := msg.Copy()
	c.SetContext(t.Context())
	return c
}

type outboxRow struct {
	Topic   string
	Key     *string
	Headers map[string]string
	Payload []byte
}

func (f *fixture) replies(t *testing.T) []outboxRow {
	t.Helper()
	rs, err := f.schema.Pool.Query(t.Context(), "SELECT topic, key, headers, payload FROM outbox ORDER BY tx_id, position")
	require.NoError(t, err)
	out, err := pgx.CollectRows(rs, pgx.RowToStructByPos[outboxRow])
	require.NoError(t, err)
	return out
}

type barrierRow struct {
	Participant, SagaID, Step, Phase, Outcome string
	ReplyType                                 *string
	CommandID                                 string
}

func (f *fixture) barrier(t *testing.T, sagaID string) []barrierRow {
	t.Helper()
	rs, err := f.schema.Pool.Query(t.Context(),
		`SELECT participant, saga_id, step, phase, outcome, reply_type, command_id
		 FROM saga_barrier WHERE saga_id = $1 ORDER BY participant, step, phase`, sagaID)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rs, pgx.RowToStructByPos[barrierRow])
	require.NoError(t, err)
	return out
}

func (f *fixture) reservations(t *testing.T, sagaID string) int {
	t.Helper()
	var n int
	require.NoError(t, f.schema.Pool.QueryRow(t.Context(), "SELECT count(*) FROM reservations WHERE saga_id = $1", sagaID).Scan(&n))
	return n
}

func ptr(s string) *string { return &s }

func handle(t *testing.T, p *participant.Participant, msg *message.Message) participant.Result {
	t.Helper()
	res, err := p.HandleResult(msg)
	require.NoError(t, err)
	return res
}

func TestDuplicateAction(t *testing.T) {
	t.Parallel()
	f := setup(t)
	msg := command(t, cmdOpts{sagaID: "s1"})

	require.Equal(t, participant.Applied, handle(t, f.p, msg))
	require.Equal(t, participant.Duplicate, handle(t, f.p, redeliver(t, msg)))
	require.Len(t, f.replies(t), 1, "a redelivery gets no second reply")
	// A later attempt of the same step is a duplicate too: the handler does
	// not run again, the recorded reply is sent again (see resend_test.go).
	require.Equal(t, participant.Duplicate, handle(t, f.p, command(t, cmdOpts{sagaID: "s1", attempt: 2})))
	require.NoError(t, f.p.Handle(redeliver(t, msg)), "Handle acks a duplicate")

	require.EqualValues(t, 1, f.actions.Load())
	require.Equal(t, 1, f.reservations(t, "s1"))
	require.Len(t, f.replies(t), 2)
	require.Equal(t, []barrierRow{{"stock", "s1", "reserve", "action", "applied", ptr(reservedType), msg.UUID}}, f.barrier(t, "s1"))
	requireCount(t, f.p, participant.Applied, 1)
	requireCount(t, f.p, participant.Duplicate, 3)
}

func TestCompensationBeforeAction(t *testing.T) {
	t.Parallel()
	f := setup(t)
	comp := command(t, cmdOpts{sagaID: "s1", phase: saga.PhaseCompensation})
	action := command(t, cmdOpts{sagaID: "s1"})

	require.Equal(t, participant.EmptyCompensation, handle(t, f.p, comp))
	require.Equal(t, participant.Refused, handle(t, f.p, action))
	require.Equal(t, participant.Duplicate, handle(t, f.p, redeliver(t, action)))
	require.Equal(t, participant.Duplicate, handle(t, f.p, redeliver(t, comp)))

	require.Zero(t, f.actions.Load(), "the late action must not run")
	require.Zero(t, f.compensations.Load(), "nothing to compensate")
	require.Zero(t, f.reservations(t, "s1"))
	replies := f.replies(t)
	require.Len(t, replies, 1, "only the compensation is answered")
	require.Equal(t, releasedType, replies[0].Headers[messaging.HeaderType])
	require.Equal(t, string(saga.PhaseCompensation), replies[0].Headers[saga.HeaderPhase])
	require.Empty(t, replies[0].Payload)
	require.Equal(t, []barrierRow{
		{"stock", "s1", "reserve", "action", "refused", nil, action.UUID},
		{"stock", "s1", "reserve", "compensation", "empty", ptr(releasedType), comp.UUID},
	}, f.barrier(t, "s1"))
	requireCount(t, f.p, participant.Refused, 1)
	requireCount(t, f.p, participant.EmptyCompensation, 1)

	// The orchestrator, which did not wait for the first answer, sends the
	// compensation again (a new command, attempt 2): it is answered again,
	// and still nothing runs.
	again := command(t, cmdOpts{sagaID: "s1", phase: saga.PhaseCompensation, attempt: 2})
	require.Equal(t, participant.Duplicate, handle(t, f.p, again))
	replies = f.replies(t)
	require.Len(t, replies, 2, "a re-sent compensation is answered again")
	require.Equal(t, "2", replies[1].Headers[saga.HeaderAttempt])
	require.Equal(t, releasedType, replies[1].Headers[messaging.HeaderType])
	require.Zero(t, f.compensations.Load())
}

func TestActionThenCompensation(t *testing.T) {
	t.Parallel()
	f := setup(t)
	action := command(t, cmdOpts{sagaID: "s1", attempt: 2, replyTo: "custom.replies"})
	comp := command(t, cmdOpts{sagaID: "s1", phase: saga.PhaseCompensation, attempt: 1})

	require.Equal(t, participant.Applied, handle(t, f.p, action))
	require.Equal(t, 1, f.reservations(t, "s1"))
	require.Equal(t, participant.Compensated, handle(t, f.p, comp))
	require.Equal(t, participant.Duplicate, handle(t, f.p, redeliver(t, comp)))
	require.Zero(t, f.reservations(t, "s1"))
	require.EqualValues(t, 1, f.actions.Load())
	require.EqualValues(t, 1, f.compensations.Load())

	replies := f.replies(t)
	require.Len(t, replies, 2)
	for i, c := range []struct {
		cmd       *message.Message
		topic     string
		typ       string
		phase     saga.Phase
		attempt   string
		payload   string
		replyFrom int
	}{
		{action, "custom.replies", reservedType, saga.PhaseAction, "2", `{"reserved":3}`, 0},
		{comp, saga.DefaultReplyTopic, releasedType, saga.PhaseCompensation, "1", ``, 1},
	} {
		r := replies[i]
		require.Equal(t, c.topic, r.Topic)
		require.NotNil(t, r.Key)
		require.Equal(t, "s1", *r.Key, "keyed by the saga id")
		require.Equal(t, c.payload, string(r.Payload))
		h := r.Headers
		require.Equal(t, c.typ, h[messaging.HeaderType])
		require.Equal(t, "/dtx/participant/stock", h[messaging.HeaderSource])
		require.Equal(t, "s1", h[messaging.HeaderSagaID])
		require.Equal(t, "reserve", h[saga.HeaderStep])
		require.Equal(t, c.attempt, h[saga.HeaderAttempt])
		require.Equal(t, string(c.phase), h[saga.HeaderPhase])
		require.Equal(t, "corr-s1", h[messaging.HeaderCorrelationID])
		require.Equal(t, c.cmd.UUID, h[messaging.HeaderCausationID], "caused by the command")
		require.NotContains(t, h, saga.HeaderReplyTo)
		require.NotEqual(t, c.cmd.UUID, h[messaging.HeaderID])
	}
	require.Equal(t, []barrierRow{
		{"stock", "s1", "reserve", "action", "applied", ptr(reservedType), action.UUID},
		{"stock", "s1", "reserve", "compensation", "applied", ptr(releasedType), comp.UUID},
	}, f.barrier(t, "s1"))
}

func TestReject(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.reject.Store(true)
	action := command(t, cmdOpts{sagaID: "s1"})

	require.Equal(t, participant.Rejected, handle(t, f.p, action))
	require.Zero(t, f.reservations(t, "s1"), "the handler's writes are discarded")
	replies := f.replies(t)
	require.Len(t, replies, 1)
	require.Equal(t, refusedType, replies[0].Headers[messaging.HeaderType])
	require.JSONEq(t, `{"reason":"none left"}`, string(replies[0].Payload))
	require.Equal(t, action.UUID, replies[0].Headers[messaging.HeaderCausationID])

	f.reject.Store(false)
	require.Equal(t, participant.Duplicate, handle(t, f.p, redeliver(t, action)))
	require.Equal(t, participant.EmptyCompensation, handle(t, f.p, command(t, cmdOpts{sagaID: "s1", phase: saga.PhaseCompensation})))
	require.Zero(t, f.compensations.Load(), "nothing to undo after a rejection")
	replies = f.replies(t)
	require.Len(t, replies, 2)
	require.Equal(t, releasedType, replies[1].Headers[messaging.HeaderType])
	b := f.barrier(t, "s1")
	require.Len(t, b, 2)
	require.Equal(t, "rejected", b[0].Outcome)
	require.Equal(t, ptr(refusedType), b[0].ReplyType)
	require.Equal(t, "empty", b[1].Outcome)
	requireCount(t, f.p, participant.Rejected, 1)
}

func TestRejectAfterFailedStatement(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, err := f.schema.Pool.Exec(t.Context(), "CREATE TABLE taken (id text PRIMARY KEY); INSERT INTO taken VALUES ('x')")
	require.NoError(t, err)
	f.p.Action("stock.take", func(ctx context.Context, tx pgx.Tx, cmd participant.Command) (participant.Reply, error) {
		// A unique violation aborts the statement; rejecting still works.
		if _, err := tx.Exec(ctx, "INSERT INTO taken VALUES ('x')"); err != nil {
			return participant.Reply{}, participant.Reject(refusedType, nil)
		}
		return participant.Reply{Type: reservedType}, nil
	})
	require.Equal(t, participant.Rejected, handle(t, f.p, command(t, cmdOpts{sagaID: "s1", typ: "stock.take"})))
	require.Len(t, f.replies(t), 1)
	require.Equal(t, "rejected", f.barrier(t, "s1")[0].Outcome)
}

func TestHandlerErrorCommitsNothing(t *testing.T) {
	t.Parallel()
	f := setup(t)
	action := command(t, cmdOpts{sagaID: "s1"})
	comp := command(t, cmdOpts{sagaID: "s2", phase: saga.PhaseCompensation})
	// s2's action is applied, so its compensation runs its handler.
	require.Equal(t, participant.Applied, handle(t, f.p, command(t, cmdOpts{sagaID: "s2"})))
	f.fail.Store(true)

	err := f.p.Handle(action)
	require.ErrorIs(t, err, errBoom)
	require.True(t, messaging.IsRetryable(err), "a handler's error is the retry middleware's to judge")
	require.Empty(t, f.barrier(t, "s1"), "no barrier row")
	require.ErrorIs(t, f.p.Handle(comp), errBoom)
	require.Len(t, f.barrier(t, "s2"), 1, "only the action's row")
	require.Len(t, f.replies(t), 1, "only s2's action reply")

	// The redeliveries run the handlers again.
	f.fail.Store(false)
	require.Equal(t, participant.Applied, handle(t, f.p, redeliver(t, action)))
	require.Equal(t, participant.Compensated, handle(t, f.p, redeliver(t, comp)))
	require.Equal(t, 1, f.reservations(t, "s1"))
	require.Zero(t, f.reservations(t, "s2"))
	require.Len(t, f.replies(t), 3)
}

func TestConcurrentDuplicates(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const deliveries = 6
	msg := command(t, cmdOpts{sagaID: "s1"})
	results := make(chan participant.Result, deliveries)
	errs := make(chan error, deliveries)
	var wg sync.WaitGroup
	for range deliveries {
		wg.Go(func() {
			res, err := f.p.HandleResult(redeliver(t, msg))
			results <- res
			errs <- err
		})
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	counts := map[participant.Result]int{}
	for r := range results {
		counts[r]++
	}
	require.Equal(t, map[participant.Result]int{participant.Applied: 1, participant.Duplicate: deliveries - 1}, counts)
	require.EqualValues(t, 1, f.actions.Load())
	require.Equal(t, 1, f.reservations(t, "s1"))
	require.Len(t, f.replies(t), 1)
}

// TestConcurrentActionAndCompensation races a step's action and its
// compensation: whichever wins, the outcome is consistent.
func TestConcurrentActionAndCompensation(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const sagas = 10
	var wg sync.WaitGroup
	errs := make(chan error, 2*sagas)
	for i := range sagas {
		id := "s" + strconv.Itoa(i)
		action := command(t, cmdOpts{sagaID: id})
		comp := command(t, cmdOpts{sagaID: id, phase: saga.PhaseCompensation})
		wg.Go(func() { errs <- f.p.Handle(action) })
		wg.Go(func() { errs <- f.p.Handle(comp) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for i := range sagas {
		id := "s" + strconv.Itoa(i)
		b := f.barrier(t, id)
		require.Len(t, b, 2)
		switch b[0].Outcome {
		case "applied":
			require.Equal(t, "applied", b[1].Outcome, "an applied action is compensated (%s)", id)
		case "refused":
			require.Equal(t, "empty", b[1].Outcome, "a refused action follows an empty compensation (%s)", id)
		default:
			t.Fatalf("saga %s: action outcome %q", id, b[0].Outcome)
		}
		require.Zero(t, f.reservations(t, id), "no reservation survives its compensation (%s)", id)
	}
	require.Equal(t, f.actions.Load(), f.compensations.Load(), "every applied action was compensated")
}

func TestMalformedCommands(t *testing.T) {
	t.Parallel()
	f := setup(t)
	valid := func() *message.Message { return command(t, cmdOpts{sagaID: "s1"}) }
	for _, c := range []struct {
		name   string
		msg    func() *message.Message
		target error
	}{
		{"no saga id", func() *message.Message {
			m := valid()
			delete(m.Metadata, messaging.HeaderSagaID)
			return m
		}, participant.ErrInvalidCommand},
		{"no step", func() *message.Message { m := valid(); delete(m.Metadata, saga.HeaderStep); return m }, participant.ErrInvalidCommand},
		{"no attempt", func() *message.Message { m := valid(); delete(m.Metadata, saga.HeaderAttempt); return m }, participant.ErrInvalidCommand},
		{"bad attempt", func() *message.Message { m := valid(); m.Metadata.Set(saga.HeaderAttempt, "0"); return m }, participant.ErrInvalidCommand},
		{"no phase", func() *message.Message { m := valid(); delete(m.Metadata, saga.HeaderPhase); return m }, participant.ErrInvalidCommand},
		{"bad phase", func() *message.Message { m := valid(); m.Metadata.Set(saga.HeaderPhase, "undo"); return m }, participant.ErrInvalidCommand},
		{"long saga id", func() *message.Message {
			return command(t, cmdOpts{sagaID: strings.Repeat("s", participant.MaxTextLen+1)})
		}, participant.ErrInvalidCommand},
		{"long step", func() *message.Message {
			return command(t, cmdOpts{sagaID: "s1", step: strings.Repeat("s", participant.MaxTextLen+1)})
		}, participant.ErrInvalidCommand},
		{"bad reply topic", func() *message.Message { m := valid(); m.Metadata.Set(saga.HeaderReplyTo, "no/slashes"); return m }, participant.ErrInvalidCommand},
		{"not an envelope", func() *message.Message { m := valid(); delete(m.Metadata, messaging.HeaderSpecVersion); return m }, messaging.ErrInvalidEnvelope},
		{"unknown type", func() *message.Message { return command(t, cmdOpts{sagaID: "s1", typ: "stock.unknown"}) }, participant.ErrUnknownCommand},
		{"action type as compensation", func() *message.Message {
			return command(t, cmdOpts{sagaID: "s1", typ: reserveType, phase: saga.PhaseCompensation})
		}, participant.ErrUnknownCommand},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := f.p.Handle(c.msg())
			require.ErrorIs(t, err, c.target)
			require.ErrorIs(t, err, messaging.ErrPermanent)
			require.True(t, messaging.IsPermanent(err))
		})
	}
	require.ErrorIs(t, f.p.Handle(nil), participant.ErrInvalidCommand)
	require.Zero(t, f.actions.Load())
	require.Empty(t, f.replies(t))
	require.Empty(t, f.barrier(t, "s1"))
}

func TestInvalidReplyIsPermanent(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.p.Action("stock.untyped", func(context.Context, pgx.Tx, participant.Command) (participant.Reply, error) {
		return participant.Reply{Data: 1}, nil
	})
	err := f.p.Handle(command(t, cmdOpts{sagaID: "s1", typ: "stock.untyped"}))
	require.ErrorIs(t, err, participant.ErrInvalidReply)
	require.True(t, messaging.IsPermanent(err))
	require.Empty(t, f.barrier(t, "s1"))
}

func TestReplyCarriesTraceContext(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	msg := command(t, cmdOpts{sagaID: "s1"})
	msg.SetContext(trace.ContextWithSpanContext(t.Context(), sc))
	require.NoError(t, f.p.Handle(msg))
	replies := f.replies(t)
	require.Len(t, replies, 1)
	require.Equal(t, "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01", replies[0].Headers[messaging.HeaderTraceParent])
}

func TestParticipantsShareASchema(t *testing.T) {
	t.Parallel()
	f := setup(t)
	other := f.participant(t, "billing")
	comp := command(t, cmdOpts{sagaID: "s1", phase: saga.PhaseCompensation})
	action := command(t, cmdOpts{sagaID: "s1"})
	require.Equal(t, participant.EmptyCompensation, handle(t, f.p, comp))
	// billing's barrier is its own: stock's compensation does not refuse it.
	require.Equal(t, participant.Applied, handle(t, other, action))
	require.Equal(t, participant.Refused, handle(t, f.p, redeliver(t, action)))
	require.Len(t, f.barrier(t, "s1"), 3)
}

func TestHandleTx(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()

	// The caller's transaction: rolled back, it leaves nothing.
	tx, err := f.schema.Pool.Begin(ctx)
	require.NoError(t, err)
	res, err := f.p.HandleTx(ctx, tx, command(t, cmdOpts{sagaID: "s1"}))
	require.NoError(t, err)
	require.Equal(t, participant.Applied, res)
	require.NoError(t, tx.Rollback(ctx))
	require.Empty(t, f.barrier(t, "s1"))
	require.Empty(t, f.replies(t))

	// REPEATABLE READ is refused.
	tx, err = f.schema.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = f.p.HandleTx(ctx, tx, command(t, cmdOpts{sagaID: "s2"}))
	require.ErrorIs(t, err, participant.ErrIsolation)

	// SERIALIZABLE works.
	stx, err := f.schema.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	require.NoError(t, err)
	res, err = f.p.HandleTx(ctx, stx, command(t, cmdOpts{sagaID: "s3"}))
	require.NoError(t, err)
	require.Equal(t, participant.Applied, res)
	require.NoError(t, stx.Commit(ctx))
	require.Len(t, f.barrier(t, "s3"), 1)
}

func TestPrune(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	other := f.participant(t, "billing")
	for i := range 5 {
		require.NoError(t, f.p.Handle(command(t, cmdOpts{sagaID: "s" + strconv.Itoa(i)})))
	}
	require.NoError(t, other.Handle(command(t, cmdOpts{sagaID: "s0"})))
	_, err := f.schema.Pool.Exec(ctx, "UPDATE saga_barrier SET created_at = now() - interval '10 days' WHERE saga_id IN ('s0', 's1', 's2')")
	require.NoError(t, err)

	n, err := f.p.Prune(ctx, 7*24*time.Hour)
	require.NoError(t, err)
	require.EqualValues(t, 3, n, "stock's old rows only: s0, s1 and s2")
	require.Len(t, f.barrier(t, "s0"), 1, "billing's row is billing's to prune")
	require.Equal(t, "billing", f.barrier(t, "s0")[0].Participant)
	require.Len(t, f.barrier(t, "s3"), 1)

	n, err = f.p.Prune(ctx, 7*24*time.Hour)
	require.NoError(t, err)
	require.Zero(t, n)
	_, err = f.p.Prune(ctx, 0)
	require.Error(t, err)

	// The trade-off: a pruned command runs again.
	require.Equal(t, participant.Applied, handle(t, f.p, command(t, cmdOpts{sagaID: "s9"})))
}

func TestConfig(t *testing.T) {
	t.Parallel()
	_, err := participant.New(nil, participant.Config{Schema: "Bad Schema", Source: "%zz"})
	require.ErrorContains(t, err, "Name")
	require.ErrorContains(t, err, "Schema")
	require.ErrorContains(t, err, "Outbox")
	require.ErrorContains(t, err, "Source")

	ob, err := outbox.New(outbox.Config{})
	require.NoError(t, err)
	_, err = participant.New(nil, participant.Config{Name: "x\n", Outbox: ob})
	require.ErrorContains(t, err, "Name: contains a control character")
	_, err = participant.New(nil, participant.Config{Name: "x", Outbox: ob, TxOptions: pgx.TxOptions{IsoLevel: pgx.RepeatableRead}})
	require.ErrorIs(t, err, participant.ErrIsolation)

	p, err := participant.New(nil, participant.Config{Name: "stock", Outbox: ob})
	require.NoError(t, err)
	require.Equal(t, "stock", p.Name())
	require.Error(t, p.Handle(command(t, cmdOpts{sagaID: "s1"})), "Handle needs a pool")
	require.Panics(t, func() { p.Action("", nil) })
	p.Action("a", func(context.Context, pgx.Tx, participant.Command) (participant.Reply, error) {
		return participant.Reply{}, nil
	})
	require.Panics(t, func() {
		p.Action("a", func(context.Context, pgx.Tx, participant.Command) (participant.Reply, error) {
			return participant.Reply{}, nil
		})
	})
	require.Panics(t, func() {
		p.Compensation("c", "", func(context.Context, pgx.Tx, participant.Command) (any, error) { return nil, nil }, nil)
	})
}

func requireCount(t *testing.T, p *participant.Participant, r participant.Result, want float64) {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	p.Collector().Collect(ch)
	close(ch)
	for m := range ch {
		var d dto.Metric
		require.NoError(t, m.Write(&d))
		for _, l := range d.GetLabel() {
			if l.GetName() == "result" && l.GetValue() == r.String() {
				require.InDelta(t, want, d.GetCounter().GetValue(), 0, "dtx_participant_commands_total{result=%q}", r)
				return
			}
		}
	}
	t.Fatalf("no counter for result %s", r)
}
