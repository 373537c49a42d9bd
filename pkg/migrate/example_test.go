package migrate_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/migrate"
)

// A test of a service gives itself a schema of its own: it migrates a
// freshly named schema, uses it, and drops it at the end. The database is
// the one named by DTX_DATABASE_URL.
func Example() {
	ctx := context.Background()
	url := os.Getenv("DTX_DATABASE_URL")
	if url == "" {
		url = "postgres://dtx:dtx@127.0.0.1:5432/dtx?sslmode=disable" // the development database
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()

	// A unique name, so that tests running at once do not meet.
	suffix := make([]byte, 8)
	_, _ = rand.Read(suffix)
	cfg := migrate.Config{Schema: "example_" + hex.EncodeToString(suffix)}
	defer func() {
		_, _ = pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{cfg.Schema}.Sanitize()+" CASCADE")
	}()

	if err := migrate.UpPool(ctx, pool, cfg); err != nil {
		fmt.Println(err)
		return
	}
	r, err := migrate.StatusPool(ctx, pool, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("up to date:", r.Current == r.Latest, "pending:", len(r.Pending))

	if err := migrate.DownPool(ctx, pool, cfg, 1); err != nil {
		fmt.Println(err)
		return
	}
	r, _ = migrate.StatusPool(ctx, pool, cfg)
	fmt.Println("behind by:", r.Latest-r.Current, "pending:", len(r.Pending))

	if err := migrate.ToPool(ctx, pool, cfg, 0); err != nil {
		fmt.Println(err)
		return
	}
	r, _ = migrate.StatusPool(ctx, pool, cfg)
	fmt.Println("version:", r.Current, "applied:", len(r.Applied))
	// Output:
	// up to date: true pending: 0
	// behind by: 1 pending: 1
	// version: 0 applied: 0
}

func ExampleValidateSchemaName() {
	for _, name := range []string{"billing", "order", "Billing", "pg_temp"} {
		fmt.Println(name, migrate.ValidateSchemaName(name) == nil)
	}
	// Output:
	// billing true
	// order true
	// Billing false
	// pg_temp false
}
