package kafka

import (
	"errors"
	"fmt"
)

var (
	// ErrPublisherClosed is returned by Publish once Close has been called.
	ErrPublisherClosed = errors.New("kafka: publisher closed")
	// ErrSubscriberClosed is returned by Subscribe and SubscribeInitialize
	// once Close has been called.
	ErrSubscriberClosed = errors.New("kafka: subscriber closed")
	// ErrInvalidMessage is wrapped by the error Publish returns, before it
	// sends anything, when a message cannot be turned into a record: its
	// UUID is empty, or its metadata holds a ce_id that differs from it.
	ErrInvalidMessage = errors.New("kafka: invalid message")
)

// PublishError is one message of a Publish call that the broker did not
// acknowledge. Publish returns one per failed message, joined with
// errors.Join; errors.As finds the first.
type PublishError struct {
	// Topic is the topic the message was published to.
	Topic string
	// UUID is the Watermill message UUID.
	UUID string
	// Index is the message's position among the Publish call's messages.
	Index int
	// Err is why the record failed: a broker error (see kerr), a franz-go
	// error such as kgo.ErrRecordTimeout or kgo.ErrClientClosed, or a
	// context error.
	Err error
}

// Error describes the failed message.
func (e *PublishError) Error() string {
	return fmt.Sprintf("kafka: publish message %s (#%d) to %s: %v", e.UUID, e.Index, e.Topic, e.Err)
}

// Unwrap returns Err.
func (e *PublishError) Unwrap() error { return e.Err }
