package migrate

import (
	"context"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// UpFS is Up with the migrations of fsys, for tests of broken migrations.
func UpFS(ctx context.Context, conn *pgx.Conn, cfg Config, fsys fs.FS) error {
	return run(ctx, conn, cfg, fsys, func(_, latest int32) (int32, error) { return latest, nil })
}

// StatusFS is Status with the migrations of fsys.
func StatusFS(ctx context.Context, conn *pgx.Conn, cfg Config, fsys fs.FS) (Report, error) {
	return status(ctx, conn, cfg, fsys)
}

// WithPoolConn is withPoolConn, for tests of what the Pool variants do with
// the connection they take.
func WithPoolConn(ctx context.Context, pool *pgxpool.Pool, cfg Config, fn func(conn *pgx.Conn) error) error {
	return withPoolConn(ctx, pool, cfg, fn)
}

// LockKey is the key of the advisory lock private to schema.
func LockKey(schema string) string { return lockKey(schema) }
