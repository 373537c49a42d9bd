package participant

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/saga"
)

// MaxTextLen is the longest saga id and step name, in bytes, that the
// barrier table holds.
const MaxTextLen = 255

// ErrInvalidCommand is wrapped by the error for a message that is not a
// saga command: it does not decode as a dtx envelope, lacks ce_sagaid,
// ce_sagastep or ce_sagaattempt, has a phase other than "action" or
// "compensation", an attempt that is not a positive integer, a saga id or
// step longer than MaxTextLen bytes, or a reply-to topic Kafka would refuse.
// The error is marked messaging.Permanent: the message is dead-lettered.
var ErrInvalidCommand = errors.New("participant: invalid saga command")

// ErrUnknownCommand is wrapped by the error for a command whose type has no
// handler for its phase (see Participant.Action and Participant.Compensation).
// The error is marked messaging.Permanent.
var ErrUnknownCommand = errors.New("participant: no handler for saga command")

// Command is a saga command as a handler receives it.
type Command struct {
	// SagaID is the saga the command belongs to (header ce_sagaid).
	SagaID string
	// Step names the saga step (header ce_sagastep).
	Step string
	// Attempt is the orchestrator's attempt number of the step's command,
	// from 1 (header ce_sagaattempt).
	Attempt int
	// Phase says whether this is the step's action or its compensation
	// (header ce_sagaphase).
	Phase saga.Phase
	// Type is the command type (ce_type), the key handlers are registered
	// by.
	Type string
	// ReplyTo is the topic the reply goes to: the header ce_sagareplyto,
	// or saga.DefaultReplyTopic when the command carries none.
	ReplyTo string
	// Data is the command's payload, nil when it has none.
	Data json.RawMessage
	// Envelope is the whole decoded command, for the attributes Command
	// has no field of its own for, such as the correlation id.
	Envelope messaging.Envelope

	// attempt is the ce_sagaattempt header as received, copied to the reply.
	attempt string
}

// extension returns the CloudEvents extension name of a ce_* header.
func extension(header string) string { return strings.TrimPrefix(header, "ce_") }

// parseCommand reads the saga command msg carries. Every error wraps
// ErrInvalidCommand (or messaging.ErrInvalidEnvelope) and is permanent.
func parseCommand(msg *message.Message) (Command, error) {
	if msg == nil {
		return Command{}, messaging.Permanent(fmt.Errorf("%w: nil message", ErrInvalidCommand))
	}
	env, ok := middleware.EnvelopeFromContext(msg.Context())
	if !ok || env.ID != msg.UUID {
		var err error
		if env, err = messaging.Decode(msg); err != nil {
			return Command{}, messaging.Permanent(fmt.Errorf("%w: %w", ErrInvalidCommand, err))
		}
	}
	invalid := func(format string, args ...any) error {
		return messaging.Permanent(fmt.Errorf("%w %q (type %q): %s", ErrInvalidCommand, env.ID, env.Type, fmt.Sprintf(format, args...)))
	}
	cmd := Command{
		SagaID:   env.SagaID,
		Step:     env.Extensions[extension(saga.HeaderStep)],
		Phase:    saga.Phase(env.Extensions[extension(saga.HeaderPhase)]),
		Type:     env.Type,
		ReplyTo:  env.Extensions[extension(saga.HeaderReplyTo)],
		Data:     env.Data,
		Envelope: env,
		attempt:  env.Extensions[extension(saga.HeaderAttempt)],
	}
	switch {
	case cmd.SagaID == "":
		return Command{}, invalid("no %s", messaging.HeaderSagaID)
	case len(cmd.SagaID) > MaxTextLen:
		return Command{}, invalid("%s is %d bytes long, more than %d", messaging.HeaderSagaID, len(cmd.SagaID), MaxTextLen)
	case cmd.Step == "":
		return Command{}, invalid("no %s", saga.HeaderStep)
	case len(cmd.Step) > MaxTextLen:
		return Command{}, invalid("%s is %d bytes long, more than %d", saga.HeaderStep, len(cmd.Step), MaxTextLen)
	case !cmd.Phase.Valid():
		return Command{}, invalid("%s is %q, neither %q nor %q", saga.HeaderPhase, cmd.Phase, saga.PhaseAction, saga.PhaseCompensation)
	case cmd.attempt == "":
		return Command{}, invalid("no %s", saga.HeaderAttempt)
	}
	n, err := strconv.Atoi(cmd.attempt)
	if err != nil || n < 1 {
		return Command{}, invalid("%s is %q, not a positive integer", saga.HeaderAttempt, cmd.attempt)
	}
	cmd.Attempt = n
	if cmd.ReplyTo == "" {
		cmd.ReplyTo = saga.DefaultReplyTopic
	}
	return cmd, nil
}
