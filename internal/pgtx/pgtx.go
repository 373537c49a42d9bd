package pgtx

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// EndTimeout bounds Rollback.
const EndTimeout = 5 * time.Second

// Rollback ends tx without committing, even when ctx has ended, within
// EndTimeout; a failure is not reported (see the package documentation).
func Rollback(ctx context.Context, tx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), EndTimeout)
	defer cancel()
	_ = tx.Rollback(ctx)
}
