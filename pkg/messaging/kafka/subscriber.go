package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Subscriber is a Watermill message.Subscriber that reads Kafka topics as a
// member of a consumer group, with franz-go. Each Subscribe call joins the
// group with a client of its own. It is safe for concurrent use.
type Subscriber struct {
	cfg    SubscriberConfig
	logger watermill.LoggerAdapter

	mu     sync.Mutex
	closed bool
	subs   map[*subscription]struct{}
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Subscriber does not implement message.SubscribeInitializer: it never
// creates topics. Provision them beforehand (package topic, dtxctl topics
// apply).
var _ message.Subscriber = (*Subscriber)(nil)

// NewSubscriber returns a Subscriber configured by cfg. It does not contact
// the brokers: Subscribe does.
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("kafka: new subscriber: %w", err)
	}
	return &Subscriber{
		cfg:    cfg,
		logger: cfg.Logger.With(watermill.LogFields{"consumer_group": cfg.ConsumerGroup}),
		subs:   make(map[*subscription]struct{}),
	}, nil
}

// Subscribe joins the consumer group for topic and returns the channel its
// messages arrive on. The channel is closed when ctx ends or Close is
// called, after the subscription's acked offsets were committed.
//
// Every message carries ctx's values; its context is canceled once it is
// acked or nacked, or when its partition is revoked or the subscription
// ends. See the package documentation for the order of delivery, when
// offsets are committed and what is delivered again.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic == "" {
		return nil, errors.New("kafka: subscribe: empty topic")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrSubscriberClosed
	}
	sub, err := newSubscription(ctx, &s.cfg, s.logger, topic)
	if err != nil {
		return nil, fmt.Errorf("kafka: subscribe to %s: %w", topic, err)
	}
	s.subs[sub] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sub.run()
		s.mu.Lock()
		if !s.closed {
			delete(s.subs, sub)
		}
		s.mu.Unlock()
		if sub.err != nil && !s.isClosed() {
			s.logger.Error("Subscription ended with an error", sub.err, watermill.LogFields{"topic": topic})
		}
	}()
	return sub.out, nil
}

func (s *Subscriber) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close ends every subscription: it stops delivering, cancels the contexts
// of messages not yet acked, commits what was acked, leaves the group, closes
// the output channels and returns once all of the Subscriber's goroutines
// have ended. It returns the errors of the final commits, if any. It is safe
// to call more than once and from several goroutines: every call returns
// once the first has finished, with its result.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		subs := make([]*subscription, 0, len(s.subs))
		for sub := range s.subs {
			subs = append(subs, sub)
		}
		s.mu.Unlock()

		for _, sub := range subs {
			sub.cancel()
		}
		s.wg.Wait()
		var errs []error
		for _, sub := range subs {
			if sub.err != nil {
				errs = append(errs, sub.err)
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
