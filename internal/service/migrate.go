package service

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/migrate"
)

// migrateWithRetry applies pending migrations, waiting for PostgreSQL with
// capped exponential backoff while it does not answer, so a binary may start
// before its database. It gives up only when ctx is cancelled or a migration
// itself fails.
func migrateWithRetry(ctx context.Context, log *slog.Logger, pool *pgxpool.Pool, schema string) error {
	backoff := 250 * time.Millisecond
	for {
		err := pool.Ping(ctx)
		if err == nil {
			if err := migrate.UpPool(ctx, pool, migrate.Config{Schema: schema, Logger: log}); err != nil {
				return fmt.Errorf("migrations: %w", err)
			}
			return nil
		}
		log.Warn("waiting for PostgreSQL to apply migrations", "err", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
