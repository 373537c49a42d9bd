package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/propagation"

	"github.com/vextrus/dtx/internal/wait"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/saga"
)

// Handle is the orchestrator's Watermill handler (a
// message.NoPublishHandlerFunc) for the topics of Topics: participant replies
// on the reply topic and trigger messages on the triggers' topics. It queues
// the message for Run's workers, which handle it with others in one
// transaction, and returns once that transaction committed (ack) or failed
// (nack). A message that is not a reply and matches no trigger is acked and
// ignored: trigger topics may carry other types. A malformed reply, a reply
// for a saga that does not exist, or a trigger whose saga id cannot be
// mapped, fails with a permanent error, so the DeadLetter middleware moves
// it to the dead-letter topic; a reply for no saga is also logged (a
// rate-limited warning) and counted.
//
// A reply for a saga whose definition version this orchestrator does not
// hold (a replica of the previous release during a rolling deploy) is not
// applied, not recorded and not failed: Handle tries it again with backoff
// (a rate-limited warning, counted), for as long as the message's context
// lasts. When the context ends (the partition goes to another replica, the
// subscriber closes) it returns a retryable error, so the message is
// delivered again, to a replica that may hold the version. No retry budget
// of the router can dead-letter it meanwhile.
func (o *Orchestrator) Handle(msg *message.Message) error {
	ctx := msg.Context()
	env, ok := middleware.EnvelopeFromContext(ctx)
	if !ok {
		var err error
		if env, err = messaging.Decode(msg); err != nil {
			return messaging.Permanent(err)
		}
	}
	it, err := o.itemFor(msg, env)
	if err != nil || it == nil {
		return err
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	it.traceParent, it.traceState = carrier["traceparent"], carrier["tracestate"]
	if it.traceParent == "" {
		it.traceParent, it.traceState = env.TraceParent, env.TraceState
	}
	return o.handleItem(ctx, msg, it)
}

// Backoff of a reply whose saga's definition version is missing here.
const (
	missingDefinitionMinWait = 100 * time.Millisecond
	missingDefinitionMaxWait = 10 * time.Second
)

// warnEvery is the shortest time between two warnings of one kind (see
// warnLimiter).
const warnEvery = 10 * time.Second

// handleItem submits it, and again while its saga's definition version is
// missing here, until ctx ends.
func (o *Orchestrator) handleItem(ctx context.Context, msg *message.Message, it *item) error {
	topic := msg.Metadata.Get(messaging.MetadataKafkaTopic)
	for attempt := 1; ; attempt++ {
		err := o.submit(ctx, it)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrUnknownSaga) && it.kind == kindReply:
			if ok, held := o.warns.allow("unknown_saga", time.Now()); ok {
				o.cfg.Logger.WarnContext(ctx, "orchestrator: reply for no saga; dead-lettering it",
					"saga_id", it.sagaID, "message_id", msg.UUID, "type", it.cause.Type, "topic", topic,
					"suppressed", held)
			}
			return err
		case !errors.Is(err, ErrUnknownDefinition) || messaging.IsPermanent(err):
			return err
		}
		delay := wait.Backoff(missingDefinitionMinWait, missingDefinitionMaxWait, attempt)
		if ok, held := o.warns.allow("unknown_definition", time.Now()); ok {
			o.cfg.Logger.WarnContext(ctx, "orchestrator: reply for a saga whose definition version this replica lacks; "+
				"waiting for a replica that holds it (a rolling deploy?)",
				"saga_id", it.sagaID, "message_id", msg.UUID, "topic", topic, "attempt", attempt,
				"delay", delay, "err", err.Error(), "suppressed", held)
		}
		if !wait.Sleep(ctx, delay) {
			return fmt.Errorf("orchestrator: reply %s of saga %q not applied, to be delivered again: %w", msg.UUID, it.sagaID, err)
		}
		it = it.again()
	}
}

// warnLimiter lets through one warning of each kind per warnEvery, and
// counts those it holds back. Its zero value is ready.
type warnLimiter struct {
	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

// allow reports whether a warning of kind may be logged at now, and how many
// were held back since the last one.
func (l *warnLimiter) allow(kind string, now time.Time) (ok bool, held int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last, l.held = map[string]time.Time{}, map[string]int{}
	}
	if last, seen := l.last[kind]; seen && now.Sub(last) < warnEvery {
		l.held[kind]++
		return false, 0
	}
	held = l.held[kind]
	l.last[kind], l.held[kind] = now, 0
	return true, held
}

// itemFor turns a consumed message into an item, or nil for a message that
// is not the orchestrator's.
func (o *Orchestrator) itemFor(msg *message.Message, env messaging.Envelope) (*item, error) {
	topic := msg.Metadata.Get(messaging.MetadataKafkaTopic)
	if env.SagaID != "" && env.Extensions[saga.ExtensionStep] != "" && (topic == "" || topic == o.cfg.ReplyTopic) {
		return o.replyItem(msg, env)
	}
	for _, ref := range o.cfg.Definitions.Triggers() {
		if ref.Trigger.Type != env.Type || (topic != "" && ref.Trigger.Topic != topic) {
			continue
		}
		return o.triggerItem(msg, env, ref)
	}
	if topic == o.cfg.ReplyTopic {
		return nil, messaging.Permanent(fmt.Errorf("orchestrator: %s %s on the reply topic has no saga headers (ce_sagaid, ce_sagastep)", env.Type, env.ID))
	}
	return nil, nil
}

