package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
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
	// refused, if set, says why a command of the transition could not be
	// written (the saga was parked instead), and refusedDef names the
	// saga's definition.
	refused, refusedDef string
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

// errInboxRace: a message the batch found unrecorded was recorded by a
// concurrent transaction before the batch recorded it. inTx retries the
// batch, which then sees it as a duplicate.
var errInboxRace = errors.New("orchestrator: a message of the batch was recorded by a concurrent transaction")

// process applies items in tx. Its transaction takes its id only once it
// holds every lock that orders what it writes:
//
//  1. without writing (the transaction gets no id): lock the sagas, read
//     which messages were recorded before (duplicates) and load the sagas;
//  2. transition each saga for each of its inputs, in item order, and build
//     the records of their commands and lifecycle events (pure);
//  3. take the outbox's lock of every (topic, key) to write, then record the
//     applied messages in the inbox (the first write: the transaction's id
//     comes after every earlier writer of these keys committed), and write
//     the sagas, their history and the records.
//
// A message that was not applied (its item ends with an error: no such
// saga, a definition version this orchestrator lacks) is not recorded in
// the inbox, so that a later delivery of it (a redelivery, a replay from the
// dead-letter topic) is applied rather than dropped as a duplicate.
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
	var hadXID bool
	recorded := map[string]bool{}
	sagas := map[string]*instance{}
	var loadErr error
	var b pgx.Batch
	b.Queue(o.q.lock, keys).QueryRow(func(row pgx.Row) error {
		return row.Scan(&now, nil, &hadXID)
	})
	if len(msgIDs) > 0 {
		b.Queue(o.q.seen, o.cfg.Consumer, msgIDs).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				recorded[id] = true
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
	if origin, ok := middleware.OriginFromContext(ctx); ok {
		w.stampBy = &origin
	}
	firstCopy := map[string]*item{}
	var copies []*item // second copies within the batch
	for _, it := range items {
		if it.msgID != "" {
			if recorded[it.msgID] || firstCopy[it.msgID] != nil {
				it.res.outcome = outcomeDuplicate
				if firstCopy[it.msgID] != nil {
					copies = append(copies, it)
				}
				continue
			}
			firstCopy[it.msgID] = it
		}
		if err := o.apply(ctx, it, sagas, now, &w); err != nil {
			return err
		}
		if it.msgID != "" && it.res.err == nil {
			w.record = append(w.record, it.msgID)
		}
	}
	for _, it := range copies {
		// A copy of a message that was not applied fails as it did.
		if first := firstCopy[it.msgID]; first.res.err != nil {
			it.res = result{err: first.res.err, outcome: first.res.outcome}
		}
	}
	return o.write(ctx, tx, sagas, &w, hadXID)
}

// writes collects what a batch writes besides the saga rows.
type writes struct {
	// stampBy is the origin the context carries, if any: it stamps the
	// records as the outbox's Write would.
	stampBy *middleware.Origin
	history []historyRow
	// record holds the ids of the messages applied, to record in the inbox.
	record []string
	// rows are the outbox records, in order.
	rows []outboxRow
}

// outboxRow is one record to write.
type outboxRow struct {
	topic string
	rec   outbox.Record
}

// historyRow is a timeline entry to insert (its Seq is the table's).
type historyRow struct {
	SagaID string `json:"saga_id"`
	TimelineEntry
}

