package migrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	tern "github.com/jackc/tern/v2/migrate"

	"github.com/vextrus/dtx/migrations"
)

// DefaultSchema is the schema dtx's tables live in when Config.Schema is empty.
const DefaultSchema = "dtx"

// versionTable is the table, inside the target schema, that records the
// applied version.
const versionTable = "schema_version"

// Config says where and how to migrate.
type Config struct {
	// Schema is the PostgreSQL schema that receives dtx's tables and the
	// version table <schema>.schema_version; it is created if missing.
	// Defaults to DefaultSchema ("dtx"); must pass ValidateSchemaName.
	Schema string

	// Logger receives one line per migration applied or rolled back, and one
	// line when there was nothing to do. Defaults to no logging.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	if err := ValidateSchemaName(c.Schema); err != nil {
		return fmt.Errorf("migrate: Schema: %w", err)
	}
	return nil
}

// Report is the migration state of one schema, as Status returns it.
type Report struct {
	// Schema is the schema the report is about.
	Schema string
	// Current is the version recorded in the database: the number of
	// migrations applied, 0 if none (or if the schema does not exist yet).
	Current int32
	// Latest is the version of the last migration this build embeds.
	Latest int32
	// Applied names the migrations applied, oldest first.
	Applied []string
	// Pending names the migrations not applied yet, in the order Up applies them.
	Pending []string
}

// ErrUnknownVersion reports a database whose recorded version is higher than
// the last migration this build embeds: a newer build migrated it. Up, Down
// and To refuse to touch such a schema.
var ErrUnknownVersion = errors.New("database schema is newer than this build")

// Direction is the way a migration runs.
type Direction string

const (
	// DirectionUp applies a migration: the SQL above its separator line.
	DirectionUp Direction = "up"
	// DirectionDown rolls a migration back: the SQL below its separator line.
	DirectionDown Direction = "down"
)

// MigrationError reports a migration that failed. Its transaction was rolled
// back, so the recorded version is the one of the last migration that
// succeeded. errors.As finds the *pgconn.PgError beneath it, if PostgreSQL
// refused a statement.
type MigrationError struct {
	// Schema is the schema being migrated.
	Schema string
	// Migration is the file name of the failed migration, e.g. "001_inbox.sql".
	Migration string
	// Direction says whether it was being applied or rolled back.
	Direction Direction
	// Line is the line, within the migration's up or down section, of the
	// failing SQL, or 0 when PostgreSQL did not say.
	Line int
	// Err is the cause.
	Err error
}

// Error implements error.
func (e *MigrationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "migrate: schema %q: %s (%s)", e.Schema, e.Migration, e.Direction)
	if e.Line > 0 {
		fmt.Fprintf(&b, ", line %d of the %s section", e.Line, e.Direction)
	}
	cause := e.Err
	// tern's MigrationPgError repeats the migration name; show only the
	// PostgreSQL error beneath it.
	var pgErr tern.MigrationPgError
	if errors.As(e.Err, &pgErr) && pgErr.PgError != nil {
		cause = pgErr.PgError
	}
	fmt.Fprintf(&b, ": %v", cause)
	return b.String()
}

// Unwrap returns the cause.
func (e *MigrationError) Unwrap() error { return e.Err }

// schemaNameRE is the shape of a plain, unquoted PostgreSQL identifier in
// lower case, at most 63 bytes (PostgreSQL's NAMEDATALEN - 1).
var schemaNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidateSchemaName returns an error unless name is usable as dtx's schema: a
// plain lower-case identifier of 1 to 63 characters (^[a-z_][a-z0-9_]{0,62}$)
// that PostgreSQL does not reserve (no "pg_" prefix, not information_schema).
// Only names that pass are ever placed into SQL, and then always quoted, so a
// keyword such as "order" works too.
func ValidateSchemaName(name string) error {
	switch {
	case !schemaNameRE.MatchString(name):
		return fmt.Errorf("schema name %q is not a plain lower-case identifier (^[a-z_][a-z0-9_]{0,62}$)", name)
	case strings.HasPrefix(name, "pg_"), name == "information_schema":
		return fmt.Errorf("schema name %q is reserved by PostgreSQL", name)
	}
	return nil
}

