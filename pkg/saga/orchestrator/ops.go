package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/pkg/saga"
)

// Operation is an operator's command to one saga.
type Operation string

// The operations of Operate.
const (
	// OpRetry re-sends the current command now, or resumes the compensation
	// of a saga parked as Failed (see saga.Retry).
	OpRetry Operation = "retry"
	// OpAbort stops the saga as Failed without compensating (saga.Abort).
	OpAbort Operation = "abort"
	// OpCompensate compensates a running saga now, or resumes the
	// compensation of a parked one (saga.Compensate).
	OpCompensate Operation = "compensate"
)

// ErrIgnored is returned by Operate when the operation does not apply to the
// saga in its status (retrying a completed saga, say); nothing changed.
var ErrIgnored = errors.New("orchestrator: the operation does not apply to the saga in its status")

// ErrUnknownOperation is returned by Operate for an operation it does not
// know.
var ErrUnknownOperation = errors.New("orchestrator: unknown operation (want retry, abort or compensate)")

// OperateParams are the parameters of Operate.
type OperateParams struct {
	// Reason says why; the timeline and, for abort and compensate, the
	// saga's Reason record it. Defaults to "by operator".
	Reason string
	// Actor says who operates; the timeline records it beside the
	// operator's entry. Defaults to "": the entry names no one.
	Actor string
}

// Operate applies an operator's command to saga id in a transaction of its
// own, through the same transition path as messages (the saga is locked,
// the commands go through the outbox, the timeline records it with
// p.Actor and p.Reason), and returns the saga's new state. It works
// whether or not Run runs.
func (o *Orchestrator) Operate(ctx context.Context, id string, op Operation, p OperateParams) (saga.State, error) {
	reason := p.Reason
	if reason == "" {
		reason = "by operator"
	}
	var in saga.Input
	switch op {
	case OpRetry:
		in = saga.Retry{Reason: reason}
	case OpAbort:
		in = saga.Abort{Reason: reason}
	case OpCompensate:
		in = saga.Compensate{Reason: reason}
	default:
		return saga.State{}, fmt.Errorf("%w: %q", ErrUnknownOperation, op)
	}
	it := newItem(kindOperator, id)
	it.input = in
	it.actor = p.Actor
	if err := o.inTx(ctx, []*item{it}); err != nil {
		return saga.State{}, err
	}
	if it.res.err != nil {
		return saga.State{}, it.res.err
	}
	if it.res.state == nil {
		return saga.State{}, fmt.Errorf("%w: %q", ErrUnknownSaga, id)
	}
	if it.res.outcome == outcomeIgnored {
		return *it.res.state, fmt.Errorf("%w: %s of a %s saga", ErrIgnored, op, it.res.state.Status)
	}
	return *it.res.state, nil
}

// actorAt returns the actor of the item's i-th timeline entry: an
// operator's own entry comes first (saga.OutcomeOperator or
// saga.OutcomeAborted); what follows it, or what another input causes,
// names no one.
func (it *item) actorAt(i int) string {
	if it.kind == kindOperator && i == 0 {
		return it.actor
	}
	return ""
}

// Summary is one saga in a list.
type Summary struct {
	ID                string      `json:"id"`
	Definition        string      `json:"definition"`
	DefinitionVersion int         `json:"definition_version"`
	Status            saga.Status `json:"status"`
	Step              string      `json:"step,omitempty"`
	Attempt           int         `json:"attempt"`
	Reason            string      `json:"reason,omitempty"`
	DueAt             *time.Time  `json:"due_at,omitempty"`
	StartedAt         time.Time   `json:"started_at"`
	UpdatedAt         time.Time   `json:"updated_at"`
}

// ListParams filter List.
type ListParams struct {
	// Status, if set, keeps sagas in that status.
	Status saga.Status
	// Definition, if set, keeps sagas of that definition name.
	Definition string
	// Limit is the most sagas returned. Defaults to 50; at most 1000.
	Limit int
	// Before, if set, keeps sagas updated before it (the UpdatedAt of the
	// last saga of the previous page).
	Before time.Time
}

// List returns sagas, most recently updated first.
func (o *Orchestrator) List(ctx context.Context, p ListParams) ([]Summary, error) {
	return List(ctx, o.pool, o.cfg.Schema, p)
}

