package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/saga"
)

type kind int

const (
	kindStart kind = iota
	kindReply
	kindTick
	kindOperator
)

// item is one input to one saga: a trigger or start, a reply, a scheduler
// tick or an operator's command.
type item struct {
	kind   kind
	sagaID string
	// msgID is the inbox id of the message the item comes from; empty for
	// ticks, operator commands and starts from Go without one.
	msgID string
	// cause is the message the item comes from, if any: the causation of
	// what the transition writes.
	cause messaging.Envelope
	// def is the definition to start (kindStart).
	def   *saga.Definition
	input saga.Input
	// traceParent and traceState continue the trace of the message handled.
	traceParent, traceState string
	// actor is who gave an operator's command (kindOperator).
	actor string

	done chan result
	res  result
}

type result struct {
	err error
	// state is the saga after the item (nil when the saga does not exist).
	state *saga.State
	// outcome says what the item did: applied, duplicate, ignored,
	// unknown_saga, unknown_definition.
	outcome string
}

// Outcomes of an item, as metrics label them.
const (
	outcomeApplied   = "applied"
	outcomeDuplicate = "duplicate"
	outcomeIgnored   = "ignored"
	outcomeUnknown   = "unknown_saga"
	// outcomeNoDefinition: the saga's definition version is not in this
	// orchestrator's registry; nothing was applied.
	outcomeNoDefinition = "unknown_definition"
)

func newItem(k kind, sagaID string) *item {
	return &item{kind: k, sagaID: sagaID, done: make(chan result, 1)}
}

// again returns a fresh copy of it, to submit once more.
func (it *item) again() *item {
	n := *it
	n.done = make(chan result, 1)
	n.res = result{}
	return &n
}

func (it *item) finish(r result) {
	select {
	case it.done <- r:
	default:
	}
}

// instance is a saga as the batch sees it.
type instance struct {
	state       saga.State
	def         *saga.Definition
	exists      bool // in the table before the batch
	changed     bool
	traceParent string
	traceState  string
}

// lockKey maps a saga id to its advisory lock key, within the schema.
func lockKey(schema, id string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("dtx.saga\x00" + schema + "\x00" + id))
	return int64(h.Sum64()) //nolint:gosec // a hash: wrapping is intended
}

// process applies items in tx: lock the sagas, deduplicate the messages,
// load the sagas, transition each in item order, and write the new states,
// their history, commands and lifecycle events. A message that was not
// applied (its item ends with an error: no such saga, a definition version
// this orchestrator lacks) is not left recorded in the inbox, so that a
// later delivery of it (a redelivery, a replay from the dead-letter topic)
// is applied rather than dropped as a duplicate.
func (o *Orchestrator) process(ctx context.Context, tx pgx.Tx, items []*item) error {
	var ids, msgIDs []string
	seenID := map[string]bool{}
	for _, it := range items {
		if !seenID[it.sagaID] {
			seenID[it.sagaID] = true
			ids = append(ids, it.sagaID)
		}
		if it.msgID != "" {
			msgIDs = append(msgIDs, it.msgID)
		}
	}
	keys := make([]int64, len(ids))
	for i, id := range ids {
		keys[i] = lockKey(o.cfg.Schema, id)
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)

	var now time.Time
	fresh := map[string]bool{}
	sagas := map[string]*instance{}
	var loadErr error
	var b pgx.Batch
	b.Queue(o.q.lock, keys).QueryRow(func(row pgx.Row) error {
		return row.Scan(&now, nil)
	})
	if len(msgIDs) > 0 {
		b.Queue(o.q.inbox, o.cfg.Consumer, msgIDs, o.cfg.InboxRetention.Microseconds()).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				fresh[id] = true
			}
			return rows.Err()
		})
	}
	b.Queue(o.q.load, ids).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var id string
			var raw []byte
			var tp, ts *string
			if err := rows.Scan(&id, &raw, &tp, &ts); err != nil {
				return err
			}
			inst := &instance{exists: true, traceParent: deref(tp), traceState: deref(ts)}
			if err := decodeState(raw, &inst.state); err != nil {
				loadErr = fmt.Errorf("orchestrator: saga %q: decode its state: %w", id, err)
				continue
			}
			inst.def, _ = o.cfg.Definitions.Get(inst.state.Definition, inst.state.Version)
			sagas[id] = inst
		}
		return rows.Err()
	})
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("orchestrator: lock and load %d sagas: %w", len(ids), err)
	}
	if loadErr != nil {
		return loadErr
	}
	now = now.UTC()

	var w writes
	firstCopy := map[string]*item{}
	var copies []*item // second copies within the batch
	for _, it := range items {
		if it.msgID != "" {
			if !fresh[it.msgID] {
				it.res.outcome = outcomeDuplicate
				if firstCopy[it.msgID] != nil {
					copies = append(copies, it)
				}
				continue
			}
			delete(fresh, it.msgID) // a second copy within the batch is a duplicate too
			firstCopy[it.msgID] = it
		}
		if err := o.apply(it, sagas, now, &w); err != nil {
			return err
		}
		if it.msgID != "" && it.res.err != nil {
			w.unrecord = append(w.unrecord, it.msgID)
		}
	}
	for _, it := range copies {
		// A copy of a message that was not applied fails as it did.
		if first := firstCopy[it.msgID]; first.res.err != nil {
			it.res = result{err: first.res.err, outcome: first.res.outcome}
		}
	}
	return o.write(ctx, tx, sagas, &w)
}

