package idempotency

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/internal/pgtx"
)

// SetHookAfterClaim makes every request run f between the claim of its key
// and the lock of its row. Set it before serving requests.
func (s *Store) SetHookAfterClaim(f func()) { s.hookAfterClaim = f }

// SweepBatch runs one DELETE statement of Sweep.
func (s *Store) SweepBatch(ctx context.Context) (int64, error) {
	return s.sweeper.Batch(ctx)
}

// Claim claims (scope, key) for fingerprint fp; ok is true if the caller got
// it, with token.
func (s *Store) Claim(ctx context.Context, scope, key string, fp []byte) (token uint32, ok bool, err error) {
	res, err := s.claim(ctx, scope, key, fp)
	return res.token, res.outcome == claimed, err
}

// Lock reports whether the claim with token can still be locked, as a
// request does before running its handler. The transaction is rolled back.
func (s *Store) Lock(ctx context.Context, scope, key string, token uint32) (bool, error) {
	tx, ok, err := s.begin(ctx, pgx.TxOptions{}, scope, key, token)
	if ok {
		pgtx.Rollback(ctx, tx)
	}
	return ok, err
}
