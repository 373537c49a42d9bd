package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"
)

// roundWait is the longest a round of Publish calls holds back the next
// round while its records are not all acknowledged. Rounds normally take one
// round trip to the broker; the bound keeps a slow partition (its leader
// moving, say) from holding up the calls that come after.
const roundWait = 10 * time.Millisecond

// Publisher is a Watermill message.Publisher that writes to Kafka with
// franz-go. It is safe for concurrent use.
//
// Concurrent Publish calls are sent in rounds: one call at a time (the
// round's leader) hands the records of every call queued so far to the
// client; calls that arrive meanwhile queue for the next round, which the
// first of them leads once the current round's records are acknowledged, or
// after roundWait. The broker so gets fewer, bigger requests than if each
// call sent its own, which measured about twice the throughput with 16
// goroutines publishing one message per call. Each call returns as soon as
// its own records are acknowledged.
type Publisher struct {
	cfg    PublisherConfig
	logger watermill.LoggerAdapter
	cl     *kgo.Client

	mu       sync.RWMutex // guards closed against inflight.Add
	closed   bool
	inflight sync.WaitGroup

	qmu     sync.Mutex // guards queue and sending
	queue   []*pubCall
	sending bool // a round is being sent; its leader hands over when done

	closeOnce sync.Once
}

// pubCall is the records of one Publish call.
type pubCall struct {
	recs    []*kgo.Record
	pending atomic.Int64  // records not yet acknowledged or failed
	lead    chan struct{} // closed when the call is to send the next round
	done    chan struct{} // closed once every record is acknowledged or failed

	mu     sync.Mutex
	failed []kgo.ProduceResult
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher configured by cfg. It does not contact
// the brokers: the first Publish does.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("kafka: new publisher: %w", err)
	}
	cl, err := kgo.NewClient(cfg.clientOpts()...)
	if err != nil {
		return nil, fmt.Errorf("kafka: new publisher: %w", err)
	}
	return &Publisher{cfg: cfg, logger: cfg.Logger, cl: cl}, nil
}

// Publish writes msgs to topic, in order per partition, and returns once the
// broker has acknowledged every one of them (acks=all) or given up on it.
//
// Before sending anything it turns every message into a record; if one
// cannot be (ErrInvalidMessage), nothing is sent. Then its records are sent,
// batched with those of concurrent calls, and the error names each record
// that failed as a *PublishError, joined with errors.Join: records before
// and after a failed one may have been written. A message's Context does not
// cancel its record: franz-go fails every buffered record of a partition
// when the first one's context ends, so one caller's cancellation would fail
// another's records.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if topic == "" {
		return errors.New("kafka: publish: empty topic")
	}
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return ErrPublisherClosed
	}
	p.inflight.Add(1)
	p.mu.RUnlock()
	defer p.inflight.Done()

	recs := make([]*kgo.Record, len(msgs))
	for i, msg := range msgs {
		r, err := toRecord(topic, msg)
		if err != nil {
			return fmt.Errorf("kafka: publish to %s: message #%d: %w", topic, i, err)
		}
		recs[i] = r
	}

	failed := p.send(recs)
	if len(failed) == 0 {
		return nil
	}
	// Results come in the order the broker answered; find each one's message.
	index := make(map[*kgo.Record]int, len(recs))
	for i, r := range recs {
		index[r] = i
	}
	errs := make([]error, len(recs))
	for _, res := range failed {
		i := index[res.Record]
		errs[i] = &PublishError{Topic: topic, UUID: msgs[i].UUID, Index: i, Err: res.Err}
	}

	err := errors.Join(errs...)
	if err != nil {
		p.logger.Error("Publishing to Kafka failed", err, watermill.LogFields{"topic": topic, "messages": len(msgs)})
	}
	return err
}

// send queues recs for the next round, leading it if no round is being
// sent, and returns the records that failed once all are done.
func (p *Publisher) send(recs []*kgo.Record) []kgo.ProduceResult {
	c := &pubCall{recs: recs, lead: make(chan struct{}), done: make(chan struct{})}
	c.pending.Store(int64(len(recs)))
	if len(recs) == 0 {
		close(c.done)
		return nil
	}
	p.qmu.Lock()
	p.queue = append(p.queue, c)
	leading := !p.sending
	p.sending = true
	p.qmu.Unlock()

	if !leading {
		select {
		case <-c.done:
		case <-c.lead:
			p.round()
		}
	} else {
		p.round()
	}
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// round hands every queued call's records to the client, waits until they
// are all done or roundWait has passed, and then hands the next round to the
// first call queued meanwhile.
func (p *Publisher) round() {
	p.qmu.Lock()
	calls := p.queue
	p.queue = nil
	p.qmu.Unlock()

	var outstanding atomic.Int64
	roundDone := make(chan struct{})
	for _, c := range calls {
		outstanding.Add(int64(len(c.recs)))
	}
	for _, c := range calls {
		promise := func(r *kgo.Record, err error) {
			if err != nil {
				c.mu.Lock()
				c.failed = append(c.failed, kgo.ProduceResult{Record: r, Err: err})
				c.mu.Unlock()
			}
			if c.pending.Add(-1) == 0 {
				close(c.done)
			}
			if outstanding.Add(-1) == 0 {
				close(roundDone)
			}
		}
		for _, r := range c.recs {
			p.cl.Produce(context.Background(), r, promise)
		}
	}

	timer := time.NewTimer(roundWait)
	select {
	case <-roundDone:
	case <-timer.C:
	}
	timer.Stop()

	p.qmu.Lock()
	if len(p.queue) > 0 {
		close(p.queue[0].lead)
	} else {
		p.sending = false
	}
	p.qmu.Unlock()
}

// Close waits for the Publish calls in progress to return, then closes the
// client. Publish calls after Close return ErrPublisherClosed. Close is safe
// to call more than once and from several goroutines: every call returns
// once the first has finished.
func (p *Publisher) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.inflight.Wait()
		p.cl.Close()
	})
	return nil
}
