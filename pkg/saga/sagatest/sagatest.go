package sagatest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/vextrus/dtx/pkg/saga"
)

// DefaultMaxSteps is how many inputs a Harness applies in one run before it
// fails the test, unless WithMaxSteps says otherwise.
const DefaultMaxSteps = 10000

// defaultStart is where the fake clock starts unless WithStart says
// otherwise.
func defaultStart() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

// Response is how a fake participant answers one command.
type Response struct {
	// Type is the reply's type.
	Type string
	// Data is the reply's payload object.
	Data map[string]any
	// After is how long after the command the reply arrives; 0 means at
	// once.
	After time.Duration
}

// Responder scripts a fake participant: given a command and how many
// commands the Responder answered before (call, from 0), it returns the
// reply, or ok false for no reply at all.
type Responder func(cmd saga.OutCommand, call int) (r Response, ok bool)

// ReplyWith answers every command at once with a reply of type typ and
// payload data.
func ReplyWith(typ string, data map[string]any) Responder {
	return ReplyAfter(0, typ, data)
}

// ReplyAfter answers every command after d with a reply of type typ and
// payload data.
func ReplyAfter(d time.Duration, typ string, data map[string]any) Responder {
	return func(saga.OutCommand, int) (Response, bool) {
		return Response{Type: typ, Data: data, After: d}, true
	}
}

// NoReply never answers: the command times out.
func NoReply() Responder {
	return func(saga.OutCommand, int) (Response, bool) { return Response{}, false }
}

// Sequence answers the nth command with the nth responder (so, within one
// step, attempt by attempt); the last one answers every command after
// that.
func Sequence(rs ...Responder) Responder {
	if len(rs) == 0 {
		return NoReply()
	}
	return func(cmd saga.OutCommand, call int) (Response, bool) {
		return rs[min(call, len(rs)-1)](cmd, call)
	}
}

// Option configures a Harness.
type Option func(*Harness)

// WithStart sets the fake clock's start. Defaults to 2026-01-01T00:00:00Z.
func WithStart(t time.Time) Option { return func(h *Harness) { h.now = t } }

// WithMaxSteps sets how many inputs one run may apply before the test
// fails. Defaults to DefaultMaxSteps; must be positive.
func WithMaxSteps(n int) Option { return func(h *Harness) { h.maxSteps = n } }

// Harness runs one saga of a definition against fake participants. It is
// not safe for concurrent use; create one per test.
type Harness struct {
	t        testing.TB
	def      *saga.Definition
	now      time.Time
	maxSteps int

	state    saga.State
	handlers map[string]*handler
	queue    []delivery
	seq      int

	sent     []saga.OutCommand
	events   []saga.LifecycleEvent
	timeline []saga.HistoryEntry
	ignored  []saga.Input
}

type handler struct {
	r     Responder
	calls int
}

type delivery struct {
	at    time.Time
	seq   int
	reply saga.Reply
}

// New returns a Harness for def. It sets def's defaults (modifying it) and
// fails the test if def is invalid.
func New(t testing.TB, def *saga.Definition, opts ...Option) *Harness {
	t.Helper()
	h := &Harness{t: t, def: def, now: defaultStart(), maxSteps: DefaultMaxSteps, handlers: map[string]*handler{}}
	for _, o := range opts {
		o(h)
	}
	if def == nil {
		t.Fatalf("sagatest: nil definition")
	}
	def.SetDefaults()
	if err := def.Validate(); err != nil {
		t.Fatalf("sagatest: invalid definition %s: %v", def.Ref(), err)
	}
	if h.maxSteps < 1 {
		t.Fatalf("sagatest: WithMaxSteps(%d): must be positive", h.maxSteps)
	}
	return h
}

// On makes commands of commandType (actions and compensations alike) be
// answered by r, replacing any earlier Responder for that type and
// resetting its call count. It returns h for chaining.
func (h *Harness) On(commandType string, r Responder) *Harness {
	h.handlers[commandType] = &handler{r: r}
	return h
}

// Start starts the saga with id and data, then runs it (RunUntilTerminal).
// The correlation id is the saga id.
func (h *Harness) Start(id string, data map[string]any) saga.State {
	h.t.Helper()
	h.Begin(id, data)
	return h.RunUntilTerminal()
}

// Begin starts the saga with id and data without running it: drive it with
// Step, Send or RunUntilTerminal.
func (h *Harness) Begin(id string, data map[string]any) saga.State {
	h.t.Helper()
	if h.state.ID != "" {
		h.t.Fatalf("sagatest: saga %s already started", h.state.ID)
	}
	h.apply(saga.Start{ID: id, Data: data})
	return h.state
}

// Send applies in at the current fake time (an operator's Retry, Abort or
// Compensate, or a Reply of your own), then runs the saga
// (RunUntilTerminal).
func (h *Harness) Send(in saga.Input) saga.State {
	h.t.Helper()
	if h.state.ID == "" {
		h.t.Fatalf("sagatest: Send before Start")
	}
	h.apply(in)
	return h.RunUntilTerminal()
}

