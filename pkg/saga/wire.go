package saga

// The wire contract between the orchestrator and participants. A command the
// orchestrator sends is a dtx CloudEvents record (see package messaging)
// keyed by the saga id, with these extension headers beside ce_sagaid
// (messaging.HeaderSagaID) and the correlation and causation ids. A
// participant replies on the topic named by HeaderReplyTo, keyed by the saga
// id, with a reply type the step lists and the four headers HeaderSagaID,
// HeaderStep, HeaderAttempt and HeaderPhase copied from the command, so that
// the orchestrator can correlate the reply with the step and attempt it
// answers.
const (
	// HeaderStep names the step a command or reply belongs to.
	HeaderStep = "ce_sagastep"
	// HeaderAttempt is the attempt number of the command, from 1.
	HeaderAttempt = "ce_sagaattempt"
	// HeaderPhase says whether a command is a step's action or its
	// compensation: PhaseAction or PhaseCompensation.
	HeaderPhase = "ce_sagaphase"
	// HeaderReplyTo is the topic the participant sends its reply to.
	HeaderReplyTo = "ce_sagareplyto"
	// HeaderDefinition is "name@version" of the definition a saga runs; it
	// is set on commands and lifecycle events for observability only.
	HeaderDefinition = "ce_sagadefinition"
)

// CloudEvents extension names of the headers above (an extension "x" is the
// record header "ce_x"), for messaging.Envelope.Extensions.
const (
	ExtensionStep       = "sagastep"
	ExtensionAttempt    = "sagaattempt"
	ExtensionPhase      = "sagaphase"
	ExtensionReplyTo    = "sagareplyto"
	ExtensionDefinition = "sagadefinition"
)

// Phase tells a step's action from its compensation.
type Phase string

const (
	// PhaseAction is a step's forward command and its reply.
	PhaseAction Phase = "action"
	// PhaseCompensation is a step's compensation command and its reply.
	PhaseCompensation Phase = "compensation"
)

// Valid reports whether p is one of the two phases.
func (p Phase) Valid() bool { return p == PhaseAction || p == PhaseCompensation }

// DefaultReplyTopic is the topic participants reply to unless the
// orchestrator is configured otherwise.
const DefaultReplyTopic = "dtx.saga.replies"

// DefaultEventTopic is the topic of saga lifecycle events unless the
// orchestrator is configured otherwise.
const DefaultEventTopic = "dtx.saga.events"

// Lifecycle event types, CloudEvents published (through the outbox) on the
// event topic with the saga id as key and subject.
const (
	EventStarted       = "dtx.saga.started"
	EventStepCompleted = "dtx.saga.step_completed"
	EventStepFailed    = "dtx.saga.step_failed"
	EventCompensating  = "dtx.saga.compensating"
	EventCompensated   = "dtx.saga.compensated"
	EventCompleted     = "dtx.saga.completed"
	EventFailed        = "dtx.saga.failed"
)
