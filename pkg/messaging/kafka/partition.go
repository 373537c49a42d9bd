package kafka

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"
)

// partition delivers the records of one assigned partition, in offset order,
// to its subscription's output channel, from a goroutine of its own that
// lives from the partition's assignment to its revocation.
//
// It keeps a window of consecutive records, from the oldest one not yet
// acked; at most maxInFlight of them. A record's offset is marked for commit
// once it and every record before it were acked. A nacked record is
// delivered again, as a new message with the same UUID, after nackDelay.
// When stopped, it drops the window: unacked records are not marked, so the
// partition's next owner delivers them again.
type partition struct {
	sub *subscription
	cl  fetchControl
	num int32

	quit    chan struct{}
	done    chan struct{}
	wake    chan struct{} // a record was queued
	results chan settled  // acks and nacks, when maxInFlight > 1

	mu      sync.Mutex // guards what the poll loop and stop share with the goroutine
	queue   []*kgo.Record
	paused  bool
	stopped bool

	// Owned by the partition's goroutine.
	window  []*inflight
	timer   *time.Timer
	waiters sync.WaitGroup
}

// fetchControl is what a partition asks of its client; *kgo.Client is one.
type fetchControl interface {
	MarkCommitRecords(rs ...*kgo.Record)
	PauseFetchPartitions(map[string][]int32) map[string][]int32
	ResumeFetchPartitions(map[string][]int32)
}

// inflight is a record of the window.
type inflight struct {
	rec     *kgo.Record
	state   inflightState
	msg     *message.Message // the current delivery; nil unless ready or delivered
	cancel  context.CancelFunc
	retryAt time.Time // when backing off
}

type inflightState int

const (
	ready     inflightState = iota // msg built, to be sent
	delivered                      // msg sent, waiting for Ack or Nack
	backoff                        // nacked, to be sent again at retryAt
	acked
)

// settled is an Ack or Nack of a delivered message.
type settled struct {
	f   *inflight
	msg *message.Message
	ack bool
}

func newPartition(sub *subscription, cl fetchControl, num int32) *partition {
	p := &partition{
		sub:  sub,
		cl:   cl,
		num:  num,
		quit: make(chan struct{}),
		done: make(chan struct{}),
		wake: make(chan struct{}, 1),
	}
	if sub.maxInFlight > 1 {
		p.results = make(chan settled)
	}
	return p
}

// push queues records fetched for the partition and pauses fetching from it
// once readAhead records wait.
func (p *partition) push(recs []*kgo.Record) {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.queue = append(p.queue, recs...)
	if !p.paused && len(p.queue) >= p.sub.readAhead {
		p.paused = true
		p.cl.PauseFetchPartitions(map[string][]int32{p.sub.topic: {p.num}})
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// pop takes the oldest queued record, or nil, and resumes fetching once half
// of the read-ahead is delivered.
func (p *partition) pop() *kgo.Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return nil
	}
	r := p.queue[0]
	p.queue[0] = nil
	p.queue = p.queue[1:]
	if len(p.queue) == 0 {
		p.queue = nil // lets the fetched batch's array go
	}
	if p.paused && len(p.queue) <= p.sub.readAhead/2 {
		p.paused = false
		p.cl.ResumeFetchPartitions(map[string][]int32{p.sub.topic: {p.num}})
	}
	return r
}

// stop ends the partition's goroutine and waits for it. It is safe to call
// more than once and from several goroutines.
func (p *partition) stop() {
	p.mu.Lock()
	if !p.stopped {
		p.stopped = true
		p.queue = nil
		if p.paused {
			// Pauses outlive assignments; a later assignment must fetch.
			p.paused = false
			p.cl.ResumeFetchPartitions(map[string][]int32{p.sub.topic: {p.num}})
		}
		close(p.quit)
	}
	p.mu.Unlock()
	<-p.done
}

