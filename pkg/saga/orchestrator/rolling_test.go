package orchestrator_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

// deadLetters records what the DeadLetter middleware publishes.
type deadLetters struct {
	mu   sync.Mutex
	msgs []*message.Message
}

func (d *deadLetters) Publish(_ string, msgs ...*message.Message) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.msgs = append(d.msgs, msgs...)
	return nil
}

func (d *deadLetters) Close() error { return nil }

func (d *deadLetters) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.msgs)
}

// consumer is a replica's router: Handle behind the Retry and DeadLetter
// middleware, with a short retry budget, so that any failure that reached
// them would be dead-lettered quickly. Its deliveries' contexts end when its
// partitions are revoked.
type consumer struct {
	h      message.HandlerFunc
	ctx    context.Context
	revoke context.CancelFunc
}

func newConsumer(t *testing.T, o *orchestrator.Orchestrator, dl *deadLetters) *consumer {
	t.Helper()
	retry, err := middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, InitialInterval: 10 * time.Millisecond, MaxElapsed: 200 * time.Millisecond})
	require.NoError(t, err)
	dead, err := middleware.DeadLetter(dl, middleware.DeadLetterConfig{})
	require.NoError(t, err)
	c := &consumer{h: dead(retry(func(msg *message.Message) ([]*message.Message, error) {
		return nil, o.Handle(msg)
	}))}
	c.ctx, c.revoke = context.WithCancel(context.Background())
	t.Cleanup(c.revoke)
	return c
}

// deliver hands env to the consumer and reports whether it was acked (nil
// error: handled or dead-lettered) or nacked (to be delivered again).
func (c *consumer) deliver(t *testing.T, env *messaging.Envelope) (acked bool) {
	t.Helper()
	msg, err := env.ToMessage()
	require.NoError(t, err)
	msg.Metadata.Set(messaging.MetadataKafkaTopic, saga.DefaultReplyTopic)
	msg.SetContext(c.ctx)
	_, err = c.h(msg)
	return err == nil
}

// A rolling deploy: the current release's replica holds definitions v1 and
// v2, the previous release's only v1, on the same schema and topics. Sagas
// started on v2 (and on v1) get replies on either replica. The previous
// replica holds the v2 replies it gets, neither applying nor recording nor
// dead-lettering them, until it is replaced (its partitions revoked, the
// replies delivered again to the new replica). Every saga completes; no
// reply is dead-lettered, no step times out or is sent twice.
func TestRollingDeployLosesNoReply(t *testing.T) {
	t.Parallel()
	f := &fixture{t: t, schema: pgtest.NewSchema(t)}
	dl := &deadLetters{}
	current := f.replica(shopDefinition(nil), shopV2())
	previous := f.replica(shopDefinition(nil))
	f.o = current.o
	consumers := []*consumer{newConsumer(t, current.o, dl), newConsumer(t, previous.o, dl)}

	const n = 16
	var ids []string
	for i := range n {
		id := "v2-" + strconv.Itoa(i)
		_, err := current.o.Start(context.Background(), nil, "shop", id, map[string]any{"order_id": id}, orchestrator.StartParams{})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	for i := range n / 2 {
		id := "v1-" + strconv.Itoa(i)
		_, err := previous.o.Start(context.Background(), nil, "shop", id, map[string]any{"order_id": id}, orchestrator.StartParams{})
		require.NoError(t, err)
		ids = append(ids, id)
	}

	replyTypes := map[string]string{"inv.reserve": "inv.reserved", "pay.charge": "pay.charged", "shop.order.confirm": "shop.order.confirmed"}
	sent := map[string]int{}
	for round := range 3 {
		cmds := commands(f.records())
		require.Len(t, cmds, len(ids), "round %d: one command per saga", round)
		var (
			mu     sync.Mutex
			nacked []*messaging.Envelope
			wg     sync.WaitGroup
		)
		for i, c := range cmds {
			require.Equal(t, 1, c.Attempt, "no command is sent twice")
			sent[c.Type]++
			env := replyMessage(t, c, replyTypes[c.Type], map[string]any{"payment_id": "p"})
			cons := consumers[i%2] // the reply's partition
			wg.Go(func() {
				if !cons.deliver(t, env) {
					mu.Lock()
					nacked = append(nacked, env)
					mu.Unlock()
				}
			})
		}
		if round == 0 {
			// The previous replica holds its v2 replies meanwhile.
			require.Eventually(t, func() bool {
				return previous.inputs(t, "reply", "unknown_definition") >= n/2
			}, 10*time.Second, 10*time.Millisecond)
			time.Sleep(300 * time.Millisecond) // past the retry budget of its router
			require.Zero(t, dl.count(), "nothing dead-lettered while held")

			// The deploy goes on: the previous replica is stopped, its
			// partitions go to a replica of the current release.
			consumers[1].revoke()
			wg.Wait()
			require.Len(t, nacked, n/2, "the held replies are delivered again")
			consumers[1] = newConsumer(t, f.replica(shopDefinition(nil), shopV2()).o, dl)
			for _, env := range nacked {
				require.True(t, consumers[1].deliver(t, env))
			}
			continue
		}
		wg.Wait()
		require.Empty(t, nacked, "round %d", round)
	}

	require.Empty(t, commands(f.records()))
	require.Zero(t, dl.count(), "no reply dead-lettered")
	require.Equal(t, map[string]int{"inv.reserve": len(ids), "pay.charge": len(ids), "shop.order.confirm": len(ids)}, sent)
	for _, id := range ids {
		d := f.show(id)
		require.Equal(t, saga.StatusCompleted, d.Status, id)
		for _, e := range d.Timeline {
			require.NotEqual(t, string(saga.OutcomeTimedOut), e.Outcome, "%s: no step timed out", id)
		}
	}
}