// Querier is what the read-only operator calls need: a pool, a connection
// or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// List returns the sagas in schema, most recently updated first; it needs no
// definitions, so tools can list sagas without an Orchestrator.
func List(ctx context.Context, db Querier, schema string, p ListParams) ([]Summary, error) {
	q, err := loadQueries(schema)
	if err != nil {
		return nil, err
	}
	if p.Limit <= 0 {
		p.Limit = 50
	}
	p.Limit = min(p.Limit, 1000)
	if p.Before.IsZero() {
		p.Before = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	rows, err := db.Query(ctx, q.list, nonEmpty(string(p.Status)), nonEmpty(p.Definition), p.Limit, p.Before)
	if err != nil {
		return nil, fmt.Errorf("orchestrator: list sagas: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Summary, error) {
		var s Summary
		var step, reason *string
		err := row.Scan(&s.ID, &s.Definition, &s.DefinitionVersion, &s.Status, &step, &s.Attempt, &reason, &s.DueAt, &s.StartedAt, &s.UpdatedAt)
		s.Step, s.Reason = deref(step), deref(reason)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("orchestrator: list sagas: %w", err)
	}
	return out, nil
}

// Detail is one saga with its state and timeline.
type Detail struct {
	Summary
	CorrelationID string          `json:"correlation_id"`
	Revision      int64           `json:"revision"`
	State         saga.State      `json:"state"`
	Timeline      []TimelineEntry `json:"timeline"`
	// Waiting says in words what the saga waits for now.
	Waiting string `json:"waiting"`
}

// TimelineEntry is one line of a saga's timeline.
type TimelineEntry struct {
	Seq       int64     `json:"seq"`
	At        time.Time `json:"at"`
	Step      string    `json:"step,omitempty"`
	Phase     string    `json:"phase,omitempty"`
	Attempt   int       `json:"attempt,omitempty"`
	Outcome   string    `json:"outcome"`
	ReplyType string    `json:"reply_type,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	// Actor is who made an operator's entry (OperateParams.Actor), else "".
	Actor string `json:"actor,omitempty"`
}

// Show returns saga id with its timeline.
func (o *Orchestrator) Show(ctx context.Context, id string) (Detail, error) {
	return Show(ctx, o.pool, o.cfg.Schema, o.cfg.Definitions, id)
}

// Show returns saga id of schema with its timeline. defs, if not nil, names
// the commands the saga waits for.
func Show(ctx context.Context, db Querier, schema string, defs *saga.Registry, id string) (Detail, error) {
	q, err := loadQueries(schema)
	if err != nil {
		return Detail{}, err
	}
	var d Detail
	var step, reason *string
	var raw []byte
	err = db.QueryRow(ctx, q.show, id).Scan(&d.ID, &d.Definition, &d.DefinitionVersion, &d.Status, &step, &d.Attempt,
		&d.CorrelationID, &raw, &reason, &d.DueAt, &d.Revision, &d.StartedAt, &d.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Detail{}, fmt.Errorf("%w: %q", ErrUnknownSaga, id)
	}
	if err != nil {
		return Detail{}, fmt.Errorf("orchestrator: show saga %q: %w", id, err)
	}
	d.Step, d.Reason = deref(step), deref(reason)
	if err := decodeState(raw, &d.State); err != nil {
		return Detail{}, fmt.Errorf("orchestrator: saga %q: decode its state: %w", id, err)
	}
	rows, err := db.Query(ctx, q.timeline, id)
	if err != nil {
		return Detail{}, fmt.Errorf("orchestrator: timeline of saga %q: %w", id, err)
	}
	d.Timeline, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (TimelineEntry, error) {
		var e TimelineEntry
		err := row.Scan(&e.Seq, &e.At, &e.Step, &e.Phase, &e.Attempt, &e.Outcome, &e.ReplyType, &e.Detail, &e.Actor)
		return e, err
	})
	if err != nil {
		return Detail{}, fmt.Errorf("orchestrator: timeline of saga %q: %w", id, err)
	}
	var def *saga.Definition
	if defs != nil {
		def, _ = defs.Get(d.Definition, d.DefinitionVersion)
	}
	d.Waiting = waiting(d.State, def)
	return d, nil
}

// waiting describes what a saga waits for.
func waiting(s saga.State, def *saga.Definition) string {
	step := s.StepName(def)
	if step == "" {
		step = fmt.Sprintf("#%d", s.Step)
	}
	switch s.Status {
	case saga.StatusCompleted, saga.StatusCompensated:
		return "nothing: the saga has ended"
	case saga.StatusFailed:
		if len(s.Pending) > 0 {
			return "an operator: the saga is parked; retry or compensate resumes its compensation (" + s.Reason + ")"
		}
		return "nothing: the saga was stopped (" + s.Reason + ")"
	}
	what := "a reply to the action of step " + step
	if s.Status == saga.StatusCompensating {
		what = "a reply to the compensation of step " + step
		if def != nil && len(s.Pending) > 0 && s.Pending[0] < len(def.Steps) {
			what = "a reply to the compensation of step " + def.Steps[s.Pending[0]].Name
		}
	}
	switch {
	case !s.RetryAt.IsZero():
		return fmt.Sprintf("the retry backoff: attempt %d is sent at %s", s.Attempt+1, s.RetryAt.Format(time.RFC3339Nano))
	case !s.StepDeadline.IsZero():
		return fmt.Sprintf("%s (attempt %d), until %s", what, s.Attempt, s.StepDeadline.Format(time.RFC3339Nano))
	}
	return what
}
