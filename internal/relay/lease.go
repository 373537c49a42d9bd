package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/internal/wait"
)

// errLeaseLost is returned by the checkpoint's fence when the relay no
// longer holds the lease with the token it published under.
var errLeaseLost = errors.New("relay: lease lost")

// lease keeps one relay_leases row: acquires it when free or expired,
// renews it while held, and tells the publishing loop whether and with
// which token it may publish. Its deadline runs on the local monotonic
// clock from the moment each acquire or renew was sent, so it ends no later
// than the row's expires_at by the database clock, whatever the host clocks
// say; a process paused past it (SIGSTOP, a long GC) sees it expired when it
// resumes.
type lease struct {
	pool *pgxpool.Pool
	q    queries
	cfg  Config
	log  *slog.Logger
	m    *metrics

	mu         sync.Mutex
	token      int64     // 0 when not held
	validUntil time.Time // local, monotonic
	changed    chan struct{}
}

func newLease(pool *pgxpool.Pool, q queries, cfg Config, m *metrics) *lease {
	return &lease{pool: pool, q: q, cfg: cfg, log: cfg.Logger, m: m, changed: make(chan struct{}, 1)}
}

// current returns the token to publish under, and false when the lease is
// not held or has less than a renewal interval left (a batch started then
// may outlive it).
func (l *lease) current() (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.token == 0 || time.Until(l.validUntil) < l.cfg.LeaseRenewInterval {
		return 0, false
	}
	return l.token, true
}

// holding reports whether this replica holds the lease, however little of
// it is left.
func (l *lease) holding() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.token != 0
}

// wait returns when the lease may have changed hands, after d, or when ctx
// is done.
func (l *lease) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-l.changed:
	case <-t.C:
	}
}

func (l *lease) signal() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// run acquires and renews the lease until ctx is done. It does not release
// it: the relay does, once its last batch is saved.
func (l *lease) run(ctx context.Context) {
	backoff := wait.Doubling{Min: minBackoff, Max: l.cfg.MaxBackoff}
	for {
		var pause time.Duration
		l.mu.Lock()
		token, until := l.token, l.validUntil
		l.mu.Unlock()
		if token == 0 {
			pause = l.cfg.LeaseDuration / 2
			if err := l.acquire(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				l.m.errors.WithLabelValues(errKindLease).Inc()
				pause = min(backoff.Next(), pause)
				l.log.Warn("relay: acquiring the lease failed", "lease", l.cfg.Name, "retry_in", pause.String(), "err", err)
			} else {
				backoff.Reset()
			}
		} else {
			pause = l.cfg.LeaseRenewInterval
			if err := l.renew(ctx, token); err != nil {
				if ctx.Err() != nil {
					return
				}
				l.m.errors.WithLabelValues(errKindLease).Inc()
				pause = min(backoff.Next(), pause)
				l.log.Warn("relay: renewing the lease failed; retrying until it runs out",
					"lease", l.cfg.Name, "token", token, "valid_for", time.Until(until).Round(time.Millisecond).String(),
					"retry_in", pause.String(), "err", err)
				if time.Now().After(until) {
					l.lose(token, "it ran out while it could not be renewed")
				}
			} else {
				backoff.Reset()
			}
		}
		if !wait.Sleep(ctx, wait.Jitter(pause)) {
			return
		}
	}
}

func (l *lease) acquire(ctx context.Context) error {
	sent := time.Now()
	var token int64
	err := l.pool.QueryRow(ctx, l.q.acquire, l.cfg.Name, l.cfg.Holder, l.cfg.LeaseDuration).Scan(&token)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // Held by another replica: stay on standby.
	}
	if err != nil {
		return fmt.Errorf("relay: acquire lease %q: %w", l.cfg.Name, err)
	}
	l.mu.Lock()
	l.token, l.validUntil = token, sent.Add(l.cfg.LeaseDuration)
	l.mu.Unlock()
	l.m.isLeader.Set(1)
	l.log.Info("relay: acquired the lease; publishing", "lease", l.cfg.Name, "holder", l.cfg.Holder, "token", token)
	l.signal()
	return nil
}

func (l *lease) renew(ctx context.Context, token int64) error {
	sent := time.Now()
	tag, err := l.pool.Exec(ctx, l.q.renew, l.cfg.Name, l.cfg.Holder, token, l.cfg.LeaseDuration)
	if err != nil {
		return fmt.Errorf("relay: renew lease %q: %w", l.cfg.Name, err)
	}
	if tag.RowsAffected() == 0 {
		l.lose(token, "another replica took it over, or it ran out")
		return nil
	}
	l.mu.Lock()
	if l.token == token {
		l.validUntil = sent.Add(l.cfg.LeaseDuration)
	}
	l.mu.Unlock()
	return nil
}

// lose forgets the lease held with token, if it is still the current one.
func (l *lease) lose(token int64, why string) {
	l.mu.Lock()
	if l.token != token {
		l.mu.Unlock()
		return
	}
	l.token, l.validUntil = 0, time.Time{}
	l.mu.Unlock()
	l.m.isLeader.Set(0)
	l.log.Info("relay: lost the lease; standing by", "lease", l.cfg.Name, "holder", l.cfg.Holder, "token", token, "reason", why)
	l.signal()
}

// release ends the held lease now, so that a standby takes over at once.
func (l *lease) release(ctx context.Context) {
	l.mu.Lock()
	token := l.token
	l.token, l.validUntil = 0, time.Time{}
	l.mu.Unlock()
	l.m.isLeader.Set(0)
	if token == 0 {
		return
	}
	if _, err := l.pool.Exec(ctx, l.q.release, l.cfg.Name, l.cfg.Holder, token); err != nil {
		l.m.errors.WithLabelValues(errKindLease).Inc()
		l.log.Warn("relay: releasing the lease failed; a standby takes over when it runs out",
			"lease", l.cfg.Name, "token", token, "err", err)
		return
	}
	l.log.Info("relay: released the lease", "lease", l.cfg.Name, "holder", l.cfg.Holder, "token", token)
}

// fence is the checkpoint's txlog.FenceFunc for token: it locks the lease row
// and fails with errLeaseLost unless this replica still holds it with token.
func (l *lease) fence(token int64) func(ctx context.Context, tx pgx.Tx) error {
	return func(ctx context.Context, tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, l.q.fence, l.cfg.Name, l.cfg.Holder, token).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: lease %q, token %d", errLeaseLost, l.cfg.Name, token)
		}
		if err != nil {
			return fmt.Errorf("relay: check lease %q: %w", l.cfg.Name, err)
		}
		return nil
	}
}