// writes collects what a batch writes besides the saga rows.
type writes struct {
	history []historyRow
	// unrecord holds the ids of messages recorded in the inbox by this
	// batch but not applied.
	unrecord []string
	// envelopes by topic, topics in order of first use.
	topics []string
	envs   map[string][]messaging.Envelope
}

func (w *writes) add(topic string, env messaging.Envelope) {
	if w.envs == nil {
		w.envs = map[string][]messaging.Envelope{}
	}
	if _, ok := w.envs[topic]; !ok {
		w.topics = append(w.topics, topic)
	}
	w.envs[topic] = append(w.envs[topic], env)
}

// historyRow is a timeline entry to insert (its Seq is the table's).
type historyRow struct {
	SagaID string `json:"saga_id"`
	TimelineEntry
}

// apply transitions the item's saga and collects what to write.
func (o *Orchestrator) apply(it *item, sagas map[string]*instance, now time.Time, w *writes) error {
	inst := sagas[it.sagaID]
	var res saga.Result
	var err error
	switch it.kind {
	case kindStart:
		if inst != nil {
			it.res.outcome = outcomeIgnored
			st := inst.state
			it.res.state = &st
			return nil
		}
		inst = &instance{def: it.def}
		res, err = saga.Transition(it.def, saga.State{}, it.input, now)
		if err != nil {
			return fmt.Errorf("orchestrator: start saga %q: %w", it.sagaID, err)
		}
	default:
		if inst == nil {
			it.res.outcome = outcomeUnknown
			switch it.kind {
			case kindOperator:
				it.res.err = fmt.Errorf("%w: %q", ErrUnknownSaga, it.sagaID)
			case kindReply:
				// A fault of the record: a saga's row commits with its
				// commands, so no reply can come before it. Dead-lettered,
				// to be looked at (and replayed, should the saga appear).
				it.res.err = messaging.Permanent(fmt.Errorf("%w: reply %s (%s) names saga %q",
					ErrUnknownSaga, it.cause.ID, it.cause.Type, it.sagaID))
			}
			return nil
		}
		if inst.def == nil {
			// Its definition version is not in this orchestrator's
			// registry: a fault of the environment (a rolling deploy in
			// progress, a version removed too early), not of the message.
			// Nothing is applied; the error is not permanent, and Handle
			// waits for a replica that holds the version.
			it.res.outcome = outcomeNoDefinition
			it.res.err = fmt.Errorf("%w: saga %q runs %s@%d, which this orchestrator does not hold",
				ErrUnknownDefinition, it.sagaID, inst.state.Definition, inst.state.Version)
			return nil
		}
		res, err = saga.Transition(inst.def, inst.state, it.input, now)
		if err != nil {
			return fmt.Errorf("orchestrator: saga %q: %w", it.sagaID, err)
		}
	}
	if res.Ignored {
		it.res.outcome = outcomeIgnored
		st := inst.state
		it.res.state = &st
		if it.kind == kindTick && inst.exists {
			// The scheduler's claim moved due_at: write the real one back.
			inst.changed = true
		}
		return nil
	}

	envs, err := o.envelopes(it, inst.def, res)
	if err != nil {
		// A command that cannot be written (its mapping gives a payload its
		// schema refuses) would fail every time: park the saga instead.
		parked, perr := saga.Transition(inst.def, res.State, saga.Abort{Reason: err.Error()}, now)
		if perr != nil {
			return fmt.Errorf("orchestrator: saga %q: park after %w: %w", it.sagaID, err, perr)
		}
		res.Commands = nil
		res.State = parked.State
		res.Events = append(res.Events, parked.Events...)
		res.History = append(res.History, parked.History...)
		if envs, err = o.envelopes(it, inst.def, res); err != nil {
			return fmt.Errorf("orchestrator: saga %q: %w", it.sagaID, err)
		}
	}
	for _, e := range envs {
		w.add(e.topic, e.env)
	}
	for i, h := range res.History {
		w.history = append(w.history, historyRow{SagaID: it.sagaID, TimelineEntry: TimelineEntry{
			At: h.At, Step: h.Step, Phase: string(h.Phase), Attempt: h.Attempt,
			Outcome: string(h.Outcome), ReplyType: h.ReplyType, Detail: h.Detail, Actor: it.actorAt(i),
		}})
	}
	inst.state = res.State
	inst.changed = true
	if it.traceParent != "" {
		inst.traceParent, inst.traceState = it.traceParent, it.traceState
	}
	sagas[it.sagaID] = inst
	it.res.outcome = outcomeApplied
	st := res.State
	it.res.state = &st
	o.m.lifecycle(inst.def, res.Events)
	return nil
}

