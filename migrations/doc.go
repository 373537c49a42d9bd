// Package migrations holds dtx's PostgreSQL schema as numbered SQL migrations,
// embedded in every binary that applies them. Package
// github.com/vextrus/dtx/pkg/migrate runs them, for services and their tests
// as for the dtx binaries; operators run them with `dtxctl migrate`.
//
// # Format
//
// Each file is named NNN_description.sql, numbered from 001 without gaps. It is
// a Go text/template evaluated by github.com/jackc/tern/v2/migrate with two
// data: {{.schema}}, the target schema as a quoted SQL identifier (for
// example "dtx"), and {{.schema_name}}, the same name unquoted, for use inside
// string literals such as NOTIFY channel names. The runner validates the schema name as a plain lower-case
// identifier before it reaches a template, so no unchecked text is ever spliced
// into SQL. Every object a migration creates is qualified with {{.schema}};
// nothing depends on search_path.
//
// The SQL above the line
//
//	---- create above / drop below ----
//
// applies the migration; the SQL below it undoes it. Every migration has a
// working down section, and the test suite runs up, down and up again.
//
// # Guarantees
//
// The applied version is recorded in the table <schema>.schema_version, so
// several dtx installations may share one database under different schemas.
// The runner holds a PostgreSQL advisory lock while it migrates, so replicas
// that start at once apply each migration exactly once; the others wait, then
// find nothing left to do. Each migration runs in its own transaction together
// with the update of schema_version: a migration that fails leaves no trace and
// the recorded version stays at the last one that succeeded.
//
// # Compatibility
//
// A released migration is never edited: a change to the schema is a new file.
// A binary refuses a database whose recorded version is higher than the last
// migration it embeds.
package migrations