// apply transitions the item's saga and collects what to write.
func (o *Orchestrator) apply(ctx context.Context, it *item, sagas map[string]*instance, now time.Time, w *writes) error {
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

	rows, err := o.records(it, inst.def, res, w.stampBy)
	if err != nil {
		// A command that cannot be written (too large for the outbox, a
		// payload its schema refuses) is a fault of the record: it would
		// fail every time, and the input that caused it with it. Park the
		// saga instead, in this transaction; the input is applied.
		reason := refusal(err)
		it.res.refused, it.res.refusedDef = reason, inst.def.Name
		if ok, held := o.warns.allow("command_refused", time.Now()); ok {
			o.cfg.Logger.ErrorContext(ctx, "orchestrator: a command of the saga cannot be written; parking the saga as failed",
				"saga_id", it.sagaID, "definition", inst.def.Ref(), "reason", reason, "err", err.Error(), "suppressed", held)
		}
		parked, perr := saga.Transition(inst.def, res.State, saga.Abort{Reason: err.Error()}, now)
		if perr != nil {
			return fmt.Errorf("orchestrator: saga %q: park after %w: %w", it.sagaID, err, perr)
		}
		res.Commands = nil
		res.State = parked.State
		res.Events = append(res.Events, parked.Events...)
		res.History = append(res.History, parked.History...)
		if rows, err = o.records(it, inst.def, res, w.stampBy); err != nil {
			return fmt.Errorf("orchestrator: saga %q: %w", it.sagaID, err)
		}
	}
	w.rows = append(w.rows, rows...)
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

// Reasons a command is refused, the label "reason" of
// dtx_saga_commands_refused_total.
const (
	refusedTooLarge = "too_large"
	refusedSchema   = "schema"
	refusedInvalid  = "invalid"
)

// refusal names the reason of a record's fault.
func refusal(err error) string {
	switch {
	case errors.Is(err, outbox.ErrTooLarge):
		return refusedTooLarge
	case errors.Is(err, messaging.ErrSchemaViolation), errors.Is(err, messaging.ErrUnknownType):
		return refusedSchema
	}
	return refusedInvalid
}

// records builds the outbox records of a transition's commands and
// lifecycle events and checks them as the outbox's Write would (envelope,
// schema when Config.Schemas is set, size): a record that fails fails here,
// before the transaction writes anything.
func (o *Orchestrator) records(it *item, def *saga.Definition, res saga.Result, origin *middleware.Origin) ([]outboxRow, error) {
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
		if origin != nil {
			*e = origin.StampEnvelope(*e)
		}
	}
	var out []outboxRow
	add := func(topic string, env messaging.Envelope) error {
		recs, err := o.ob.Records(env)
		if err != nil {
			return err
		}
		out = append(out, outboxRow{topic: topic, rec: recs[0]})
		return nil
	}
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
		if err := add(c.Topic, env); err != nil {
			return nil, fmt.Errorf("step %q: %s command %s: %w", c.Step, c.Phase, c.Type, err)
		}
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
		if err := add(o.cfg.EventTopic, env); err != nil {
			return nil, fmt.Errorf("lifecycle event %s: %w", ev.Type, err)
		}
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

// write stores the changed sagas, the history, the inbox records and the
// outbox records. It first takes the outbox's lock of every (topic, key) of
// the records, topics in ascending order and each topic's keys in the
// outbox's order, so that two batches never wait for each other in a cycle.
// The transaction has no id yet (hadXID false: process only locked and
// read), so the locks and the writes go in one round trip: the id it gets at
// its first write comes after every earlier writer of these keys committed,
// and the relay publishes each key's records in commit order. A caller's
// transaction that already had its id (hadXID) sends the locks alone and
// lets the outbox check the order (outbox.ErrKeyOrder) before writing.
func (o *Orchestrator) write(ctx context.Context, tx pgx.Tx, sagas map[string]*instance, w *writes, hadXID bool) error {
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
	checks, err := o.queueKeyLocks(&b, w.rows)
	if err != nil {
		return err
	}
	if hadXID && b.Len() > 0 {
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("orchestrator: lock the outbox keys: %w", err)
		}
		for _, check := range checks {
			if err := check(ctx, tx); err != nil {
				return fmt.Errorf("orchestrator: %w", err)
			}
		}
		b, checks = pgx.Batch{}, nil
	}
	var recorded int64
	if len(w.record) > 0 {
		b.Queue(o.q.inbox, o.cfg.Consumer, w.record, o.cfg.InboxRetention.Microseconds()).Exec(func(tag pgconn.CommandTag) error {
			recorded = tag.RowsAffected()
			return nil
		})
	}
	if len(rows) > 0 {
		raw, err := json.Marshal(rows)
		if err != nil {
			return fmt.Errorf("orchestrator: encode saga rows: %w", err)
		}
		b.Queue(o.q.save, raw)
	}
	if len(w.history) > 0 {
		raw, err := json.Marshal(w.history)
		if err != nil {
			return fmt.Errorf("orchestrator: encode history: %w", err)
		}
		b.Queue(o.q.history, raw)
	}
	if len(w.rows) > 0 {
		n := len(w.rows)
		topics, keys, headers, payloads := make([]string, n), make([]*string, n), make([][]byte, n), make([][]byte, n)
		for i, r := range w.rows {
			topics[i], keys[i], headers[i], payloads[i] = r.topic, r.rec.Key, r.rec.Headers, r.rec.Payload
		}
		b.Queue(o.q.outbox, topics, keys, headers, payloads)
	}
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("orchestrator: save %d sagas and %d records: %w", len(rows), len(w.rows), err)
	}
	for _, check := range checks {
		// Never an order risk here (the transaction had no id when it
		// took the locks): no round trip.
		if err := check(ctx, tx); err != nil {
			return fmt.Errorf("orchestrator: %w", err)
		}
	}
	if recorded != int64(len(w.record)) {
		return errInboxRace
	}
	return nil
}

// queueKeyLocks queues on b the outbox's lock of every (topic, key) of rows,
// topics in ascending order.
func (o *Orchestrator) queueKeyLocks(b *pgx.Batch, rows []outboxRow) ([]func(context.Context, outbox.Querier) error, error) {
	keys := map[string][]string{}
	for _, r := range rows {
		if r.rec.Key != nil {
			keys[r.topic] = append(keys[r.topic], *r.rec.Key)
		}
	}
	var checks []func(context.Context, outbox.Querier) error
	for _, topic := range slices.Sorted(maps.Keys(keys)) {
		check, err := o.ob.QueueLock(b, topic, keys[topic]...)
		if err != nil {
			return nil, fmt.Errorf("orchestrator: %w", err)
		}
		checks = append(checks, check)
	}
	return checks, nil
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
