package projection

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vextrus/dtx/internal/txlog"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
)

// ErrRebuildRunning is wrapped by the error of a Rebuild of a projection
// that another Rebuild, in this process or another, is rebuilding.
var ErrRebuildRunning = errors.New("projection: a rebuild of this projection is running")

// rebuildInfix separates a projection's name from the generation in the
// name of its rebuild reader: "<name>.rebuild-<n>".
const rebuildInfix = ".rebuild-"

// Rebuild rebuilds p's read model from the first event while p's live
// projection (a Run, here or in other replicas) goes on, and returns when
// the rebuilt tables have replaced the live ones.
//
// It creates a shadow of each of p.Tables() (the table's name with
// ShadowSuffix appended, same columns, constraints and indexes, empty) and
// applies every event from the beginning of the log to them through
// p.Shadow(ShadowSuffix), in batches whose checkpoint, under the reader
// name "<name>.rebuild-<n>" (n: the Unix time the rebuild began), commits
// with them. When it has read every committed event the log lets it read
// (not those of transactions younger than one still open anywhere in the
// cluster: the live projection reads them after the swap, from the moved
// checkpoint) it swaps, in one transaction:
//
//  1. it locks the live checkpoint (a live batch in flight commits first;
//     later ones wait, as each locks the checkpoint before any effect) and
//     the live tables (ACCESS EXCLUSIVE);
//  2. it takes the projection's live lock, which the Kafka source's
//     transactions share, applies to the shadow tables every event
//     committed since the last rebuild batch (at least up to the live
//     checkpoint), then the events of each stream the live tables hold
//     further than the shadow ones (per-stream versions: Kafka may be
//     ahead of the log), and makes the live versions the greater of the
//     two;
//  3. it drops each live table and renames its shadow to its name;
//  4. it moves the live checkpoint to the last event the shadow tables
//     hold, and removes the rebuild reader's checkpoint.
//
// So the live projection goes on, on the new tables, after exactly the
// events they hold: no gap, nothing applied twice. A live batch read
// before the swap and waiting on the table lock ends at or before that
// event (it read committed events too), so the Runner's checkpoint guard
// rolls it back. Live batches wait for the swap transaction,
// which is short when the rebuild has caught up.
//
// The swap reads what it applies in its own transaction: a Rebuild uses at
// most two connections of the pool (its lock's session and the swap), and
// never waits for another one while it holds locks that live batches and
// Kafka handlers, on the pool's other connections, wait for. The swap is
// bounded by Config.SwapTimeout, on the client and on the server (its lock
// waits, statements and idle time): a swap that does not finish in time is
// rolled back, and Rebuild fails with ErrSwapTimeout, leaving the live
// tables as they were and the shadow tables and the rebuild's checkpoint
// for the next Rebuild, which resumes from the rebuild's checkpoint and
// swaps again.
//
// A Rebuild that fails or is cancelled leaves the shadow tables and its
// checkpoint; the next Rebuild of p resumes it. A shadow table that exists
// without a rebuild checkpoint is not taken for one: Rebuild fails rather
// than drop it. Only one Rebuild of a
// projection runs at a time (a session advisory lock): another fails with
// ErrRebuildRunning. Objects that depend on the live tables (views,
// foreign keys) make the swap fail; indexes and constraints of the new
// tables keep the names PostgreSQL chose for the shadow.
func (r *Runner) Rebuild(ctx context.Context, p RebuildableProjection) error {
	if p == nil {
		return errors.New("projection: Rebuild: projection is nil")
	}
	if err := validateProjection(p); err != nil {
		return fmt.Errorf("projection: Rebuild: %w", err)
	}
	tables, err := parseTables(p.Tables())
	if err != nil {
		return err
	}
	rb := rebuild{r: r, p: p, name: p.Name(), tables: tables}
	unlock, err := rb.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := rb.prepare(ctx); err != nil {
		return err
	}
	if err := rb.catchUp(ctx); err != nil {
		return err
	}
	return rb.swap(ctx)
}

