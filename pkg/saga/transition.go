package saga

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
)

// Input is something that happens to a saga: Start, Reply, Tick, Retry,
// Abort or Compensate.
type Input interface{ input() }

// Start starts a saga. Transition refuses it on a state that already has an
// id or a status (ErrAlreadyStarted).
type Start struct {
	// ID is the saga id. Required.
	ID string
	// CorrelationID ties the saga's messages together; "" means ID.
	CorrelationID string
	// Data is the initial saga data; it is copied.
	Data map[string]any
}

// Reply is a participant's reply to a command.
type Reply struct {
	// Step is the step name, from the reply's HeaderStep.
	Step string
	// Attempt is the attempt the reply answers, from HeaderAttempt.
	Attempt int
	// Phase says whether it answers an action or a compensation, from
	// HeaderPhase.
	Phase Phase
	// Type is the reply's message type.
	Type string
	// Data is the reply's payload object; nil for none.
	Data map[string]any
	// MessageID is the reply's message id, for the runtime's records.
	MessageID string
}

// Tick says time has passed: the machine compares the state's deadlines
// with now. The runtime feeds it when State.WakeAt is due.
type Tick struct{}

// Retry is an operator's request to re-send the current command now
// (Running or Compensating, as attempt Attempt+1 even beyond the retry
// policy), or to resume the compensation of a parked saga (Failed with
// compensations pending) with its attempts reset.
type Retry struct {
	// Reason is recorded in the timeline.
	Reason string
}

// Abort is an operator's request to stop an active saga now, as Failed,
// without compensating anything.
type Abort struct {
	// Reason is recorded in the state's Reason as "aborted: <Reason>".
	Reason string
}

// Compensate is an operator's request to compensate a Running saga now
// (its current step counts as having an unknown outcome), or, for a parked
// saga with compensations pending, the same as Retry.
type Compensate struct {
	// Reason is recorded in the state's Reason as
	// "compensation forced: <Reason>".
	Reason string
}

func (Start) input()      {}
func (Reply) input()      {}
func (Tick) input()       {}
func (Retry) input()      {}
func (Abort) input()      {}
func (Compensate) input() {}

// Outcome is what a timeline entry records.
type Outcome string

// The outcomes of timeline entries.
const (
	// OutcomeSent: a command was sent (Detail: its type).
	OutcomeSent Outcome = "sent"
	// OutcomeSucceeded: a success reply was accepted.
	OutcomeSucceeded Outcome = "succeeded"
	// OutcomeFailed: a failure reply was accepted.
	OutcomeFailed Outcome = "failed"
	// OutcomeTimedOut: an attempt, or the saga, timed out.
	OutcomeTimedOut Outcome = "timed_out"
	// OutcomeRetryScheduled: the current command will be re-sent later
	// (Detail: the backoff).
	OutcomeRetryScheduled Outcome = "retry_scheduled"
	// OutcomeIgnored is never produced by Transition, whose ignored inputs
	// leave no trace; the runtime may record ignored inputs with it.
	OutcomeIgnored Outcome = "ignored"
	// OutcomeStarted: the saga started.
	OutcomeStarted Outcome = "started"
	// OutcomeCompleted: the saga completed.
	OutcomeCompleted Outcome = "completed"
	// OutcomeCompensated: the saga finished compensating.
	OutcomeCompensated Outcome = "compensated"
	// OutcomeParked: the saga is Failed and waits for an operator
	// (Detail: the reason).
	OutcomeParked Outcome = "parked"
	// OutcomeAborted: an operator aborted the saga.
	OutcomeAborted Outcome = "aborted"
	// OutcomeOperator: an operator asked for a retry or a compensation
	// (Detail: which, and why).
	OutcomeOperator Outcome = "operator"
)

// Result is what a transition produces. The runtime writes State,
// Commands (to the outbox, in order), Events and History in one
// transaction.
type Result struct {
	// State is the new state; it equals the input state when Ignored.
	State State
	// Commands are the commands to send, in order.
	Commands []OutCommand
	// Events are the lifecycle events to publish, in order (types in
	// wire.go).
	Events []LifecycleEvent
	// History are the timeline entries to append, in order.
	History []HistoryEntry
	// Ignored is true when the input changed nothing: a duplicate, late or
	// unknown reply, an early tick, or an operator input that does not
	// apply to the status. Commands, Events and History are then empty.
	Ignored bool
}

