package saga

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults that SetDefaults fills in for zero-valued fields.
const (
	// DefaultStepTimeout is the per-attempt timeout of an action or a
	// compensation.
	DefaultStepTimeout = 30 * time.Second
	// DefaultActionAttempts is how many times a step's action is sent in
	// all before the step counts as failed.
	DefaultActionAttempts = 3
	// DefaultCompensationAttempts is how many times a compensation is sent
	// in all before the saga parks as Failed.
	DefaultCompensationAttempts = 5
	// DefaultBackoff is the wait before the second attempt.
	DefaultBackoff = time.Second
	// DefaultMultiplier is the factor between successive backoffs.
	DefaultMultiplier = 2.0
	// DefaultMaxBackoff caps the wait between attempts.
	DefaultMaxBackoff = time.Minute
)

// nameRE is what a definition's name must match; stepNameRE a step's name.
var (
	nameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	stepNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// maxNameLen bounds definition and step names: they travel in headers and
// database columns.
const maxNameLen = 200

// Definition is one saga type at one version: ordered steps, each with an
// action command, the replies that mean success or failure, a compensation,
// a timeout and a retry policy. A Definition is built in Go or parsed from
// YAML (Parse); call SetDefaults then Validate before using one built in Go
// (NewRegistry does both). A Definition in use must not be modified.
type Definition struct {
	// Name is the saga type, matching [a-z0-9][a-z0-9._-]*. Required.
	Name string
	// Version is the definition's version, >= 1. Required. In-flight
	// sagas keep the version they started with.
	Version int
	// Description is free text for people.
	Description string
	// Triggers are the messages that start a saga of this type. Optional:
	// sagas may also be started in Go.
	Triggers []Trigger
	// Timeout is the saga-level deadline counted from its start; 0 means
	// none. When it passes while the saga is Running, the saga compensates.
	Timeout time.Duration
	// Steps run in order; at least one; names unique.
	Steps []Step
}

// Trigger is a message that starts a saga.
//
// The runtime must start at most one saga per saga id: a second trigger
// message yielding the same saga id (a redelivery, or a client retrying)
// must not start a second saga. Transition refuses a Start on a state that
// already exists with ErrAlreadyStarted.
type Trigger struct {
	// Topic is the Kafka topic the trigger arrives on. Required.
	Topic string
	// Type is the message type: a command (e.g. sales.order.place) or a
	// domain event (choreography starting an orchestration). Required.
	Type string
	// SagaID is a reference (see Map) evaluated on the trigger message's
	// payload giving the saga id, e.g. "$.order_id"; "" means the
	// message's id.
	SagaID string
	// Data is a mapping (see Map) from the trigger payload giving the
	// initial saga data; nil means the payload object itself.
	Data any
}

// Step is one step of a saga: an action and, optionally, its compensation.
type Step struct {
	// Name identifies the step in commands, replies and timelines; it
	// matches [A-Za-z0-9][A-Za-z0-9._-]* and is unique in the definition.
	Name string
	// Action is the command that performs the step.
	Action Command
	// Success lists the reply types meaning the action succeeded; at
	// least one.
	Success []string
	// Failure lists the reply types meaning a business failure: the step
	// is not retried and the steps completed before it are compensated.
	Failure []string
	// ReplyInto says where a success reply's data goes: "" merges the
	// reply's top-level keys into the saga data; any other value stores
	// the reply object under that key.
	ReplyInto string
	// Timeout is how long one attempt of the action may wait for its
	// reply. Defaults to 30s; must be positive.
	Timeout time.Duration
	// Retry is how often and how fast a timed-out action is re-sent.
	// Zero fields default to Attempts 3, Backoff 1s, Multiplier 2,
	// MaxBackoff 1m.
	Retry RetryPolicy
	// Compensation undoes the action; nil means there is nothing to undo.
	Compensation *Compensation
}

// Compensation is the command that undoes a step's action. It is also sent
// when the action's outcome is unknown (its attempts timed out, the saga
// deadline passed, an operator forced compensation): its payload should
// then not refer to data only the action's reply provides, or the saga
// parks on the mapping error.
type Compensation struct {
	// Command is the compensating command: Topic, Type, Key, Payload.
	Command
	// Success lists the reply types confirming the compensation; at least
	// one.
	Success []string
	// Failure lists the reply types meaning the compensation failed this
	// time: it is retried with backoff, then the saga parks as Failed.
	Failure []string
	// Timeout is how long one attempt may wait for its reply. Defaults to
	// 30s; must be positive.
	Timeout time.Duration
	// Retry is how often and how fast a failed or timed-out compensation is
	// re-sent. Zero fields default to Attempts 5, Backoff 1s,
	// Multiplier 2, MaxBackoff 1m.
	Retry RetryPolicy
}

// Command is a message the orchestrator sends to a participant.
type Command struct {
	// Topic is the Kafka topic of the command. Required.
	Topic string
	// Type is the command's message type. Required.
	Type string
	// Key is a mapping (see Map) giving the Kafka record key from the
	// saga data; "" means the saga id. It must yield a non-empty string or
	// a number.
	Key string
	// Payload is a mapping (see Map) from the saga data giving the
	// command's payload; nil means the whole saga data.
	Payload any
}

// RetryPolicy says how many times a command is sent and how long to wait
// between attempts: the wait before attempt n+1 is
// Backoff*Multiplier^(n-1), capped at MaxBackoff.
type RetryPolicy struct {
	// Attempts is the total number of attempts including the first,
	// >= 1. Defaults to 3 for actions and 5 for compensations.
	Attempts int
	// Backoff is the wait before the second attempt. Defaults to 1s;
	// must be positive.
	Backoff time.Duration
	// Multiplier is the factor between successive waits. Defaults to 2;
	// must be >= 1 (1 keeps the wait constant).
	Multiplier float64
	// MaxBackoff caps the wait. Defaults to 1m; must be >= Backoff.
	MaxBackoff time.Duration
}

// Delay returns how long to wait after attempt n failed or timed out before
// attempt n+1 is sent. Zero fields count as their defaults; n < 1 counts as
// 1.
func (p RetryPolicy) Delay(attempt int) time.Duration {
	p.setDefaults(1)
	if attempt < 1 {
		attempt = 1
	}
	d := float64(p.Backoff) * math.Pow(p.Multiplier, float64(attempt-1))
	if math.IsNaN(d) || d >= float64(p.MaxBackoff) {
		return p.MaxBackoff
	}
	return time.Duration(d)
}

// setDefaults fills zero fields; attempts is the default of Attempts.
func (p *RetryPolicy) setDefaults(attempts int) {
	if p.Attempts == 0 {
		p.Attempts = attempts
	}
	if p.Backoff == 0 {
		p.Backoff = DefaultBackoff
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultMultiplier
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = max(DefaultMaxBackoff, p.Backoff)
	}
}

func (p RetryPolicy) validate(field string) []DefinitionError {
	var errs []DefinitionError
	if p.Attempts < 1 {
		errs = append(errs, DefinitionError{Field: field + ".attempts", Msg: "must be at least 1"})
	}
	if p.Backoff <= 0 {
		errs = append(errs, DefinitionError{Field: field + ".backoff", Msg: "must be positive"})
	}
	if !(p.Multiplier >= 1) || math.IsInf(p.Multiplier, 0) {
		errs = append(errs, DefinitionError{Field: field + ".multiplier", Msg: "must be a finite number >= 1"})
	}
	if p.MaxBackoff < p.Backoff {
		errs = append(errs, DefinitionError{Field: field + ".max_backoff", Msg: "must not be less than backoff"})
	}
	return errs
}

// SetDefaults fills the zero-valued timeouts and retry policy fields of
// every step and compensation with the defaults documented on them. It is
// idempotent.
func (d *Definition) SetDefaults() {
	for i := range d.Steps {
		s := &d.Steps[i]
		if s.Timeout == 0 {
			s.Timeout = DefaultStepTimeout
		}
		s.Retry.setDefaults(DefaultActionAttempts)
		if c := s.Compensation; c != nil {
			if c.Timeout == 0 {
				c.Timeout = DefaultStepTimeout
			}
			c.Retry.setDefaults(DefaultCompensationAttempts)
		}
	}
}

// Ref returns "name@version", the definition's reference in headers and
// logs.
func (d *Definition) Ref() string { return d.Name + "@" + strconv.Itoa(d.Version) }

// StepIndex returns the index of the step called name, or -1.
func (d *Definition) StepIndex(name string) int {
	return slices.IndexFunc(d.Steps, func(s Step) bool { return s.Name == name })
}

// Validate checks the definition (after SetDefaults: zero timeouts and
// retry attempts are invalid). It returns nil or the errors.Join of one
// *DefinitionError per problem, each naming the step and field.
func (d *Definition) Validate() error {
	if d == nil {
		return &DefinitionError{Msg: "definition is nil"}
	}
	return joinDefinitionErrors("", d.problems())
}

// problems lists what Validate reports.
func (d *Definition) problems() []DefinitionError {
	var errs []DefinitionError
	add := func(step, field, msg string) {
		errs = append(errs, DefinitionError{Step: step, Field: field, Msg: msg})
	}
	switch {
	case d.Name == "":
		add("", "name", "required")
	case len(d.Name) > maxNameLen:
		add("", "name", fmt.Sprintf("longer than %d bytes", maxNameLen))
	case !nameRE.MatchString(d.Name):
		add("", "name", "must match "+nameRE.String())
	}
	if d.Version < 1 {
		add("", "version", "must be at least 1")
	}
	if d.Timeout < 0 {
		add("", "timeout", "must not be negative")
	}
	for i, t := range d.Triggers {
		f := fmt.Sprintf("triggers[%d].", i)
		if t.Topic == "" {
			add("", f+"topic", "required")
		}
		if t.Type == "" {
			add("", f+"type", "required")
		}
		if t.SagaID != "" {
			if err := validateReference(t.SagaID); err != nil {
				add("", f+"saga_id", err.Error())
			}
		}
		if err := ValidateTemplate(t.Data); err != nil {
			add("", f+"data", err.Error())
		}
	}
	if len(d.Steps) == 0 {
		add("", "steps", "at least one step is required")
	}
	seen := make(map[string]int, len(d.Steps))
	for i, s := range d.Steps {
		step := s.Name
		switch {
		case s.Name == "":
			add("", fmt.Sprintf("steps[%d].name", i), "required")
		case len(s.Name) > maxNameLen:
			add(step, "name", fmt.Sprintf("longer than %d bytes", maxNameLen))
		case !stepNameRE.MatchString(s.Name):
			add(step, "name", "must match "+stepNameRE.String())
		}
		if j, dup := seen[s.Name]; dup && s.Name != "" {
			add(step, "name", fmt.Sprintf("duplicate: steps %d and %d have the same name", j, i))
		} else {
			seen[s.Name] = i
		}
		for _, e := range validateCommand(s.Action, "action.") {
			add(step, e.Field, e.Msg)
		}
		for _, e := range validateReplyTypes(s.Success, s.Failure, "") {
			add(step, e.Field, e.Msg)
		}
		if s.Timeout <= 0 {
			add(step, "timeout", "must be positive")
		}
		for _, e := range s.Retry.validate("retry") {
			add(step, e.Field, e.Msg)
		}
		if c := s.Compensation; c != nil {
			for _, e := range validateCommand(c.Command, "compensation.") {
				add(step, e.Field, e.Msg)
			}
			for _, e := range validateReplyTypes(c.Success, c.Failure, "compensation.") {
				add(step, e.Field, e.Msg)
			}
			if c.Timeout <= 0 {
				add(step, "compensation.timeout", "must be positive")
			}
			for _, e := range c.Retry.validate("compensation.retry") {
				add(step, e.Field, e.Msg)
			}
		}
	}
	return errs
}

func validateCommand(c Command, prefix string) []DefinitionError {
	var errs []DefinitionError
	if c.Topic == "" {
		errs = append(errs, DefinitionError{Field: prefix + "topic", Msg: "required"})
	}
	if c.Type == "" {
		errs = append(errs, DefinitionError{Field: prefix + "type", Msg: "required"})
	}
	if c.Key != "" {
		if err := ValidateTemplate(c.Key); err != nil {
			errs = append(errs, DefinitionError{Field: prefix + "key", Msg: err.Error()})
		}
	}
	if err := ValidateTemplate(c.Payload); err != nil {
		errs = append(errs, DefinitionError{Field: prefix + "payload", Msg: err.Error()})
	}
	return errs
}

func validateReplyTypes(success, failure []string, prefix string) []DefinitionError {
	var errs []DefinitionError
	if len(success) == 0 {
		errs = append(errs, DefinitionError{Field: prefix + "success", Msg: "at least one reply type is required"})
	}
	seen := map[string]string{}
	check := func(field string, types []string) {
		for i, t := range types {
			f := fmt.Sprintf("%s%s[%d]", prefix, field, i)
			if t == "" {
				errs = append(errs, DefinitionError{Field: f, Msg: "empty reply type"})
				continue
			}
			if other, dup := seen[t]; dup {
				errs = append(errs, DefinitionError{Field: f, Msg: fmt.Sprintf("reply type %q is also listed in %s", t, other)})
				continue
			}
			seen[t] = prefix + field
		}
	}
	check("success", success)
	check("failure", failure)
	return errs
}

// DefinitionError is one problem of a definition. Error() reads
// `orders.yaml: step "charge": field "action.topic": required`, leaving out
// the parts that are empty.
type DefinitionError struct {
	// File is the file the definition came from, or "".
	File string
	// Step is the name of the step concerned, or "".
	Step string
	// Field is the field concerned, relative to the step when Step is set,
	// in YAML spelling ("action.topic", "retry.attempts",
	// "triggers[0].saga_id"), or "".
	Field string
	// Msg says what is wrong.
	Msg string
}

// Error implements error.
func (e *DefinitionError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Step != "" {
		fmt.Fprintf(&b, "step %q: ", e.Step)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, "field %q: ", e.Field)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// joinDefinitionErrors returns the errors.Join of errs, each with File set
// to file, or nil.
func joinDefinitionErrors(file string, errs []DefinitionError) error {
	if len(errs) == 0 {
		return nil
	}
	out := make([]error, len(errs))
	for i := range errs {
		e := errs[i]
		if e.File == "" {
			e.File = file
		}
		out[i] = &e
	}
	return errors.Join(out...)
}

// actionTimeout, actionRetry, timeout and retry return what Transition
// uses: the defaults stand in for zero values so that a definition that
// skipped SetDefaults still behaves.
func (s *Step) actionTimeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultStepTimeout
}

func (s *Step) actionRetry() RetryPolicy {
	p := s.Retry
	p.setDefaults(DefaultActionAttempts)
	return p
}

func (c *Compensation) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultStepTimeout
}

func (c *Compensation) retry() RetryPolicy {
	p := c.Retry
	p.setDefaults(DefaultCompensationAttempts)
	return p
}

// MessageTypes returns every message type d names, sorted and without
// repeats: its triggers, its steps' commands and compensations, and the
// replies that answer them. A deployment needs a schema for each.
func (d *Definition) MessageTypes() []string {
	var types []string
	for _, t := range d.Triggers {
		types = append(types, t.Type)
	}
	for _, s := range d.Steps {
		types = append(types, s.Action.Type)
		types = append(types, s.Success...)
		types = append(types, s.Failure...)
		if c := s.Compensation; c != nil {
			types = append(types, c.Type)
			types = append(types, c.Success...)
			types = append(types, c.Failure...)
		}
	}
	slices.Sort(types)
	return slices.Compact(types)
}
