package kafka

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// fakeControl records what a partition asks of its client.
type fakeControl struct {
	mu      sync.Mutex
	marks   []int64
	paused  bool
	pauses  int
	resumes int
}

func (f *fakeControl) MarkCommitRecords(rs ...*kgo.Record) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range rs {
		f.marks = append(f.marks, r.Offset)
	}
}

func (f *fakeControl) PauseFetchPartitions(map[string][]int32) map[string][]int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = true
	f.pauses++
	return nil
}

func (f *fakeControl) ResumeFetchPartitions(map[string][]int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = false
	f.resumes++
}

func (f *fakeControl) state() (marks []int64, paused bool, pauses, resumes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.marks), f.paused, f.pauses, f.resumes
}

type partitionBundle struct {
	p    *partition
	ctl  *fakeControl
	out  chan *message.Message
	recs []*kgo.Record
}

// setupPartition starts a partition of topic "t" with a fake client, stopped
// at cleanup, and returns it with n records to push.
func setupPartition(t *testing.T, n, maxInFlight, readAhead int, nackDelay time.Duration) *partitionBundle {
	t.Helper()
	sub := &subscription{
		topic:       "t",
		group:       "g",
		logger:      watermill.NopLogger{},
		maxInFlight: maxInFlight,
		readAhead:   readAhead,
		nackDelay:   nackDelay,
		out:         make(chan *message.Message),
		msgCtx:      context.Background(),
	}
	ctl := &fakeControl{}
	p := newPartition(sub, ctl, 0)
	go p.run()
	t.Cleanup(p.stop)
	b := &partitionBundle{p: p, ctl: ctl, out: sub.out}
	for i := range n {
		b.recs = append(b.recs, &kgo.Record{Topic: "t", Partition: 0, Offset: int64(i), Value: []byte{byte(i)}})
	}
	return b
}

func (b *partitionBundle) receive(t *testing.T) *message.Message {
	t.Helper()
	select {
	case msg := <-b.out:
		return msg
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return nil
	}
}

// requireNothing asserts that no message is delivered within a short while.
func (b *partitionBundle) requireNothing(t *testing.T) {
	t.Helper()
	select {
	case msg := <-b.out:
		t.Fatalf("message %s delivered, want none", msg.UUID)
	case <-time.After(100 * time.Millisecond):
	}
}

func offsetOf(msg *message.Message) string { return msg.Metadata.Get("dtx_kafka_offset") }

func TestPartitionDeliversOneAtATimeInOrder(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 3, 1, 100, time.Millisecond)
	b.p.push(b.recs)

	for i, want := range []string{"0", "1", "2"} {
		msg := b.receive(t)
		require.Equal(t, want, offsetOf(msg))
		require.Equal(t, "t/0/"+want, msg.UUID)
		b.requireNothing(t)
		require.True(t, msg.Ack())
		require.Eventually(t, func() bool {
			marks, _, _, _ := b.ctl.state()
			return len(marks) == i+1
		}, 5*time.Second, time.Millisecond)
	}
	marks, _, _, _ := b.ctl.state()
	require.Equal(t, []int64{0, 1, 2}, marks)
}

func TestPartitionMarksOnlyAfterEveryEarlierAck(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 10, 10, 100, time.Millisecond)
	b.p.push(b.recs)

	var msgs []*message.Message
	for range 10 {
		msgs = append(msgs, b.receive(t))
	}
	for i, msg := range msgs {
		require.Equal(t, b.recs[i].Offset, mustOffset(t, msg))
	}
	// Messages 1..5 and 7 are offsets 0..4 and 6.
	for _, i := range []int{0, 1, 2, 3, 4, 6} {
		require.True(t, msgs[i].Ack())
	}
	require.Eventually(t, func() bool {
		marks, _, _, _ := b.ctl.state()
		return len(marks) > 0 && marks[len(marks)-1] == 4
	}, 5*time.Second, time.Millisecond)
	b.requireNothing(t)
	marks, _, _, _ := b.ctl.state()
	require.NotContains(t, marks, int64(6), "offset 6 marked before offset 5 was acked")

	require.True(t, msgs[5].Ack())
	require.Eventually(t, func() bool {
		marks, _, _, _ := b.ctl.state()
		return marks[len(marks)-1] == 6
	}, 5*time.Second, time.Millisecond)

	b.p.stop()
	for _, msg := range msgs[7:] {
		select {
		case <-msg.Context().Done():
		default:
			t.Fatalf("message %s: context not canceled when its partition stopped", msg.UUID)
		}
	}
	require.True(t, msgs[7].Ack())
	marks, _, _, _ = b.ctl.state()
	require.Equal(t, int64(6), marks[len(marks)-1], "an ack after the partition stopped was marked")
}

