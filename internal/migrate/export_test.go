package migrate

import (
	"context"
	"io/fs"

	"github.com/jackc/pgx/v5"
)

// UpFS is Up with the migrations of fsys, for tests of broken migrations.
func UpFS(ctx context.Context, conn *pgx.Conn, cfg Config, fsys fs.FS) error {
	return run(ctx, conn, cfg, fsys, func(_, latest int32) (int32, error) { return latest, nil })
}

// StatusFS is Status with the migrations of fsys.
func StatusFS(ctx context.Context, conn *pgx.Conn, cfg Config, fsys fs.FS) (Report, error) {
	return status(ctx, conn, cfg, fsys)
}
