package migrate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/migrations"
	"github.com/vextrus/dtx/pkg/migrate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn := pgtest.Connect(t)
	cfg := migrate.Config{Schema: pgtest.NewSchemaName(t)}
	e := embedded(t)
	latest := e.latest()

	requireVersion(t, conn, cfg, e, 0)
	require.False(t, schemaExists(t, conn, cfg.Schema), "Status must not create the schema")

	require.NoError(t, migrate.Up(ctx, conn, cfg))
	requireVersion(t, conn, cfg, e, latest)

	// Up again changes nothing.
	require.NoError(t, migrate.Up(ctx, conn, cfg))
	requireVersion(t, conn, cfg, e, latest)

	require.NoError(t, migrate.Down(ctx, conn, cfg, 1))
	requireVersion(t, conn, cfg, e, latest-1)

	require.NoError(t, migrate.To(ctx, conn, cfg, 0))
	requireVersion(t, conn, cfg, e, 0)
	require.True(t, schemaExists(t, conn, cfg.Schema), "down keeps the schema")

	// One migration at a time, up and then down: each down section undoes
	// exactly its up section.
	for v := int32(1); v <= latest; v++ {
		require.NoError(t, migrate.To(ctx, conn, cfg, v))
		requireVersion(t, conn, cfg, e, v)
	}
	for v := latest - 1; v >= 0; v-- {
		require.NoError(t, migrate.Down(ctx, conn, cfg, 1))
		requireVersion(t, conn, cfg, e, v)
	}

	require.NoError(t, migrate.Up(ctx, conn, cfg))
	requireVersion(t, conn, cfg, e, latest)

	// More steps than applied roll back everything.
	require.NoError(t, migrate.Down(ctx, conn, cfg, len(e.names)+1))
	requireVersion(t, conn, cfg, e, 0)

	require.NoError(t, migrate.To(ctx, conn, cfg, 1))
	requireVersion(t, conn, cfg, e, 1)
}

func TestDefaultSchema(t *testing.T) {
	t.Parallel()
	// The default schema is shared by whoever uses this database, so only
	// read-only behaviour is tested here.
	conn := pgtest.Connect(t)
	r, err := migrate.Status(t.Context(), conn, migrate.Config{})
	require.NoError(t, err)
	require.Equal(t, migrate.DefaultSchema, r.Schema)
}

func TestArguments(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn := pgtest.Connect(t)
	cfg := migrate.Config{Schema: pgtest.NewSchemaName(t)}
	latest := embedded(t).latest()
	outside := fmt.Sprintf("outside 0..%d", latest)

	require.ErrorContains(t, migrate.Down(ctx, conn, cfg, 0), "at least 1")
	require.ErrorContains(t, migrate.To(ctx, conn, cfg, latest+1), outside)
	require.ErrorContains(t, migrate.To(ctx, conn, cfg, -1), outside)
	require.ErrorContains(t, migrate.Up(ctx, nil, cfg), "conn is nil")
}

