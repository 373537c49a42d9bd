package saga_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/saga"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// testDef: a (compensable, 2 compensation attempts), b (no compensation,
// reply stored under "b"), c (compensable, key from data). Saga timeout
// 10m; actions 30s, 3 attempts, backoff 1s doubling.
func testDef(t testing.TB) *saga.Definition {
	t.Helper()
	def := &saga.Definition{
		Name:    "test",
		Version: 1,
		Timeout: 10 * time.Minute,
		Steps: []saga.Step{
			{
				Name:    "a",
				Action:  saga.Command{Topic: "ta", Type: "a.do", Payload: map[string]any{"id": "$saga.id", "x": "$.x"}},
				Success: []string{"a.ok"}, Failure: []string{"a.no"},
				Compensation: &saga.Compensation{
					Command: saga.Command{Topic: "ta", Type: "a.undo", Payload: map[string]any{"x": "$.x"}},
					Success: []string{"a.undone"}, Failure: []string{"a.undo_failed"},
					Retry: saga.RetryPolicy{Attempts: 2},
				},
			},
			{
				Name:    "b",
				Action:  saga.Command{Topic: "tb", Type: "b.do"},
				Success: []string{"b.ok"}, Failure: []string{"b.no"},
				ReplyInto: "b",
			},
			{
				Name:    "c",
				Action:  saga.Command{Topic: "tc", Type: "c.do", Key: "$.key", Payload: map[string]any{"b": "$.b.v"}},
				Success: []string{"c.ok"}, Failure: []string{"c.no"},
				Compensation: &saga.Compensation{
					Command: saga.Command{Topic: "tc", Type: "c.undo"},
					Success: []string{"c.undone"}, Failure: []string{"c.undo_failed"},
				},
			},
		},
	}
	def.SetDefaults()
	require.NoError(t, def.Validate())
	return def
}

func base(status saga.Status) saga.State {
	return saga.State{
		ID: "s1", Definition: "test", Version: 1, CorrelationID: "c1", Status: status,
		Data: map[string]any{"x": 1, "key": "k1", "b": map[string]any{"v": "bv"}}, StartedAt: t0, UpdatedAt: t0,
	}
}

// running: the action of step i, attempt n, sent at t0.
func running(i, n int) saga.State {
	s := base(saga.StatusRunning)
	s.Step, s.Attempt = i, n
	s.StepDeadline = t0.Add(30 * time.Second)
	s.Deadline = t0.Add(10 * time.Minute)
	return s
}

// backingOff: step i's attempt n timed out; n+1 is due at t0+1s.
func backingOff(i, n int) saga.State {
	s := running(i, n)
	s.StepDeadline = time.Time{}
	s.RetryAt = t0.Add(time.Second)
	return s
}

// compensating: the compensation of pending[0], attempt n, sent at t0.
func compensating(n int, pending ...int) saga.State {
	s := base(saga.StatusCompensating)
	s.Step = 2
	s.Attempt = n
	s.Pending = pending
	s.Reason = "step c failed: c.no"
	s.StepDeadline = t0.Add(30 * time.Second)
	s.Deadline = t0.Add(10 * time.Minute)
	return s
}

func compBackingOff(n int, pending ...int) saga.State {
	s := compensating(n, pending...)
	s.StepDeadline = time.Time{}
	s.RetryAt = t0.Add(time.Second)
	return s
}

func parked(pending ...int) saga.State {
	s := base(saga.StatusFailed)
	s.Step = 2
	s.Attempt = 2
	s.Pending = pending
	s.Reason = "compensation of step a failed after 2 attempts: timeout"
	return s
}

func terminal(status saga.Status) saga.State {
	s := base(status)
	s.Reason = "r"
	if status == saga.StatusCompleted {
		s.Step = 3
		s.Reason = ""
	}
	return s
}

func reply(step string, n int, phase saga.Phase, typ string) saga.Reply {
	return saga.Reply{Step: step, Attempt: n, Phase: phase, Type: typ}
}