type topicEnvelope struct {
	topic string
	env   messaging.Envelope
}

// envelopes builds the records of a transition's commands and lifecycle
// events, and validates them when Config.Schemas is set.
func (o *Orchestrator) envelopes(it *item, def *saga.Definition, res saga.Result) ([]topicEnvelope, error) {
	st := res.State
	trace := func(e *messaging.Envelope) {
		e.TraceParent, e.TraceState = it.traceParent, it.traceState
	}
	stamp := func(e *messaging.Envelope) {
		e.Subject = st.ID
		e.SagaID = st.ID
		e.CorrelationID = st.CorrelationID
		if e.CorrelationID == "" {
			e.CorrelationID = st.ID
		}
		e.CausationID = it.cause.ID
		trace(e)
	}
	var out []topicEnvelope
	for _, c := range res.Commands {
		env, err := messaging.NewEnvelope(c.Type, o.cfg.Source, c.Payload)
		if err != nil {
			return nil, fmt.Errorf("step %q: %s command %s: %w", c.Step, c.Phase, c.Type, err)
		}
		stamp(&env)
		env.PartitionKey = c.Key
		if env.PartitionKey == "" {
			env.PartitionKey = st.ID
		}
		env.Extensions = map[string]string{
			saga.ExtensionStep:       c.Step,
			saga.ExtensionAttempt:    strconv.Itoa(c.Attempt),
			saga.ExtensionPhase:      string(c.Phase),
			saga.ExtensionReplyTo:    o.cfg.ReplyTopic,
			saga.ExtensionDefinition: def.Ref(),
		}
		if o.cfg.Schemas != nil {
			if err := o.cfg.Schemas.ValidateEnvelope(env); err != nil {
				return nil, fmt.Errorf("step %q: %s command %s: %w", c.Step, c.Phase, c.Type, err)
			}
		}
		out = append(out, topicEnvelope{c.Topic, env})
	}
	if o.cfg.DisableEvents {
		return out, nil
	}
	for _, ev := range res.Events {
		env, err := messaging.NewEnvelope(ev.Type, o.cfg.Source, lifecycleData{
			SagaID: st.ID, Definition: def.Name, DefinitionVersion: def.Version,
			Status: string(ev.Status), Step: ev.Step, Reason: ev.Reason, At: st.UpdatedAt,
		})
		if err != nil {
			return nil, fmt.Errorf("lifecycle event %s: %w", ev.Type, err)
		}
		stamp(&env)
		env.PartitionKey = st.ID
		env.Extensions = map[string]string{saga.ExtensionDefinition: def.Ref()}
		out = append(out, topicEnvelope{o.cfg.EventTopic, env})
	}
	return out, nil
}

