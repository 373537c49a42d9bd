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
	// Keys are kept per caller: ScopeFunc names the caller that the
	// authentication in front of the middleware established (not a header
	// the client may set at will). Without ScopeFunc, the caller is its
	// Authorization header.
	mw, err := store.Middleware(idempotency.MiddlewareConfig{
		Scope: "orders-api",
		ScopeFunc: func(r *http.Request) string {
			user, _ := r.Context().Value(userKey{}).(string)
			return user
		},
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
		// Only a 2xx answer keeps the handler's writes; a 4xx is stored
		// and replayed without them, a 5xx is not stored.
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%d}`, id)
	})
	h := authenticate(mw(createOrder))

	for _, user := range []string{"alice", "alice", "bob"} {
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"item":"book"}`))
		req.Header.Set("Authorization", "Bearer token-of-"+user)
		req.Header.Set(idempotency.HeaderKey, "3f1c9a52-order-1")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Println(user, rec.Code, rec.Body.String(), "replayed:", rec.Header().Get(idempotency.HeaderReplayed) == "true")
	}
	// Output:
	// alice 201 {"id":1} replayed: false
	// alice 201 {"id":1} replayed: true
	// bob 201 {"id":2} replayed: false
}

// userKey is the context key of the authenticated user.
type userKey struct{}

// authenticate stands for an application's authentication: it puts the
// user that the bearer token names in the request's context.
func authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer token-of-")
		if !ok {
			http.Error(w, "unauthenticated", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, user)))
	})
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
