package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"
)

// pollErrorBackoff is how long the poll loop waits after a poll that
// returned errors only, so that a lasting error is not logged in a busy loop.
const pollErrorBackoff = 250 * time.Millisecond

// subscription is one Subscribe call: a group member with a client of its
// own, a poll loop that hands fetched records to the assigned partitions,
// and one goroutine per assigned partition.
//
// The client blocks rebalances from a poll until AllowRebalance
// (kgo.BlockRebalanceOnPoll), so a partition is never revoked while the
// records of a poll are being queued, and rebalance callbacks never run
// concurrently with that: every record a poll returns is queued to a
// partition that exists, and no record of a revoked partition is queued
// after its revocation.
type subscription struct {
	topic         string
	group         string
	logger        watermill.LoggerAdapter
	maxInFlight   int
	readAhead     int
	nackDelay     time.Duration
	commitTimeout time.Duration

	cl     *kgo.Client
	out    chan *message.Message
	msgCtx context.Context // parent of every message's context
	ctx    context.Context // ends the poll loop
	cancel context.CancelFunc

	mu         sync.Mutex
	partitions map[int32]*partition
	stopping   bool

	err error // of the final commit; set before run returns
}

func newSubscription(ctx context.Context, cfg *SubscriberConfig, logger watermill.LoggerAdapter, topic string) (*subscription, error) {
	sub := &subscription{
		topic:         topic,
		group:         cfg.ConsumerGroup,
		logger:        logger.With(watermill.LogFields{"topic": topic}),
		maxInFlight:   cfg.MaxInFlightPerPartition,
		readAhead:     cfg.ReadAheadPerPartition,
		nackDelay:     cfg.NackResendDelay,
		commitTimeout: cfg.CommitTimeout,
		out:           make(chan *message.Message),
		msgCtx:        ctx,
		partitions:    make(map[int32]*partition),
	}
	sub.ctx, sub.cancel = context.WithCancel(ctx)
	cl, err := kgo.NewClient(cfg.groupOpts(topic, sub)...)
	if err != nil {
		sub.cancel()
		return nil, err
	}
	sub.cl = cl
	return sub, nil
}

// run polls until the subscription's context ends, then stops the
// partitions, commits what was acked, leaves the group and closes the output
// channel.
func (sub *subscription) run() {
	defer sub.cancel()
	sub.poll()

	sub.mu.Lock()
	sub.stopping = true
	parts := make([]*partition, 0, len(sub.partitions))
	for _, p := range sub.partitions {
		parts = append(parts, p)
	}
	sub.mu.Unlock()
	stopAll(parts)

	ctx, cancel := context.WithTimeout(context.Background(), sub.commitTimeout)
	defer cancel()
	if err := sub.cl.CommitMarkedOffsets(ctx); err != nil {
		sub.err = fmt.Errorf("kafka: commit offsets of group %s on topic %s: %w", sub.group, sub.topic, err)
	}
	// Leaving the group revokes what is left; onRevoked has nothing more to
	// commit.
	sub.cl.Close()
	// Closed last, so that a reader who sees it closed knows the offsets are
	// committed and the member has left.
	close(sub.out)
	sub.logger.Debug("Subscription ended", nil)
}

func (sub *subscription) poll() {
	for {
		fetches := sub.cl.PollFetches(sub.ctx)
		if sub.ctx.Err() != nil || fetches.IsClientClosed() {
			sub.cl.AllowRebalance()
			return
		}
		var errs, recs int
		fetches.EachError(func(topic string, partition int32, err error) {
			errs++
			sub.logger.Error("Fetching from Kafka failed", err, watermill.LogFields{"partition": partition})
		})
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) == 0 {
				return
			}
			recs += len(fp.Records)
			if p := sub.partition(fp.Partition); p != nil {
				p.push(fp.Records)
			}
		})
		sub.cl.AllowRebalance()
		if errs > 0 && recs == 0 {
			select {
			case <-sub.ctx.Done():
			case <-time.After(pollErrorBackoff):
			}
		}
	}
}

// partition returns the partition's deliverer. The rebalance callbacks make
// sure it exists for every record a poll returns; should it not, it is
// started here rather than dropping records.
func (sub *subscription) partition(num int32) *partition {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if p := sub.partitions[num]; p != nil || sub.stopping {
		return p
	}
	sub.logger.Info("Records of a partition that was not assigned yet; starting it", watermill.LogFields{"partition": num})
	return sub.startLocked(sub.cl, num)
}

func (sub *subscription) startLocked(cl *kgo.Client, num int32) *partition {
	p := newPartition(sub, cl, num)
	sub.partitions[num] = p
	go p.run()
	return p
}

func (sub *subscription) onAssigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	nums := assigned[sub.topic]
	sub.mu.Lock()
	if !sub.stopping {
		for _, num := range nums {
			if old := sub.partitions[num]; old != nil {
				// Not expected: an assignment adds partitions the member
				// does not have. Start afresh from the committed offset.
				old.stop()
			}
			sub.startLocked(cl, num)
		}
	}
	sub.mu.Unlock()
	if len(nums) > 0 {
		sub.logger.Debug("Partitions assigned", watermill.LogFields{"partitions": nums})
	}
}

// onRevoked stops delivering the revoked partitions, dropping their messages
// not yet acked, and commits what was acked, so that the partitions' next
// owner starts right after it.
func (sub *subscription) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	nums := revoked[sub.topic]
	sub.stopPartitions(nums)
	ctx, cancel := context.WithTimeout(ctx, sub.commitTimeout)
	defer cancel()
	if err := cl.CommitMarkedOffsets(ctx); err != nil && !errors.Is(err, context.Canceled) {
		sub.logger.Error("Committing offsets on revocation failed; their messages will be delivered again", err, watermill.LogFields{"partitions": nums})
	}
	if len(nums) > 0 {
		sub.logger.Debug("Partitions revoked", watermill.LogFields{"partitions": nums})
	}
}

// onLost stops delivering partitions the member lost without a chance to
// commit (its session expired or the group failed).
func (sub *subscription) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	nums := lost[sub.topic]
	sub.stopPartitions(nums)
	if len(nums) > 0 {
		sub.logger.Info("Partitions lost; their messages not yet committed will be delivered again", watermill.LogFields{"partitions": nums})
	}
}

func (sub *subscription) stopPartitions(nums []int32) {
	sub.mu.Lock()
	parts := make([]*partition, 0, len(nums))
	for _, num := range nums {
		if p := sub.partitions[num]; p != nil {
			parts = append(parts, p)
			delete(sub.partitions, num)
		}
	}
	sub.mu.Unlock()
	stopAll(parts)
}

func stopAll(parts []*partition) {
	for _, p := range parts {
		p.stop()
	}
}

// newMessage builds the message of one delivery of r.
func (sub *subscription) newMessage(r *kgo.Record) (*message.Message, context.CancelFunc) {
	msg := toMessage(r, sub.group)
	ctx, cancel := context.WithCancel(sub.msgCtx)
	msg.SetContext(ctx)
	return msg, cancel
}
