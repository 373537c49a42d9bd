// Package migrate applies dtx's embedded SQL migrations (package migrations)
// to a PostgreSQL schema, using github.com/jackc/tern/v2/migrate.
//
// Binaries call UpPool at start when DTX_MIGRATE=true; operators use
// `dtxctl migrate up|down|status`; tests get a migrated schema from
// internal/testkit/pgtest.
//
// # Schema
//
// Everything lives in one schema, Config.Schema ("dtx" by default), created by
// Up if missing. The applied version, the number of migrations applied, is the
// single row of <schema>.schema_version. The schema name is checked by
// ValidateSchemaName and always quoted before it reaches SQL; the migration
// templates receive it as {{.schema}}.
//
// # Guarantees
//
//   - Each migration runs in its own transaction together with the update of
//     schema_version: it is applied entirely or not at all, and the recorded
//     version always names the last migration that committed.
//   - Up, Down and To hold two session advisory locks while they work: one
//     private to the schema, taken first, under which the schema is created
//     and the target version is chosen, and tern's own lock, which covers
//     every tern user of the database. Concurrent callers are serialised:
//     replicas starting together apply each migration once, and the others
//     find nothing left to do.
//   - Status reads only; it creates neither the schema nor the version table.
//
// # Ordering
//
// Up applies pending migrations in number order; Down and To roll back in
// reverse order, each through the migration's down section.
//
// # Failure
//
// A migration that fails returns a *MigrationError naming the schema, the
// migration file, the direction, the line within that section when
// PostgreSQL reports a position, and the cause; errors.As reaches the
// *pgconn.PgError beneath. Migrations before it stay applied; it and those
// after it do not. A database whose recorded version is higher than the last
// migration this build embeds is refused with ErrUnknownVersion: it was
// migrated by a newer build, and an older one must not guess at its schema.
// Cancelling ctx interrupts the running statement; its transaction rolls back.
// The locks are session locks: they are released before return, and in any
// case when the connection closes. WithPoolConn (and so UpPool) closes the
// connection it used rather than return it to the pool, so no lock or reset
// setting reaches the pool's next user.
package migrate
