package saga

import (
	"errors"
	"fmt"
	"time"
)

// Status is where a saga is in its life.
type Status string

// The statuses of a saga. Running and Compensating are active; the others
// are terminal.
const (
	// StatusRunning: a step's action is outstanding or backing off.
	StatusRunning Status = "running"
	// StatusCompensating: the compensations of State.Pending are being
	// sent, head first.
	StatusCompensating Status = "compensating"
	// StatusCompleted: every step's action succeeded.
	StatusCompleted Status = "completed"
	// StatusCompensated: a step failed (or timed out, or an operator asked)
	// and every needed compensation succeeded.
	StatusCompensated Status = "compensated"
	// StatusFailed: the saga is parked. Either a compensation kept failing
	// (State.Pending holds what is left to compensate: an operator may
	// Retry or Compensate it), or an operator aborted it, or a command
	// could not be built from the saga data (a definition bug).
	StatusFailed Status = "failed"
)

// Valid reports whether s is one of the five statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusRunning, StatusCompensating, StatusCompleted, StatusCompensated, StatusFailed:
		return true
	}
	return false
}

// Terminal reports whether the saga is over: Completed, Compensated or
// Failed. Failed is "parked": no timer wakes it, but an operator may Retry
// or Compensate it when it has compensations pending.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusCompensated || s == StatusFailed
}

// State is one saga's state, JSON-serialisable: the runtime stores it as
// jsonb and hands it back to Transition.
type State struct {
	// ID is the saga id, also the Kafka key of its commands by default.
	ID string `json:"id"`
	// Definition is the definition's name.
	Definition string `json:"definition"`
	// Version is the definition's version the saga started with.
	Version int `json:"version"`
	// CorrelationID ties every message of the saga together.
	CorrelationID string `json:"correlation_id"`
	// Status is where the saga is.
	Status Status `json:"status"`
	// Step is, while Running, the index of the step whose action is
	// outstanding; len(steps) once Completed; otherwise the step where the
	// saga left the forward path.
	Step int `json:"step"`
	// Attempt is how many attempts of the current command (action or
	// compensation) have been sent.
	Attempt int `json:"attempt"`
	// Pending holds, while Compensating (and when Failed during
	// compensation), the indexes of the steps still to compensate, head
	// first, in descending order.
	Pending []int `json:"pending,omitempty"`
	// RetryAt, when non-zero, is when the current command is re-sent: the
	// saga is backing off.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// StepDeadline, when non-zero, is when the current attempt times out.
	StepDeadline time.Time `json:"step_deadline,omitzero"`
	// Deadline is the saga-level deadline, zero for none. It only matters
	// while Running.
	Deadline time.Time `json:"deadline,omitzero"`
	// Data is the saga data: the initial data merged with the replies.
	Data map[string]any `json:"data"`
	// Reason says why the saga is compensating, compensated or failed.
	Reason string `json:"reason,omitempty"`
	// StartedAt is when the saga started.
	StartedAt time.Time `json:"started_at"`
	// UpdatedAt is when the saga last changed.
	UpdatedAt time.Time `json:"updated_at"`
}

