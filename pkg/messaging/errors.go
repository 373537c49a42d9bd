package messaging

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalidEnvelope is wrapped by every error that says a message is not a
// valid dtx envelope: a received message that cannot be decoded
// (*DecodeError) or an Envelope that cannot be sent (*EnvelopeError). Retrying
// cannot fix it, so consumers treat it as permanent and dead-letter the
// message.
var ErrInvalidEnvelope = errors.New("invalid envelope")

// ErrSchemaViolation is wrapped by *SchemaError: a payload does not match the
// JSON Schema of its type and schema version. It is permanent.
var ErrSchemaViolation = errors.New("payload violates its schema")

// ErrUnknownType is wrapped by the error a SchemaRegistry returns for a type
// and schema version it holds no schema for, unless it is configured to let
// such payloads pass. It is permanent.
var ErrUnknownType = errors.New("no schema for message type")

// DecodeError says why Decode rejected a message. It wraps ErrInvalidEnvelope.
type DecodeError struct {
	// Field is the metadata key (record header) at fault, such as "ce_time"
	// or "content-type", or "payload" for the message body. It is empty when
	// the message itself is missing.
	Field string
	// Reason says what is wrong with it.
	Reason string
}

// Error implements error.
func (e *DecodeError) Error() string {
	if e.Field == "" {
		return "messaging: cannot decode message: " + e.Reason
	}
	return "messaging: cannot decode message: " + printableField(e.Field) + ": " + e.Reason
}

// printableField returns a metadata key as it is if it is short printable
// ASCII, else quoted and cut: a key is whatever a producer wrote, and the
// error ends up in logs and dead-letter headers.
func printableField(f string) string {
	if len(f) <= 64 {
		plain := true
		for i := 0; i < len(f); i++ {
			if f[i] <= ' ' || f[i] >= 0x7f || f[i] == '"' {
				plain = false
				break
			}
		}
		if plain {
			return f
		}
	}
	return quote(f)
}

// Unwrap returns ErrInvalidEnvelope.
func (e *DecodeError) Unwrap() error { return ErrInvalidEnvelope }

// EnvelopeError says why an Envelope is not valid, as returned by
// Envelope.Validate, Envelope.ToMessage and NewEnvelope. It wraps
// ErrInvalidEnvelope.
type EnvelopeError struct {
	// Field names the Envelope field at fault, such as "Time" or
	// `Extensions["Region"]`.
	Field string
	// Reason says what is wrong with it.
	Reason string
}

// Error implements error.
func (e *EnvelopeError) Error() string {
	return "messaging: invalid envelope: " + e.Field + ": " + e.Reason
}

// Unwrap returns ErrInvalidEnvelope.
func (e *EnvelopeError) Unwrap() error { return ErrInvalidEnvelope }

// SchemaError says how a payload violates the JSON Schema of its type and
// schema version. It wraps ErrSchemaViolation.
type SchemaError struct {
	// Type is the message type whose schema was applied.
	Type string
	// Version is the schema version that was applied.
	Version int
	// Details lists each violation as "at '<JSON pointer into the
	// payload>': <what is wrong>", e.g. "at '/lines/0/quantity': minimum:
	// got 0, want 1". The pointer is empty for the payload as a whole.
	Details []string
}

// Error implements error.
func (e *SchemaError) Error() string {
	var b strings.Builder
	b.WriteString("messaging: payload of ")
	b.WriteString(e.Type)
	b.WriteString(" v")
	b.WriteString(strconv.Itoa(e.Version))
	b.WriteString(" violates its schema")
	for i, d := range e.Details {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(d)
	}
	return b.String()
}

// Unwrap returns ErrSchemaViolation.
func (e *SchemaError) Unwrap() error { return ErrSchemaViolation }

// unknownTypeError builds the error for a type and version without a schema.
func unknownTypeError(typ string, version int) error {
	if version == 0 {
		return fmt.Errorf("messaging: type %q carries no schema version: %w", typ, ErrUnknownType)
	}
	return fmt.Errorf("messaging: type %q version %d: %w", typ, version, ErrUnknownType)
}
