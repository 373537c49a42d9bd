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
// itself fails. up applies the migrations (migrate.UpPool); status receives
// each step, for /readyz.
//
// Once ctx is cancelled (the process drains), it returns ctx's error whatever
// went wrong: a cancelled migration fails in ways that do not always wrap
// context.Canceled (a closed connection, an error tern ignored), and the
// interrupted migration was rolled back, so the drain is clean.
func migrateWithRetry(ctx context.Context, log *slog.Logger, pool *pgxpool.Pool, schema string,
	up func(context.Context, *pgxpool.Pool, migrate.Config) error, status func(reason string),
) error {
	backoff := 250 * time.Millisecond
	for {
		err := pool.Ping(ctx)
		if err == nil {
			status("applying migrations (or waiting for the migration lock another replica holds)")
			err := up(ctx, pool, migrate.Config{Schema: schema, Logger: log})
			if ctx.Err() != nil {
				if err != nil {
					log.Info("migrations interrupted by the shutdown", "err", err)
				}
				return ctx.Err()
			}
			if err != nil {
				return fmt.Errorf("migrations: %w", err)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		status("waiting for PostgreSQL to apply migrations")
		log.Warn("waiting for PostgreSQL to apply migrations", "err", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
