package idempotency

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/internal/pgtx"
	"github.com/vextrus/dtx/internal/sqlfile"
	"github.com/vextrus/dtx/internal/sweep"
	"github.com/vextrus/dtx/pkg/migrate"
)

// Defaults and limits of Config.
const (
	// DefaultSchema is the schema of the idempotency_keys table when
	// Config.Schema is empty.
	DefaultSchema = migrate.DefaultSchema
	// DefaultTTL is how long a key is kept when Config.TTL is zero.
	DefaultTTL = 24 * time.Hour
	// MinTTL is the shortest Config.TTL accepted.
	MinTTL = time.Minute
	// DefaultRunningTimeout is the lease of a running request when
	// Config.RunningTimeout is zero.
	DefaultRunningTimeout = time.Minute
	// MinRunningTimeout is the shortest Config.RunningTimeout accepted.
	MinRunningTimeout = time.Second
	// DefaultSweepInterval is the pause between sweeps when
	// Config.SweepInterval is zero.
	DefaultSweepInterval = time.Minute
	// DefaultSweepBatchSize is the most rows one sweep statement deletes when
	// Config.SweepBatchSize is zero.
	DefaultSweepBatchSize = 1000
	// MaxSweepBatchSize is the largest Config.SweepBatchSize accepted.
	MaxSweepBatchSize = 100_000
)

// endTimeout bounds the statements that clean up after a request, which run
// even when the request's context is cancelled.
const endTimeout = 5 * time.Second

// ErrAlreadyStarted is returned by Start while the sweeper of the same Store
// is running.
var ErrAlreadyStarted = errors.New("idempotency: sweeper already started")

// Config configures a Store.
type Config struct {
	// Schema is the PostgreSQL schema holding the idempotency_keys table.
	// Defaults to DefaultSchema ("dtx"); must pass [migrate.ValidateSchemaName].
	Schema string

	// TTL is how long a key and its stored response are kept after the
	// request that claimed it: a retry within TTL gets the stored response, a
	// request after it runs again. Defaults to DefaultTTL (24 hours); at least
	// MinTTL (1 minute).
	TTL time.Duration

	// RunningTimeout is the lease of a running request. A request that
	// claimed a key and neither committed nor released it within
	// RunningTimeout, and whose transaction is gone (its process died), may
	// be taken over by a retry, which runs the handler again; nothing of the
	// first run was committed. A request still running past it keeps its key:
	// its transaction holds the row locked. Defaults to DefaultRunningTimeout
	// (1 minute); at least MinRunningTimeout (1 second) and shorter than TTL.
	RunningTimeout time.Duration

	// SweepInterval is the pause between two sweeps of Run and Start.
	// Defaults to DefaultSweepInterval (1 minute); between 1 second and 24 hours.
	SweepInterval time.Duration

	// SweepBatchSize is the most rows one DELETE statement of Sweep removes.
	// Defaults to DefaultSweepBatchSize (1000); between 1 and MaxSweepBatchSize.
	SweepBatchSize int

	// Logger receives store failures met while serving requests and sweep
	// failures (error, warn) and sweep results (debug). Defaults to no logging.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.RunningTimeout == 0 {
		c.RunningTimeout = DefaultRunningTimeout
	}
	sweep.SetDefaults(&c.SweepInterval, &c.SweepBatchSize)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	var errs []error
	if err := migrate.ValidateSchemaName(c.Schema); err != nil {
		errs = append(errs, fmt.Errorf("idempotency: Schema: %w", err))
	}
	if c.TTL < MinTTL {
		errs = append(errs, fmt.Errorf("idempotency: TTL: %s is shorter than %s", c.TTL, MinTTL))
	}
	switch {
	case c.RunningTimeout < MinRunningTimeout:
		errs = append(errs, fmt.Errorf("idempotency: RunningTimeout: %s is shorter than %s", c.RunningTimeout, MinRunningTimeout))
	case c.RunningTimeout >= c.TTL:
		errs = append(errs, fmt.Errorf("idempotency: RunningTimeout: %s is not shorter than TTL (%s)", c.RunningTimeout, c.TTL))
	}
	errs = append(errs, sweep.Validate("idempotency: ", "SweepInterval", "SweepBatchSize", c.SweepInterval, c.SweepBatchSize)...)
	return errors.Join(errs...)
}

