package txlog

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Defaults and limits of Config.
const (
	// DefaultBatchSize is the most rows ReadBatch returns when
	// Config.BatchSize is zero.
	DefaultBatchSize = 500
	// MaxBatchSize is the largest Config.BatchSize accepted.
	MaxBatchSize = 10_000
)

// Config describes a Reader: which log it reads, under which name it keeps
// its checkpoint, and which columns it wants.
type Config struct {
	// Schema is the PostgreSQL schema holding the log table and
	// txlog_checkpoints. Defaults to DefaultSchema ("dtx"); must pass
	// migrate.ValidateSchemaName.
	Schema string

	// Log is the log table's name, without schema; it also names the log in
	// txlog_checkpoints. Required; a plain lower-case identifier of at most
	// 63 bytes. The table must have the shape CheckTable verifies.
	Log string

	// Reader names this reader's checkpoint, e.g. "relay" or
	// "projector/orders". Replicas that take turns reading (under a lease)
	// share the name; readers that each need every row have their own.
	// Required; 1 to MaxReaderLen bytes of UTF-8 without NUL.
	Reader string

	// Columns are the log table's payload columns ReadBatch selects, in the
	// order of the DestFunc's destinations. tx_id and position are always
	// read, into Row.Position, and must not be listed. Defaults to none;
	// each a plain lower-case identifier, no duplicates.
	Columns []string

	// BatchSize is the most rows one ReadBatch returns.
	// Defaults to DefaultBatchSize (500); between 1 and MaxBatchSize (10000).
	BatchSize int
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
}

func (c *Config) validate() error {
	errs := validateTable("txlog: ", c.Schema, c.Log)
	if err := ValidateName(c.Reader); err != nil {
		errs = append(errs, fmt.Errorf("txlog: Reader: %w", err))
	}
	for i, col := range c.Columns {
		idErr := validateIdentifier(col)
		switch {
		case idErr != nil:
			errs = append(errs, fmt.Errorf("txlog: Columns[%d]: %w", i, idErr))
		case col == ColumnTxID || col == ColumnPosition:
			errs = append(errs, fmt.Errorf("txlog: Columns[%d]: %q is always read into Row.Position; do not list it", i, col))
		case slices.Index(c.Columns, col) < i:
			errs = append(errs, fmt.Errorf("txlog: Columns[%d]: %q is listed twice", i, col))
		}
	}
	if c.BatchSize < 1 || c.BatchSize > MaxBatchSize {
		errs = append(errs, fmt.Errorf("txlog: BatchSize: %d is outside 1..%d", c.BatchSize, MaxBatchSize))
	}
	return errors.Join(errs...)
}

// DestFunc returns the scan destinations of one row's payload columns:
// pointers into v, one per Config.Columns entry, in the same order, of types
// pgx can scan the columns into.
type DestFunc[T any] func(v *T) []any

// Row is one row of a log.
type Row[T any] struct {
	// Position is the row's place in the log; save it as the checkpoint once
	// the row is handled.
	Position Position
	// Value holds the payload columns, scanned by the Reader's DestFunc.
	Value T
}

// Batch is the result of one ReadBatch.
type Batch[T any] struct {
	// Rows are the rows read, in Position order, all after the position read
	// after.
	Rows []Row[T]

	// End is the Position of the last row of Rows, or the position read
	// after when Rows is empty: where the next read continues.
	End Position

	// Full reports that the batch holds Config.BatchSize rows: more rows may
	// be readable now, so read again without waiting.
	Full bool

	// HorizonBlocked reports that committed rows exist after End that the
	// read did not return: rows held behind the horizon by an older
	// transaction still running, or rows committed since the read. When the
	// older transaction ends, its successors' rows become readable, but no
	// notification says so unless it wrote to the log itself: wait for the
	// short BlockedPollInterval (Subscription.Wait with blocked true), not
	// for a notification. Only looked for when the batch is not Full.
	HorizonBlocked bool

	// Horizon is the xmin of the read's snapshot: the id of the oldest
	// transaction still running then (or the next id, if none ran). Every
	// row returned has a lower tx_id; no row with a lower tx_id can appear
	// later. When the batch is empty, it comes from the look past the end.
	// A HorizonWatch reports how long it has stayed at one transaction
	// while rows wait, and which session that transaction belongs to.
	Horizon uint64
}

// Reader reads one log table in Position order without skipping rows that
// commit late, and keeps its checkpoint in txlog_checkpoints. It holds no
// connection and no state besides its configuration: it is safe for
// concurrent use, and every method runs on the Querier it is given.
type Reader[T any] struct {
	cfg  Config
	dest DestFunc[T]
	q    readerQueries
}

