package middleware

import (
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/vextrus/dtx/pkg/messaging"
)

// ValidatingPublisher returns a publisher that checks every message before
// pub sees any of them: it must decode as a dtx envelope (messaging.Decode)
// and its payload must satisfy its schema in reg (nil reg: decode only). If
// one message fails, none of the call's messages is published and the error
// names the message's position and id; it wraps the decode or schema error,
// so errors.Is finds messaging.ErrInvalidEnvelope, ErrSchemaViolation or
// ErrUnknownType. This is the producing edge of docs/architecture.md#payloads-and-schemas: bad payloads
// are refused where they are written, not discovered by every consumer.
func ValidatingPublisher(pub message.Publisher, reg *messaging.SchemaRegistry) message.Publisher {
	return &validatingPublisher{pub: pub, reg: reg}
}

type validatingPublisher struct {
	pub message.Publisher
	reg *messaging.SchemaRegistry
}

// Publish validates msgs, then publishes them all with the wrapped publisher.
func (p *validatingPublisher) Publish(topic string, msgs ...*message.Message) error {
	for i, msg := range msgs {
		env, err := messaging.Decode(msg)
		if err == nil && p.reg != nil {
			err = p.reg.ValidateEnvelope(env)
		}
		if err != nil {
			return fmt.Errorf("publish to %s: message %d (%s) refused: %w", topic, i, msg.UUID, err)
		}
	}
	return p.pub.Publish(topic, msgs...)
}

// Close closes the wrapped publisher.
func (p *validatingPublisher) Close() error { return p.pub.Close() }