// OutCommand is a command to write to the outbox.
type OutCommand struct {
	// Step is the step's name (HeaderStep).
	Step string
	// StepIndex is the step's index in the definition.
	StepIndex int
	// Phase says action or compensation (HeaderPhase).
	Phase Phase
	// Attempt is the attempt number, from 1 (HeaderAttempt).
	Attempt int
	// Topic is the command's topic.
	Topic string
	// Type is the command's message type.
	Type string
	// Key is the Kafka record key: the mapped Key, or the saga id.
	Key string
	// Payload is the mapped payload, a JSON-like value.
	Payload any
}

// LifecycleEvent is a saga lifecycle event.
type LifecycleEvent struct {
	// Type is one of the Event* types of wire.go.
	Type string
	// Step is the step concerned, or "".
	Step string
	// Reason says why, for step_failed, compensating, compensated and
	// failed.
	Reason string
	// Status is the saga's status once the event happened.
	Status Status
}

// HistoryEntry is one timeline entry.
type HistoryEntry struct {
	// Step is the step concerned, or "".
	Step string
	// Phase is the phase concerned, or "".
	Phase Phase
	// Attempt is the attempt concerned, or 0.
	Attempt int
	// At is the transition's now.
	At time.Time
	// Outcome is what happened.
	Outcome Outcome
	// ReplyType is the reply's type for replies, else "".
	ReplyType string
	// Detail is free text.
	Detail string
}

// ErrAlreadyStarted is returned by Transition for a Start on a state that
// already exists.
var ErrAlreadyStarted = errors.New("saga: already started")

// ErrNotStarted is returned by Transition for any input but Start on an
// empty state.
var ErrNotStarted = errors.New("saga: not started")

// Transition is the whole state machine: it applies in to s at time now and
// returns the new state with the commands, events and timeline entries it
// produces. It is pure and deterministic: time comes only from now, and
// neither s nor def is modified.
//
// It returns an error only for programming errors: a nil definition, a
// state of another definition or version or one that fails State.Check
// (ErrInvalidState), a Start on an existing state (ErrAlreadyStarted) or
// without an id, any other input on an empty state (ErrNotStarted), an
// unknown input. A command whose key or payload cannot be mapped from the
// saga data is not an error: the saga parks as Failed with a reason naming
// the step and the path, so that a definition bug cannot loop.
func Transition(def *Definition, s State, in Input, now time.Time) (Result, error) {
	if def == nil {
		return Result{State: s}, errors.New("saga: transition: nil definition")
	}
	if st, ok := in.(Start); ok {
		return start(def, s, st, now)
	}
	if in == nil {
		return Result{State: s}, errors.New("saga: transition: nil input")
	}
	if s.ID == "" && s.Status == "" {
		return Result{State: s}, ErrNotStarted
	}
	if err := s.Check(def); err != nil {
		return Result{State: s}, fmt.Errorf("saga: transition: %w", err)
	}
	m := &machine{def: def, s: s, now: now}
	var applied bool
	switch in := in.(type) {
	case Reply:
		applied = m.reply(in)
	case Tick:
		applied = m.tick()
	case Retry:
		applied = m.retry("retry", in.Reason)
	case Abort:
		applied = m.abort(in.Reason)
	case Compensate:
		applied = m.compensate(in.Reason)
	default:
		return Result{State: s}, fmt.Errorf("saga: transition: unknown input %T", in)
	}
	if !applied {
		return Result{State: s, Ignored: true}, nil
	}
	m.s.UpdatedAt = now
	return Result{State: m.s, Commands: m.cmds, Events: m.events, History: m.history}, nil
}

func start(def *Definition, s State, st Start, now time.Time) (Result, error) {
	if s.ID != "" || s.Status != "" {
		return Result{State: s}, fmt.Errorf("%w: saga %q is %s", ErrAlreadyStarted, s.ID, s.Status)
	}
	if st.ID == "" {
		return Result{State: s}, errors.New("saga: transition: start without an id")
	}
	if len(def.Steps) == 0 {
		return Result{State: s}, fmt.Errorf("saga: transition: definition %s has no steps", def.Ref())
	}
	data := maps.Clone(st.Data)
	if data == nil {
		data = map[string]any{}
	}
	m := &machine{def: def, now: now, s: State{
		ID:            st.ID,
		Definition:    def.Name,
		Version:       def.Version,
		CorrelationID: st.CorrelationID,
		Status:        StatusRunning,
		Attempt:       1,
		Data:          data,
		StartedAt:     now,
		UpdatedAt:     now,
	}}
	if m.s.CorrelationID == "" {
		m.s.CorrelationID = st.ID
	}
	if def.Timeout > 0 {
		m.s.Deadline = now.Add(def.Timeout)
	}
	m.event(EventStarted, "", "")
	m.record("", "", 0, OutcomeStarted, "", "")
	m.sendAction()
	return Result{State: m.s, Commands: m.cmds, Events: m.events, History: m.history}, nil
}

