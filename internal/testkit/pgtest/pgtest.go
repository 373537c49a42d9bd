package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/migrate"
)

// EnvURL is the environment variable that overrides DefaultURL.
const EnvURL = "DTX_DATABASE_URL"

// DefaultURL is the database tests use when EnvURL is not set: the one the
// development environment (`make deps`) provides.
const DefaultURL = "postgres://dtx:dtx@127.0.0.1:5432/dtx?sslmode=disable"

// setupTimeout bounds each step of preparing or removing a schema.
const setupTimeout = 30 * time.Second

// URL returns the PostgreSQL connection string tests use: $DTX_DATABASE_URL,
// or DefaultURL if it is unset or empty.
func URL() string {
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return DefaultURL
}

// Schema is a throwaway schema with every migration applied.
type Schema struct {
	// Name is the schema's name, "t_" and 16 random hex digits; pass it as
	// DTX_SCHEMA or migrate.Config.Schema to code under test.
	Name string

	// Pool connects to URL() with search_path set to Name, so unqualified
	// table names resolve to the schema's tables. It is closed at cleanup.
	Pool *pgxpool.Pool

	config *pgxpool.Config
}

// Config returns a copy of the configuration of Pool, for tests that build
// their own pools on the schema; closing those is up to them.
func (s *Schema) Config() *pgxpool.Config { return s.config.Copy() }

// NewSchema creates a uniquely named schema in the database at URL(), applies
// every migration to it and returns it with a pool bound to it. At cleanup the
// pool is closed and the schema dropped with everything in it. A schema per
// test, or one shared by a test's subtests, suits tests that use several
// connections or LISTEN/NOTIFY; otherwise a Tx per test on a shared schema is
// cheaper.
//
// It fails the test, saying how to start PostgreSQL, when the database does
// not answer.
func NewSchema(t testing.TB) *Schema {
	t.Helper()
	name := NewSchemaName(t)

	conn := Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := migrate.Up(ctx, conn, migrate.Config{Schema: name}); err != nil {
		t.Fatalf("pgtest: migrate schema %s: %v", name, err)
	}
	// The connection has done its job; closing it now keeps connections low
	// when many tests run at once.
	if err := conn.Close(ctx); err != nil {
		t.Fatalf("pgtest: close the setup connection: %v", err)
	}

	cfg, err := pgxpool.ParseConfig(URL())
	if err != nil {
		t.Fatalf("pgtest: %s: %v", EnvURL, err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgtest: create a pool: %v", err)
	}
	// Registered after the schema's drop, so it runs before it.
	t.Cleanup(pool.Close)
	return &Schema{Name: name, Pool: pool, config: cfg}
}

// NewSchemaName returns a fresh, unused schema name ("t_" and 16 random hex
// digits) without creating the schema, and drops the schema, if it then
// exists, at cleanup. Tests of migrations use it; others want NewSchema.
func NewSchemaName(t testing.TB) string {
	t.Helper()
	name := "t_" + randomHex(8)
	t.Cleanup(func() { dropSchema(t, name) })
	return name
}

// Connect opens a plain connection to URL(), closed at cleanup. It fails the
// test, saying how to start PostgreSQL, when the database does not answer.
func Connect(t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := connect(URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		_ = conn.Close(ctx) // Already closed by some tests; nothing to report.
	})
	return conn
}

// TxBeginner starts transactions; *pgxpool.Pool, *pgx.Conn and pgx.Tx (for a
// savepoint) are TxBeginners.
type TxBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Tx begins a transaction on db and rolls it back at cleanup, so a test leaves
// nothing behind and tests may share one schema. The test may commit or roll
// back itself; the cleanup then has nothing to do.
func Tx(t testing.TB, db TxBeginner) pgx.Tx {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatalf("pgtest: begin a transaction: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		if err := tx.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("pgtest: roll back the test transaction: %v", err)
		}
	})
	return tx
}

// connect opens a connection to url, with an error that says how to fix the
// common causes. Errors never contain the password: pgx redacts it from
// parse errors, and the server is named by host, port, user and database.
func connect(url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %s: %w", EnvURL, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgtest: cannot connect to PostgreSQL at %s:%d (user %s, database %s; start the development services with `make deps`, or point %s at a PostgreSQL server): %w",
			cfg.Host, cfg.Port, cfg.User, cfg.Database, EnvURL, err)
	}
	return conn, nil
}

func dropSchema(t testing.TB, name string) {
	conn, err := connect(URL())
	if err != nil {
		t.Errorf("pgtest: drop schema %s: %v", name, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
		t.Errorf("pgtest: drop schema %s: %v", name, err)
	}
}

// randomHex returns n random bytes in hex. crypto/rand.Read does not fail: it
// crashes the program if the system's source does.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ExampleSchema is NewSchema for runnable examples, which have no testing.TB:
// it migrates a fresh schema ("example_" and 16 random hex digits), runs
// setupSQL in it (e.g. the example's own tables; may be empty) and returns a
// pool whose search_path is that schema, the schema's name and a cleanup that
// closes the pool and drops the schema.
func ExampleSchema(ctx context.Context, setupSQL string) (*pgxpool.Pool, string, func(), error) {
	schema := "example_" + randomHex(8)
	conn, err := connect(URL())
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
	cfg, err := pgxpool.ParseConfig(URL())
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
	if setupSQL != "" {
		if _, err := pool.Exec(ctx, setupSQL); err != nil {
			cleanup()
			return nil, "", nil, err
		}
	}
	return pool, schema, cleanup, nil
}
