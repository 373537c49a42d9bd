package orchestrator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

// replica is an orchestrator of the fixture's schema with a registry, a
// log and metrics of its own.
type replica struct {
	o    *orchestrator.Orchestrator
	reg  *prometheus.Registry
	logs *logBuffer
}

// replica starts an orchestrator holding defs on the fixture's schema.
func (f *fixture) replica(defs ...*saga.Definition) *replica {
	f.t.Helper()
	reg, err := saga.NewRegistry(defs...)
	require.NoError(f.t, err)
	r := &replica{reg: prometheus.NewRegistry(), logs: &logBuffer{}}
	r.o, err = orchestrator.New(f.schema.Pool, orchestrator.Config{
		Schema: f.schema.Name, Definitions: reg, ScanInterval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(r.logs, nil)), Registerer: r.reg,
	})
	require.NoError(f.t, err)
	f.run(r.o)
	return r
}

// inputs returns dtx_saga_inputs_total{kind, outcome}.
func (r *replica) inputs(t *testing.T, kind, outcome string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "dtx_saga_inputs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == kind && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// warnings returns the replica's WARN lines whose message contains msg.
func (r *replica) warnings(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(r.logs.String()) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m))
		if m["level"] == "WARN" && strings.Contains(m["msg"].(string), msg) {
			out = append(out, m)
		}
	}
	return out
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// handleReply hands env to o as the subscriber of the reply topic would,
// with ctx as the message's context.
func handleReply(ctx context.Context, t *testing.T, o *orchestrator.Orchestrator, env *messaging.Envelope) error {
	t.Helper()
	msg, err := env.ToMessage()
	require.NoError(t, err)
	msg.Metadata.Set(messaging.MetadataKafkaTopic, saga.DefaultReplyTopic)
	msg.SetContext(ctx)
	return o.Handle(msg)
}

func shopV2() *saga.Definition {
	return shopDefinition(func(d *saga.Definition) { d.Version = 2 })
}

// A reply handled by a replica without its saga's definition version is
// neither applied nor recorded, and the error says to deliver it again:
// delivered again, with the same message id, to a replica with the version,
// it is applied.
func TestReplyNotAppliedIsAppliedWhenDeliveredAgain(t *testing.T) {
	t.Parallel()
	f := &fixture{t: t, schema: pgtest.NewSchema(t)}
	current := f.replica(shopDefinition(nil), shopV2())
	previous := f.replica(shopDefinition(nil))
	f.o = current.o
	_, err := current.o.Start(context.Background(), nil, "shop", "o-1", map[string]any{"order_id": "o-1"}, orchestrator.StartParams{})
	require.NoError(t, err)
	reserve := f.oneCommand()
	reserved := replyMessage(t, reserve, "inv.reserved", nil)

	// The message's context ends while the replica waits for the version
	// (its partition goes to another replica).
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err = handleReply(ctx, t, previous.o, reserved)
	require.ErrorIs(t, err, orchestrator.ErrUnknownDefinition)
	require.True(t, messaging.IsRetryable(err), "a fault of the environment: delivered again, never dead-lettered: %v", err)
	require.Equal(t, "reserve", f.show("o-1").Step, "not applied")
	require.Empty(t, f.records())
	require.GreaterOrEqual(t, previous.inputs(t, "reply", "unknown_definition"), 2.0, "tried again, and counted")
	require.Len(t, previous.warnings(t, "definition version"), 1, "warned once (rate-limited)")

	require.NoError(t, handleReply(context.Background(), t, current.o, reserved), "the same message again")
	require.Equal(t, "charge", f.show("o-1").Step, "applied")
	require.Equal(t, "pay.charge", f.oneCommand().Type)
	require.InDelta(t, 1, current.inputs(t, "reply", "applied"), 0)
}

// A reply for a saga that does not exist is a fault of the record: it fails
// with a permanent error (dead-lettered), is logged and counted, and is not
// recorded, so that its replay from the dead-letter topic is applied should
// the saga exist by then.
func TestReplyForNoSagaIsDeadLetteredAndAppliedOnReplay(t *testing.T) {
	t.Parallel()
	f := &fixture{t: t, schema: pgtest.NewSchema(t)}
	r := f.replica(shopDefinition(nil))
	f.o = r.o
	reply := func(id string) *messaging.Envelope {
		return replyMessage(t, record{SagaID: id, Step: "reserve", Phase: string(saga.PhaseAction), Attempt: 1}, "inv.reserved", nil)
	}
	early := reply("o-2")
	for _, env := range []*messaging.Envelope{early, reply("o-3"), reply("o-4")} {
		err := handleReply(context.Background(), t, r.o, env)
		require.ErrorIs(t, err, orchestrator.ErrUnknownSaga)
		require.True(t, messaging.IsPermanent(err), "dead-lettered: %v", err)
	}
	require.InDelta(t, 3, r.inputs(t, "reply", "unknown_saga"), 0, "counted")
	warns := r.warnings(t, "reply for no saga")
	require.Len(t, warns, 1, "logged, rate-limited")
	require.Equal(t, "o-2", warns[0]["saga_id"])
	require.Equal(t, early.ID, warns[0]["message_id"])
	require.Equal(t, saga.DefaultReplyTopic, warns[0]["topic"])

	_, err := r.o.Start(context.Background(), nil, "shop", "o-2", map[string]any{"order_id": "o-2"}, orchestrator.StartParams{})
	require.NoError(t, err)
	require.Equal(t, "inv.reserve", f.oneCommand().Type)
	require.NoError(t, handleReply(context.Background(), t, r.o, early), "the replay from the dead-letter topic")
	require.Equal(t, "charge", f.show("o-2").Step, "applied, not a duplicate")
}