func TestConcurrentUp(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := embedded(t)
	// The handler serialises its writes; the buffer is read once all are done.
	var logs bytes.Buffer
	cfg := migrate.Config{Schema: pgtest.NewSchemaName(t), Logger: slog.New(slog.NewTextHandler(&logs, nil))}

	const callers = 4
	conns := make([]*pgx.Conn, callers)
	for i := range conns {
		conns[i] = pgtest.Connect(t)
	}
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for _, conn := range conns {
		wg.Go(func() { errs <- migrate.Up(ctx, conn, cfg) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	requireVersion(t, conns[0], cfg, e, e.latest())
	out := logs.String()
	for _, name := range e.names {
		require.Equal(t, 1, strings.Count(out, "migration="+name+" "), out)
	}
	require.Equal(t, len(e.names), strings.Count(out, `msg="migration applied"`), out)
	require.Equal(t, callers-1, strings.Count(out, "database schema up to date"), out)
}

func TestLogging(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn := pgtest.Connect(t)
	var logs bytes.Buffer
	cfg := migrate.Config{Schema: pgtest.NewSchemaName(t), Logger: slog.New(slog.NewTextHandler(&logs, nil))}

	names := embedded(t).names
	n := len(names)

	require.NoError(t, migrate.Up(ctx, conn, cfg))
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	require.Len(t, lines, n, logs.String())
	for i, name := range names {
		require.Contains(t, lines[i],
			fmt.Sprintf(`msg="migration applied" schema=%s migration=%s version=%d`, cfg.Schema, name, i+1))
	}

	logs.Reset()
	require.NoError(t, migrate.Down(ctx, conn, cfg, n))
	lines = strings.Split(strings.TrimSpace(logs.String()), "\n")
	require.Len(t, lines, n, logs.String())
	for i, line := range lines {
		version := n - 1 - i // Newest first, each line naming the version left behind.
		require.Contains(t, line,
			fmt.Sprintf(`msg="migration rolled back" schema=%s migration=%s version=%d`, cfg.Schema, names[version], version))
	}
}

func TestValidateSchemaName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"dtx", "_x", "a1_b", "order", strings.Repeat("a", 63)} {
		require.NoError(t, migrate.ValidateSchemaName(name), name)
	}
	for _, name := range []string{
		"", "Dtx", "1abc", "a-b", "a b", "a.b", `x"; DROP SCHEMA public; --`, "é",
		strings.Repeat("a", 64), "pg_catalog", "pg_x", "information_schema",
	} {
		require.Error(t, migrate.ValidateSchemaName(name), name)
	}
}

func TestInvalidSchemaIsRejected(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn := pgtest.Connect(t)
	bad := migrate.Config{Schema: `x"; DROP SCHEMA public; --`}

	for name, err := range map[string]error{
		"up":   migrate.Up(ctx, conn, bad),
		"down": migrate.Down(ctx, conn, bad, 1),
		"to":   migrate.To(ctx, conn, bad, 0),
	} {
		require.ErrorContains(t, err, "not a plain lower-case identifier", name)
	}
	_, err := migrate.Status(ctx, conn, bad)
	require.ErrorContains(t, err, "not a plain lower-case identifier")
}

func TestFailedMigration(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn := pgtest.Connect(t)
	cfg := migrate.Config{Schema: pgtest.NewSchemaName(t)}
	fsys := fstest.MapFS{
		"001_good.sql": {Data: []byte("CREATE TABLE {{.schema}}.good (id int);\n" +
			"---- create above / drop below ----\nDROP TABLE {{.schema}}.good;\n")},
		"002_bad.sql": {Data: []byte("-- Creates one table, then fails.\nCREATE TABLE {{.schema}}.half (id int);\n" +
			"CREATE TABLE {{.schema}}.bad (id no_such_type);\n" +
			"---- create above / drop below ----\nDROP TABLE {{.schema}}.bad;\n")},
	}

	err := migrate.UpFS(ctx, conn, cfg, fsys)
	var merr *migrate.MigrationError
	require.ErrorAs(t, err, &merr)
	require.Equal(t, cfg.Schema, merr.Schema)
	require.Equal(t, "002_bad.sql", merr.Migration)
	require.Equal(t, migrate.DirectionUp, merr.Direction)
	require.Equal(t, 3, merr.Line)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "42704", pgErr.Code) // undefined_object
	require.Equal(t, 1, strings.Count(err.Error(), "002_bad.sql"), err.Error())
	require.Contains(t, err.Error(), "line 3 of the up section")
	require.Contains(t, err.Error(), "no_such_type")

	// The failed migration left nothing; the one before it stays.
	r, err := migrate.StatusFS(ctx, conn, cfg, fsys)
	require.NoError(t, err)
	require.Equal(t, int32(1), r.Current)
	require.Equal(t, []string{"002_bad.sql"}, r.Pending)
	requireTables(t, conn, cfg.Schema, "good")

	// Once fixed, the migration goes through, from another session: the
	// failure released the locks.
	fsys["002_bad.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE {{.schema}}.fixed (id int);\n" +
		"---- create above / drop below ----\nDROP TABLE {{.schema}}.fixed;\n")}
	require.NoError(t, migrate.UpFS(ctx, pgtest.Connect(t), cfg, fsys))
	requireTables(t, conn, cfg.Schema, "good", "fixed")
}

func TestBrokenTemplate(t *testing.T) {
	t.Parallel()
	conn := pgtest.Connect(t)
	cfg := migrate.Config{Schema: pgtest.NewSchemaName(t)}
	fsys := fstest.MapFS{"001_broken.sql": {Data: []byte("CREATE TABLE {{.schema.x (id int);")}}

	err := migrate.UpFS(t.Context(), conn, cfg, fsys)
	require.ErrorContains(t, err, "load migrations")
	require.False(t, schemaExists(t, conn, cfg.Schema), "nothing is touched before the migrations load")
}

