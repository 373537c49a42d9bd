package idempotency_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/idempotency"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

// The handler's transaction has no transaction id when the handler starts:
// the middleware's lock of the key is an advisory lock, and the savepoint
// writes nothing. So outbox.Lock and the event store's AppendTx can be the
// transaction's first locks, as the outbox requires for per-key commit
// order, inside an idempotent handler.
func TestHandlerCanTakeTheOutboxAndStreamLocksFirst(t *testing.T) {
	t.Parallel()
	f := setup(t, idempotency.Config{})
	ob, err := outbox.New(outbox.Config{Schema: f.schema.Name, KeyOrder: outbox.KeyOrderVerify})
	require.NoError(t, err)
	es, err := postgres.New(f.schema.Pool, postgres.Config{Schema: f.schema.Name})
	require.NoError(t, err)

	var idBefore *string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tx, ok := idempotency.TxFromRequest(r)
		if !ok {
			http.Error(w, "no transaction", http.StatusInternalServerError)
			return
		}
		ctx := r.Context()
		if err := tx.QueryRow(ctx, "SELECT pg_current_xact_id_if_assigned()::text").Scan(&idBefore); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err := ob.Lock(ctx, tx, "billing.events", "inv-1"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		env, err := messaging.NewEnvelope("billing.invoice.created", "/test", map[string]any{"invoice_id": "inv-1"})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		env.PartitionKey = "inv-1"
		if err := ob.WriteEnvelopes(ctx, tx, "billing.events", env); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if _, err := es.AppendTx(ctx, tx, eventstore.AppendParams{
			StreamID: "inv-1", StreamType: "invoice", Expected: eventstore.NoStream,
			Events: []eventstore.EventData{{Type: "billing.invoice.created", Data: json.RawMessage(`{"invoice_id":"inv-1"}`)}},
		}); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	c := f.serve(t, idempotency.MiddlewareConfig{}, h)

	r := c.post(t, "k", "one")
	require.Equal(t, http.StatusCreated, r.status, r.body)
	require.Nil(t, idBefore, "the handler's transaction has no id when the handler starts")
	require.Equal(t, 2, f.count(t, "SELECT count(*) FROM outbox"), "the outbox row and the event's row committed")
	require.Equal(t, 1, f.count(t, "SELECT count(*) FROM events"))
	requireReplayOf(t, r, c.post(t, "k", "one"))
	require.Equal(t, 2, f.count(t, "SELECT count(*) FROM outbox"), "the replay wrote nothing")
}

// Advisory locks are database-wide, but a key's lock is kept per schema: a
// request holding key k in one schema does not hold up a request with the
// same scope, caller and key on a Store in another schema.
func TestKeyLocksOfOtherSchemasDoNotMeet(t *testing.T) {
	t.Parallel()
	held, other := make(chan struct{}), make(chan struct{})
	fa := setup(t, idempotency.Config{})
	ca := fa.serve(t, idempotency.MiddlewareConfig{}, &app{t: t, after: func(*http.Request, pgx.Tx, int32) int {
		close(held)
		select { // Hold the key until the other schema's request is done.
		case <-other:
		case <-time.After(waitFor):
		}
		return 0
	}})
	fb := setup(t, idempotency.Config{})
	cb := fb.serve(t, idempotency.MiddlewareConfig{}, &app{t: t})

	first := make(chan reply, 1)
	go func() { first <- ca.do(http.MethodPost, "/orders", "k", "one") }()
	select {
	case <-held:
	case r := <-first:
		t.Fatalf("the first request ended before holding its key: %d %s %v", r.status, r.body, r.err)
	}
	start := time.Now()
	require.Equal(t, http.StatusCreated, cb.post(t, "k", "one").status)
	close(other)
	require.Less(t, time.Since(start), waitFor/2, "the other schema's request did not wait for this one's lock")
	r := <-first
	require.NoError(t, r.err)
	require.Equal(t, http.StatusCreated, r.status)
}