type readerQueries struct {
	readBatch, readPastEnd, load, save, register, unregister string
}

// NewReader returns a Reader for cfg, scanning each row's payload columns
// with dest. dest may be nil only when cfg.Columns is empty. NewReader checks
// cfg and fails with an error naming every invalid field; it does not touch
// the database (see CheckTable for that).
func NewReader[T any](cfg Config, dest DestFunc[T]) (*Reader[T], error) {
	cfg.setDefaults()
	cfg.Columns = slices.Clone(cfg.Columns)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if dest == nil && len(cfg.Columns) > 0 {
		return nil, errors.New("txlog: DestFunc is nil, but Columns lists payload columns")
	}
	var q readerQueries
	var errs []error
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"read_batch.sql", &q.readBatch},
		{"read_past_end.sql", &q.readPastEnd},
		{"checkpoint_load.sql", &q.load},
		{"checkpoint_save.sql", &q.save},
		{"checkpoint_register.sql", &q.register},
		{"checkpoint_unregister.sql", &q.unregister},
	} {
		var err error
		*f.dst, err = loadQuery(f.name, cfg.Schema, cfg.Log, cfg.Columns)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Reader[T]{cfg: cfg, dest: dest, q: q}, nil
}

// Config returns the Reader's configuration, with defaults filled in.
func (r *Reader[T]) Config() Config {
	c := r.cfg
	c.Columns = slices.Clone(c.Columns)
	return c
}

// CheckTable verifies that the Reader's log table has the shape of a log and
// the configured payload columns; see the package function CheckTable.
// Readers call it once at start, to fail with a clear error instead of an
// SQL one on the first read.
func (r *Reader[T]) CheckTable(ctx context.Context, q Querier) error {
	return CheckTable(ctx, q, r.cfg.Schema, r.cfg.Log, r.cfg.Columns...)
}

// ReadBatch returns up to Config.BatchSize rows after the position after,
// in Position order, leaving out every row that a transaction still running
// could precede: only rows whose tx_id is below the horizon, the xmin of the
// statement's snapshot, are read. Rows of a transaction that commits late
// are therefore read later, never skipped. See Batch for how to continue.
//
// A full batch costs one statement, an index range scan; a batch that is
// not full costs a second one, an index probe past its end (for
// HorizonBlocked), in the same snapshot only when q is a REPEATABLE READ
// transaction. That is why HorizonBlocked may also report rows committed
// between the two.
//
// Reading after the zero Position starts at the beginning of the log. A
// position whose transaction id the database has not reached fails with
// ErrPositionAhead.
//
// q may be a pool, a connection or a transaction. In a transaction that has
// written anything (and so holds a transaction id), rows of transactions that
// began after it are held back until it ends: read before writing, or
// outside the transaction. Under REPEATABLE READ the horizon is the one of
// the transaction's snapshot and does not move until the next transaction.
func (r *Reader[T]) ReadBatch(ctx context.Context, q Querier, after Position) (Batch[T], error) {
	b := Batch[T]{End: after}
	rows, err := q.Query(ctx, r.q.readBatch, after.TxID, after.Pos, r.cfg.BatchSize)
	if err != nil {
		return b, r.errorf("read after %s: %w", after, err)
	}
	defer rows.Close()

	const fixed = 3 // horizon, tx_id, position
	dst := make([]any, 0, fixed+len(r.cfg.Columns))
	b.Rows = make([]Row[T], 0, min(r.cfg.BatchSize, 64))
	for rows.Next() {
		b.Rows = append(b.Rows, Row[T]{})
		row := &b.Rows[len(b.Rows)-1]
		dst = append(dst[:0], &b.Horizon, &row.Position.TxID, &row.Position.Pos)
		if r.dest != nil {
			payload := r.dest(&row.Value)
			if len(payload) != len(r.cfg.Columns) {
				return b, r.errorf("DestFunc returned %d destinations for %d columns", len(payload), len(r.cfg.Columns))
			}
			dst = append(dst, payload...)
		}
		if err := rows.Scan(dst...); err != nil {
			return b, r.errorf("read after %s: scan the row at position %d: %w", after, row.Position.Pos, err)
		}
	}
	if err := rows.Err(); err != nil {
		return b, r.errorf("read after %s: %w", after, err)
	}
	if n := len(b.Rows); n > 0 {
		b.End = b.Rows[n-1].Position
		if n == r.cfg.BatchSize {
			b.Full = true
			return b, nil
		}
	}

	// Not full: say whether rows wait past the end, and check the position.
	var horizon, xmax uint64
	if err := q.QueryRow(ctx, r.q.readPastEnd, b.End.TxID, b.End.Pos).Scan(&horizon, &xmax, &b.HorizonBlocked); err != nil {
		return b, r.errorf("read after %s: look past the end: %w", after, err)
	}
	if len(b.Rows) == 0 {
		b.Horizon = horizon
		// The snapshot's xmax is one past the newest completed transaction; a
		// checkpoint can only name a transaction before it.
		if after.TxID >= xmax {
			return b, fmt.Errorf("%w: reader %q of log %q read after %s, but the newest completed transaction is %d",
				ErrPositionAhead, r.cfg.Reader, r.cfg.Log, after, xmax-1)
		}
	}
	return b, nil
}