func TestUnknownVersion(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn := pgtest.Connect(t)
	cfg := migrate.Config{Schema: pgtest.NewSchemaName(t)}
	e := embedded(t)
	latest := e.latest()
	newer := latest + 3 // A version this build does not know.
	require.NoError(t, migrate.Up(ctx, conn, cfg))
	_, err := conn.Exec(ctx, "UPDATE "+pgx.Identifier{cfg.Schema, "schema_version"}.Sanitize()+" SET version = $1", newer)
	require.NoError(t, err)

	err = migrate.Up(ctx, conn, cfg)
	require.ErrorIs(t, err, migrate.ErrUnknownVersion)
	require.ErrorContains(t, err, fmt.Sprintf("version %d but this build knows versions up to %d", newer, latest))
	require.ErrorIs(t, migrate.Down(ctx, conn, cfg, 1), migrate.ErrUnknownVersion)

	r, err := migrate.Status(ctx, conn, cfg)
	require.ErrorIs(t, err, migrate.ErrUnknownVersion)
	require.Equal(t, migrate.Report{
		Schema:  cfg.Schema,
		Current: newer,
		Latest:  latest,
		Applied: e.names,
		Pending: []string{},
	}, r)
	requireTables(t, conn, cfg.Schema, e.tables[latest]...)
}

func TestPool(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cfg := migrate.Config{Schema: pgtest.NewSchemaName(t)}
	e := embedded(t)
	latest := e.latest()
	pool, err := pgxpool.New(ctx, pgtest.URL())
	require.NoError(t, err)
	defer pool.Close()
	conn := pgtest.Connect(t)

	r, err := migrate.StatusPool(ctx, pool, cfg)
	require.NoError(t, err)
	require.Equal(t, int32(0), r.Current)
	require.Equal(t, e.names, r.Pending)
	require.False(t, schemaExists(t, conn, cfg.Schema), "StatusPool must not create the schema")

	require.NoError(t, migrate.UpPool(ctx, pool, cfg))
	requireVersion(t, conn, cfg, e, latest)
	// The connection that migrated is not returned to the pool.
	require.Zero(t, pool.Stat().TotalConns())

	require.NoError(t, migrate.DownPool(ctx, pool, cfg, 2))
	requireVersion(t, conn, cfg, e, latest-2)
	require.NoError(t, migrate.ToPool(ctx, pool, cfg, 1))
	requireVersion(t, conn, cfg, e, 1)
	require.Zero(t, pool.Stat().TotalConns())

	// StatusPool only reads: its connection goes back to the pool.
	r, err = migrate.StatusPool(ctx, pool, cfg)
	require.NoError(t, err)
	require.Equal(t, migrate.Report{
		Schema: cfg.Schema, Current: 1, Latest: latest, Applied: e.names[:1], Pending: e.names[1:],
	}, r)
	require.Equal(t, int32(1), pool.Stat().IdleConns())

	// A failure is returned, and the pool stays usable.
	boom := errors.New("boom")
	require.ErrorIs(t, migrate.WithPoolConn(ctx, pool, cfg, func(*pgx.Conn) error { return boom }), boom)
	require.NoError(t, migrate.UpPool(ctx, pool, cfg))
	requireVersion(t, conn, cfg, e, latest)

	// Arguments are checked as on a connection.
	require.ErrorContains(t, migrate.DownPool(ctx, pool, cfg, 0), "at least 1")
	require.ErrorContains(t, migrate.ToPool(ctx, pool, cfg, latest+1), fmt.Sprintf("outside 0..%d", latest))
	require.ErrorContains(t, migrate.UpPool(ctx, nil, cfg), "pool is nil")
	_, err = migrate.StatusPool(ctx, nil, cfg)
	require.ErrorContains(t, err, "pool is nil")
}

func TestPoolRejectsInvalidSchemaBeforeConnecting(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// Nothing listens on port 1: a variant that connected first would fail
	// with a connection error instead of naming Schema.
	pool, err := pgxpool.New(ctx, "postgres://dtx@127.0.0.1:1/dtx?sslmode=disable&connect_timeout=1")
	require.NoError(t, err)
	defer pool.Close()
	bad := migrate.Config{Schema: "Not-Valid"}

	for name, err := range map[string]error{
		"up":   migrate.UpPool(ctx, pool, bad),
		"down": migrate.DownPool(ctx, pool, bad, 1),
		"to":   migrate.ToPool(ctx, pool, bad, 0),
	} {
		require.ErrorContains(t, err, "migrate: Schema: ", name)
		require.ErrorContains(t, err, "not a plain lower-case identifier", name)
	}
	_, err = migrate.StatusPool(ctx, pool, bad)
	require.ErrorContains(t, err, "migrate: Schema: ")

	// A valid Config reaches the pool, and its failure says so.
	require.ErrorContains(t, migrate.UpPool(ctx, pool, migrate.Config{}), "acquire a connection")
}