// machine builds one transition's result. It never modifies the maps and
// slices of the input state in place.
type machine struct {
	def     *Definition
	s       State
	now     time.Time
	cmds    []OutCommand
	events  []LifecycleEvent
	history []HistoryEntry
}

func (m *machine) event(typ, step, reason string) {
	m.events = append(m.events, LifecycleEvent{Type: typ, Step: step, Reason: reason, Status: m.s.Status})
}

func (m *machine) record(step string, phase Phase, attempt int, outcome Outcome, replyType, detail string) {
	m.history = append(m.history, HistoryEntry{
		Step: step, Phase: phase, Attempt: attempt, At: m.now, Outcome: outcome, ReplyType: replyType, Detail: detail,
	})
}

func (m *machine) vars() Vars {
	return Vars{SagaID: m.s.ID, CorrelationID: m.s.CorrelationID, Name: m.def.Name, Version: m.def.Version}
}

// build maps a command from the saga data.
func (m *machine) build(c Command) (key string, payload any, err error) {
	key, err = mapKey(c.Key, m.s.Data, m.vars())
	if err != nil {
		return "", nil, fmt.Errorf("key: %w", err)
	}
	if c.Payload == nil {
		return key, copyValue(m.s.Data), nil
	}
	payload, err = Map(c.Payload, m.s.Data, m.vars())
	if err != nil {
		return "", nil, fmt.Errorf("payload: %w", err)
	}
	return key, payload, nil
}

// sendAction sends attempt s.Attempt of the current step's action, or parks
// the saga when the command cannot be built.
func (m *machine) sendAction() {
	i := m.s.Step
	step := &m.def.Steps[i]
	key, payload, err := m.build(step.Action)
	if err != nil {
		m.park(fmt.Sprintf("cannot build the action of step %s: %v", step.Name, err), step.Name, PhaseAction)
		return
	}
	m.cmds = append(m.cmds, OutCommand{
		Step: step.Name, StepIndex: i, Phase: PhaseAction, Attempt: m.s.Attempt,
		Topic: step.Action.Topic, Type: step.Action.Type, Key: key, Payload: payload,
	})
	m.s.StepDeadline = m.now.Add(step.actionTimeout())
	m.s.RetryAt = time.Time{}
	m.record(step.Name, PhaseAction, m.s.Attempt, OutcomeSent, "", step.Action.Type)
}

// sendCompensation sends attempt s.Attempt of the compensation of
// Pending[0], or parks the saga when the command cannot be built.
func (m *machine) sendCompensation() {
	i := m.s.Pending[0]
	step := &m.def.Steps[i]
	c := step.Compensation
	key, payload, err := m.build(c.Command)
	if err != nil {
		m.park(fmt.Sprintf("cannot build the compensation of step %s: %v", step.Name, err), step.Name, PhaseCompensation)
		return
	}
	m.cmds = append(m.cmds, OutCommand{
		Step: step.Name, StepIndex: i, Phase: PhaseCompensation, Attempt: m.s.Attempt,
		Topic: c.Topic, Type: c.Type, Key: key, Payload: payload,
	})
	m.s.StepDeadline = m.now.Add(c.timeout())
	m.s.RetryAt = time.Time{}
	m.record(step.Name, PhaseCompensation, m.s.Attempt, OutcomeSent, "", c.Type)
}

// stopTimers clears every timer, as a terminal status requires.
func (m *machine) stopTimers() {
	m.s.RetryAt, m.s.StepDeadline, m.s.Deadline = time.Time{}, time.Time{}, time.Time{}
}

// park makes the saga Failed; Pending is kept.
func (m *machine) park(reason, step string, phase Phase) {
	m.s.Status = StatusFailed
	m.s.Reason = reason
	m.stopTimers()
	m.record(step, phase, m.s.Attempt, OutcomeParked, "", reason)
	m.event(EventFailed, step, reason)
}

func (m *machine) complete() {
	m.s.Status = StatusCompleted
	m.s.Step = len(m.def.Steps)
	m.s.Attempt = 0
	m.stopTimers()
	m.record("", "", 0, OutcomeCompleted, "", "")
	m.event(EventCompleted, "", "")
}