func act(step string, n int, typ string) saga.Reply { return reply(step, n, saga.PhaseAction, typ) }
func comp(step string, n int, typ string) saga.Reply {
	return reply(step, n, saga.PhaseCompensation, typ)
}

// cmdStrings renders commands as "phase:step#attempt".
func cmdStrings(cs []saga.OutCommand) []string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%s:%s#%d", c.Phase, c.Step, c.Attempt))
	}
	return out
}

func eventTypes(es []saga.LifecycleEvent) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Type)
	}
	return out
}

func outcomes(hs []saga.HistoryEntry) []string {
	var out []string
	for _, h := range hs {
		out = append(out, string(h.Outcome))
	}
	return out
}

func TestTransition(t *testing.T) {
	t.Parallel()
	def := testDef(t)
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

	type want struct {
		ignored  bool
		status   saga.Status
		step     int
		attempt  int
		pending  []int
		cmds     []string
		events   []string
		history  []string
		wake     time.Time
		reason   string
		retryAt  time.Time
		deadline time.Time // StepDeadline
	}
	for _, tc := range []struct {
		name string
		in   saga.State
		inp  saga.Input
		now  time.Time
		want want
	}{
		// Start.
		{"start", saga.State{}, saga.Start{ID: "s1", CorrelationID: "c1", Data: map[string]any{"x": 1}}, t0, want{
			status: saga.StatusRunning, step: 0, attempt: 1, cmds: []string{"action:a#1"},
			events: []string{saga.EventStarted}, history: []string{"started", "sent"},
			wake: sec(30), deadline: sec(30),
		}},
		// Action replies while Running.
		{"success merges and sends the next step", running(0, 1), act("a", 1, "a.ok"), sec(5), want{
			status: saga.StatusRunning, step: 1, attempt: 1, cmds: []string{"action:b#1"},
			events: []string{saga.EventStepCompleted}, history: []string{"succeeded", "sent"},
			wake: sec(35), deadline: sec(35),
		}},
		{"success of an earlier attempt is accepted", running(0, 3), act("a", 1, "a.ok"), sec(5), want{
			status: saga.StatusRunning, step: 1, attempt: 1, cmds: []string{"action:b#1"},
			events: []string{saga.EventStepCompleted}, history: []string{"succeeded", "sent"}, wake: sec(35), deadline: sec(35),
		}},
		{"success while backing off is accepted", backingOff(0, 1), act("a", 1, "a.ok"), sec(5), want{
			status: saga.StatusRunning, step: 1, attempt: 1, cmds: []string{"action:b#1"},
			events: []string{saga.EventStepCompleted}, history: []string{"succeeded", "sent"}, wake: sec(35), deadline: sec(35),
		}},
		{"success of the last step completes", running(2, 1), act("c", 1, "c.ok"), sec(5), want{
			status: saga.StatusCompleted, step: 3, attempt: 0,
			events:  []string{saga.EventStepCompleted, saga.EventCompleted},
			history: []string{"succeeded", "completed"},
		}},
		{"failure compensates the steps before", running(2, 1), act("c", 1, "c.no"), sec(5), want{
			status: saga.StatusCompensating, step: 2, attempt: 1, pending: []int{0}, cmds: []string{"compensation:a#1"},
			events:  []string{saga.EventStepFailed, saga.EventCompensating},
			history: []string{"failed", "sent"}, reason: "step c failed: c.no", wake: sec(35), deadline: sec(35),
		}},
		{"failure of the first step is compensated at once", running(0, 2), act("a", 1, "a.no"), sec(5), want{
			status: saga.StatusCompensated, step: 0, attempt: 0,
			events:  []string{saga.EventStepFailed, saga.EventCompensating, saga.EventCompensated},
			history: []string{"failed", "compensated"}, reason: "step a failed: a.no",
		}},
		{"unknown reply type is ignored", running(0, 1), act("a", 1, "a.what"), sec(5), want{ignored: true}},
		{"reply for another step is ignored", running(1, 1), act("a", 1, "a.ok"), sec(5), want{ignored: true}},
		{"reply with the compensation phase is ignored", running(0, 1), comp("a", 1, "a.ok"), sec(5), want{ignored: true}},
		{"reply to a future attempt is ignored", running(0, 1), act("a", 2, "a.ok"), sec(5), want{ignored: true}},
		{"reply to attempt 0 is ignored", running(0, 1), act("a", 0, "a.ok"), sec(5), want{ignored: true}},
		{"reply to a completed saga is ignored", terminal(saga.StatusCompleted), act("c", 1, "c.ok"), sec(5), want{ignored: true}},
		{"reply to a compensated saga is ignored", terminal(saga.StatusCompensated), comp("a", 1, "a.undone"), sec(5), want{ignored: true}},
		{"reply to a parked saga is ignored", parked(0), comp("a", 1, "a.undone"), sec(5), want{ignored: true}},

		// Ticks while Running.
		{"early tick is ignored", running(0, 1), saga.Tick{}, sec(29), want{ignored: true}},
		{"step timeout schedules a retry", running(0, 1), saga.Tick{}, sec(30), want{
			status: saga.StatusRunning, step: 0, attempt: 1, history: []string{"timed_out", "retry_scheduled"},
			retryAt: sec(31), wake: sec(31),
		}},
		{"second timeout backs off twice as long", running(0, 2), saga.Tick{}, sec(30), want{
			status: saga.StatusRunning, step: 0, attempt: 2, history: []string{"timed_out", "retry_scheduled"},
			retryAt: sec(32), wake: sec(32),
		}},
		{"due retry re-sends the action", backingOff(0, 1), saga.Tick{}, sec(1), want{
			status: saga.StatusRunning, step: 0, attempt: 2, cmds: []string{"action:a#2"}, history: []string{"sent"},
			deadline: sec(31), wake: sec(31),
		}},
		{"early tick while backing off is ignored", backingOff(0, 1), saga.Tick{}, t0, want{ignored: true}},
		{"last attempt timing out compensates the step too", running(2, 3), saga.Tick{}, sec(30), want{
			status: saga.StatusCompensating, step: 2, attempt: 1, pending: []int{2, 0}, cmds: []string{"compensation:c#1"},
			events:  []string{saga.EventStepFailed, saga.EventCompensating},
			history: []string{"timed_out", "sent"}, reason: "step c timed out after 3 attempts", deadline: sec(60), wake: sec(60),
		}},
		{"step without compensation timing out compensates those before", running(1, 3), saga.Tick{}, sec(30), want{
			status: saga.StatusCompensating, step: 1, attempt: 1, pending: []int{0}, cmds: []string{"compensation:a#1"},
			events:  []string{saga.EventStepFailed, saga.EventCompensating},
			history: []string{"timed_out", "sent"}, reason: "step b timed out after 3 attempts", deadline: sec(60), wake: sec(60),
		}},
		{"saga deadline compensates including the current step", backingOff(2, 1), saga.Tick{}, t0.Add(10 * time.Minute), want{
			status: saga.StatusCompensating, step: 2, attempt: 1, pending: []int{2, 0}, cmds: []string{"compensation:c#1"},
			events: []string{saga.EventCompensating}, history: []string{"timed_out", "sent"}, reason: "saga timed out",
			deadline: t0.Add(10*time.Minute + 30*time.Second), wake: t0.Add(10*time.Minute + 30*time.Second),
		}},
		{"saga deadline beats the step deadline", running(0, 1), saga.Tick{}, t0.Add(time.Hour), want{
			status: saga.StatusCompensating, step: 0, attempt: 1, pending: []int{0}, cmds: []string{"compensation:a#1"},
			events: []string{saga.EventCompensating}, history: []string{"timed_out", "sent"}, reason: "saga timed out",
			deadline: t0.Add(time.Hour + 30*time.Second), wake: t0.Add(time.Hour + 30*time.Second),
		}},
		{"tick on a terminal saga is ignored", terminal(saga.StatusCompensated), saga.Tick{}, t0.Add(time.Hour), want{ignored: true}},
		{"tick on a parked saga is ignored", parked(0), saga.Tick{}, t0.Add(time.Hour), want{ignored: true}},

		// Compensating.
		{"compensation success pops and sends the next", compensating(1, 2, 0), comp("c", 1, "c.undone"), sec(5), want{
			status: saga.StatusCompensating, step: 2, attempt: 1, pending: []int{0}, cmds: []string{"compensation:a#1"},
			history: []string{"succeeded", "sent"}, reason: "step c failed: c.no", deadline: sec(35), wake: sec(35),
		}},
		{"last compensation success compensates", compensating(2, 0), comp("a", 1, "a.undone"), sec(5), want{
			status: saga.StatusCompensated, step: 2, attempt: 0, events: []string{saga.EventCompensated},
			history: []string{"succeeded", "compensated"}, reason: "step c failed: c.no",
		}},
		{"compensation success while backing off", compBackingOff(1, 0), comp("a", 1, "a.undone"), sec(5), want{
			status: saga.StatusCompensated, step: 2, events: []string{saga.EventCompensated},
			history: []string{"succeeded", "compensated"}, reason: "step c failed: c.no",
		}},
		{"compensation failure schedules a retry", compensating(1, 0), comp("a", 1, "a.undo_failed"), sec(5), want{
			status: saga.StatusCompensating, step: 2, attempt: 1, pending: []int{0}, history: []string{"failed", "retry_scheduled"},
			reason: "step c failed: c.no", retryAt: sec(6), wake: sec(6),
		}},
		{"compensation failure of the last attempt parks", compensating(2, 0), comp("a", 2, "a.undo_failed"), sec(5), want{
			status: saga.StatusFailed, step: 2, attempt: 2, pending: []int{0}, events: []string{saga.EventFailed},
			history: []string{"failed", "parked"}, reason: "compensation of step a failed after 2 attempts: a.undo_failed",
		}},
		{"compensation failure of an earlier attempt is ignored", compensating(2, 0), comp("a", 1, "a.undo_failed"), sec(5), want{ignored: true}},
		{"compensation failure while backing off is ignored", compBackingOff(1, 0), comp("a", 1, "a.undo_failed"), sec(5), want{ignored: true}},
		{"compensation timeout schedules a retry", compensating(1, 2, 0), saga.Tick{}, sec(30), want{
			status: saga.StatusCompensating, step: 2, attempt: 1, pending: []int{2, 0}, history: []string{"timed_out", "retry_scheduled"},
			reason: "step c failed: c.no", retryAt: sec(31), wake: sec(31),
		}},
		{"compensation timeout of the last attempt parks", compensating(2, 0), saga.Tick{}, sec(30), want{
			status: saga.StatusFailed, step: 2, attempt: 2, pending: []int{0}, events: []string{saga.EventFailed},
			history: []string{"timed_out", "parked"}, reason: "compensation of step a failed after 2 attempts: timeout",
		}},
		{"due compensation retry re-sends", compBackingOff(1, 0), saga.Tick{}, sec(1), want{
			status: saga.StatusCompensating, step: 2, attempt: 2, pending: []int{0}, cmds: []string{"compensation:a#2"},
			history: []string{"sent"}, reason: "step c failed: c.no", deadline: sec(31), wake: sec(31),
		}},
		{"saga deadline does not apply while compensating", compBackingOff(1, 0), saga.Tick{}, t0.Add(10 * time.Minute), want{
			status: saga.StatusCompensating, step: 2, attempt: 2, pending: []int{0}, cmds: []string{"compensation:a#2"},
			history: []string{"sent"}, reason: "step c failed: c.no",
			deadline: t0.Add(10*time.Minute + 30*time.Second), wake: t0.Add(10*time.Minute + 30*time.Second),
		}},
		{"early tick while compensating is ignored", compensating(1, 0), saga.Tick{}, sec(29), want{ignored: true}},
		{"compensation reply for another step is ignored", compensating(1, 2, 0), comp("a", 1, "a.undone"), sec(5), want{ignored: true}},
		{"action reply while compensating is ignored", compensating(1, 2, 0), act("c", 1, "c.ok"), sec(5), want{ignored: true}},
		{"compensation reply to a future attempt is ignored", compensating(1, 0), comp("a", 2, "a.undone"), sec(5), want{ignored: true}},
		{"unknown compensation reply type is ignored", compensating(1, 0), comp("a", 1, "a.huh"), sec(5), want{ignored: true}},

		// Operators.
		{"retry on a parked saga resumes compensation", parked(0), saga.Retry{Reason: "fixed"}, sec(5), want{
			status: saga.StatusCompensating, step: 2, attempt: 1, pending: []int{0}, cmds: []string{"compensation:a#1"},
			events: []string{saga.EventCompensating}, history: []string{"operator", "sent"},
			reason: "compensation of step a failed after 2 attempts: timeout", deadline: sec(35), wake: sec(35),
		}},
		{"retry on an aborted saga is ignored", terminal(saga.StatusFailed), saga.Retry{}, sec(5), want{ignored: true}},
		{"retry on a running saga re-sends now", running(0, 3), saga.Retry{}, sec(5), want{
			status: saga.StatusRunning, step: 0, attempt: 4, cmds: []string{"action:a#4"}, history: []string{"operator", "sent"},
			deadline: sec(35), wake: sec(35),
		}},
		{"retry while backing off re-sends now", backingOff(1, 1), saga.Retry{}, t0, want{
			status: saga.StatusRunning, step: 1, attempt: 2, cmds: []string{"action:b#2"}, history: []string{"operator", "sent"},
			deadline: sec(30), wake: sec(30),
		}},
		{"retry on a compensating saga re-sends now", compBackingOff(1, 2, 0), saga.Retry{}, sec(5), want{
			status: saga.StatusCompensating, step: 2, attempt: 2, pending: []int{2, 0}, cmds: []string{"compensation:c#2"},
			history: []string{"operator", "sent"}, reason: "step c failed: c.no", deadline: sec(35), wake: sec(35),
		}},
		{"retry on a completed saga is ignored", terminal(saga.StatusCompleted), saga.Retry{}, sec(5), want{ignored: true}},
		{"retry on a compensated saga is ignored", terminal(saga.StatusCompensated), saga.Retry{}, sec(5), want{ignored: true}},
		{"abort running", running(2, 1), saga.Abort{Reason: "bad order"}, sec(5), want{
			status: saga.StatusFailed, step: 2, attempt: 1, events: []string{saga.EventFailed}, history: []string{"aborted"},
			reason: "aborted: bad order",
		}},
		{"abort compensating drops pending", compensating(1, 2, 0), saga.Abort{}, sec(5), want{
			status: saga.StatusFailed, step: 2, attempt: 1, events: []string{saga.EventFailed}, history: []string{"aborted"},
			reason: "aborted",
		}},
		{"abort on a parked saga is ignored", parked(0), saga.Abort{}, sec(5), want{ignored: true}},
		{"abort on a completed saga is ignored", terminal(saga.StatusCompleted), saga.Abort{}, sec(5), want{ignored: true}},
		{"compensate running includes the current step", running(2, 1), saga.Compensate{Reason: "customer"}, sec(5), want{
			status: saga.StatusCompensating, step: 2, attempt: 1, pending: []int{2, 0}, cmds: []string{"compensation:c#1"},
			events: []string{saga.EventCompensating}, history: []string{"operator", "sent"},
			reason: "compensation forced: customer", deadline: sec(35), wake: sec(35),
		}},
		{"compensate running at a step without compensation", running(1, 1), saga.Compensate{}, sec(5), want{
			status: saga.StatusCompensating, step: 1, attempt: 1, pending: []int{0}, cmds: []string{"compensation:a#1"},
			events: []string{saga.EventCompensating}, history: []string{"operator", "sent"},
			reason: "compensation forced", deadline: sec(35), wake: sec(35),
		}},
		{"compensate on a parked saga is retry", parked(2, 0), saga.Compensate{}, sec(5), want{
			status: saga.StatusCompensating, step: 2, attempt: 1, pending: []int{2, 0}, cmds: []string{"compensation:c#1"},
			events: []string{saga.EventCompensating}, history: []string{"operator", "sent"},
			reason: "compensation of step a failed after 2 attempts: timeout", deadline: sec(35), wake: sec(35),
		}},
		{"compensate while compensating is ignored", compensating(1, 0), saga.Compensate{}, sec(5), want{ignored: true}},
		{"compensate on an aborted saga is ignored", terminal(saga.StatusFailed), saga.Compensate{}, sec(5), want{ignored: true}},
		{"compensate on a compensated saga is ignored", terminal(saga.StatusCompensated), saga.Compensate{}, sec(5), want{ignored: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.in.ID != "" {
				require.NoError(t, tc.in.Check(def), "test state")
			}
			before, err := json.Marshal(tc.in)
			require.NoError(t, err)
			res, err := saga.Transition(def, tc.in, tc.inp, tc.now)
			require.NoError(t, err)
			after, err := json.Marshal(tc.in)
			require.NoError(t, err)
			require.JSONEq(t, string(before), string(after), "the input state was modified")
			require.NoError(t, res.State.Check(def))
			w := tc.want
			if w.ignored {
				require.True(t, res.Ignored)
				require.Equal(t, tc.in, res.State)
				require.Empty(t, res.Commands)
				require.Empty(t, res.Events)
				require.Empty(t, res.History)
				return
			}
			require.False(t, res.Ignored)
			s := res.State
			require.Equal(t, w.status, s.Status)
			require.Equal(t, w.step, s.Step, "step")
			require.Equal(t, w.attempt, s.Attempt, "attempt")
			require.Equal(t, w.pending, s.Pending, "pending")
			require.Equal(t, w.cmds, cmdStrings(res.Commands), "commands")
			require.Equal(t, w.events, eventTypes(res.Events), "events")
			require.Equal(t, w.history, outcomes(res.History), "history")
			require.Equal(t, w.wake, s.WakeAt(), "wake")
			require.Equal(t, w.reason, s.Reason, "reason")
			require.Equal(t, w.retryAt, s.RetryAt, "retry at")
			require.Equal(t, w.deadline, s.StepDeadline, "step deadline")
			require.Equal(t, tc.now, s.UpdatedAt)
			for _, h := range res.History {
				require.Equal(t, tc.now, h.At)
			}
			for _, e := range res.Events {
				require.True(t, e.Status.Valid())
			}
			require.Equal(t, w.status.Terminal(), s.WakeAt().IsZero())
		})
	}
}

