package migrate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DevelopmentDatabaseURL is the database `make deps` prepares, which
// NewTempSchema uses when given no URL.
const DevelopmentDatabaseURL = "postgres://dtx:dtx@127.0.0.1:5432/dtx?sslmode=disable"

// TempSchema is a PostgreSQL schema of a fresh name with dtx's tables
// migrated into it, for tests and examples that need tables of their own.
type TempSchema struct {
	// Name is the schema's name: the prefix given to NewTempSchema and 16
	// random hex digits.
	Name string
	// Pool connects with Name as its search_path, so unqualified tables
	// the caller creates land in the schema too.
	Pool *pgxpool.Pool
}

// NewTempSchema connects to databaseURL (DevelopmentDatabaseURL when
// empty), creates a schema named prefix followed by random hex digits and
// applies every migration to it. prefix must start a valid schema name
// (see ValidateSchemaName), e.g. "example_". Close drops the schema.
func NewTempSchema(ctx context.Context, databaseURL, prefix string) (*TempSchema, error) {
	if databaseURL == "" {
		databaseURL = DevelopmentDatabaseURL
	}
	suffix := make([]byte, 8)
	_, _ = rand.Read(suffix) // never fails (crypto/rand)
	name := prefix + hex.EncodeToString(suffix)
	if err := ValidateSchemaName(name); err != nil {
		return nil, fmt.Errorf("migrate: temporary schema: prefix %q: %w", prefix, err)
	}
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		// pgx errors may echo the connection string: do not wrap them.
		return nil, fmt.Errorf("migrate: temporary schema: the database URL cannot be parsed")
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("migrate: temporary schema: %w", err)
	}
	s := &TempSchema{Name: name, Pool: pool}
	if err := UpPool(ctx, pool, Config{Schema: name}); err != nil {
		_ = s.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return s, nil
}

// Close drops the schema with everything in it and closes the pool.
func (s *TempSchema) Close(ctx context.Context) error {
	_, err := s.Pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s.Name}.Sanitize()+" CASCADE")
	s.Pool.Close()
	if err != nil {
		return fmt.Errorf("migrate: drop temporary schema %s: %w", s.Name, err)
	}
	return nil
}