func (m *machine) compensated() {
	m.s.Status = StatusCompensated
	m.s.Pending = nil
	m.s.Attempt = 0
	m.stopTimers()
	m.record("", "", 0, OutcomeCompensated, "", m.s.Reason)
	m.event(EventCompensated, "", m.s.Reason)
}

// beginCompensation compensates the steps completed before the current one,
// and the current one too when includeCurrent (its outcome is unknown), in
// reverse order; steps without a compensation are skipped.
func (m *machine) beginCompensation(includeCurrent bool, reason string) {
	last := m.s.Step - 1
	if includeCurrent {
		last = m.s.Step
	}
	var pending []int
	for i := min(last, len(m.def.Steps)-1); i >= 0; i-- {
		if m.def.Steps[i].Compensation != nil {
			pending = append(pending, i)
		}
	}
	m.s.Status = StatusCompensating
	m.s.Reason = reason
	m.s.Pending = pending
	m.s.RetryAt, m.s.StepDeadline = time.Time{}, time.Time{}
	m.event(EventCompensating, m.def.Steps[min(m.s.Step, len(m.def.Steps)-1)].Name, reason)
	if len(pending) == 0 {
		m.compensated()
		return
	}
	m.s.Attempt = 1
	m.sendCompensation()
}

// compensationAttemptFailed schedules the next attempt of the current
// compensation, or parks the saga when its attempts are exhausted; what is
// the failure reply's type or "timeout".
func (m *machine) compensationAttemptFailed(what string) {
	step := &m.def.Steps[m.s.Pending[0]]
	p := step.Compensation.retry()
	if m.s.Attempt < p.Attempts {
		m.scheduleRetry(step.Name, PhaseCompensation, p)
		return
	}
	m.park(fmt.Sprintf("compensation of step %s failed after %d attempts: %s", step.Name, m.s.Attempt, what),
		step.Name, PhaseCompensation)
}

func (m *machine) scheduleRetry(step string, phase Phase, p RetryPolicy) {
	d := p.Delay(m.s.Attempt)
	m.s.RetryAt = m.now.Add(d)
	m.s.StepDeadline = time.Time{}
	m.record(step, phase, m.s.Attempt, OutcomeRetryScheduled, "", "attempt "+strconv.Itoa(m.s.Attempt+1)+" in "+d.String())
}

func (m *machine) reply(r Reply) bool {
	if r.Attempt < 1 || r.Attempt > m.s.Attempt {
		return false
	}
	switch m.s.Status {
	case StatusRunning:
		step := &m.def.Steps[m.s.Step]
		if r.Phase != PhaseAction || r.Step != step.Name {
			return false
		}
		switch {
		case slices.Contains(step.Success, r.Type):
			m.record(step.Name, PhaseAction, r.Attempt, OutcomeSucceeded, r.Type, "")
			m.merge(step.ReplyInto, r.Data)
			m.event(EventStepCompleted, step.Name, "")
			if m.s.Step == len(m.def.Steps)-1 {
				m.complete()
				return true
			}
			m.s.Step++
			m.s.Attempt = 1
			m.sendAction()
			return true
		case slices.Contains(step.Failure, r.Type):
			reason := "step " + step.Name + " failed: " + r.Type
			m.record(step.Name, PhaseAction, r.Attempt, OutcomeFailed, r.Type, "")
			m.event(EventStepFailed, step.Name, reason)
			m.beginCompensation(false, reason)
			return true
		}
		return false
	case StatusCompensating:
		step := &m.def.Steps[m.s.Pending[0]]
		if r.Phase != PhaseCompensation || r.Step != step.Name {
			return false
		}
		switch {
		case slices.Contains(step.Compensation.Success, r.Type):
			m.record(step.Name, PhaseCompensation, r.Attempt, OutcomeSucceeded, r.Type, "")
			m.s.Pending = m.s.Pending[1:]
			if len(m.s.Pending) == 0 {
				m.compensated()
				return true
			}
			m.s.Attempt = 1
			m.sendCompensation()
			return true
		case slices.Contains(step.Compensation.Failure, r.Type):
			// Only the outstanding attempt can fail: a failure of an
			// earlier attempt, or of one already counted as timed out,
			// says nothing new.
			if r.Attempt != m.s.Attempt || m.s.StepDeadline.IsZero() {
				return false
			}
			m.record(step.Name, PhaseCompensation, r.Attempt, OutcomeFailed, r.Type, "")
			m.compensationAttemptFailed(r.Type)
			return true
		}
		return false
	}
	return false
}