func mustOffset(t *testing.T, msg *message.Message) int64 {
	t.Helper()
	var off int64
	for _, c := range offsetOf(msg) {
		require.True(t, c >= '0' && c <= '9', "offset %q", offsetOf(msg))
		off = off*10 + int64(c-'0')
	}
	return off
}

func TestPartitionRedeliversNackedMessageAfterDelay(t *testing.T) {
	t.Parallel()
	const delay = 50 * time.Millisecond
	b := setupPartition(t, 2, 1, 100, delay)
	b.p.push(b.recs)

	first := b.receive(t)
	require.Equal(t, "0", offsetOf(first))
	nackedAt := time.Now()
	require.True(t, first.Nack())
	select {
	case <-first.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context of a nacked message not canceled")
	}

	again := b.receive(t)
	require.GreaterOrEqual(t, time.Since(nackedAt), delay)
	require.NotSame(t, first, again)
	require.Equal(t, first.UUID, again.UUID)
	require.Equal(t, "0", offsetOf(again), "another message delivered before the nacked one")
	require.NoError(t, again.Context().Err())
	require.True(t, again.Ack())

	require.Equal(t, "1", offsetOf(b.receive(t)))
	marks, _, _, _ := b.ctl.state()
	require.Equal(t, []int64{0}, marks)
}

func TestPartitionRedeliversWithoutDelayWithWindow(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 3, 3, 100, 0)
	b.p.push(b.recs)

	var msgs []*message.Message
	for range 3 {
		msgs = append(msgs, b.receive(t))
	}
	require.True(t, msgs[1].Nack())
	again := b.receive(t)
	require.Equal(t, msgs[1].UUID, again.UUID)
	for _, msg := range []*message.Message{msgs[2], msgs[0], again} {
		require.True(t, msg.Ack())
	}
	require.Eventually(t, func() bool {
		marks, _, _, _ := b.ctl.state()
		return len(marks) > 0 && marks[len(marks)-1] == 2
	}, 5*time.Second, time.Millisecond)
}

func TestPartitionPausesFetchingWhenReadAheadIsFull(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 10, 1, 4, time.Millisecond)

	b.p.push(b.recs[:3])
	_, paused, _, _ := b.ctl.state()
	require.False(t, paused, "paused below the read-ahead")
	b.p.push(b.recs[3:])
	_, paused, pauses, _ := b.ctl.state()
	require.True(t, paused)
	require.Equal(t, 1, pauses)

	// Resumes once no more than half of the read-ahead waits.
	for i := range 8 {
		msg := b.receive(t)
		_, paused, _, resumes := b.ctl.state()
		// msg i is delivered; 9-i records are still queued.
		if 9-i > 2 {
			require.True(t, paused, "resumed with %d records queued", 9-i)
		} else {
			require.False(t, paused, "still paused with %d records queued", 9-i)
			require.Equal(t, 1, resumes)
		}
		require.True(t, msg.Ack())
	}
}

func TestPartitionStopDropsUnackedAndResumes(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 10, 1, 5, time.Millisecond)
	b.p.push(b.recs)
	msg := b.receive(t)

	b.p.stop()
	b.p.stop() // twice is fine
	<-msg.Context().Done()
	require.True(t, msg.Ack())
	marks, paused, pauses, resumes := b.ctl.state()
	require.Empty(t, marks)
	require.False(t, paused, "a stopped partition stays paused")
	require.Equal(t, pauses, resumes)
	b.p.push(b.recs) // ignored once stopped
	b.requireNothing(t)
}

func TestPartitionStopMarksWhatWasAcked(t *testing.T) {
	t.Parallel()
	b := setupPartition(t, 3, 3, 100, time.Millisecond)
	b.p.push(b.recs)
	var msgs []*message.Message
	for range 3 {
		msgs = append(msgs, b.receive(t))
	}
	require.True(t, msgs[0].Ack())
	require.True(t, msgs[1].Ack())
	b.p.stop()
	marks, _, _, _ := b.ctl.state()
	require.NotEmpty(t, marks)
	require.Equal(t, int64(1), marks[len(marks)-1], "acks made before stop must be marked")
}
