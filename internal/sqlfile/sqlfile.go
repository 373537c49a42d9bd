// Package sqlfile loads a package's embedded SQL statements for one schema.
//
// Statements name dtx's tables as {{.schema}}.table; Loader puts the quoted
// schema name (pgx.Identifier quoting) in its place, so a schema name never
// reaches SQL unquoted. Callers validate the name first
// (migrate.ValidateSchemaName). A missing file is reported by Err, naming the
// file, rather than at the first Load, so a package loads all its statements
// and checks once.
package sqlfile

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Loader reads statements from one directory of an fs.FS for one schema.
type Loader struct {
	fsys fs.FS
	dir  string
	r    *strings.Replacer
	errs []error
}

// NewLoader returns a Loader reading dir of fsys with {{.schema}} replaced
// by the quoted schema.
func NewLoader(fsys fs.FS, dir, schema string) *Loader {
	return &Loader{fsys: fsys, dir: dir, r: strings.NewReplacer("{{.schema}}", pgx.Identifier{schema}.Sanitize())}
}

// Load returns the statement in file name, or "" and a recorded error.
func (l *Loader) Load(name string) string {
	b, err := fs.ReadFile(l.fsys, path.Join(l.dir, name))
	if err != nil {
		l.errs = append(l.errs, fmt.Errorf("embedded query %s: %w", name, err))
		return ""
	}
	return l.r.Replace(string(b))
}

// Err returns the errors of every failed Load, or nil.
func (l *Loader) Err() error { return errors.Join(l.errs...) }