// table is a live table and its shadow.
type table struct {
	live, shadow pgx.Identifier
	base         string // the live table's name without schema
}

func parseTables(names []string) ([]table, error) {
	if len(names) == 0 {
		return nil, errors.New("projection: Rebuild: Tables: none")
	}
	var errs []error
	tables := make([]table, 0, len(names))
	for i, n := range names {
		parts := strings.Split(n, ".")
		if len(parts) > 2 || slicesContainsEmpty(parts) {
			errs = append(errs, fmt.Errorf("projection: Rebuild: Tables[%d]: %q is neither a table nor schema.table", i, n))
			continue
		}
		shadow := append(pgx.Identifier(nil), parts...)
		shadow[len(shadow)-1] += ShadowSuffix
		tables = append(tables, table{live: pgx.Identifier(parts), shadow: shadow, base: parts[len(parts)-1]})
	}
	return tables, errors.Join(errs...)
}

func slicesContainsEmpty(parts []string) bool {
	for _, p := range parts {
		if p == "" {
			return true
		}
	}
	return false
}

// rebuild is the state of one Rebuild.
type rebuild struct {
	r      *Runner
	p      RebuildableProjection
	name   string
	tables []table

	reader   *txlog.Reader[struct{}] // the rebuild reader's checkpoint
	live     *txlog.Reader[struct{}] // the live projection's checkpoint
	shadow   Projection
	applier  applier             // applies to the shadow tables, uncounted
	position eventstore.Position // the shadow tables' checkpoint
}

func (rb *rebuild) errorf(format string, args ...any) error {
	return fmt.Errorf("projection: rebuild %q: "+format, append([]any{rb.name}, args...)...)
}

func (rb *rebuild) checkpoints() string {
	return pgx.Identifier{rb.r.store.Config().Schema, "txlog_checkpoints"}.Sanitize()
}

// lock takes the session advisory lock of the projection's rebuild and
// returns its release.
func (rb *rebuild) lock(ctx context.Context) (func(), error) {
	conn, err := rb.r.pool.Acquire(ctx)
	if err != nil {
		return nil, rb.errorf("acquire a connection: %w", err)
	}
	key := "dtx.projection.rebuild:" + rb.r.store.Config().Schema + ":" + rb.name
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key).Scan(&ok); err != nil {
		conn.Release()
		return nil, rb.errorf("lock: %w", err)
	}
	if !ok {
		conn.Release()
		return nil, rb.errorf("%w", ErrRebuildRunning)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock(hashtextextended($1, 0))", key); err != nil {
			// Closing the session is what releases the lock now.
			_ = conn.Conn().Close(ctx)
		}
		conn.Release()
	}, nil
}

// prepare finds the rebuild to resume, or creates the shadow tables and the
// rebuild reader's checkpoint in one transaction.
func (rb *rebuild) prepare(ctx context.Context) error {
	schema := rb.r.store.Config().Schema
	newReader := func(name string) (*txlog.Reader[struct{}], error) {
		return txlog.NewReader[struct{}](txlog.Config{Schema: schema, Log: postgres.LogName, Reader: name}, nil)
	}
	var err error
	if rb.live, err = newReader(rb.name); err != nil {
		return rb.errorf("%w", err)
	}
	var existing string
	err = rb.r.pool.QueryRow(ctx, `SELECT reader FROM `+rb.checkpoints()+`
		WHERE log_name = $1 AND starts_with(reader, $2) ORDER BY reader DESC LIMIT 1`,
		postgres.LogName, rb.name+rebuildInfix).Scan(&existing)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		existing = ""
	case err != nil:
		return rb.errorf("look for an interrupted rebuild: %w", err)
	}
	name := existing
	if name == "" {
		name = rb.name + rebuildInfix + strconv.FormatInt(time.Now().Unix(), 10)
	}
	if rb.reader, err = newReader(name); err != nil {
		return rb.errorf("%w", err)
	}
	rb.shadow = rb.p.Shadow(ShadowSuffix)
	rb.applier = newApplier(rb.shadow, nil)
	if existing == "" {
		err = pgx.BeginFunc(ctx, rb.r.pool, func(tx pgx.Tx) error {
			for _, t := range rb.tables {
				if _, err := tx.Exec(ctx, "CREATE TABLE "+t.shadow.Sanitize()+" (LIKE "+t.live.Sanitize()+" INCLUDING ALL)"); err != nil {
					return fmt.Errorf("create the shadow of %s: %w", t.live.Sanitize(), err)
				}
			}
			if _, err := tx.Exec(ctx, "DELETE FROM "+pgx.Identifier{schema, StreamsTable}.Sanitize()+" WHERE projection = $1", name); err != nil {
				return fmt.Errorf("clear the rebuild's stream versions: %w", err)
			}
			_, err := rb.reader.Register(ctx, tx)
			return err
		})
		if err != nil {
			return rb.errorf("%w", err)
		}
	}
	cp, err := rb.reader.LoadCheckpoint(ctx, rb.r.pool)
	if err != nil {
		return rb.errorf("%w", err)
	}
	rb.position = eventstore.Position{TxID: cp.TxID, Pos: cp.Pos}
	return nil
}