// Up applies every pending migration to cfg.Schema, creating the schema if it
// does not exist. It holds an advisory lock throughout, so concurrent callers
// (replicas starting at once) apply each migration once: the others wait and
// then find nothing to do. conn must not be inside a transaction.
func Up(ctx context.Context, conn *pgx.Conn, cfg Config) error {
	return run(ctx, conn, cfg, migrations.FS(), func(_, latest int32) (int32, error) {
		return latest, nil
	})
}

// Down rolls back the last steps migrations applied to cfg.Schema, or all of
// them if fewer are applied; steps must be at least 1 (To(ctx, conn, cfg, 0)
// rolls back everything). The schema itself and its version table stay. Like
// Up, it holds the advisory lock and runs each migration in a transaction.
func Down(ctx context.Context, conn *pgx.Conn, cfg Config, steps int) error {
	if steps < 1 {
		return fmt.Errorf("migrate: down: steps is %d, must be at least 1", steps)
	}
	return run(ctx, conn, cfg, migrations.FS(), func(current, _ int32) (int32, error) {
		return int32(max(0, int64(current)-int64(steps))), nil
	})
}

// To migrates cfg.Schema up or down to version, the number of migrations that
// must be applied afterwards: 0 rolls back everything, Report.Latest applies
// everything. Like Up, it holds the advisory lock.
func To(ctx context.Context, conn *pgx.Conn, cfg Config, version int32) error {
	return run(ctx, conn, cfg, migrations.FS(), func(_, latest int32) (int32, error) {
		if version < 0 || version > latest {
			return 0, fmt.Errorf("migrate: to: version %d is outside 0..%d", version, latest)
		}
		return version, nil
	})
}

// UpPool is Up on a connection taken from pool, for programs that hold a
// pool and migrate at start. The connection is closed afterwards rather
// than returned to the pool: see the package documentation.
func UpPool(ctx context.Context, pool *pgxpool.Pool, cfg Config) error {
	return withPoolConn(ctx, pool, cfg, func(conn *pgx.Conn) error {
		return Up(ctx, conn, cfg)
	})
}

// DownPool is Down on a connection taken from pool, closed afterwards like
// UpPool's.
func DownPool(ctx context.Context, pool *pgxpool.Pool, cfg Config, steps int) error {
	return withPoolConn(ctx, pool, cfg, func(conn *pgx.Conn) error {
		return Down(ctx, conn, cfg, steps)
	})
}

// ToPool is To on a connection taken from pool, closed afterwards like
// UpPool's.
func ToPool(ctx context.Context, pool *pgxpool.Pool, cfg Config, version int32) error {
	return withPoolConn(ctx, pool, cfg, func(conn *pgx.Conn) error {
		return To(ctx, conn, cfg, version)
	})
}

// StatusPool is Status on a connection borrowed from pool. Status only
// reads, so the connection goes back to the pool afterwards.
func StatusPool(ctx context.Context, pool *pgxpool.Pool, cfg Config) (Report, error) {
	// A bad Config fails before a connection is taken.
	checked := cfg
	checked.setDefaults()
	if err := checked.validate(); err != nil {
		return Report{}, err
	}
	if pool == nil {
		return Report{}, errors.New("migrate: status: pool is nil")
	}
	c, err := pool.Acquire(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("migrate: status: acquire a connection: %w", err)
	}
	defer c.Release()
	return Status(ctx, c.Conn(), cfg)
}