func TestWaitsForTheLock(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cfg := migrate.Config{Schema: pgtest.NewSchemaName(t)}
	// Another session holds the schema's lock, as a replica that is
	// migrating would.
	holder := pgtest.Connect(t)
	_, err := holder.Exec(ctx, "SELECT pg_advisory_lock(hashtextextended($1, 0))", migrate.LockKey(cfg.Schema))
	require.NoError(t, err)

	conn := pgtest.Connect(t)
	waitCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err = migrate.Up(waitCtx, conn, cfg)
	require.ErrorContains(t, err, "take the advisory lock")
	require.False(t, schemaExists(t, holder, cfg.Schema), "nothing is done without the lock")

	// Once the holder is done, Up goes through on a fresh session.
	_, err = holder.Exec(ctx, "SELECT pg_advisory_unlock(hashtextextended($1, 0))", migrate.LockKey(cfg.Schema))
	require.NoError(t, err)
	require.NoError(t, migrate.Up(ctx, pgtest.Connect(t), cfg))
	requireVersion(t, holder, cfg, embedded(t), embedded(t).latest())
}

func TestKeywordSchemaName(t *testing.T) {
	t.Parallel()
	// A schema named after an SQL keyword needs quoting everywhere. A server
	// of its own gives the test a unique "order" schema.
	c := pgtest.NewCluster(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, c.URL())
	require.NoError(t, err)
	defer conn.Close(context.Background())

	cfg := migrate.Config{Schema: "order"}
	e := embedded(t)
	require.NoError(t, migrate.Up(ctx, conn, cfg))
	requireVersion(t, conn, cfg, e, e.latest())
	require.NoError(t, migrate.To(ctx, conn, cfg, 0))
	requireVersion(t, conn, cfg, e, 0)
}

func TestConstraints(t *testing.T) {
	t.Parallel()
	s := pgtest.NewSchema(t)
	ctx := t.Context()

	tx := pgtest.Tx(t, s.Pool)
	// Each statement runs in a savepoint rolled back afterwards, so the
	// statements do not see each other's rows.
	exec := func(sql string, args ...any) error {
		sp, err := tx.Begin(ctx)
		require.NoError(t, err)
		defer func() { require.NoError(t, sp.Rollback(ctx)) }()
		_, err = sp.Exec(ctx, sql, args...)
		return err
	}
	requireViolation := func(err error, code string) {
		t.Helper()
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, code, pgErr.Code, pgErr.Message)
	}
	const checkViolation, uniqueViolation, notNullViolation = "23514", "23505", "23502"

	inbox := "INSERT INTO inbox (consumer, message_id, expires_at) VALUES ($1, $2, now() + interval '1 day')"
	require.NoError(t, exec(inbox, "c", "m"))
	requireViolation(exec(inbox, "", "m"), checkViolation)
	requireViolation(exec(inbox, "c", ""), checkViolation)
	requireViolation(exec(inbox, strings.Repeat("c", 256), "m"), checkViolation)
	requireViolation(exec(inbox, "c", strings.Repeat("m", 513)), checkViolation)
	requireViolation(exec("INSERT INTO inbox (consumer, message_id) VALUES ('c', 'm')"), notNullViolation)
	_, err := tx.Exec(ctx, inbox, "c", "dup")
	require.NoError(t, err)
	requireViolation(exec(inbox, "c", "dup"), uniqueViolation)

	keys := `INSERT INTO idempotency_keys (scope, key, request_fingerprint, state, response_status, response_headers, response_body, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, now() + interval '24 hours')`
	fp := []byte{1, 2, 3}
	require.NoError(t, exec(keys, "s", "k", fp, "running", nil, nil, nil))
	require.NoError(t, exec(keys, "s", "k", fp, "completed", 201, map[string]any{"Location": []string{"/x"}}, []byte("{}")))
	requireViolation(exec(keys, "s", "k", fp, "done", nil, nil, nil), checkViolation)
	requireViolation(exec(keys, "s", "k", fp, "completed", nil, nil, nil), checkViolation)
	requireViolation(exec(keys, "s", "k", fp, "completed", 99, nil, nil), checkViolation)
	requireViolation(exec(keys, "s", "k", fp, "completed", 200, []any{"not", "an", "object"}, nil), checkViolation)
	requireViolation(exec(keys, "", "k", fp, "running", nil, nil, nil), checkViolation)
	requireViolation(exec(keys, "s", "", fp, "running", nil, nil, nil), checkViolation)
	requireViolation(exec(keys, "s", "k", []byte{}, "running", nil, nil, nil), checkViolation)
}