// catchUp applies every committed event to the shadow tables, a batch per
// transaction with the rebuild checkpoint, until a read is not full.
func (rb *rebuild) catchUp(ctx context.Context) error {
	for {
		b, err := rb.r.store.ReadAll(ctx, eventstore.ReadAllParams{After: rb.position, Limit: rb.r.cfg.BatchSize})
		if err != nil {
			return rb.errorf("%w", err)
		}
		if len(b.Events) > 0 {
			err := pgx.BeginFunc(ctx, rb.r.pool, func(tx pgx.Tx) error {
				if err := rb.apply(ctx, tx, b.Events); err != nil {
					return err
				}
				moved, err := rb.reader.SaveCheckpoint(ctx, tx, txlog.Position{TxID: b.End.TxID, Pos: b.End.Pos})
				if err != nil {
					return err
				}
				if !moved {
					return errors.New("the rebuild checkpoint moved meanwhile")
				}
				return nil
			})
			if err != nil {
				return rb.errorf("%w", err)
			}
		}
		rb.position = b.End
		if !b.Full {
			return nil
		}
	}
}

// apply applies to the shadow tables the events their streams' versions
// (kept under the rebuild reader's name) do not hold yet, and moves the
// versions.
func (rb *rebuild) apply(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) error {
	if len(events) == 0 {
		return nil
	}
	name := rb.reader.Config().Reader
	versions, err := rb.r.streams.lockVersions(ctx, tx, name, streamIDs(events))
	if err != nil {
		return err
	}
	kept, moved := fresh(events, versions)
	if err := rb.applier.apply(ctx, tx, kept); err != nil {
		return err
	}
	return rb.r.streams.saveVersions(ctx, tx, name, moved)
}

// bringUp applies to the shadow tables, in tx, the events of each stream
// that the live tables hold and the shadow tables do not (a live source
// that is ahead of the log the rebuild read: Kafka), so that no stream's
// read model goes back at the swap.
func (rb *rebuild) bringUp(ctx context.Context, tx pgx.Tx) error {
	t := pgx.Identifier{rb.r.store.Config().Schema, StreamsTable}.Sanitize()
	rows, err := tx.Query(ctx, `SELECT l.stream_id, coalesce(s.version, 0), l.version FROM `+t+` l
		LEFT JOIN `+t+` s ON s.projection = $2 AND s.stream_id = l.stream_id
		WHERE l.projection = $1 AND l.version > coalesce(s.version, 0)`, rb.name, rb.reader.Config().Reader)
	if err != nil {
		return fmt.Errorf("compare the stream versions: %w", err)
	}
	type behind struct {
		StreamID     string
		Shadow, Live int64
	}
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[behind])
	if err != nil {
		return fmt.Errorf("compare the stream versions: %w", err)
	}
	store := rb.r.store.WithTx(tx)
	for _, b := range all {
		events, err := store.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: b.StreamID, From: b.Shadow + 1, Limit: int(b.Live - b.Shadow)})
		if err != nil {
			return err
		}
		if int64(len(events)) != b.Live-b.Shadow {
			return fmt.Errorf("stream %q: read %d events after version %d, want %d", b.StreamID, len(events), b.Shadow, b.Live-b.Shadow)
		}
		if err := rb.apply(ctx, tx, events); err != nil {
			return err
		}
	}
	return nil
}