// WakeAt returns when the runtime must feed the saga a Tick: the earliest
// non-zero of RetryAt, StepDeadline and (while Running) Deadline. It is zero
// when the saga is terminal, parked included.
func (s State) WakeAt() time.Time {
	if s.Status.Terminal() {
		return time.Time{}
	}
	var at time.Time
	for _, t := range []time.Time{s.RetryAt, s.StepDeadline} {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	if s.Status == StatusRunning && !s.Deadline.IsZero() && (at.IsZero() || s.Deadline.Before(at)) {
		at = s.Deadline
	}
	return at
}

// Phase returns PhaseAction while Running, PhaseCompensation while
// Compensating and for a Failed saga with compensations pending, "" else.
func (s State) Phase() Phase {
	switch {
	case s.Status == StatusRunning:
		return PhaseAction
	case s.Status == StatusCompensating, s.Status == StatusFailed && len(s.Pending) > 0:
		return PhaseCompensation
	}
	return ""
}

// StepName returns the name of the step whose command is current (the
// action's while Running, the head of Pending's while compensating or
// parked during compensation), of the step where a Failed saga without
// pending compensations stopped, or "" (Completed, Compensated, or an index
// out of range).
func (s State) StepName(def *Definition) string {
	if def == nil {
		return ""
	}
	i := -1
	switch {
	case s.Status == StatusRunning:
		i = s.Step
	case s.Status == StatusCompensating, s.Status == StatusFailed && len(s.Pending) > 0:
		if len(s.Pending) > 0 {
			i = s.Pending[0]
		}
	case s.Status == StatusFailed:
		i = s.Step
	}
	if i < 0 || i >= len(def.Steps) {
		return ""
	}
	return def.Steps[i].Name
}

// ErrInvalidState is wrapped by the errors of State.Check.
var ErrInvalidState = errors.New("saga: invalid state")

// Check verifies the structural invariants of s against def: the
// definition matches, the step and pending indexes are in range, pending
// steps have compensations and are in descending order, and exactly the
// timers a status allows are set (one of RetryAt and StepDeadline while
// Running or Compensating, none when terminal). The error wraps
// ErrInvalidState.
func (s State) Check(def *Definition) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: saga %q: %s", ErrInvalidState, s.ID, fmt.Sprintf(format, args...))
	}
	if def == nil {
		return bad("no definition")
	}
	if s.Definition != def.Name || s.Version != def.Version {
		return bad("definition %s@%d, want %s", s.Definition, s.Version, def.Ref())
	}
	if s.ID == "" {
		return bad("empty id")
	}
	if !s.Status.Valid() {
		return bad("unknown status %q", s.Status)
	}
	n := len(def.Steps)
	if s.Step < 0 || s.Step > n {
		return bad("step %d out of range [0, %d]", s.Step, n)
	}
	if s.Attempt < 0 {
		return bad("negative attempt %d", s.Attempt)
	}
	for i, p := range s.Pending {
		if p < 0 || p >= n {
			return bad("pending step %d out of range", p)
		}
		if def.Steps[p].Compensation == nil {
			return bad("pending step %q has no compensation", def.Steps[p].Name)
		}
		if i > 0 && p >= s.Pending[i-1] {
			return bad("pending %v not strictly descending", s.Pending)
		}
	}
	timers := 0
	if !s.RetryAt.IsZero() {
		timers++
	}
	if !s.StepDeadline.IsZero() {
		timers++
	}
	switch s.Status {
	case StatusRunning:
		if s.Step >= n {
			return bad("running at step %d of %d", s.Step, n)
		}
		if s.Attempt < 1 {
			return bad("running with attempt %d", s.Attempt)
		}
		if len(s.Pending) > 0 {
			return bad("running with pending compensations")
		}
		if timers != 1 {
			return bad("running with %d of retry_at and step_deadline set, want 1", timers)
		}
	case StatusCompensating:
		if len(s.Pending) == 0 {
			return bad("compensating with nothing pending")
		}
		if s.Attempt < 1 {
			return bad("compensating with attempt %d", s.Attempt)
		}
		if timers != 1 {
			return bad("compensating with %d of retry_at and step_deadline set, want 1", timers)
		}
	default:
		if timers != 0 || !s.Deadline.IsZero() {
			return bad("%s with a timer set", s.Status)
		}
		if s.Status != StatusFailed && len(s.Pending) > 0 {
			return bad("%s with pending compensations", s.Status)
		}
		if s.Status == StatusCompleted && s.Step != n {
			return bad("completed at step %d of %d", s.Step, n)
		}
		if s.Status == StatusFailed && s.Reason == "" {
			return bad("failed without a reason")
		}
	}
	return nil
}