func schemaExists(t *testing.T, conn *pgx.Conn, schema string) bool {
	t.Helper()
	var exists bool
	require.NoError(t, conn.QueryRow(t.Context(),
		"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists))
	return exists
}

// requireTables checks that schema holds exactly the tables want, besides
// the version table.
func requireTables(t *testing.T, conn *pgx.Conn, schema string, want ...string) {
	t.Helper()
	rows, err := conn.Query(t.Context(),
		"SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename <> 'schema_version'", schema)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.ElementsMatch(t, want, got, "tables of schema %s", schema)
}

// requireVersion checks that cfg.Schema is at version v of the migrations e:
// Status reports the first v migrations applied and the others pending, and
// the schema holds exactly the tables those v migrations create.
func requireVersion(t *testing.T, conn *pgx.Conn, cfg migrate.Config, e embeddedMigrations, v int32) {
	t.Helper()
	r, err := migrate.Status(t.Context(), conn, cfg)
	require.NoError(t, err)
	require.Equal(t, migrate.Report{
		Schema:  cfg.Schema,
		Current: v,
		Latest:  e.latest(),
		Applied: e.names[:v],
		Pending: e.names[v:],
	}, r, "status at version %d", v)
	requireTables(t, conn, cfg.Schema, e.tables[v]...)
}

// embeddedMigrations describes the migrations package migrations embeds, as
// read from its files rather than from package migrate, so that the tests
// follow a new migration without being edited.
type embeddedMigrations struct {
	// names are the file names in the order they apply: names[v-1] is the
	// migration that brings the schema to version v.
	names []string
	// tables[v] is the sorted set of tables, besides the version table, that
	// the schema holds at version v; tables[0] is empty.
	tables [][]string
}

// latest is the version of the last migration.
func (e embeddedMigrations) latest() int32 { return int32(len(e.names)) }

// migrationSeparator divides a migration's up section from its down section.
const migrationSeparator = "---- create above / drop below ----"

var (
	// sqlComment is an SQL line comment, removed before looking for tables.
	sqlComment = regexp.MustCompile(`--[^\n]*`)
	// tableDDL is a statement that creates or drops a table of the schema.
	// Package migrations requires every object to be qualified with
	// {{.schema}}.
	tableDDL = regexp.MustCompile(`(?i)\b(CREATE|DROP)\s+(?:UNLOGGED\s+)?TABLE\s+` +
		`(?:IF\s+(?:NOT\s+)?EXISTS\s+)?\{\{\s*\.schema\s*\}\}\.([a-z_][a-z0-9_$]*)`)
)

// embedded reads the embedded migrations: their names, checked to be numbered
// from 001 without gaps, and the tables their up sections create and drop.
func embedded(t *testing.T) embeddedMigrations {
	t.Helper()
	fsys := migrations.FS()
	names, err := fs.Glob(fsys, "*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, names, "no migrations embedded")
	slices.Sort(names)

	e := embeddedMigrations{names: names, tables: [][]string{{}}}
	tables := map[string]bool{}
	for i, name := range names {
		require.True(t, strings.HasPrefix(name, fmt.Sprintf("%03d_", i+1)),
			"migration %s should be numbered %03d: migrations are numbered from 001 without gaps", name, i+1)
		body, err := fs.ReadFile(fsys, name)
		require.NoError(t, err)
		up, _, ok := strings.Cut(string(body), migrationSeparator)
		require.True(t, ok, "migration %s has no %q line", name, migrationSeparator)
		for _, m := range tableDDL.FindAllStringSubmatch(sqlComment.ReplaceAllString(up, ""), -1) {
			table := strings.ToLower(m[2])
			if strings.EqualFold(m[1], "CREATE") {
				tables[table] = true
			} else {
				delete(tables, table)
			}
		}
		e.tables = append(e.tables, slices.Sorted(maps.Keys(tables)))
	}
	return e
}
