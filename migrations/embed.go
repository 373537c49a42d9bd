package migrations

import (
	"embed"
	"io/fs"
)

//go:embed *.sql
var files embed.FS

// FS returns the migration files, named NNN_description.sql, at the root of the
// returned file system. The files are text/templates in tern's format: see the
// package documentation for the data they expect.
func FS() fs.FS { return files }