func TestTransitionStartDetails(t *testing.T) {
	t.Parallel()
	def := testDef(t)
	data := map[string]any{"x": 7}
	res, err := saga.Transition(def, saga.State{}, saga.Start{ID: "s9", Data: data}, t0)
	require.NoError(t, err)
	s := res.State
	require.Equal(t, "s9", s.CorrelationID, "the correlation id defaults to the saga id")
	require.Equal(t, "test", s.Definition)
	require.Equal(t, 1, s.Version)
	require.Equal(t, t0.Add(10*time.Minute), s.Deadline)
	require.Equal(t, t0, s.StartedAt)
	require.Equal(t, []saga.OutCommand{{
		Step: "a", StepIndex: 0, Phase: saga.PhaseAction, Attempt: 1, Topic: "ta", Type: "a.do", Key: "s9",
		Payload: map[string]any{"id": "s9", "x": 7},
	}}, res.Commands)
	require.Equal(t, []saga.LifecycleEvent{{Type: saga.EventStarted, Status: saga.StatusRunning}}, res.Events)
	require.Equal(t, saga.PhaseAction, s.Phase())
	require.Equal(t, "a", s.StepName(def))

	data["x"] = 8
	require.Equal(t, 7, s.Data["x"], "Start copies the data")

	_, err = saga.Transition(def, s, saga.Start{ID: "s9"}, t0)
	require.ErrorIs(t, err, saga.ErrAlreadyStarted)
}