func (p *partition) run() {
	defer close(p.done)
	p.timer = time.NewTimer(time.Hour)
	p.timer.Stop()
	defer p.cleanup()

	for {
		now := time.Now()
		f, wakeAt := p.next(now)

		var (
			sendC chan<- *message.Message
			msg   *message.Message
		)
		if f != nil {
			if f.msg == nil {
				f.msg, f.cancel = p.sub.newMessage(f.rec)
			}
			sendC, msg = p.sub.out, f.msg
		}

		var timerC <-chan time.Time
		if !wakeAt.IsZero() {
			p.timer.Reset(wakeAt.Sub(now))
			timerC = p.timer.C
		}

		// With one message in flight, wait on its channels directly rather
		// than through a goroutine per message.
		var (
			cur         *inflight
			ackC, nackC <-chan struct{}
		)
		if p.results == nil && len(p.window) == 1 && p.window[0].state == delivered {
			cur = p.window[0]
			ackC, nackC = cur.msg.Acked(), cur.msg.Nacked()
		}

		select {
		case sendC <- msg:
			f.state = delivered
			if p.results != nil {
				p.await(f, msg)
			}
		case <-ackC:
			p.settle(cur, true)
		case <-nackC:
			p.settle(cur, false)
		case s := <-p.results:
			if s.f.msg == s.msg && s.f.state == delivered {
				p.settle(s.f, s.ack)
			}
		case <-p.wake:
		case <-timerC:
		case <-p.quit:
			return
		}
		if timerC != nil {
			p.timer.Stop()
		}
	}
}

// next returns the record to deliver now, if any: a ready one, then one
// whose backoff is over, then a new one if the window has room. Otherwise it
// returns when the earliest backoff ends, or the zero time.
func (p *partition) next(now time.Time) (*inflight, time.Time) {
	var wakeAt time.Time
	for _, f := range p.window {
		switch f.state {
		case ready:
			return f, time.Time{}
		case backoff:
			if !f.retryAt.After(now) {
				f.state = ready
				return f, time.Time{}
			}
			if wakeAt.IsZero() || f.retryAt.Before(wakeAt) {
				wakeAt = f.retryAt
			}
		}
	}
	if len(p.window) < p.sub.maxInFlight {
		if r := p.pop(); r != nil {
			f := &inflight{rec: r}
			p.window = append(p.window, f)
			return f, time.Time{}
		}
	}
	return nil, wakeAt
}

// await passes the Ack or Nack of msg to the partition's goroutine.
func (p *partition) await(f *inflight, msg *message.Message) {
	p.waiters.Add(1)
	go func() {
		defer p.waiters.Done()
		var ack bool
		select {
		case <-msg.Acked():
			ack = true
		case <-msg.Nacked():
		case <-p.quit:
			return
		}
		select {
		case p.results <- settled{f: f, msg: msg, ack: ack}:
		case <-p.quit:
		}
	}()
}

// settle records the Ack or Nack of f's message and cancels its context. An
// ack that completes a run of acked records from the window's start marks
// the last of them for commit.
func (p *partition) settle(f *inflight, ack bool) {
	f.cancel()
	f.msg, f.cancel = nil, nil
	if !ack {
		p.sub.logger.Debug("Message nacked, will deliver it again", watermill.LogFields{
			"partition": p.num, "offset": f.rec.Offset, "delay": p.sub.nackDelay,
		})
		if p.sub.nackDelay <= 0 {
			f.state = ready
			return
		}
		f.state = backoff
		f.retryAt = time.Now().Add(p.sub.nackDelay)
		return
	}
	f.state = acked
	n := 0
	for n < len(p.window) && p.window[n].state == acked {
		n++
	}
	if n == 0 {
		return
	}
	last := p.window[n-1].rec
	rest := copy(p.window, p.window[n:])
	clear(p.window[rest:])
	p.window = p.window[:rest]
	p.cl.MarkCommitRecords(last)
}

// cleanup marks what was acked before the partition stopped but not yet
// seen, cancels the contexts of the messages that were never settled and
// waits for the goroutines awaiting them.
func (p *partition) cleanup() {
	p.timer.Stop()
	for _, f := range slices.Clone(p.window) {
		if f.state != delivered {
			continue
		}
		select {
		case <-f.msg.Acked():
			p.settle(f, true)
		default:
		}
	}
	for _, f := range p.window {
		if f.cancel != nil {
			f.cancel()
		}
	}
	p.window = nil
	p.waiters.Wait()
}
