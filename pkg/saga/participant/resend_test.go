package participant_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/participant"
)

// requireRepeated checks dtx_participant_repeated_commands_total{reply}.
func requireRepeated(t *testing.T, p *participant.Participant, reply string, want float64) {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	p.Collector().Collect(ch)
	close(ch)
	for m := range ch {
		var d dto.Metric
		require.NoError(t, m.Write(&d))
		for _, l := range d.GetLabel() {
			if l.GetName() == "reply" && l.GetValue() == reply {
				require.InDelta(t, want, d.GetCounter().GetValue(), 0, "dtx_participant_repeated_commands_total{reply=%q}", reply)
				return
			}
		}
	}
	t.Fatalf("no counter for reply %s", reply)
}

// keptReply is the reply a barrier row records.
func (f *fixture) keptReply(t *testing.T, sagaID string, phase saga.Phase) (map[string]string, []byte) {
	t.Helper()
	var headers map[string]string
	var payload []byte
	require.NoError(t, f.schema.Pool.QueryRow(t.Context(),
		`SELECT reply_headers, reply_payload FROM saga_barrier WHERE participant = 'stock' AND saga_id = $1 AND phase = $2`,
		sagaID, string(phase)).Scan(&headers, &payload))
	return headers, payload
}

// requireSameReply checks that again answers cmd with the content of first:
// a new message (id, time, cause, attempt, trace are its own) with the same
// type, source, payload bytes, correlation, saga headers and key.
func requireSameReply(t *testing.T, first, again outboxRow, cmd string, attempt string) {
	t.Helper()
	require.Equal(t, first.Payload, again.Payload, "the recorded payload, byte for byte")
	require.Equal(t, first.Topic, again.Topic)
	require.Equal(t, first.Key, again.Key)
	require.NotEqual(t, first.Headers[messaging.HeaderID], again.Headers[messaging.HeaderID], "a new message")
	require.Equal(t, cmd, again.Headers[messaging.HeaderCausationID], "caused by the command sent again")
	require.Equal(t, attempt, again.Headers[saga.HeaderAttempt], "answers the attempt sent again")
	strip := func(h map[string]string) map[string]string {
		h = maps.Clone(h)
		for _, k := range []string{messaging.HeaderID, messaging.HeaderTime, messaging.HeaderCausationID, saga.HeaderAttempt} {
			delete(h, k)
		}
		return h
	}
	require.Equal(t, strip(first.Headers), strip(again.Headers), "every other header as recorded")
}

// The orchestrator sends an action again (its next attempt, an operator's
// retry) when it has not seen the reply: the participant answers with the
// reply it recorded, without running the handler again.
func TestResentActionGetsTheRecordedReply(t *testing.T) {
	t.Parallel()
	f := setup(t)
	first := command(t, cmdOpts{sagaID: "s1"})
	require.Equal(t, participant.Applied, handle(t, f.p, first))
	replies := f.replies(t)
	require.Len(t, replies, 1)

	// The barrier keeps the record the outbox was given.
	headers, payload := f.keptReply(t, "s1", saga.PhaseAction)
	delete(headers, messaging.MetadataPartitionKey) // the record key, not a header
	require.Equal(t, replies[0].Headers, headers)
	require.Equal(t, replies[0].Payload, payload)

	require.Equal(t, participant.Duplicate, handle(t, f.p, redeliver(t, first)))
	require.Len(t, f.replies(t), 1, "a redelivery's reply is already on its way")

	again := command(t, cmdOpts{sagaID: "s1", attempt: 2})
	require.Equal(t, participant.Duplicate, handle(t, f.p, again))
	replies = f.replies(t)
	require.Len(t, replies, 2, "the command sent again is answered")
	requireSameReply(t, replies[0], replies[1], again.UUID, "2")
	require.Equal(t, reservedType, replies[1].Headers[messaging.HeaderType])
	require.JSONEq(t, `{"reserved":3}`, string(replies[1].Payload))
	require.EqualValues(t, 1, f.actions.Load(), "the handler ran once")
	require.Equal(t, 1, f.reservations(t, "s1"))
	requireRepeated(t, f.p, "resent", 1)

	// A rejection is answered again with its failure reply.
	f.reject.Store(true)
	require.Equal(t, participant.Rejected, handle(t, f.p, command(t, cmdOpts{sagaID: "s2"})))
	f.reject.Store(false)
	again = command(t, cmdOpts{sagaID: "s2", attempt: 3})
	require.Equal(t, participant.Duplicate, handle(t, f.p, again))
	replies = f.replies(t)
	require.Len(t, replies, 4)
	requireSameReply(t, replies[2], replies[3], again.UUID, "3")
	require.Equal(t, refusedType, replies[3].Headers[messaging.HeaderType])
	require.EqualValues(t, 2, f.actions.Load(), "the rejecting handler ran once")
	require.Zero(t, f.reservations(t, "s2"))
	requireRepeated(t, f.p, "resent", 2)
}

