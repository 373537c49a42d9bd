package txlog

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vextrus/dtx/pkg/migrate"
)

// DefaultSchema is the schema of a log table and of the checkpoints table
// when a Config leaves Schema empty.
const DefaultSchema = migrate.DefaultSchema

// MaxReaderLen is the longest reader name, in bytes; the checkpoints table
// enforces it too.
const MaxReaderLen = 255

// Names of the columns every log table has. Readers select them, checkpoint
// them and order by them.
const (
	// ColumnTxID is the xid8 column holding the writing transaction's id.
	ColumnTxID = "tx_id"
	// ColumnPosition is the bigint identity column numbering rows at insert.
	ColumnPosition = "position"
)

// Position is a place in a log: the (tx_id, position) of a row. Rows are
// read in Position order. The zero Position lies before every row, so
// reading after it reads the log from its beginning.
type Position struct {
	// TxID is the row's tx_id, the 64-bit id (xid8) of the transaction that
	// wrote it.
	TxID uint64
	// Pos is the row's position, assigned by the table's identity column when
	// the row was inserted.
	Pos int64
}

// IsZero reports whether p is the zero Position, the beginning of a log.
func (p Position) IsZero() bool { return p == Position{} }

// Compare returns -1, 0 or +1 as p is before, equal to or after q in read
// order: by TxID, then by Pos.
func (p Position) Compare(q Position) int {
	switch {
	case p.TxID < q.TxID:
		return -1
	case p.TxID > q.TxID:
		return 1
	case p.Pos < q.Pos:
		return -1
	case p.Pos > q.Pos:
		return 1
	}
	return 0
}

// String returns p as "tx_id/position", e.g. "5755/42".
func (p Position) String() string { return fmt.Sprintf("%d/%d", p.TxID, p.Pos) }

// Querier runs SQL: *pgxpool.Pool, *pgx.Conn and pgx.Tx are Queriers, so
// every function that takes one works inside the caller's transaction or
// outside of any.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ErrPositionAhead reports a read after a Position whose transaction id the
// database has not reached: the checkpoint comes from another cluster, or the
// database was restored from a logical dump, which restarts transaction ids
// lower. Reading on would skip every row written until the ids caught up, so
// the reader refuses; an operator must reset the checkpoint.
var ErrPositionAhead = errors.New("txlog: position is ahead of the database's transaction ids")

// identifierRE is the shape of a plain, unquoted, lower-case PostgreSQL
// identifier of at most 63 bytes.
var identifierRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// channelRE is what a notification channel may be: a plain identifier, or a
// schema-qualified one such as "dtx.outbox" (always quoted when used).
var channelRE = regexp.MustCompile(`^[a-z_][a-z0-9_.]{0,62}$`)

// validateChannel checks a notification channel name.
func validateChannel(name string) error {
	if !channelRE.MatchString(name) {
		return fmt.Errorf("%q is not a lower-case channel name (^[a-z_][a-z0-9_.]{0,62}$)", name)
	}
	return nil
}

// validateIdentifier accepts names that are plain lower-case identifiers.
// Only such names are placed into SQL, and always quoted.
func validateIdentifier(name string) error {
	if !identifierRE.MatchString(name) {
		return fmt.Errorf("%q is not a plain lower-case identifier (^[a-z_][a-z0-9_]{0,62}$)", name)
	}
	return nil
}

// ValidateName checks a name stored in a text column of dtx's log tables
// (a reader's checkpoint, a relay's lease name or holder): 1 to
// MaxReaderLen bytes of UTF-8 without NUL.
func ValidateName(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > MaxReaderLen:
		return fmt.Errorf("is %d bytes long, more than %d", len(s), MaxReaderLen)
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return errors.New("contains a NUL byte")
	}
	return nil
}

// validateTable checks the schema and table name of a log; prefix starts
// each error, e.g. "txlog: " or "txlog: Logs[1].".
func validateTable(prefix, schema, table string) []error {
	var errs []error
	if err := migrate.ValidateSchemaName(schema); err != nil {
		errs = append(errs, fmt.Errorf("%sSchema: %w", prefix, err))
	}
	if err := validateIdentifier(table); err != nil {
		errs = append(errs, fmt.Errorf("%sLog: %w", prefix, err))
	}
	return errs
}

//go:embed sql/*.sql
var sqlFiles embed.FS

// loadQuery reads an embedded query and fills in its placeholders: {{.schema}}
// becomes the quoted schema, {{.table}} the quoted, schema-qualified log
// table, {{.columns}} the quoted payload columns, each preceded by ", l.";
// extra holds further placeholder and replacement pairs. The names were
// validated before; they are never user data.
func loadQuery(name, schema, table string, columns []string, extra ...string) (string, error) {
	b, err := sqlFiles.ReadFile("sql/" + name)
	if err != nil {
		return "", fmt.Errorf("txlog: embedded query %s: %w", name, err)
	}
	var cols strings.Builder
	for _, c := range columns {
		cols.WriteString(", l.")
		cols.WriteString(pgx.Identifier{c}.Sanitize())
	}
	pairs := append([]string{
		"{{.schema}}", pgx.Identifier{schema}.Sanitize(),
		"{{.table}}", pgx.Identifier{schema, table}.Sanitize(),
		"{{.columns}}", cols.String(),
	}, extra...)
	return strings.NewReplacer(pairs...).Replace(string(b)), nil
}