// merge puts a success reply's data into the saga data.
func (m *machine) merge(into string, data map[string]any) {
	d := maps.Clone(m.s.Data)
	if d == nil {
		d = map[string]any{}
	}
	if into == "" {
		for k, v := range data {
			d[k] = copyValue(v)
		}
	} else {
		obj, _ := copyValue(data).(map[string]any)
		if obj == nil {
			obj = map[string]any{}
		}
		d[into] = obj
	}
	m.s.Data = d
}

func due(t, now time.Time) bool { return !t.IsZero() && !now.Before(t) }

func (m *machine) tick() bool {
	switch m.s.Status {
	case StatusRunning:
		step := &m.def.Steps[m.s.Step]
		switch {
		case due(m.s.Deadline, m.now):
			m.record(step.Name, PhaseAction, m.s.Attempt, OutcomeTimedOut, "", "saga timed out")
			m.beginCompensation(true, "saga timed out")
		case due(m.s.StepDeadline, m.now):
			m.record(step.Name, PhaseAction, m.s.Attempt, OutcomeTimedOut, "", "")
			p := step.actionRetry()
			if m.s.Attempt < p.Attempts {
				m.scheduleRetry(step.Name, PhaseAction, p)
				return true
			}
			reason := fmt.Sprintf("step %s timed out after %d attempts", step.Name, m.s.Attempt)
			m.event(EventStepFailed, step.Name, reason)
			m.beginCompensation(true, reason)
		case due(m.s.RetryAt, m.now):
			m.s.Attempt++
			m.sendAction()
		default:
			return false
		}
		return true
	case StatusCompensating:
		step := &m.def.Steps[m.s.Pending[0]]
		switch {
		case due(m.s.StepDeadline, m.now):
			m.record(step.Name, PhaseCompensation, m.s.Attempt, OutcomeTimedOut, "", "")
			m.compensationAttemptFailed("timeout")
		case due(m.s.RetryAt, m.now):
			m.s.Attempt++
			m.sendCompensation()
		default:
			return false
		}
		return true
	}
	return false
}

func withReason(prefix, reason string) string {
	if reason == "" {
		return prefix
	}
	return prefix + ": " + reason
}

// retry applies Retry, and Compensate on a parked saga; what names the
// operator's request in the timeline.
func (m *machine) retry(what, reason string) bool {
	detail := withReason(what, reason)
	switch {
	case m.s.Status == StatusRunning:
		m.record(m.def.Steps[m.s.Step].Name, PhaseAction, m.s.Attempt, OutcomeOperator, "", detail)
		m.s.Attempt++
		m.sendAction()
	case m.s.Status == StatusCompensating:
		m.record(m.def.Steps[m.s.Pending[0]].Name, PhaseCompensation, m.s.Attempt, OutcomeOperator, "", detail)
		m.s.Attempt++
		m.sendCompensation()
	case m.s.Status == StatusFailed && len(m.s.Pending) > 0:
		step := m.def.Steps[m.s.Pending[0]].Name
		m.record(step, PhaseCompensation, m.s.Attempt, OutcomeOperator, "", detail)
		m.s.Status = StatusCompensating
		m.event(EventCompensating, step, m.s.Reason)
		m.s.Attempt = 1
		m.sendCompensation()
	default:
		return false
	}
	return true
}

func (m *machine) abort(reason string) bool {
	if m.s.Status.Terminal() {
		return false
	}
	step, phase := m.s.StepName(m.def), m.s.Phase()
	m.s.Status = StatusFailed
	m.s.Reason = withReason("aborted", reason)
	m.s.Pending = nil
	m.stopTimers()
	m.record(step, phase, m.s.Attempt, OutcomeAborted, "", m.s.Reason)
	m.event(EventFailed, step, m.s.Reason)
	return true
}

func (m *machine) compensate(reason string) bool {
	switch {
	case m.s.Status == StatusRunning:
		step := m.def.Steps[m.s.Step].Name
		r := withReason("compensation forced", reason)
		m.record(step, PhaseAction, m.s.Attempt, OutcomeOperator, "", r)
		m.beginCompensation(m.s.Attempt >= 1, r)
		return true
	case m.s.Status == StatusFailed && len(m.s.Pending) > 0:
		return m.retry("compensate", reason)
	}
	return false
}
