package participant

import "github.com/ThreeDotsLabs/watermill/message"

// HandleResult is Handle that also returns the Result.
func (p *Participant) HandleResult(msg *message.Message) (Result, error) { return p.handle(msg) }