func (o *Orchestrator) replyItem(msg *message.Message, env messaging.Envelope) (*item, error) {
	attempt, err := strconv.Atoi(env.Extensions[saga.ExtensionAttempt])
	if err != nil || attempt < 1 {
		return nil, messaging.Permanent(fmt.Errorf("orchestrator: reply %s of saga %q: header %s %q is not an attempt number",
			env.ID, env.SagaID, saga.HeaderAttempt, env.Extensions[saga.ExtensionAttempt]))
	}
	phase := saga.Phase(env.Extensions[saga.ExtensionPhase])
	if !phase.Valid() {
		return nil, messaging.Permanent(fmt.Errorf("orchestrator: reply %s of saga %q: header %s %q is not a phase",
			env.ID, env.SagaID, saga.HeaderPhase, phase))
	}
	data, err := decodeObject(env.Data)
	if err != nil {
		return nil, messaging.Permanent(fmt.Errorf("orchestrator: reply %s of saga %q: %w", env.ID, env.SagaID, err))
	}
	it := newItem(kindReply, env.SagaID)
	it.msgID = msg.UUID
	it.cause = env
	it.input = saga.Reply{
		Step: env.Extensions[saga.ExtensionStep], Attempt: attempt, Phase: phase,
		Type: env.Type, Data: data, MessageID: env.ID,
	}
	return it, nil
}

func (o *Orchestrator) triggerItem(msg *message.Message, env messaging.Envelope, ref saga.TriggerRef) (*item, error) {
	payload, err := decodeObject(env.Data)
	if err != nil {
		return nil, messaging.Permanent(fmt.Errorf("orchestrator: trigger %s %s: %w", env.Type, env.ID, err))
	}
	id := msg.UUID
	if ref.Trigger.SagaID != "" {
		v, err := saga.Map(ref.Trigger.SagaID, payload, saga.Vars{Name: ref.Definition.Name, Version: ref.Definition.Version})
		if err != nil {
			return nil, messaging.Permanent(fmt.Errorf("orchestrator: trigger %s %s of %s: saga id: %w", env.Type, env.ID, ref.Definition.Ref(), err))
		}
		switch v := v.(type) {
		case string:
			id = v
		case json.Number:
			id = v.String()
		default:
			return nil, messaging.Permanent(fmt.Errorf("orchestrator: trigger %s %s of %s: saga id %s gives %T, want a string",
				env.Type, env.ID, ref.Definition.Ref(), ref.Trigger.SagaID, v))
		}
		if id == "" || len(id) > 255 {
			return nil, messaging.Permanent(fmt.Errorf("orchestrator: trigger %s %s of %s: saga id of %d bytes, want 1..255",
				env.Type, env.ID, ref.Definition.Ref(), len(id)))
		}
	}
	data := payload
	if ref.Trigger.Data != nil {
		v, err := saga.Map(ref.Trigger.Data, payload, saga.Vars{SagaID: id, Name: ref.Definition.Name, Version: ref.Definition.Version})
		if err != nil {
			return nil, messaging.Permanent(fmt.Errorf("orchestrator: trigger %s %s of %s: data: %w", env.Type, env.ID, ref.Definition.Ref(), err))
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, messaging.Permanent(fmt.Errorf("orchestrator: trigger %s %s of %s: data mapping gives %T, want an object",
				env.Type, env.ID, ref.Definition.Ref(), v))
		}
		data = m
	}
	corr := env.CorrelationID
	if corr == "" {
		corr = env.ID
	}
	it := newItem(kindStart, id)
	it.msgID = msg.UUID
	it.cause = env
	it.def = ref.Definition
	it.input = saga.Start{ID: id, CorrelationID: corr, Data: data}
	return it, nil
}

// decodeObject decodes a JSON object payload with numbers kept exact. An
// empty payload or null is an empty object.
func decodeObject(raw []byte) (map[string]any, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("payload is not a JSON object: %w", err)
	}
	if dec.More() {
		return nil, errors.New("payload has data after its JSON object")
	}
	return m, nil
}

// StartParams are the optional parts of a saga started from Go.
type StartParams struct {
	// CorrelationID ties the saga's messages together. Defaults to the saga
	// id.
	CorrelationID string
	// Cause, if set, is the message that caused the start: the causation of
	// the saga's first commands and its deduplication id.
	Cause *messaging.Envelope
}

// Start starts a saga of the latest version of definition name with id and
// data, in tx (the caller's transaction: the saga starts if and only if tx
// commits) or, when tx is nil, in a transaction of its own. It reports false
// when a saga with that id exists already: starting is idempotent by id.
//
// In tx, call Start before tx writes anything: it then takes its commands'
// key locks before tx gets its id, and they are published in commit order.
// If tx wrote before, a younger transaction may have committed a command of
// the same key meanwhile; Start then fails with outbox.ErrKeyOrder, having
// written nothing: roll tx back and retry it. A first command that cannot be
// written (too large, refused by its schema) starts the saga parked as
// Failed (see the package documentation, "Bad commands park").
func (o *Orchestrator) Start(ctx context.Context, tx pgx.Tx, name, id string, data map[string]any, p StartParams) (started bool, err error) {
	def, ok := o.cfg.Definitions.Latest(name)
	if !ok {
		return false, fmt.Errorf("%w: %q", ErrUnknownDefinition, name)
	}
	if id == "" || len(id) > 255 {
		return false, fmt.Errorf("orchestrator: saga id of %d bytes, want 1..255", len(id))
	}
	corr := p.CorrelationID
	if corr == "" {
		corr = id
	}
	it := newItem(kindStart, id)
	it.def = def
	it.input = saga.Start{ID: id, CorrelationID: corr, Data: data}
	if p.Cause != nil {
		it.cause = *p.Cause
		it.msgID = p.Cause.ID
	}
	if err := o.inOwnTx(ctx, tx, it); err != nil {
		return false, err
	}
	if it.res.err != nil {
		return false, it.res.err
	}
	return it.res.outcome == outcomeApplied, nil
}
