package middleware

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/vextrus/dtx/pkg/messaging"
)

// Validate returns a router middleware that decodes each message
// (messaging.Decode) and validates its payload against reg
// (SchemaRegistry.ValidateEnvelope) before the handler runs. The handler
// finds the envelope in msg.Context() (EnvelopeFromContext).
//
// A message that does not decode, breaks its schema or has a type and
// version reg holds no schema for (unless reg allows unknown types) does not
// reach the handler: the error, a *messaging.DecodeError or the registry's,
// is returned marked with messaging.Permanent, so Retry passes it on and
// DeadLetter dead-letters the message with the error's text as the reason.
// A nil reg decodes without validating.
func Validate(reg *messaging.SchemaRegistry) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			env, err := messaging.Decode(msg)
			if err != nil {
				return nil, messaging.Permanent(err)
			}
			if reg != nil {
				if err := reg.ValidateEnvelope(env); err != nil {
					return nil, messaging.Permanent(err)
				}
			}
			msg.SetContext(ContextWithEnvelope(msg.Context(), env))
			return h(msg)
		}
	}
}

// envelopeKey is the context key of the decoded envelope.
type envelopeKey struct{}

// ContextWithEnvelope returns a copy of ctx that carries env, for
// EnvelopeFromContext.
func ContextWithEnvelope(ctx context.Context, env messaging.Envelope) context.Context {
	return context.WithValue(ctx, envelopeKey{}, env)
}

// EnvelopeFromContext returns the envelope ctx carries: within Validate, the
// decoded and validated envelope of the message being handled. ok is false
// when ctx carries none. The envelope's Data and Extensions are shared with
// every reader: do not change them.
func EnvelopeFromContext(ctx context.Context) (env messaging.Envelope, ok bool) {
	env, ok = ctx.Value(envelopeKey{}).(messaging.Envelope)
	return env, ok
}

// PanicError is a panic of a message handler that Recover turned into an
// error.
type PanicError struct {
	// Value is what the handler panicked with.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack []byte
}

// Error names the panic's value; the stack is left out, for it would crowd
// out the reason of a dead letter.
func (e *PanicError) Error() string {
	return fmt.Sprintf("handler panicked: %v", e.Value)
}

// Unwrap returns Value when it is an error, else nil.
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}

// Recover is a router middleware that turns a panic of the handler into a
// *PanicError marked with messaging.Permanent, so that DeadLetter
// dead-letters the message instead of the panic being retried for ever: a
// panic is a bug, and the same message would most likely make the handler
// panic again. The handler's deferred calls have run by then (an inbox
// transaction is rolled back), so nothing of the failed attempt remains.
func Recover(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) (out []*message.Message, err error) {
		defer func() {
			if v := recover(); v != nil {
				out, err = nil, messaging.Permanent(&PanicError{Value: v, Stack: debug.Stack()})
			}
		}()
		return h(msg)
	}
}
