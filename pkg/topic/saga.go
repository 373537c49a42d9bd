package topic

import (
	"slices"

	"github.com/vextrus/dtx/pkg/saga"
)

// SagaParams says which built-in topics an orchestrator uses.
type SagaParams struct {
	// Prefix goes in front of the built-in topic names (the reply and event
	// topics) when ReplyTopic or EventTopic is empty. Defaults to "". The
	// definitions' own topics are used as written.
	Prefix string
	// ReplyTopic is the topic participants reply to. Defaults to Prefix +
	// saga.DefaultReplyTopic.
	ReplyTopic string
	// EventTopic is the topic of saga lifecycle events. Defaults to Prefix
	// + saga.DefaultEventTopic.
	EventTopic string
}

func (p *SagaParams) setDefaults() {
	names := saga.Names(p.Prefix)
	if p.ReplyTopic == "" {
		p.ReplyTopic = names.Replies
	}
	if p.EventTopic == "" {
		p.EventTopic = names.Events
	}
}

// SagaTopics are the topics an orchestrator running a set of definitions
// reads and writes.
type SagaTopics struct {
	// Consumed are the topics the orchestrator consumes: the reply topic,
	// then the trigger topics of the latest version of each definition
	// (older versions' triggers start nothing), in the order the
	// orchestrator subscribes to them.
	Consumed []string
	// Produced are the topics the orchestrator writes to, sorted: every
	// step's action and compensation command topic of every version (in-
	// flight sagas keep theirs) and the event topic.
	Produced []string
	// DeadLetters are the dead-letter topics of Consumed ("<topic>.dlq"),
	// where messages that cannot be handled go.
	DeadLetters []string
}

// All returns every topic of t, sorted, each once.
func (t SagaTopics) All() []string {
	all := slices.Concat(t.Consumed, t.Produced, t.DeadLetters)
	slices.Sort(all)
	return slices.Compact(all)
}

// Specs returns a spec without settings for every topic of t, with source
// "saga definitions".
func (t SagaTopics) Specs() []Spec { return FromNames("saga definitions", t.All()...) }

// ForSagas returns the topics an orchestrator running reg's definitions
// with p uses. reg may be nil: then only the reply and event topics (and
// the reply topic's dead-letter topic) are returned.
func ForSagas(reg *saga.Registry, p SagaParams) SagaTopics {
	p.setDefaults()
	consumed := []string{p.ReplyTopic}
	produced := []string{p.EventTopic}
	if reg != nil {
		for _, t := range reg.Triggers() {
			if !slices.Contains(consumed, t.Trigger.Topic) {
				consumed = append(consumed, t.Trigger.Topic)
			}
		}
		for _, d := range reg.Definitions() {
			for _, s := range d.Steps {
				produced = append(produced, s.Action.Topic)
				if s.Compensation != nil {
					produced = append(produced, s.Compensation.Topic)
				}
			}
		}
	}
	slices.Sort(produced)
	produced = slices.Compact(produced)
	dlq := make([]string, len(consumed))
	for i, c := range consumed {
		dlq[i] = DeadLetter(c)
	}
	slices.Sort(dlq)
	return SagaTopics{Consumed: consumed, Produced: produced, DeadLetters: dlq}
}
