package idempotency_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/messaging/idempotency"
	"github.com/vextrus/dtx/pkg/migrate"
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

// exampleDatabase gives the example a schema of its own in the database
// named by DTX_DATABASE_URL (the development database when unset): a fresh
// name, dtx's tables migrated into it, and the example's own tables. The
// pool's connections use the schema as their search_path; cleanup drops the
// schema and closes the pool.
func exampleDatabase(ctx context.Context) (*pgxpool.Pool, string, func(), error) {
	db, err := migrate.NewTempSchema(ctx, os.Getenv("DTX_DATABASE_URL"), "example_")
	if err != nil {
		return nil, "", nil, err
	}
	pool, schema := db.Pool, db.Name
	cleanup := func() { _ = db.Close(context.WithoutCancel(ctx)) }
	if _, err := pool.Exec(ctx, "CREATE TABLE orders (id bigserial PRIMARY KEY)"); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	return pool, schema, cleanup, nil
}
