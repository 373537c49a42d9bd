package cqrs

import (
	"encoding/json"
	"fmt"

	wcqrs "github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/vextrus/dtx/pkg/messaging"
)

// Marshaler is a CloudEvents marshaler for Watermill's components/cqrs
// (wcqrs.CommandEventMarshaler): the messages it makes are dtx envelopes
// (messaging.Envelope.ToMessage), with the metadata the outbox
// (outbox.ContextPublisher, outbox.Publisher), the kafka Publisher and
// middleware.Standard expect: ce_specversion, ce_id (the message UUID),
// ce_type (the command's or event's name), ce_source, ce_time,
// ce_schemaversion 1, content-type application/json and, for a value that
// implements Keyed, the partition key. A team on Watermill's
// cqrs.CommandBus and cqrs.EventBus sets it as their Marshaler and publishes
// through the outbox unchanged; Watermill's JSONMarshaler writes none of
// these, and the outbox refuses its messages (ce_specversion: missing).
//
// The zero Marshaler is not usable: Source is required.
type Marshaler struct {
	// Source is the CloudEvents source of the messages, a URI reference
	// such as "/sales/api". Required.
	Source string

	// NameFunc returns the name of a command or event, its ce_type and so
	// the type of its JSON Schema, e.g. "sales.order.placed". Defaults to
	// wcqrs.FullyQualifiedStructName, as Watermill's JSONMarshaler.
	NameFunc func(v any) string
}

var _ wcqrs.CommandEventMarshaler = Marshaler{}

// Marshal encodes v as JSON into a dtx envelope named Name(v) and returns
// its message. It fails when Source or the name is not a valid CloudEvents
// attribute, or v cannot be encoded.
func (m Marshaler) Marshal(v any) (*message.Message, error) {
	env, err := messaging.NewEnvelope(m.Name(v), m.Source, v)
	if err != nil {
		return nil, fmt.Errorf("cqrs: Marshaler (Source %q): %w", m.Source, err)
	}
	if k, ok := v.(Keyed); ok {
		env.PartitionKey = k.PartitionKey()
	}
	return env.ToMessage()
}

// Unmarshal decodes the JSON payload of msg into v.
func (m Marshaler) Unmarshal(msg *message.Message, v any) error {
	if err := json.Unmarshal(msg.Payload, v); err != nil {
		return fmt.Errorf("cqrs: unmarshal %s (id %s): %w", m.NameFromMessage(msg), msg.UUID, err)
	}
	return nil
}

// Name returns the name of v: NameFunc(v).
func (m Marshaler) Name(v any) string {
	if m.NameFunc != nil {
		return m.NameFunc(v)
	}
	return wcqrs.FullyQualifiedStructName(v)
}

// NameFromMessage returns the name of the command or event msg carries: its
// ce_type.
func (m Marshaler) NameFromMessage(msg *message.Message) string {
	return msg.Metadata.Get(messaging.HeaderType)
}
