package saga

// DefaultOrchestratorGroup is the orchestrator's consumer group and inbox
// consumer name unless configured otherwise.
const DefaultOrchestratorGroup = "dtx-orchestrator"

// TopicNames are the built-in Kafka names of one deployment: the topics and
// the consumer group dtx uses when the operator names none. Two deployments
// sharing a cluster keep apart by giving each its own prefix.
type TopicNames struct {
	// Prefix is the prefix every name below starts with ("" by default).
	Prefix string
	// Replies is the topic participants reply to: Prefix + DefaultReplyTopic.
	Replies string
	// Events is the topic of saga lifecycle events: Prefix +
	// DefaultEventTopic.
	Events string
	// OrchestratorGroup is the orchestrator's consumer group and inbox
	// consumer name: Prefix + DefaultOrchestratorGroup.
	OrchestratorGroup string
}

// Names returns the built-in names of a deployment whose names start with
// prefix; Names("") gives the defaults. Names does not check prefix: a name
// Kafka would refuse is refused where it is used (see the binaries'
// --topic-prefix).
func Names(prefix string) TopicNames {
	return TopicNames{
		Prefix:            prefix,
		Replies:           prefix + DefaultReplyTopic,
		Events:            prefix + DefaultEventTopic,
		OrchestratorGroup: prefix + DefaultOrchestratorGroup,
	}
}
