package middleware

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/vextrus/dtx/pkg/messaging"
)

// Origin is what a message inherits from the message, or the request, that
// caused it: its causation id, its correlation id and its saga.
type Origin struct {
	// MessageID is the id of the message being handled: the causation id of
	// every message its handling produces. Empty at an edge that is not a
	// message, such as an HTTP request.
	MessageID string
	// CorrelationID ties together every message of one business
	// transaction. For a message being handled it is the message's
	// correlation id, or its own id when it carries none: a message without
	// one starts a business transaction.
	CorrelationID string
	// SagaID is the saga the message being handled belongs to, if any.
	SagaID string
}

// OriginOf returns the origin of the messages that handling msg produces:
// MessageID is msg.UUID (the CloudEvents id), CorrelationID the
// messaging.HeaderCorrelationID of msg or, when it has none, msg.UUID, and
// SagaID its messaging.HeaderSagaID.
func OriginOf(msg *message.Message) Origin {
	o := Origin{
		MessageID:     msg.UUID,
		CorrelationID: msg.Metadata.Get(messaging.HeaderCorrelationID),
		SagaID:        msg.Metadata.Get(messaging.HeaderSagaID),
	}
	if o.CorrelationID == "" {
		o.CorrelationID = msg.UUID
	}
	return o
}

// Stamp records in msg's metadata that it descends from o:
//
//   - messaging.HeaderCausationID is set to o.MessageID when that is not
//     empty, replacing any value: what caused a message is a fact of the
//     handling, not a choice of the handler. A message that is the one
//     being handled (the same UUID) is left alone.
//   - messaging.HeaderCorrelationID is set to o.CorrelationID, or
//     o.MessageID when that is empty, unless msg has one already: a handler
//     may start a new business transaction on purpose.
//   - messaging.HeaderSagaID is set to o.SagaID unless msg has one already
//     or o has none.
func (o Origin) Stamp(msg *message.Message) {
	if msg == nil || (o.MessageID != "" && msg.UUID == o.MessageID) {
		return
	}
	if msg.Metadata == nil {
		msg.Metadata = make(message.Metadata)
	}
	md := msg.Metadata
	if o.MessageID != "" {
		md.Set(messaging.HeaderCausationID, o.MessageID)
	}
	if md.Get(messaging.HeaderCorrelationID) == "" {
		corr := o.CorrelationID
		if corr == "" {
			corr = o.MessageID
		}
		if corr != "" {
			md.Set(messaging.HeaderCorrelationID, corr)
		}
	}
	if md.Get(messaging.HeaderSagaID) == "" && o.SagaID != "" {
		md.Set(messaging.HeaderSagaID, o.SagaID)
	}
}

// StampEnvelope returns a copy of e stamped as Stamp stamps a message, for
// code that builds envelopes, such as a handler writing to the outbox.
func (o Origin) StampEnvelope(e messaging.Envelope) messaging.Envelope {
	if o.MessageID != "" && e.ID == o.MessageID {
		return e
	}
	if o.MessageID != "" {
		e.CausationID = o.MessageID
	}
	if e.CorrelationID == "" {
		e.CorrelationID = o.CorrelationID
		if e.CorrelationID == "" {
			e.CorrelationID = o.MessageID
		}
	}
	if e.SagaID == "" {
		e.SagaID = o.SagaID
	}
	return e
}

// originKey is the context key of an Origin.
type originKey struct{}

// ContextWithOrigin returns a copy of ctx that carries o.
func ContextWithOrigin(ctx context.Context, o Origin) context.Context {
	return context.WithValue(ctx, originKey{}, o)
}

// OriginFromContext returns the Origin ctx carries: within Correlation, the
// origin of the message being handled. ok is false when ctx carries none.
func OriginFromContext(ctx context.Context) (o Origin, ok bool) {
	o, ok = ctx.Value(originKey{}).(Origin)
	return o, ok
}

// WithCorrelationID returns a copy of ctx whose Origin has the correlation
// id id, for the edge of a business transaction: an HTTP handler calls it
// with the request's correlation id, and StampContext then gives it to the
// first messages. The rest of the Origin ctx carries is kept.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	o, _ := OriginFromContext(ctx)
	o.CorrelationID = id
	return ContextWithOrigin(ctx, o)
}

// CorrelationIDFromContext returns the correlation id of the Origin ctx
// carries, or "".
func CorrelationIDFromContext(ctx context.Context) string {
	o, _ := OriginFromContext(ctx)
	return o.CorrelationID
}

// StampContext stamps msgs (see Origin.Stamp) with the Origin ctx carries. It
// does nothing when ctx carries none.
func StampContext(ctx context.Context, msgs ...*message.Message) {
	o, ok := OriginFromContext(ctx)
	if !ok {
		return
	}
	for _, msg := range msgs {
		o.Stamp(msg)
	}
}

// Correlation is a router middleware that links the messages a handler
// produces to the message it handles. It puts OriginOf(msg) into
// msg.Context(), where the handler and code it calls find it
// (OriginFromContext, CorrelationIDFromContext), and stamps every message
// the handler returns with it (Origin.Stamp): causation id = the handled
// message's id; correlation id and saga id inherited unless the handler set
// them. Along a chain edge → first → second hop, the correlation id stays
// that of the edge and each message's causation id is its predecessor's id.
func Correlation(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		o := OriginOf(msg)
		msg.SetContext(ContextWithOrigin(msg.Context(), o))
		out, err := h(msg)
		if err != nil {
			return out, err
		}
		for _, p := range out {
			o.Stamp(p)
		}
		return out, nil
	}
}
