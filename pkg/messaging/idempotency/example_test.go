package idempotency_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging/idempotency"
)

func Example() {
	ctx := context.Background()
	pool, schema, cleanup, err := exampleDatabase(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()

	store, err := idempotency.NewStore(pool, idempotency.Config{Schema: schema})
	if err != nil {
		fmt.Println(err)
		return
	}
	mw, err := store.Middleware(idempotency.MiddlewareConfig{
		Scope:     "orders-api",
		ScopeFunc: func(r *http.Request) string { return r.Header.Get("X-User") }, // The authenticated principal.
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	createOrder := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tx, _ := idempotency.TxFromRequest(r)
		var id int64
		// The effect commits together with the stored response.
		if err := tx.QueryRow(r.Context(), "INSERT INTO orders DEFAULT VALUES RETURNING id").Scan(&id); err != nil {
			http.Error(w, "cannot create the order", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%d}`, id)
	})
	h := mw(createOrder)

	for range 2 {
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"item":"book"}`))
		req.Header.Set("X-User", "alice")
		req.Header.Set(idempotency.HeaderKey, "3f1c9a52-order-1")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Body.String(), "replayed:", rec.Header().Get(idempotency.HeaderReplayed) == "true")
	}
	// Output:
	// 201 {"id":1} replayed: false
	// 201 {"id":1} replayed: true
}

// exampleDatabase migrates a fresh schema with the example's tables.
func exampleDatabase(ctx context.Context) (*pgxpool.Pool, string, func(), error) {
	return pgtest.ExampleSchema(ctx, "CREATE TABLE orders (id bigserial PRIMARY KEY)")
}
