package outbox

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

// Publisher returns a Watermill publisher that writes to the outbox in tx:
// its Publish is Write, with the context of the first message for the
// database call, and each message stamped with the Origin its own context
// carries. Close does nothing; tx stays the caller's to commit or roll back.
// It lets code written against message.Publisher, such as Watermill's
// components/cqrs CommandBus and EventBus, publish through the outbox.
func (o *Outbox) Publisher(tx pgx.Tx) message.Publisher {
	return &txPublisher{o: o, tx: tx}
}

type txPublisher struct {
	o  *Outbox
	tx pgx.Tx
}

// Publish writes msgs to the outbox in the bound transaction.
func (p *txPublisher) Publish(topic string, msgs ...*message.Message) error {
	return p.o.publish(p.tx, topic, msgs)
}

// Close does nothing.
func (p *txPublisher) Close() error { return nil }

// ContextPublisher returns a Watermill publisher that writes each call's
// messages to the outbox in the transaction their context carries
// (messaging.TxFromContext): within an inbox.Handler, the handler's own, or any
// set with messaging.ContextWithTx. A call whose messages carry no transaction,
// or not all the same one, fails with ErrNoTransaction and writes nothing.
// Otherwise it behaves as Publisher's. Close does nothing.
func (o *Outbox) ContextPublisher() message.Publisher {
	return &ctxPublisher{o: o}
}

type ctxPublisher struct{ o *Outbox }

// Publish writes msgs to the outbox in the transaction of their context.
func (p *ctxPublisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	var tx pgx.Tx
	for i, msg := range msgs {
		if msg == nil {
			continue // refused by Write, naming it
		}
		t, ok := messaging.TxFromContext(msg.Context())
		switch {
		case !ok || t == nil:
			return fmt.Errorf("outbox: publish to %s: message #%d (id %q): its context carries no transaction (messaging.ContextWithTx): %w",
				topic, i, msg.UUID, ErrNoTransaction)
		case tx == nil:
			tx = t
		case t != tx:
			return fmt.Errorf("outbox: publish to %s: message #%d (id %q) carries another transaction than message #0: %w",
				topic, i, msg.UUID, ErrNoTransaction)
		}
	}
	return p.o.publish(tx, topic, msgs)
}

// Close does nothing.
func (p *ctxPublisher) Close() error { return nil }

// publish stamps each message with its own context's Origin and writes them.
func (o *Outbox) publish(tx pgx.Tx, topic string, msgs []*message.Message) error {
	ctx := context.Background()
	for _, msg := range msgs {
		if msg != nil {
			middleware.StampContext(msg.Context(), msg)
			middleware.InjectTraceContext(msg.Context(), msg)
		}
	}
	if len(msgs) > 0 && msgs[0] != nil {
		ctx = msgs[0].Context()
	}
	return o.write(ctx, tx, topic, msgs)
}
