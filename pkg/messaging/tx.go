package messaging

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// txKey is the context key of the transaction.
type txKey struct{}

// ContextWithTx returns a copy of ctx that carries tx, for TxFromContext.
// dtx's handlers put the transaction they run in on the context this way
// (the inbox's handler, the idempotency middleware, the cqrs buses), so that
// code below them joins it.
func ContextWithTx(ctx context.Context, tx pgx.Tx) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

// TxFromContext returns the transaction ctx carries: within a handler of
// the inbox, the idempotency middleware or a cqrs bus, the one its effects
// commit in. Code that joins the caller's transaction (for example to write
// outbox rows with the effect) gets it here. ok is false when ctx carries
// none.
func TxFromContext(ctx context.Context) (tx pgx.Tx, ok bool) {
	tx, ok = ctx.Value(txKey{}).(pgx.Tx)
	return tx, ok && tx != nil
}