// RunUntilTerminal delivers the scripted replies and fires the saga's
// timers, advancing the fake clock to each, until the saga is terminal or
// nothing more can happen. It fails the test after the step cap.
func (h *Harness) RunUntilTerminal() saga.State {
	h.t.Helper()
	for steps := 0; !h.state.Status.Terminal(); steps++ {
		if steps >= h.maxSteps {
			h.t.Fatalf("sagatest: saga %s still %s after %d steps", h.state.ID, h.state.Status, h.maxSteps)
		}
		if !h.Step() {
			break
		}
	}
	return h.state
}

// Step applies the next thing that happens: the earliest scripted reply,
// or a Tick at the saga's WakeAt if that comes first, advancing the fake
// clock to it. It returns false, doing nothing, when nothing is left to
// happen (no reply on its way and no timer set).
func (h *Harness) Step() bool {
	h.t.Helper()
	if h.state.ID == "" {
		h.t.Fatalf("sagatest: Step before Start")
	}
	wake := h.state.WakeAt()
	if len(h.queue) == 0 && wake.IsZero() {
		return false
	}
	if len(h.queue) > 0 && (wake.IsZero() || !h.queue[0].at.After(wake)) {
		d := h.queue[0]
		h.queue = h.queue[1:]
		h.advance(d.at)
		h.apply(d.reply)
		return true
	}
	h.advance(wake)
	h.apply(saga.Tick{})
	return true
}

func (h *Harness) advance(to time.Time) {
	if to.After(h.now) {
		h.now = to
	}
}

func (h *Harness) apply(in saga.Input) {
	h.t.Helper()
	res, err := saga.Transition(h.def, h.state, in, h.now)
	if err != nil {
		h.t.Fatalf("sagatest: transition %T: %v", in, err)
	}
	if res.Ignored {
		h.ignored = append(h.ignored, in)
		return
	}
	h.state = res.State
	h.events = append(h.events, res.Events...)
	h.timeline = append(h.timeline, res.History...)
	for _, c := range res.Commands {
		h.sent = append(h.sent, c)
		hd, ok := h.handlers[c.Type]
		if !ok {
			h.t.Fatalf("sagatest: no responder for command type %q (step %s, %s): register one with On", c.Type, c.Step, c.Phase)
		}
		r, ok := hd.r(c, hd.calls)
		hd.calls++
		if !ok {
			continue
		}
		h.seq++
		h.queue = append(h.queue, delivery{at: h.now.Add(r.After), seq: h.seq, reply: saga.Reply{
			Step: c.Step, Attempt: c.Attempt, Phase: c.Phase, Type: r.Type, Data: r.Data,
			MessageID: fmt.Sprintf("reply-%d", h.seq),
		}})
	}
	slices.SortStableFunc(h.queue, func(a, b delivery) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.seq - b.seq
	})
}

// State returns the saga's current state.
func (h *Harness) State() saga.State { return h.state }

// Now returns the fake clock's time.
func (h *Harness) Now() time.Time { return h.now }

// Advance moves the fake clock forward by d without firing anything; the
// next run fires what became due.
func (h *Harness) Advance(d time.Duration) { h.advance(h.now.Add(d)) }

// Sent returns every command sent so far, in order.
func (h *Harness) Sent() []saga.OutCommand { return slices.Clone(h.sent) }

// SentTypes returns the types of the commands sent so far, in order.
func (h *Harness) SentTypes() []string {
	out := make([]string, len(h.sent))
	for i, c := range h.sent {
		out[i] = c.Type
	}
	return out
}

// Events returns every lifecycle event so far, in order.
func (h *Harness) Events() []saga.LifecycleEvent { return slices.Clone(h.events) }

// Timeline returns every timeline entry so far, in order.
func (h *Harness) Timeline() []saga.HistoryEntry { return slices.Clone(h.timeline) }

// Ignored returns the inputs the state machine ignored (late or duplicate
// replies, early ticks), in order.
func (h *Harness) Ignored() []saga.Input { return slices.Clone(h.ignored) }

// RequireStatus fails the test unless the saga's status is want; the
// message shows the reason and the timeline.
func (h *Harness) RequireStatus(want saga.Status) {
	h.t.Helper()
	if h.state.Status == want {
		return
	}
	msg := fmt.Sprintf("sagatest: saga %s is %s, want %s", h.state.ID, h.state.Status, want)
	if h.state.Reason != "" {
		msg += " (" + h.state.Reason + ")"
	}
	for _, e := range h.timeline {
		msg += fmt.Sprintf("\n  +%s %s %s#%d %s %s %s", e.At.Sub(h.state.StartedAt), e.Outcome, e.Step, e.Attempt,
			e.Phase, e.ReplyType, e.Detail)
	}
	h.t.Fatal(msg)
}
