package txlog

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// TableError reports a table that is not shaped as a log, as CheckTable
// finds it.
type TableError struct {
	// Table is the table, schema-qualified and quoted.
	Table string
	// Problems lists what is wrong, one sentence each.
	Problems []string
}

// Error implements error.
func (e *TableError) Error() string {
	return fmt.Sprintf("txlog: table %s is not a log table: %s", e.Table, strings.Join(e.Problems, "; "))
}

// column is one column as table_columns.sql describes it.
type column struct {
	typ      string
	notNull  bool
	identity string // "a" always, "d" by default, "" none
	def      string
}

// CheckTable verifies that schema.table has what every log table needs (see
// the package documentation) and the payload columns listed: a column tx_id
// of type xid8, NOT NULL, DEFAULT pg_current_xact_id(); a column position of
// type bigint that is an identity column or defaults to a sequence; a valid,
// unique, non-partial index on exactly (tx_id, position), ascending (the
// primary key, usually); and each payload column. It returns a *TableError
// listing every problem, or a wrapped database error if it could not look.
func CheckTable(ctx context.Context, q Querier, schema, table string, columns ...string) error {
	if schema == "" {
		schema = DefaultSchema
	}
	if err := errors.Join(validateTable("txlog: check table: ", schema, table)...); err != nil {
		return err
	}
	qualified := pgx.Identifier{schema, table}.Sanitize()
	colQuery, err := loadQuery("table_columns.sql", schema, table, nil)
	if err != nil {
		return err
	}
	idxQuery, err := loadQuery("table_index.sql", schema, table, nil)
	if err != nil {
		return err
	}

	rows, err := q.Query(ctx, colQuery, qualified)
	if err != nil {
		return fmt.Errorf("txlog: check table %s: %w", qualified, err)
	}
	cols := map[string]column{}
	var name string
	var c column
	_, err = pgx.ForEachRow(rows, []any{&name, &c.typ, &c.notNull, &c.identity, &c.def}, func() error {
		cols[name] = c
		return nil
	})
	if err != nil {
		return fmt.Errorf("txlog: check table %s: %w", qualified, err)
	}
	if len(cols) == 0 {
		return &TableError{Table: qualified, Problems: []string{"it does not exist (or has no columns)"}}
	}

	var problems []string
	if c, ok := cols[ColumnTxID]; !ok {
		problems = append(problems, "no column tx_id (xid8 NOT NULL DEFAULT pg_current_xact_id())")
	} else {
		if c.typ != "xid8" {
			problems = append(problems, fmt.Sprintf("tx_id is %s, not xid8", c.typ))
		}
		if !c.notNull {
			problems = append(problems, "tx_id may be NULL")
		}
		if c.def != "pg_current_xact_id()" {
			problems = append(problems, fmt.Sprintf("tx_id defaults to %q, not pg_current_xact_id()", c.def))
		}
	}
	if c, ok := cols[ColumnPosition]; !ok {
		problems = append(problems, "no column position (bigint GENERATED ALWAYS AS IDENTITY)")
	} else {
		if c.typ != "bigint" {
			problems = append(problems, fmt.Sprintf("position is %s, not bigint", c.typ))
		}
		if c.identity == "" && !strings.HasPrefix(c.def, "nextval(") {
			problems = append(problems, "position is neither an identity column nor filled from a sequence")
		}
	}
	var indexed bool
	if err := q.QueryRow(ctx, idxQuery, qualified).Scan(&indexed); err != nil {
		return fmt.Errorf("txlog: check table %s: %w", qualified, err)
	}
	if !indexed {
		problems = append(problems, "no valid unique index on (tx_id, position), both ascending")
	}
	for _, col := range columns {
		if _, ok := cols[col]; !ok {
			problems = append(problems, fmt.Sprintf("no payload column %q", col))
		}
	}
	if len(problems) > 0 {
		return &TableError{Table: qualified, Problems: problems}
	}
	return nil
}
