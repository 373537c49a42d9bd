package idempotency_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/internal/migrate"
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

// exampleDatabase migrates a fresh schema, with an orders table, in the test
// database and returns a pool on it and a function that drops it.
func exampleDatabase(ctx context.Context) (*pgxpool.Pool, string, func(), error) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "example_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, pgtest.URL())
	if err != nil {
		return nil, "", nil, err
	}
	drop := func() {
		_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		_ = conn.Close(ctx)
	}
	if err := migrate.Up(ctx, conn, migrate.Config{Schema: schema}); err != nil {
		drop()
		return nil, "", nil, err
	}
	cfg, err := pgxpool.ParseConfig(pgtest.URL())
	if err != nil {
		drop()
		return nil, "", nil, err
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		drop()
		return nil, "", nil, err
	}
	cleanup := func() { pool.Close(); drop() }
	if _, err := pool.Exec(ctx, "CREATE TABLE orders (id bigserial PRIMARY KEY)"); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	return pool, schema, cleanup, nil
}