//go:embed sql/*.sql
var sqlFiles embed.FS

// queries holds the package's SQL with the schema filled in.
type queries struct {
	claim, lookup, takeover, lock, check, complete, release, sweep string
}

// loadQueries reads the embedded queries for schema, already checked by
// migrate.ValidateSchemaName.
func loadQueries(schema string) (queries, error) {
	l := sqlfile.NewLoader(sqlFiles, "sql", schema)
	q := queries{
		claim:    l.Load("claim.sql"),
		lookup:   l.Load("lookup.sql"),
		takeover: l.Load("takeover.sql"),
		lock:     l.Load("lock.sql"),
		check:    l.Load("check.sql"),
		complete: l.Load("complete.sql"),
		release:  l.Load("release.sql"),
		sweep:    l.Load("sweep.sql"),
	}
	if err := l.Err(); err != nil {
		return queries{}, fmt.Errorf("idempotency: %w", err)
	}
	return q, nil
}

// Store keeps idempotency keys and their responses in PostgreSQL. One Store
// may serve several Middlewares (mounts with different scopes); it is safe
// for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	cfg  Config
	q    queries

	// hookAfterClaim, set by tests only, runs between the claim of a key and
	// the lock of its row.
	hookAfterClaim func()

	sweeper *sweep.Sweeper
}

// NewStore returns a Store on pool. It checks cfg and fails with an error
// naming every invalid field; it does not touch the database.
func NewStore(pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, errors.New("idempotency: pool is nil")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q, err := loadQueries(cfg.Schema)
	if err != nil {
		return nil, err
	}
	st := &Store{pool: pool, cfg: cfg, q: q}
	st.sweeper = sweep.New(sweep.Config{
		Name: "idempotency", Interval: cfg.SweepInterval, BatchSize: cfg.SweepBatchSize, Logger: cfg.Logger,
		BatchFunc: func(ctx context.Context, limit int) (int64, error) {
			tag, err := pool.Exec(ctx, q.sweep, limit)
			return tag.RowsAffected(), err
		},
	})
	return st, nil
}

// claimOutcome is what claiming a key found.
type claimOutcome int

const (
	// claimed: the caller holds the key and runs the request.
	claimed claimOutcome = iota
	// completed: a request with the same fingerprint completed; replay it.
	completed
	// mismatch: the key belongs to a request with another fingerprint.
	mismatch
	// busy: a request with the key is running.
	busy
)

// storedResponse is a completed request's response.
type storedResponse struct {
	status  int
	headers map[string][]string
	body    []byte
}

// claimResult is the result of claim.
type claimResult struct {
	outcome claimOutcome
	token   uint32          // when claimed
	stored  *storedResponse // when completed
}

// claimAttempts bounds claim's loop. Each round follows a change another
// request made between two statements; a key that keeps changing that fast
// is busy.
const claimAttempts = 4

// claim takes (scope, key) for a request with fingerprint fp, or says why it
// cannot: the key's request completed (replay), has another fingerprint, or
// is running.
func (s *Store) claim(ctx context.Context, scope, key string, fp []byte) (claimResult, error) {
	ttl, timeout := s.cfg.TTL.Microseconds(), s.cfg.RunningTimeout.Microseconds()
	for range claimAttempts {
		var token uint32
		err := s.pool.QueryRow(ctx, s.q.claim, scope, key, fp, ttl).Scan(&token)
		if err == nil {
			return claimResult{outcome: claimed, token: token}, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return claimResult{}, fmt.Errorf("idempotency: claim key: %w", err)
		}

		var (
			storedFP       []byte
			state          string
			status         *int32
			headers        map[string][]string
			body           []byte
			expired, stale bool
		)
		err = s.pool.QueryRow(ctx, s.q.lookup, scope, key, timeout).
			Scan(&storedFP, &state, &status, &headers, &body, &expired, &stale)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // Released or swept since the claim: claim again.
		}
		if err != nil {
			return claimResult{}, fmt.Errorf("idempotency: look up key: %w", err)
		}

		switch {
		case expired:
		case string(storedFP) != string(fp):
			return claimResult{outcome: mismatch}, nil
		case state == stateCompleted && status != nil:
			return claimResult{outcome: completed, stored: &storedResponse{
				status: int(*status), headers: headers, body: body,
			}}, nil
		case !stale:
			return claimResult{outcome: busy}, nil
		}

		err = s.pool.QueryRow(ctx, s.q.takeover, scope, key, fp, ttl, timeout, lockSeed, s.cfg.Schema).Scan(&token)
		if err == nil {
			return claimResult{outcome: claimed, token: token}, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return claimResult{}, fmt.Errorf("idempotency: take over key: %w", err)
		}
		// Held by a live request, or changed since the lookup: look again.
	}
	return claimResult{outcome: busy}, nil
}