// lifecycleData is the payload of a lifecycle event (schemas
// dtx.saga.*.v1.json).
type lifecycleData struct {
	SagaID            string    `json:"saga_id"`
	Definition        string    `json:"definition"`
	DefinitionVersion int       `json:"definition_version"`
	Status            string    `json:"status"`
	Step              string    `json:"step,omitempty"`
	Reason            string    `json:"reason,omitempty"`
	At                time.Time `json:"at"`
}

type sagaRow struct {
	ID                string          `json:"id"`
	Definition        string          `json:"definition"`
	DefinitionVersion int             `json:"definition_version"`
	Status            string          `json:"status"`
	Step              *string         `json:"step"`
	Attempt           int             `json:"attempt"`
	CorrelationID     string          `json:"correlation_id"`
	State             json.RawMessage `json:"state"`
	Reason            *string         `json:"reason"`
	DueAt             *time.Time      `json:"due_at"`
	TraceParent       *string         `json:"trace_parent"`
	TraceState        *string         `json:"trace_state"`
	StartedAt         time.Time       `json:"started_at"`
	UpdatedAt         time.Time       `json:"updated_at"`
}

// write stores the changed sagas, the history and the outbox records.
func (o *Orchestrator) write(ctx context.Context, tx pgx.Tx, sagas map[string]*instance, w *writes) error {
	var rows []sagaRow
	for id, inst := range sagas {
		if !inst.changed {
			continue
		}
		st := inst.state
		raw, err := json.Marshal(st)
		if err != nil {
			return fmt.Errorf("orchestrator: saga %q: encode its state: %w", id, err)
		}
		r := sagaRow{
			ID: id, Definition: st.Definition, DefinitionVersion: st.Version, Status: string(st.Status),
			Step: nonEmpty(st.StepName(inst.def)), Attempt: st.Attempt, CorrelationID: st.CorrelationID,
			State: raw, Reason: nonEmpty(st.Reason), TraceParent: nonEmpty(inst.traceParent),
			TraceState: nonEmpty(inst.traceState), StartedAt: st.StartedAt, UpdatedAt: st.UpdatedAt,
		}
		if wake := st.WakeAt(); !wake.IsZero() {
			r.DueAt = &wake
		}
		rows = append(rows, r)
	}
	var b pgx.Batch
	if len(rows) > 0 {
		raw, err := json.Marshal(rows)
		if err != nil {
			return fmt.Errorf("orchestrator: encode saga rows: %w", err)
		}
		b.Queue(o.q.save, raw)
	}
	if len(w.unrecord) > 0 {
		b.Queue(o.q.unrecord, o.cfg.Consumer, w.unrecord)
	}
	if len(w.history) > 0 {
		raw, err := json.Marshal(w.history)
		if err != nil {
			return fmt.Errorf("orchestrator: encode history: %w", err)
		}
		b.Queue(o.q.history, raw)
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("orchestrator: save %d sagas: %w", len(rows), err)
		}
	}
	for _, topic := range w.topics {
		if err := o.ob.WriteEnvelopes(ctx, tx, topic, w.envs[topic]...); err != nil {
			return fmt.Errorf("orchestrator: write %d records to the outbox: %w", len(w.envs[topic]), err)
		}
	}
	return nil
}

// decodeState decodes a stored saga state, keeping numbers in its data exact.
func decodeState(raw []byte, st *saga.State) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(st)
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