func TestTransitionReplyData(t *testing.T) {
	t.Parallel()
	def := testDef(t)
	// Step a merges top-level keys.
	in := running(0, 1)
	res, err := saga.Transition(def, in, saga.Reply{Step: "a", Attempt: 1, Phase: saga.PhaseAction, Type: "a.ok",
		Data: map[string]any{"x": 2, "new": "n"}}, t0)
	require.NoError(t, err)
	require.Equal(t, 2, res.State.Data["x"])
	require.Equal(t, "n", res.State.Data["new"])
	require.Equal(t, 1, in.Data["x"], "the input data is not modified")
	// The whole data is the payload of b (nil payload).
	require.Equal(t, res.State.Data, res.Commands[0].Payload)

	// Step b stores its reply under "b"; c's key comes from data.
	res, err = saga.Transition(def, res.State, saga.Reply{Step: "b", Attempt: 1, Phase: saga.PhaseAction, Type: "b.ok",
		Data: map[string]any{"v": "from-b"}}, t0)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"v": "from-b"}, res.State.Data["b"])
	require.Equal(t, "k1", res.Commands[0].Key)
	require.Equal(t, map[string]any{"b": "from-b"}, res.Commands[0].Payload)
}

func TestTransitionMappingErrorParks(t *testing.T) {
	t.Parallel()
	def := testDef(t)
	// Step c's key needs $.key.
	in := running(1, 1)
	delete(in.Data, "key")
	res, err := saga.Transition(def, in, act("b", 1, "b.ok"), t0)
	require.NoError(t, err)
	s := res.State
	require.Equal(t, saga.StatusFailed, s.Status)
	require.Equal(t, 2, s.Step)
	require.Empty(t, s.Pending)
	require.Contains(t, s.Reason, `step c`)
	require.Contains(t, s.Reason, `"$.key"`)
	require.Empty(t, res.Commands)
	require.Equal(t, []string{saga.EventStepCompleted, saga.EventFailed}, eventTypes(res.Events))
	require.True(t, s.WakeAt().IsZero())
	require.NoError(t, s.Check(def))
	require.Equal(t, "c", s.StepName(def))
	// Nothing pending: retry and compensate are ignored.
	for _, in := range []saga.Input{saga.Retry{}, saga.Compensate{}} {
		r, err := saga.Transition(def, s, in, t0)
		require.NoError(t, err)
		require.True(t, r.Ignored)
	}

	// At start.
	res, err = saga.Transition(def, saga.State{}, saga.Start{ID: "s2", Data: map[string]any{}}, t0)
	require.NoError(t, err)
	require.Equal(t, saga.StatusFailed, res.State.Status)
	require.Equal(t, []string{saga.EventStarted, saga.EventFailed}, eventTypes(res.Events))
	require.Contains(t, res.State.Reason, `"$.x"`)
	require.NoError(t, res.State.Check(def))

	// In a compensation: the saga parks with its pending steps kept.
	in = running(0, 1)
	delete(in.Data, "x")
	in.Data["x"] = 1
	res, err = saga.Transition(def, in, act("a", 1, "a.ok"), t0)
	require.NoError(t, err)
	s = res.State
	delete(s.Data, "x")
	res, err = saga.Transition(def, s, saga.Compensate{}, t0)
	require.NoError(t, err)
	require.Equal(t, saga.StatusFailed, res.State.Status)
	require.Equal(t, []int{0}, res.State.Pending)
	require.Equal(t, saga.PhaseCompensation, res.State.Phase())
	require.Equal(t, "a", res.State.StepName(def))
	require.Equal(t, []string{saga.EventCompensating, saga.EventFailed}, eventTypes(res.Events))
	require.NoError(t, res.State.Check(def))
}

