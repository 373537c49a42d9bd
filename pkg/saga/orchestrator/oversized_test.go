package orchestrator_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

// bigBody is saga data that makes a command carrying it larger than the
// outbox's default record limit (900 KiB).
var bigBody = strings.Repeat("x", 950*1024)

// docDefinition fetches a document (compensated by discarding it), then
// stores the whole saga data: the document fetched makes the store command
// too large.
func docDefinition() *saga.Definition {
	retry := saga.RetryPolicy{Attempts: 3, Backoff: 50 * time.Millisecond, Multiplier: 1, MaxBackoff: time.Second}
	def := &saga.Definition{
		Name: "doc", Version: 1,
		Steps: []saga.Step{
			{
				Name:    "fetch",
				Action:  saga.Command{Topic: "doc.commands", Type: "doc.fetch", Payload: map[string]any{"id": "$.doc_id"}},
				Success: []string{"doc.fetched"}, Timeout: time.Minute, Retry: retry,
				Compensation: &saga.Compensation{
					Command: saga.Command{Topic: "doc.commands", Type: "doc.discard", Payload: map[string]any{"id": "$.doc_id"}},
					Success: []string{"doc.discarded"}, Timeout: time.Minute,
				},
			},
			{
				Name:    "store",
				Action:  saga.Command{Topic: "doc.commands", Type: "doc.store"},
				Success: []string{"doc.stored"}, Timeout: 200 * time.Millisecond, Retry: retry,
			},
		},
	}
	def.SetDefaults()
	return def
}

func docFixture(t *testing.T) (*fixture, *replica) {
	t.Helper()
	f := &fixture{t: t, schema: pgtest.NewSchema(t)}
	r := f.replica(docDefinition())
	f.o = r.o
	return f, r
}

// refused returns dtx_saga_commands_refused_total{definition, reason}.
func (r *replica) refused(t *testing.T, reason string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "dtx_saga_commands_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["definition"] == "doc" && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// errorLogs returns the replica's ERROR lines whose message contains msg.
func (r *replica) errorLogs(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(r.logs.String()) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m))
		if m["level"] == "ERROR" && strings.Contains(m["msg"].(string), msg) {
			out = append(out, m)
		}
	}
	return out
}

// requireParkedTooLarge checks that saga id is Failed with a reason, in its
// state and its timeline, that says its command was too large.
func (f *fixture) requireParkedTooLarge(id string) {
	f.t.Helper()
	d := f.show(id)
	require.Equal(f.t, saga.StatusFailed, d.Status)
	require.Contains(f.t, d.Reason, "too large")
	require.Contains(f.t, d.Reason, `step "store"`)
	require.Nil(f.t, d.DueAt, "a parked saga has no timer")
	last := d.Timeline[len(d.Timeline)-1]
	require.Contains(f.t, last.Detail, "too large")
	for _, c := range commands(f.records()) {
		require.NotEqual(f.t, "doc.store", c.Type, "no part of a refused command is written")
	}
}

// A reply whose effect makes the next command too large for the outbox is a
// fault of the record, not of the environment: the saga is parked as Failed
// with the reason, in the transaction that handles the reply, which is
// recorded as applied (acked, not retried, not dead-lettered).
func TestOversizedCommandAfterAReplyParksTheSaga(t *testing.T) {
	t.Parallel()
	f, r := docFixture(t)
	ctx := context.Background()
	_, err := f.o.Start(ctx, nil, "doc", "d-1", map[string]any{"doc_id": "d-1"}, orchestrator.StartParams{})
	require.NoError(t, err)
	fetch := f.oneCommand()

	reply := replyMessage(t, fetch, "doc.fetched", map[string]any{"body": bigBody})
	err = handleReply(ctx, t, f.o, reply)
	require.NoError(t, err, "permanent: %v, to be dead-lettered after retries: %v", messaging.IsPermanent(err), err != nil)
	f.requireParkedTooLarge("d-1")
	require.InDelta(t, 1.0, r.refused(t, "too_large"), 0)
	require.InDelta(t, 1.0, r.inputs(t, "reply", "applied"), 0)
	logs := r.errorLogs(t, "cannot be written")
	require.Len(t, logs, 1)
	require.Equal(t, "d-1", logs[0]["saga_id"])

	// The reply was recorded: delivered again, it is a duplicate.
	require.NoError(t, handleReply(ctx, t, f.o, reply))
	require.InDelta(t, 1.0, r.inputs(t, "reply", "duplicate"), 0)
	require.InDelta(t, 1.0, r.refused(t, "too_large"), 0)
}

// A saga whose retry (a scheduler tick) would send a command too large is
// parked at the first tick, rather than failing every scheduler pass.
func TestOversizedCommandOnATickParksTheSaga(t *testing.T) {
	t.Parallel()
	f, r := docFixture(t)
	ctx := context.Background()
	_, err := f.o.Start(ctx, nil, "doc", "d-2", map[string]any{"doc_id": "d-2"}, orchestrator.StartParams{})
	require.NoError(t, err)
	f.reply(f.oneCommand(), "doc.fetched", nil)
	require.Equal(t, "doc.store", f.oneCommand().Type)
	// The saga's data grows past what its next attempt can carry (written,
	// say, by a release with a larger limit).
	_, err = f.schema.Pool.Exec(ctx,
		`UPDATE saga_instances SET state = jsonb_set(state, '{data,body}', to_jsonb($1::text)) WHERE id = 'd-2'`, bigBody)
	require.NoError(t, err)

	require.Eventually(t, func() bool { return f.show("d-2").Status == saga.StatusFailed }, 10*time.Second, 20*time.Millisecond,
		"the saga never parked: its ticks fail")
	f.requireParkedTooLarge("d-2")
	n, err := f.o.Tick(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "nothing is due any more")
	require.InDelta(t, 1.0, r.refused(t, "too_large"), 0)
	require.Empty(t, r.warnings(t, "scheduler pass failed"))
}

// A start whose first command is too large starts the saga parked: the
// caller (or the trigger's delivery) gets no error to retry in vain.
func TestOversizedFirstCommandStartsTheSagaParked(t *testing.T) {
	t.Parallel()
	def := docDefinition()
	def.Steps = def.Steps[1:]
	f := &fixture{t: t, schema: pgtest.NewSchema(t)}
	r := f.replica(def)
	f.o = r.o
	started, err := f.o.Start(context.Background(), nil, "doc", "d-3", map[string]any{"body": bigBody}, orchestrator.StartParams{})
	require.NoError(t, err)
	require.True(t, started)
	f.requireParkedTooLarge("d-3")
	require.InDelta(t, 1.0, r.refused(t, "too_large"), 0)
}