// LoadCheckpoint returns the Reader's checkpoint, or the zero Position (the
// beginning of the log) if it has none.
func (r *Reader[T]) LoadCheckpoint(ctx context.Context, q Querier) (Position, error) {
	var p Position
	err := q.QueryRow(ctx, r.q.load, r.cfg.Log, r.cfg.Reader).Scan(&p.TxID, &p.Pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return Position{}, nil
	}
	if err != nil {
		return Position{}, r.errorf("load the checkpoint: %w", err)
	}
	return p, nil
}

// SaveCheckpoint moves the Reader's checkpoint forward to pos, creating it if
// missing, and reports whether it moved. A checkpoint never moves back: if
// pos is at or before the stored one, nothing changes and moved is false, so
// a slow replica cannot undo a faster one's progress.
//
// With a transaction as q, the checkpoint commits or rolls back with it:
// save it in the transaction that records the rows' effects (a projector), or
// right after their effects are durable elsewhere (a relay, once the broker
// acknowledged). See SaveCheckpointFenced for readers that hold a lease.
func (r *Reader[T]) SaveCheckpoint(ctx context.Context, q Querier, pos Position) (moved bool, err error) {
	tag, err := q.Exec(ctx, r.q.save, r.cfg.Log, r.cfg.Reader, pos.TxID, pos.Pos)
	if err != nil {
		return false, r.errorf("save the checkpoint %s: %w", pos, err)
	}
	return tag.RowsAffected() == 1, nil
}

// FenceFunc checks, inside tx, that the caller may still act as the reader,
// for example that it still holds the reader's lease with the same fencing
// token. It returns an error if not. It should lock what it checks (SELECT
// ... FOR SHARE on the lease row), so that a takeover cannot commit between
// the check and the commit of tx.
type FenceFunc func(ctx context.Context, tx pgx.Tx) error

// SaveCheckpointFenced runs fence in tx and, if it passes, SaveCheckpoint in
// the same tx. A failed fence is returned wrapped and nothing is saved; the
// caller rolls tx back. The check and the save commit together, so a reader
// that lost its lease cannot move the checkpoint after its successor took
// over.
func (r *Reader[T]) SaveCheckpointFenced(ctx context.Context, tx pgx.Tx, pos Position, fence FenceFunc) (moved bool, err error) {
	if fence == nil {
		return false, r.errorf("save the checkpoint %s: FenceFunc is nil", pos)
	}
	if err := fence(ctx, tx); err != nil {
		return false, r.errorf("save the checkpoint %s: fence: %w", pos, err)
	}
	return r.SaveCheckpoint(ctx, tx, pos)
}

// Register records a checkpoint at the beginning of the log for the Reader
// if it has none, and reports whether it did. Retention keeps every row a
// registered reader has not passed: register a new reader before rows it
// must see can be pruned. A reader that is never registered is created by
// its first SaveCheckpoint.
func (r *Reader[T]) Register(ctx context.Context, q Querier) (created bool, err error) {
	tag, err := q.Exec(ctx, r.q.register, r.cfg.Log, r.cfg.Reader)
	if err != nil {
		return false, r.errorf("register: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// Unregister deletes the Reader's checkpoint, for a reader that is retired:
// until then, retention keeps every row it has not passed. A later read
// starts from the beginning of what remains. It reports whether a checkpoint
// existed.
func (r *Reader[T]) Unregister(ctx context.Context, q Querier) (existed bool, err error) {
	tag, err := q.Exec(ctx, r.q.unregister, r.cfg.Log, r.cfg.Reader)
	if err != nil {
		return false, r.errorf("unregister: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// errorf returns an error naming the reader and its log.
func (r *Reader[T]) errorf(format string, args ...any) error {
	return fmt.Errorf("txlog: reader %q of log %q: "+format, append([]any{r.cfg.Reader, r.cfg.Log}, args...)...)
}
