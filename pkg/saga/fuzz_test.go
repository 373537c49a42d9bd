package saga_test

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/vextrus/dtx/pkg/saga"
)

// fuzzDef has four steps: a and c compensable, b and d not.
func fuzzDef(t testing.TB) *saga.Definition {
	t.Helper()
	cmd := func(typ string) saga.Command {
		return saga.Command{Topic: "t", Type: typ, Payload: map[string]any{"id": "$saga.id", "x": "$.x"}}
	}
	def := &saga.Definition{
		Name: "fuzz", Version: 1, Timeout: 5 * time.Minute,
		Steps: []saga.Step{
			{Name: "a", Action: cmd("a.do"), Success: []string{"a.ok"}, Failure: []string{"a.no"},
				Retry: saga.RetryPolicy{Attempts: 2},
				Compensation: &saga.Compensation{Command: cmd("a.undo"), Success: []string{"a.undone"},
					Failure: []string{"a.undo_failed"}, Retry: saga.RetryPolicy{Attempts: 3}}},
			{Name: "b", Action: cmd("b.do"), Success: []string{"b.ok", "b.ok2"}, Failure: []string{"b.no"}, ReplyInto: "b"},
			{Name: "c", Action: cmd("c.do"), Success: []string{"c.ok"}, Failure: []string{"c.no"}, Timeout: time.Minute,
				Compensation: &saga.Compensation{Command: cmd("c.undo"), Success: []string{"c.undone"},
					Failure: []string{"c.undo_failed"}, Retry: saga.RetryPolicy{Attempts: 2, Backoff: 5 * time.Second}}},
			{Name: "d", Action: cmd("d.do"), Success: []string{"d.ok"}, Retry: saga.RetryPolicy{Attempts: 1}},
		},
	}
	def.SetDefaults()
	if err := def.Validate(); err != nil {
		t.Fatal(err)
	}
	return def
}

// fuzzReader hands out the fuzz input's bytes; 0 once exhausted.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) next() int {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return int(v)
}

func FuzzTransition(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 2, 1, 0, 0, 3, 1, 0})
	f.Add([]byte{0, 0, 0, 1, 1, 0, 1, 1, 2, 8, 8, 8, 8, 8})
	f.Add([]byte{8, 200, 8, 200, 8, 250, 8, 30, 12, 13, 8, 255, 14, 15})
	f.Add([]byte{0, 0, 0, 1, 0, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 12, 9, 9, 9, 9, 9})

	def := fuzzDef(f)
	var replyTypes []string
	for _, s := range def.Steps {
		replyTypes = append(replyTypes, s.Success...)
		replyTypes = append(replyTypes, s.Failure...)
		if c := s.Compensation; c != nil {
			replyTypes = append(replyTypes, c.Success...)
			replyTypes = append(replyTypes, c.Failure...)
		}
	}
	replyTypes = append(replyTypes, "junk")

	f.Fuzz(func(t *testing.T, in []byte) {
		r := &fuzzReader{b: in}
		now := t0
		res, err := saga.Transition(def, saga.State{}, saga.Start{ID: "s", Data: map[string]any{"x": 1}}, now)
		if err != nil {
			t.Fatal(err)
		}
		succeeded := map[string]bool{}   // accepted action successes
		compensated := map[string]bool{} // accepted compensation successes
		s := res.State

		apply := func(input saga.Input) {
			t.Helper()
			res, err := saga.Transition(def, s, input, now)
			if err != nil {
				t.Fatalf("%T %+v: %v", input, input, err)
			}
			if res.Ignored {
				if !reflect.DeepEqual(res.State, s) || len(res.Commands)+len(res.Events)+len(res.History) > 0 {
					t.Fatalf("ignored %+v changed something: %+v", input, res)
				}
				return
			}
			prev := s
			s = res.State
			if err := s.Check(def); err != nil {
				t.Fatalf("after %T %+v from %+v: %v", input, input, prev, err)
			}
			if (prev.Status == saga.StatusCompleted || prev.Status == saga.StatusCompensated) && s.Status != prev.Status {
				t.Fatalf("%s moved to %s on %+v", prev.Status, s.Status, input)
			}
			if s.Status.Terminal() != s.WakeAt().IsZero() {
				t.Fatalf("status %s with wake %v", s.Status, s.WakeAt())
			}
			if w := s.WakeAt(); !w.IsZero() && !w.After(now) {
				t.Fatalf("wake %v not after now %v", w, now)
			}
			for _, h := range res.History {
				if h.Outcome == saga.OutcomeSucceeded {
					if h.Phase == saga.PhaseAction {
						succeeded[h.Step] = true
					} else {
						compensated[h.Step] = true
					}
				}
			}
			for _, c := range res.Commands {
				if c.Attempt < 1 || c.Key != "s" || c.Topic == "" {
					t.Fatalf("bad command %+v", c)
				}
			}
			switch s.Status {
			case saga.StatusCompleted:
				for _, st := range def.Steps {
					if !succeeded[st.Name] {
						t.Fatalf("completed without the success of step %s", st.Name)
					}
				}
			case saga.StatusCompensated:
				for _, st := range def.Steps {
					if st.Compensation != nil && succeeded[st.Name] && !compensated[st.Name] {
						t.Fatalf("compensated without compensating step %s", st.Name)
					}
				}
			}
		}

		for len(r.b) > 0 {
			switch op := r.next() % 16; {
			case op < 8: // a reply
				step := r.next() % (len(def.Steps) + 1)
				name := "junk"
				if step < len(def.Steps) {
					name = def.Steps[step].Name
				}
				phase := []saga.Phase{saga.PhaseAction, saga.PhaseCompensation, "junk"}[r.next()%3]
				attempt := r.next() % 5
				typ := replyTypes[r.next()%len(replyTypes)]
				apply(saga.Reply{Step: name, Attempt: attempt, Phase: phase, Type: typ, Data: map[string]any{"y": op}})
			case op < 11: // time passes a little, or a lot
				n := r.next()
				d := time.Duration(n) * time.Second
				if n > 200 {
					d = time.Duration(n-200) * time.Minute
				}
				now = now.Add(d)
				apply(saga.Tick{})
			case op < 13: // the scheduler fires exactly when due
				if w := s.WakeAt(); w.After(now) {
					now = w
				}
				apply(saga.Tick{})
			case op == 13:
				apply(saga.Retry{Reason: "fuzz"})
			case op == 14:
				apply(saga.Compensate{Reason: "fuzz"})
			default:
				if r.next()%4 == 0 {
					apply(saga.Abort{Reason: "fuzz"})
				}
			}
		}

		// Sagas end: with no more replies, ticks alone make any saga
		// terminal.
		for i := 0; !s.Status.Terminal(); i++ {
			if i > 100 {
				t.Fatalf("not terminal after 100 ticks: %+v", s)
			}
			now = s.WakeAt()
			apply(saga.Tick{})
		}
		if s.Status == saga.StatusFailed && len(s.Pending) > 0 && !slices.IsSortedFunc(s.Pending, func(a, b int) int { return b - a }) {
			t.Fatalf("pending not descending: %v", s.Pending)
		}
	})
}