// withPoolConn checks cfg, then calls fn with a connection taken out of
// pool, then closes the connection instead of returning it: migrations change
// session state (tern runs RESET ALL, which undoes settings made with SET
// after connecting; a failed run may leave an advisory lock held) that the
// pool's next user must not inherit. The pool opens a new connection when it
// needs one.
func withPoolConn(ctx context.Context, pool *pgxpool.Pool, cfg Config, fn func(conn *pgx.Conn) error) error {
	// A bad Config fails before a connection is taken.
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	if pool == nil {
		return errors.New("migrate: pool is nil")
	}
	pc, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: acquire a connection: %w", err)
	}
	conn := pc.Hijack()
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx) // The work is done or failed; a close error changes neither.
	}()
	return fn(conn)
}

// Status reports which migrations are applied to cfg.Schema and which are
// pending. It changes nothing: a schema that does not exist yet reports
// version 0. If the database is newer than this build, the report is returned
// together with an error wrapping ErrUnknownVersion.
func Status(ctx context.Context, conn *pgx.Conn, cfg Config) (Report, error) {
	return status(ctx, conn, cfg, migrations.FS())
}

func status(ctx context.Context, conn *pgx.Conn, cfg Config, fsys fs.FS) (Report, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return Report{}, err
	}
	if conn == nil {
		return Report{}, errors.New("migrate: status: conn is nil")
	}
	names, err := migrationNames(fsys, cfg.Schema)
	if err != nil {
		return Report{}, err
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", qualifiedVersionTable(cfg.Schema)).Scan(&exists); err != nil {
		return Report{}, fmt.Errorf("migrate: schema %q: look for the version table: %w", cfg.Schema, err)
	}
	var current int32
	if exists {
		// The identifier is validated and quoted; it is not user data.
		if err := conn.QueryRow(ctx, "SELECT version FROM "+qualifiedVersionTable(cfg.Schema)).Scan(&current); err != nil {
			return Report{}, fmt.Errorf("migrate: schema %q: read the version: %w", cfg.Schema, err)
		}
	}
	latest := int32(len(names))
	applied := min(max(current, 0), latest)
	r := Report{
		Schema:  cfg.Schema,
		Current: current,
		Latest:  latest,
		Applied: names[:applied:applied], // Appending must not overwrite Pending.
		Pending: names[applied:],
	}
	if current > latest {
		return r, unknownVersionError(cfg.Schema, current, latest)
	}
	return r, nil
}

func unknownVersionError(schema string, current, latest int32) error {
	return fmt.Errorf("migrate: schema %q is at version %d but this build knows versions up to %d: %w",
		schema, current, latest, ErrUnknownVersion)
}

func quotedSchema(schema string) string { return pgx.Identifier{schema}.Sanitize() }

func qualifiedVersionTable(schema string) string {
	return pgx.Identifier{schema, versionTable}.Sanitize()
}

// loadMigrator returns a tern migrator with the migrations of fsys evaluated
// for schema. With a nil conn it only loads and evaluates the files.
func loadMigrator(ctx context.Context, conn *pgx.Conn, fsys fs.FS, schema string) (*tern.Migrator, error) {
	m, err := tern.NewMigratorEx(ctx, conn, qualifiedVersionTable(schema), &tern.MigratorOptions{})
	if err != nil {
		return nil, fmt.Errorf("migrate: schema %q: prepare the version table: %w", schema, err)
	}
	m.Data["schema"] = quotedSchema(schema)
	// schema_name is the bare name (validated: [a-z_][a-z0-9_]*), for use
	// inside string literals such as NOTIFY channel names.
	m.Data["schema_name"] = schema
	if err := m.LoadMigrations(fsys); err != nil {
		return nil, fmt.Errorf("migrate: load migrations: %w", err)
	}
	return m, nil
}

func migrationNames(fsys fs.FS, schema string) ([]string, error) {
	m, err := loadMigrator(context.Background(), nil, fsys, schema)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(m.Migrations))
	for i, mig := range m.Migrations {
		names[i] = mig.Name
	}
	return names, nil
}

// targetFunc chooses the version to migrate to, given the current version
// (read under the lock) and the latest one this build embeds.
type targetFunc func(current, latest int32) (int32, error)

