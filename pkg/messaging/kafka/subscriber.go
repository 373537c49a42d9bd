package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
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
	admin  *kadm.Client
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// NewSubscriber returns a Subscriber configured by cfg. It does not contact
// the brokers: Subscribe and SubscribeInitialize do.
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

// SubscribeInitialize creates topic, when InitializeTopics is set and the
// topic does not exist, with TopicPartitions partitions and
// TopicReplicationFactor replicas, and returns once every partition has a
// leader, so that publishing to it works at once. It does nothing when
// InitializeTopics is not set. It gives up after InitializeTimeout.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	if !s.cfg.InitializeTopics {
		return nil
	}
	if topic == "" {
		return errors.New("kafka: subscribe initialize: empty topic")
	}
	adm, err := s.adminClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.InitializeTimeout)
	defer cancel()
	if err := createTopic(ctx, adm, topic, s.cfg.TopicPartitions, s.cfg.TopicReplicationFactor); err != nil {
		return fmt.Errorf("kafka: subscribe initialize %s: %w", topic, err)
	}
	return nil
}

func (s *Subscriber) adminClient() (*kadm.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrSubscriberClosed
	}
	if s.admin == nil {
		cl, err := kgo.NewClient(append(s.cfg.clientOpts(), s.cfg.Opts...)...)
		if err != nil {
			return nil, fmt.Errorf("kafka: admin client: %w", err)
		}
		s.admin = kadm.NewClient(cl)
	}
	return s.admin, nil
}

// createTopic creates topic unless it exists and waits until every partition
// has a leader.
func createTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, replicas int16) error {
	if partitions == 0 {
		partitions = -1
	}
	if replicas == 0 {
		replicas = -1
	}
	res, err := adm.CreateTopic(ctx, partitions, replicas, nil, topic)
	if err == nil {
		err = res.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic: %w", err)
	}
	for {
		err = topicReady(ctx, adm, topic)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the topic's partitions to have leaders: %w (last: %w)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func topicReady(ctx context.Context, adm *kadm.Client, topic string) error {
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return err
	}
	td, ok := md.Topics[topic]
	switch {
	case !ok:
		return errors.New("not in the metadata yet")
	case td.Err != nil:
		return td.Err
	case len(td.Partitions) == 0:
		return errors.New("no partitions in the metadata yet")
	}
	for _, p := range td.Partitions {
		if p.Err != nil {
			return fmt.Errorf("partition %d: %w", p.Partition, p.Err)
		}
		if p.Leader < 0 {
			return fmt.Errorf("partition %d has no leader yet", p.Partition)
		}
	}
	return nil
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
		adm := s.admin
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
		if adm != nil {
			adm.Close()
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