// mergeVersions makes the live stream versions those of the shadow tables
// (the greater of the two, after bringUp) and removes the rebuild's.
func (rb *rebuild) mergeVersions(ctx context.Context, tx pgx.Tx) error {
	t := pgx.Identifier{rb.r.store.Config().Schema, StreamsTable}.Sanitize()
	if _, err := tx.Exec(ctx, `INSERT INTO `+t+` AS ps (projection, stream_id, version)
		SELECT $1, stream_id, version FROM `+t+` WHERE projection = $2
		ON CONFLICT (projection, stream_id) DO UPDATE SET version = GREATEST(ps.version, EXCLUDED.version)`,
		rb.name, rb.reader.Config().Reader); err != nil {
		return fmt.Errorf("merge the stream versions: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM `+t+` WHERE projection = $1`, rb.reader.Config().Reader); err != nil {
		return fmt.Errorf("remove the rebuild's stream versions: %w", err)
	}
	return nil
}

// liveLockKey names the transaction-scoped advisory lock of a projection's
// live read model: the Kafka source shares it in each transaction, the
// swap of a rebuild takes it exclusively.
func liveLockKey(schema, name string) string {
	return "dtx.projection.live:" + schema + ":" + name
}

// swap brings the shadow tables to the live checkpoint and puts them in
// place of the live tables, in one transaction bounded by
// Config.SwapTimeout: on the client (a context deadline) and on the server
// (lock_timeout, statement_timeout and idle_in_transaction_session_timeout
// of the transaction), since a cancelled statement only closes the
// connection, and a server process waiting for a lock would go on waiting,
// with the transaction's locks and its id, until it got it.
func (rb *rebuild) swap(ctx context.Context) error {
	// The live checkpoint must exist to be locked.
	if _, err := rb.live.Register(ctx, rb.r.pool); err != nil {
		return rb.errorf("%w", err)
	}
	timeout := rb.r.cfg.SwapTimeout
	swapCtx, cancel := context.WithTimeoutCause(ctx, timeout, errSwapDeadline)
	defer cancel()
	err := rb.swapTx(swapCtx)
	if err != nil && ctx.Err() == nil && (errors.Is(context.Cause(swapCtx), errSwapDeadline) || isTimeout(err)) {
		return rb.errorf("%w (%s); it was rolled back, the live tables are unchanged, and the next Rebuild resumes from the shadow tables: %w",
			ErrSwapTimeout, timeout, err)
	}
	if err != nil {
		return rb.errorf("swap: %w", err)
	}
	return nil
}

// ErrSwapTimeout is wrapped by the error of a Rebuild whose swap did not
// finish within Config.SwapTimeout. The swap was rolled back; the shadow
// tables and the rebuild's checkpoint remain, so Rebuild can be retried and
// resumes.
var ErrSwapTimeout = errors.New("projection: the rebuild's swap did not finish within Config.SwapTimeout")

// errSwapDeadline is the cause of the swap's context deadline.
var errSwapDeadline = errors.New("projection: Config.SwapTimeout elapsed")

// isTimeout reports whether err is PostgreSQL's end of a statement or
// transaction for lock_timeout, statement_timeout or
// idle_in_transaction_session_timeout.
func isTimeout(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "55P03", // lock_not_available: lock_timeout
		"25P03": // idle_in_transaction_session_timeout
		return true
	case "57014": // query_canceled: statement_timeout, or a cancel request
		return strings.Contains(pgErr.Message, "statement timeout")
	}
	return false
}