// lockSeed is the seed of hashtextextended for the keys' advisory lock
// ids, so that they rarely collide with other advisory locks (the outbox's,
// the saga participants'). A collision costs waiting, never correctness.
const lockSeed int64 = 0x6474786964656d70 // "dtxidemp"

// errSuperseded: the claim of a running request was taken over before its
// response could be stored.
var errSuperseded = errors.New("idempotency: store response: the claim was taken over")

// stateCompleted is the state of a key whose response is stored.
const stateCompleted = "completed"

// begin starts the request's transaction, takes the key's advisory lock in
// it and checks the claim. ok is false, and the transaction rolled back,
// when the claim was taken over in the meantime. The transaction has no id
// yet when begin returns: it has only read.
func (s *Store) begin(ctx context.Context, opts pgx.TxOptions, scope, key string, token uint32) (tx pgx.Tx, ok bool, err error) {
	tx, err = s.pool.BeginTx(ctx, opts)
	if err != nil {
		return nil, false, fmt.Errorf("idempotency: begin transaction: %w", err)
	}
	if _, err = tx.Exec(ctx, s.q.lock, scope, key, lockSeed, s.cfg.Schema); err != nil {
		pgtx.Rollback(ctx, tx)
		return nil, false, fmt.Errorf("idempotency: lock key: %w", err)
	}
	var mine bool
	err = tx.QueryRow(ctx, s.q.check, scope, key, token).Scan(&mine)
	if err == nil {
		return tx, true, nil
	}
	pgtx.Rollback(ctx, tx)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("idempotency: check claim: %w", err)
}

// complete stores resp in tx, the request's transaction.
func (s *Store) complete(ctx context.Context, tx pgx.Tx, scope, key string, token uint32, resp *storedResponse) error {
	tag, err := tx.Exec(ctx, s.q.complete, scope, key, token, resp.status, resp.headers, resp.body)
	if err != nil {
		return fmt.Errorf("idempotency: store response: %w", err)
	}
	if tag.RowsAffected() != 1 {
		// Taken over, or swept, though the key's lock is held since begin:
		// only by a request that outlived the key's TTL.
		return errSuperseded
	}
	return nil
}

// release deletes the caller's claim after its request committed nothing.
// It runs even when ctx is cancelled; a failure is logged, and the key is
// then free again once RunningTimeout has passed.
func (s *Store) release(ctx context.Context, scope, key string, token uint32) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, s.q.release, scope, key, token); err != nil {
		s.cfg.Logger.Warn("idempotency: release key", "scope", scope, "key", key, "err", err)
	}
}

// Sweep deletes the expired keys of every scope. Each statement deletes at most
// Config.SweepBatchSize rows and commits on its own, skipping rows that a
// concurrent transaction holds locked, so Sweep never waits on other work and
// several replicas may sweep at once. It returns the number of rows deleted,
// also when it fails part way.
func (s *Store) Sweep(ctx context.Context) (int64, error) { return s.sweeper.Sweep(ctx) }

// Run sweeps at once and then every Config.SweepInterval until ctx is done,
// and returns nil then. A failed sweep is logged and retried at the next
// interval: a database outage does not end Run.
func (s *Store) Run(ctx context.Context) error { return s.sweeper.Run(ctx) }

// Start runs Run in a goroutine the Store owns, until ctx is done or Stop is
// called. It fails with ErrAlreadyStarted if that goroutine is still running.
func (s *Store) Start(ctx context.Context) error {
	err := s.sweeper.Start(ctx)
	if errors.Is(err, sweep.ErrAlreadyStarted) {
		return ErrAlreadyStarted
	}
	return err
}

// Stop ends the goroutine Start began and waits for it; a sweep in progress
// is interrupted. It is safe to call more than once, and without Start.
func (s *Store) Stop() { s.sweeper.Stop() }