func TestTransitionProgrammingErrors(t *testing.T) {
	t.Parallel()
	def := testDef(t)
	_, err := saga.Transition(nil, running(0, 1), saga.Tick{}, t0)
	require.Error(t, err)
	_, err = saga.Transition(def, saga.State{}, saga.Tick{}, t0)
	require.ErrorIs(t, err, saga.ErrNotStarted)
	_, err = saga.Transition(def, saga.State{}, saga.Start{}, t0)
	require.Error(t, err)
	other := running(0, 1)
	other.Version = 2
	_, err = saga.Transition(def, other, saga.Tick{}, t0)
	require.ErrorIs(t, err, saga.ErrInvalidState)
	broken := running(0, 1)
	broken.Step = 9
	_, err = saga.Transition(def, broken, saga.Tick{}, t0)
	require.ErrorIs(t, err, saga.ErrInvalidState)
	_, err = saga.Transition(def, running(0, 1), nil, t0)
	require.Error(t, err)
}

func TestStateJSON(t *testing.T) {
	t.Parallel()
	def := testDef(t)
	s := compBackingOff(1, 2, 0)
	b, err := json.Marshal(s)
	require.NoError(t, err)
	require.Contains(t, string(b), `"correlation_id":"c1"`)
	require.Contains(t, string(b), `"retry_at":"2026-01-02T03:04:06Z"`)
	require.NotContains(t, string(b), `step_deadline`)
	var back saga.State
	require.NoError(t, json.Unmarshal(b, &back))
	require.NoError(t, back.Check(def))
	require.Equal(t, s.WakeAt(), back.WakeAt())
	require.Equal(t, s.Pending, back.Pending)
	// A state restored from JSON keeps working.
	res, err := saga.Transition(def, back, saga.Tick{}, t0.Add(time.Second))
	require.NoError(t, err)
	require.Equal(t, []string{"compensation:c#2"}, cmdStrings(res.Commands))
}

