package migrate_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/migrate"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn := pgtest.Connect(t)
	cfg := migrate.Config{Schema: pgtest.NewSchemaName(t)}

	before, err := migrate.Status(ctx, conn, cfg)
	require.NoError(t, err)
	require.Equal(t, int32(0), before.Current)
	require.Equal(t, int32(3), before.Latest)
	require.Empty(t, before.Applied)
	require.Equal(t, []string{"001_inbox.sql", "002_idempotency_keys.sql", "003_txlog.sql"}, before.Pending)
	require.False(t, schemaExists(t, conn, cfg.Schema), "Status must not create the schema")

	require.NoError(t, migrate.Up(ctx, conn, cfg))
	requireTables(t, conn, cfg.Schema, "inbox", "idempotency_keys", "txlog_checkpoints")
	after, err := migrate.Status(ctx, conn, cfg)
	require.NoError(t, err)
	require.Equal(t, migrate.Report{
		Schema:  cfg.Schema,
		Current: 3,
		Latest:  3,
		Applied: []string{"001_inbox.sql", "002_idempotency_keys.sql", "003_txlog.sql"},
		Pending: []string{},
	}, after)

	// Up again changes nothing.
	require.NoError(t, migrate.Up(ctx, conn, cfg))

	require.NoError(t, migrate.Down(ctx, conn, cfg, 1))
	requireTables(t, conn, cfg.Schema, "inbox", "idempotency_keys")
	st, err := migrate.Status(ctx, conn, cfg)
	require.NoError(t, err)
	require.Equal(t, int32(2), st.Current)
	require.Equal(t, []string{"003_txlog.sql"}, st.Pending)

	require.NoError(t, migrate.To(ctx, conn, cfg, 0))
	requireTables(t, conn, cfg.Schema)
	require.True(t, schemaExists(t, conn, cfg.Schema), "down keeps the schema")
	st, err = migrate.Status(ctx, conn, cfg)
	require.NoError(t, err)
	require.Equal(t, int32(0), st.Current)

	require.NoError(t, migrate.Up(ctx, conn, cfg))
	requireTables(t, conn, cfg.Schema, "inbox", "idempotency_keys", "txlog_checkpoints")

	// More steps than applied roll back everything.
	require.NoError(t, migrate.Down(ctx, conn, cfg, 10))
	requireTables(t, conn, cfg.Schema)

	require.NoError(t, migrate.To(ctx, conn, cfg, 1))
	requireTables(t, conn, cfg.Schema, "inbox")
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

	require.ErrorContains(t, migrate.Down(ctx, conn, cfg, 0), "at least 1")
	require.ErrorContains(t, migrate.To(ctx, conn, cfg, 4), "outside 0..3")
	require.ErrorContains(t, migrate.To(ctx, conn, cfg, -1), "outside 0..3")
	require.ErrorContains(t, migrate.Up(ctx, nil, cfg), "conn is nil")
}

func TestConcurrentUp(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
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

	requireTables(t, conns[0], cfg.Schema, "inbox", "idempotency_keys", "txlog_checkpoints")
	out := logs.String()
	require.Equal(t, 1, strings.Count(out, "migration=001_inbox.sql"), out)
	require.Equal(t, 1, strings.Count(out, "migration=002_idempotency_keys.sql"), out)
	require.Equal(t, 1, strings.Count(out, "migration=003_txlog.sql"), out)
	require.Equal(t, callers-1, strings.Count(out, "database schema up to date"), out)
}

func TestLogging(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn := pgtest.Connect(t)
	var logs bytes.Buffer
	cfg := migrate.Config{Schema: pgtest.NewSchemaName(t), Logger: slog.New(slog.NewTextHandler(&logs, nil))}

	require.NoError(t, migrate.Up(ctx, conn, cfg))
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	require.Len(t, lines, 3, logs.String())
	require.Contains(t, lines[0], `msg="migration applied" schema=`+cfg.Schema+` migration=001_inbox.sql version=1`)
	require.Contains(t, lines[1], `msg="migration applied" schema=`+cfg.Schema+` migration=002_idempotency_keys.sql version=2`)
	require.Contains(t, lines[2], `msg="migration applied" schema=`+cfg.Schema+` migration=003_txlog.sql version=3`)

	logs.Reset()
	require.NoError(t, migrate.Down(ctx, conn, cfg, 3))
	lines = strings.Split(strings.TrimSpace(logs.String()), "\n")
	require.Len(t, lines, 3, logs.String())
	require.Contains(t, lines[0], `msg="migration rolled back" schema=`+cfg.Schema+` migration=003_txlog.sql version=2`)
	require.Contains(t, lines[1], `msg="migration rolled back" schema=`+cfg.Schema+` migration=002_idempotency_keys.sql version=1`)
	require.Contains(t, lines[2], `msg="migration rolled back" schema=`+cfg.Schema+` migration=001_inbox.sql version=0`)
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
	require.NoError(t, migrate.Up(ctx, conn, cfg))
	_, err := conn.Exec(ctx, "UPDATE "+pgx.Identifier{cfg.Schema, "schema_version"}.Sanitize()+" SET version = 7")
	require.NoError(t, err)

	err = migrate.Up(ctx, conn, cfg)
	require.ErrorIs(t, err, migrate.ErrUnknownVersion)
	require.ErrorContains(t, err, "version 7")
	require.ErrorIs(t, migrate.Down(ctx, conn, cfg, 1), migrate.ErrUnknownVersion)

	r, err := migrate.Status(ctx, conn, cfg)
	require.ErrorIs(t, err, migrate.ErrUnknownVersion)
	require.Equal(t, int32(7), r.Current)
	require.Len(t, r.Applied, 3)
	require.Empty(t, r.Pending)
	requireTables(t, conn, cfg.Schema, "inbox", "idempotency_keys", "txlog_checkpoints")
}

func TestUpPool(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cfg := migrate.Config{Schema: pgtest.NewSchemaName(t)}
	pool, err := pgxpool.New(ctx, pgtest.URL())
	require.NoError(t, err)
	defer pool.Close()

	require.NoError(t, migrate.UpPool(ctx, pool, cfg))
	requireTables(t, pgtest.Connect(t), cfg.Schema, "inbox", "idempotency_keys", "txlog_checkpoints")

	// The connection is not returned to the pool.
	require.Zero(t, pool.Stat().TotalConns())

	// A failure is returned, and the pool stays usable.
	boom := errors.New("boom")
	require.ErrorIs(t, migrate.WithPoolConn(ctx, pool, func(*pgx.Conn) error { return boom }), boom)
	require.NoError(t, migrate.WithPoolConn(ctx, pool, func(conn *pgx.Conn) error {
		r, err := migrate.Status(ctx, conn, cfg)
		if err == nil && r.Current != 3 {
			err = errors.New("not at version 3")
		}
		return err
	}))
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
	require.NoError(t, migrate.Up(ctx, conn, cfg))
	requireTables(t, conn, "order", "inbox", "idempotency_keys", "txlog_checkpoints")
	require.NoError(t, migrate.To(ctx, conn, cfg, 0))
	requireTables(t, conn, "order")
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