// swapTx runs the swap's transaction. It rolls back on any failure with a
// context of its own, so that a transaction whose ctx ended does not stay
// open (pgx closes the connection when the rollback cannot be sent).
func (rb *rebuild) swapTx(ctx context.Context) error {
	tx, err := rb.r.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx) // after Commit, ErrTxClosed
	}()
	if err := rb.swapIn(ctx, tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// swapIn is the work of the swap's transaction.
func (rb *rebuild) swapIn(ctx context.Context, tx pgx.Tx) error {
	ms := strconv.FormatInt(rb.r.cfg.SwapTimeout.Milliseconds(), 10)
	if _, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $1, true),
		set_config('idle_in_transaction_session_timeout', $1, true)`, ms); err != nil {
		return fmt.Errorf("set the swap's timeouts: %w", err)
	}
	// The checkpoint first, then the tables: the order live batches
	// take them in.
	var live eventstore.Position
	if err := tx.QueryRow(ctx, lockCheckpointQuery(rb.r.store.Config().Schema), postgres.LogName, rb.name).Scan(&live.TxID, &live.Pos); err != nil {
		return fmt.Errorf("lock the live checkpoint: %w", err)
	}
	lives := make([]string, len(rb.tables))
	for i, t := range rb.tables {
		lives[i] = t.live.Sanitize()
	}
	// Kafka handlers of the projection hold this lock shared while
	// they write: the swap waits for those in flight and holds the
	// others back until it commits.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
		liveLockKey(rb.r.store.Config().Schema, rb.name)); err != nil {
		return fmt.Errorf("lock the live projection: %w", err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(lives, ", ")+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		return fmt.Errorf("lock the live tables: %w", err)
	}
	if err := rb.catchUpAll(ctx, tx, live); err != nil {
		return err
	}
	if err := rb.bringUp(ctx, tx); err != nil {
		return err
	}
	if err := rb.mergeVersions(ctx, tx); err != nil {
		return err
	}
	for _, t := range rb.tables {
		if _, err := tx.Exec(ctx, "DROP TABLE "+t.live.Sanitize()); err != nil {
			return fmt.Errorf("drop %s: %w", t.live.Sanitize(), err)
		}
		if _, err := tx.Exec(ctx, "ALTER TABLE "+t.shadow.Sanitize()+" RENAME TO "+pgx.Identifier{t.base}.Sanitize()); err != nil {
			return fmt.Errorf("rename %s: %w", t.shadow.Sanitize(), err)
		}
	}
	if rb.position.Compare(live) > 0 {
		if _, err := rb.live.SaveCheckpoint(ctx, tx, txlog.Position{TxID: rb.position.TxID, Pos: rb.position.Pos}); err != nil {
			return err
		}
	}
	_, err := rb.reader.Unregister(ctx, tx)
	return err
}

// catchUpAll applies to the shadow tables, in tx, every event committed
// after the rebuild's position, and fails if that does not reach the live
// checkpoint. It reads in tx too: tx holds the locks the live batches and
// Kafka handlers wait for, each on a connection of the pool, so waiting for
// another connection could wait for ever. (tx took its id when it locked
// the checkpoint, after every event up to that checkpoint had committed, so
// its own id holds none of them back.)
func (rb *rebuild) catchUpAll(ctx context.Context, tx pgx.Tx, live eventstore.Position) error {
	store := rb.r.store.WithTx(tx)
	for {
		b, err := store.ReadAll(ctx, eventstore.ReadAllParams{After: rb.position, Limit: rb.r.cfg.BatchSize})
		if err != nil {
			return err
		}
		if err := rb.apply(ctx, tx, b.Events); err != nil {
			return err
		}
		rb.position = b.End
		if !b.Full {
			break
		}
	}
	if rb.position.Compare(live) < 0 {
		return fmt.Errorf("the events up to the live checkpoint %s are not readable after %s", live, rb.position)
	}
	return nil
}