// A compensation sent again is answered with the reply its handler's data
// made, not with the data of an empty compensation.
func TestResentCompensationGetsTheRecordedReply(t *testing.T) {
	t.Parallel()
	f := setup(t)
	p := f.participant(t, "stock-refunds")
	// Replace nothing: register a second compensation type with data.
	var runs int
	p.Compensation("stock.refund", releasedType, func(context.Context, pgx.Tx, participant.Command) (any, error) {
		runs++
		return map[string]string{"refund": "r-1"}, nil
	}, func(participant.Command) any { return map[string]string{"refund": "none"} })
	require.Equal(t, participant.Applied, handle(t, p, command(t, cmdOpts{sagaID: "s1"})))
	comp := command(t, cmdOpts{sagaID: "s1", typ: "stock.refund", phase: saga.PhaseCompensation})
	require.Equal(t, participant.Compensated, handle(t, p, comp))
	again := command(t, cmdOpts{sagaID: "s1", typ: "stock.refund", phase: saga.PhaseCompensation, attempt: 2})
	require.Equal(t, participant.Duplicate, handle(t, p, again))

	require.Equal(t, 1, runs)
	replies := f.replies(t)
	require.Len(t, replies, 3)
	requireSameReply(t, replies[1], replies[2], again.UUID, "2")
	require.JSONEq(t, `{"refund":"r-1"}`, string(replies[2].Payload))
}

// The reply to a command sent again commits with the transaction that found
// it a duplicate, and only then.
func TestResentReplyCommitsWithItsTransaction(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	require.Equal(t, participant.Applied, handle(t, f.p, command(t, cmdOpts{sagaID: "s1"})))
	again := command(t, cmdOpts{sagaID: "s1", attempt: 2})

	tx, err := f.schema.Pool.Begin(ctx)
	require.NoError(t, err)
	res, err := f.p.HandleTx(ctx, tx, again)
	require.NoError(t, err)
	require.Equal(t, participant.Duplicate, res)
	require.Len(t, f.replies(t), 1, "not visible before the commit")
	require.NoError(t, tx.Rollback(ctx))
	require.Len(t, f.replies(t), 1, "rolled back with the transaction")

	require.NoError(t, pgx.BeginFunc(ctx, f.schema.Pool, func(tx pgx.Tx) error {
		_, err := f.p.HandleTx(ctx, tx, redeliver(t, again))
		return err
	}))
	require.Len(t, f.replies(t), 2)
}

// A refused action sent again is not answered: nothing was the first time,
// and the orchestrator has moved on to the compensation.
func TestResentRefusedActionGetsNoReply(t *testing.T) {
	t.Parallel()
	f := setup(t)
	require.Equal(t, participant.EmptyCompensation, handle(t, f.p, command(t, cmdOpts{sagaID: "s1", phase: saga.PhaseCompensation})))
	require.Equal(t, participant.Refused, handle(t, f.p, command(t, cmdOpts{sagaID: "s1"})))
	require.Equal(t, participant.Duplicate, handle(t, f.p, command(t, cmdOpts{sagaID: "s1", attempt: 2})))
	require.Len(t, f.replies(t), 1, "only the compensation's reply")
	requireRepeated(t, f.p, "refused", 1)
	requireRepeated(t, f.p, "resent", 0)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Barrier rows written before replies were recorded: an action sent again
// is answered with nothing (its reply cannot be rebuilt, its handler must
// not run twice), logged and counted; a compensation sent again is answered
// as before, with its success reply and the empty data.
func TestResentCommandOfARowWithoutRecordedReply(t *testing.T) {
	t.Parallel()
	f := setup(t)
	var logs syncBuffer
	p, err := participant.New(f.schema.Pool, participant.Config{
		Name: "stock", Schema: f.schema.Name, Outbox: f.ob,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	require.NoError(t, err)
	var actions int
	p.Action(reserveType, func(context.Context, pgx.Tx, participant.Command) (participant.Reply, error) {
		actions++
		return participant.Reply{Type: reservedType, Data: map[string]int{"reserved": 3}}, nil
	})
	p.Compensation(releaseType, releasedType, func(context.Context, pgx.Tx, participant.Command) (any, error) {
		return map[string]string{"released": "yes"}, nil
	}, func(participant.Command) any { return map[string]string{"released": "nothing"} })

	require.Equal(t, participant.Applied, handle(t, p, command(t, cmdOpts{sagaID: "s1"})))
	require.Equal(t, participant.Compensated, handle(t, p, command(t, cmdOpts{sagaID: "s1", phase: saga.PhaseCompensation})))
	// As an earlier release left them.
	_, err = f.schema.Pool.Exec(t.Context(), `UPDATE saga_barrier SET reply_headers = NULL, reply_payload = NULL`)
	require.NoError(t, err)

	again := command(t, cmdOpts{sagaID: "s1", attempt: 2})
	require.Equal(t, participant.Duplicate, handle(t, p, again))
	require.Len(t, f.replies(t), 2, "nothing to re-send")
	require.Equal(t, 1, actions)
	requireRepeated(t, p, "not_recorded", 1)
	var line map[string]any
	require.NoError(t, json.Unmarshal([]byte(logs.String()), &line), "one log line: %s", logs.String())
	require.Equal(t, "WARN", line["level"])
	require.Equal(t, "s1", line["saga_id"])
	require.Equal(t, again.UUID, line["command_id"])

	require.Equal(t, participant.Duplicate, handle(t, p, command(t, cmdOpts{sagaID: "s1", phase: saga.PhaseCompensation, attempt: 2})))
	replies := f.replies(t)
	require.Len(t, replies, 3)
	require.Equal(t, releasedType, replies[2].Headers[messaging.HeaderType])
	require.JSONEq(t, `{"released":"nothing"}`, string(replies[2].Payload))
	requireRepeated(t, p, "resent", 1)
}