func TestRetryPolicyDelay(t *testing.T) {
	t.Parallel()
	p := saga.RetryPolicy{Attempts: 5, Backoff: time.Second, Multiplier: 2, MaxBackoff: 5 * time.Second}
	require.Equal(t, time.Second, p.Delay(0))
	require.Equal(t, time.Second, p.Delay(1))
	require.Equal(t, 2*time.Second, p.Delay(2))
	require.Equal(t, 4*time.Second, p.Delay(3))
	require.Equal(t, 5*time.Second, p.Delay(4))
	require.Equal(t, 5*time.Second, p.Delay(1000))
	require.Equal(t, 3*time.Second, saga.RetryPolicy{Backoff: 3 * time.Second, Multiplier: 1}.Delay(9))
	require.Equal(t, time.Minute, saga.RetryPolicy{}.Delay(100), "zero fields count as defaults")
}

func TestStatus(t *testing.T) {
	t.Parallel()
	for s, term := range map[saga.Status]bool{
		saga.StatusRunning: false, saga.StatusCompensating: false,
		saga.StatusCompleted: true, saga.StatusCompensated: true, saga.StatusFailed: true,
	} {
		require.Equal(t, term, s.Terminal(), s)
		require.True(t, s.Valid())
	}
	require.False(t, saga.Status("x").Valid())
	def := testDef(t)
	require.Equal(t, saga.Phase(""), terminal(saga.StatusFailed).Phase())
	require.Equal(t, saga.PhaseCompensation, parked(0).Phase())
	require.Empty(t, terminal(saga.StatusCompleted).StepName(def))
	require.Equal(t, "c", compensating(1, 2, 0).StepName(def))
}
