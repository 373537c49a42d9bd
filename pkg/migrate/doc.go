// Package migrate creates and upgrades the PostgreSQL tables dtx needs: it
// applies the SQL migrations embedded in package
// github.com/vextrus/dtx/migrations to a schema, rolls them back, and reports
// which are applied. It runs them with github.com/jackc/tern/v2/migrate.
//
// A service calls Up (or UpPool) at start, before it uses the outbox, the
// inbox, the event store or the saga tables; tests migrate a schema of their
// own and drop it afterwards (see the example). The dtx binaries do the same
// when DTX_MIGRATE=true, and operators run `dtxctl migrate up|down|status`,
// which calls this package.
//
// Every function exists for a *pgx.Conn and, with the suffix Pool, for a
// *pgxpool.Pool: Up and UpPool, Down and DownPool, To and ToPool, Status and
// StatusPool. The connection must not be inside a transaction.
//
// # Schema
//
// Everything lives in one schema, Config.Schema (DefaultSchema, "dtx", when
// empty), created by Up if missing, so several dtx installations may share a
// database under different schemas. The applied version, the number of
// migrations applied, is the single row of <schema>.schema_version. The
// schema name must pass ValidateSchemaName: a plain lower-case identifier,
// which is always quoted before it reaches SQL. The other dtx packages that
// take a schema name (outbox, inbox, idempotency, event store, sagas) check
// it with ValidateSchemaName too.
//
// # Guarantees
//
//   - Up, Down and To hold two session advisory locks while they work: one
//     private to the schema, taken first, under which the schema is created
//     and the target version is chosen, and tern's own lock, which covers
//     every tern user of the database. Concurrent callers are serialised, so
//     replicas of a service may start together and all call Up: each
//     migration is applied once, and the others wait, then find nothing
//     left to do.
//   - Each migration runs in its own transaction together with the update of
//     schema_version: it is applied entirely or not at all, and the recorded
//     version always names the last migration that committed.
//   - Every migration has a down section. Down rolls back the newest ones, To
//     goes to any version between 0 and the latest; both keep the schema and
//     its version table, and Up applies the rolled back migrations again.
//   - Status reads only; it creates neither the schema nor the version table,
//     and reports a schema that does not exist as version 0 with every
//     migration pending.
//   - A database migrated by a newer build of dtx, whose recorded version is
//     higher than the last migration this build embeds, is never touched:
//     Up, Down and To return ErrUnknownVersion, so an older binary started
//     during a rolling upgrade does not guess at a schema it does not know.
//
// # Ordering
//
// Up applies pending migrations in number order; Down and To roll back in
// reverse order, each through the migration's down section.
//
// # How it fails
//
//   - A Config whose Schema fails ValidateSchemaName is refused before any
//     connection is used, with an error naming Schema.
//   - A migration that fails returns a *MigrationError naming the schema, the
//     migration file, the direction, the line within that section when
//     PostgreSQL reports a position, and the cause; errors.As reaches the
//     *pgconn.PgError beneath. Migrations before it stay applied; it and
//     those after it do not. Calling Up again, once the cause is fixed,
//     continues from there.
//   - A recorded version this build does not know returns an error wrapping
//     ErrUnknownVersion (errors.Is); Status returns it beside the report.
//   - Cancelling ctx interrupts the running statement; its transaction rolls
//     back, and the version stays at the last migration that committed. A
//     caller waiting for the lock stops waiting.
//   - The locks are session locks: they are released before return, and in
//     any case when the connection closes, so a process that dies while
//     migrating blocks no one. The Pool variants other than StatusPool close
//     the connection they used rather than return it to the pool: tern
//     resets session settings (RESET ALL) and a failed run may leave a lock
//     held, which the pool's next user must not inherit. The pool opens a new
//     connection when it needs one.
package migrate