// run migrates cfg.Schema to the version target chooses. It holds a
// per-schema advisory lock around everything, so that creating the schema and
// choosing the target from the current version are atomic with the
// migration; tern takes its own (database-wide) lock inside.
func run(ctx context.Context, conn *pgx.Conn, cfg Config, fsys fs.FS, target targetFunc) (err error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	if conn == nil {
		return errors.New("migrate: conn is nil")
	}
	schema := cfg.Schema

	// Load first: a broken migration file fails before anything is locked.
	if _, err := migrationNames(fsys, schema); err != nil {
		return err
	}

	unlock, err := lockSchema(ctx, conn, schema)
	if err != nil {
		return err
	}
	defer func() {
		if uerr := unlock(); uerr != nil && err == nil {
			err = uerr
		}
	}()

	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+quotedSchema(schema)); err != nil {
		return fmt.Errorf("migrate: create schema %q: %w", schema, err)
	}
	m, err := loadMigrator(ctx, conn, fsys, schema)
	if err != nil {
		return err
	}
	current, err := m.GetCurrentVersion(ctx)
	if err != nil {
		return fmt.Errorf("migrate: schema %q: read the version: %w", schema, err)
	}
	latest := int32(len(m.Migrations))
	if current < 0 || current > latest {
		return unknownVersionError(schema, current, latest)
	}
	to, err := target(current, latest)
	if err != nil {
		return err
	}
	if to == current {
		cfg.Logger.InfoContext(ctx, "database schema up to date", "schema", schema, "version", current)
		return nil
	}

	// tern announces each migration as it starts; the previous one has
	// committed by then, and the last one has when MigrateTo returns nil.
	type step struct {
		name      string
		direction Direction
		version   int32 // the version once the step is done
		start     time.Time
	}
	var last *step
	done := func(s *step) {
		msg := "migration applied"
		if s.direction == DirectionDown {
			msg = "migration rolled back"
		}
		cfg.Logger.InfoContext(ctx, msg, "schema", schema, "migration", s.name,
			"version", s.version, "duration", time.Since(s.start).Round(time.Millisecond))
	}
	m.OnStart = func(seq int32, name, direction, _ string) {
		if last != nil {
			done(last)
		}
		s := &step{name: name, direction: Direction(direction), version: seq, start: time.Now()}
		if s.direction == DirectionDown {
			s.version = seq - 1
		}
		last = s
	}
	if err := m.MigrateTo(ctx, to); err != nil {
		if last == nil {
			return fmt.Errorf("migrate: schema %q: %w", schema, err)
		}
		merr := &MigrationError{Schema: schema, Migration: last.name, Direction: last.direction, Err: err}
		var pgErr tern.MigrationPgError
		if errors.As(err, &pgErr) && pgErr.PgError != nil && pgErr.Position > 0 {
			if l, lerr := tern.ExtractErrorLine(pgErr.Sql, int(pgErr.Position)); lerr == nil {
				merr.Line = l.LineNum
			}
		}
		return merr
	}
	if last != nil {
		done(last)
	}
	return nil
}

// lockKey is the text whose hash keys the advisory lock private to schema.
func lockKey(schema string) string { return "dtx/migrate/" + schema }

// lockSchema takes a session advisory lock private to schema and returns the
// function that releases it.
func lockSchema(ctx context.Context, conn *pgx.Conn, schema string) (func() error, error) {
	key := lockKey(schema)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtextextended($1, 0))", key); err != nil {
		return nil, fmt.Errorf("migrate: schema %q: take the advisory lock: %w", schema, err)
	}
	return func() error {
		// Release even when ctx is done: the lock outlives the call otherwise,
		// until the session ends.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock(hashtextextended($1, 0))", key); err != nil {
			return fmt.Errorf("migrate: schema %q: release the advisory lock: %w", schema, err)
		}
		return nil
	}, nil
}
