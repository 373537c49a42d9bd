package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/migrations"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type result struct {
	code           int
	stdout, stderr string
}

// dtxctl runs the command line with env as the whole environment.
func dtxctl(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code := run(context.Background(), args, lookup, &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--help"}, {"help"}, {"migrate", "--help"},
		{"migrate", "up", "--help"}, {"migrate", "down", "-h"}, {"migrate", "status", "--help"},
	} {
		r := dtxctl(t, nil, args...)
		require.Equal(t, exitOK, r.code, args)
		require.Empty(t, r.stderr, args)
		require.Contains(t, r.stdout, "Usage: dtxctl", args)
		require.Contains(t, r.stdout, "DTX_DATABASE_URL", args)
		require.Contains(t, r.stdout, "DTX_SCHEMA", args)
		require.Contains(t, r.stdout, "default dtx", args)
		require.Contains(t, r.stdout, "postgres://dtx:xxxxx@127.0.0.1:5432/dtx", args)
		require.NotContains(t, r.stdout, "dtx:dtx@", "the default password is shown: %v", args)
	}
	down := dtxctl(t, nil, "migrate", "down", "--help").stdout
	require.Contains(t, down, "--steps N")
	require.Contains(t, down, "--all")
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{},
		{"nope"},
		{"migrate"},
		{"migrate", "sideways"},
		{"migrate", "up", "extra"},
		{"migrate", "up", "--no-such-flag"},
		{"migrate", "down", "--steps", "0"},
		{"migrate", "down", "--steps", "2", "--all"},
	} {
		r := dtxctl(t, nil, args...)
		require.Equal(t, exitUsage, r.code, args)
		require.NotEmpty(t, r.stderr, args)
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	schema := pgtest.NewSchemaName(t)
	env := map[string]string{"DTX_DATABASE_URL": pgtest.URL(), "DTX_SCHEMA": schema}
	names := migrationNames(t)
	latest := len(names)

	r := dtxctl(t, env, "migrate", "status")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, statusOutput(schema, 0, names), r.stdout)

	r = dtxctl(t, env, "migrate", "up")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, versionOutput(schema, latest, latest), r.stdout)
	require.Equal(t, latest, strings.Count(r.stderr, `msg="migration applied"`), r.stderr)
	for _, name := range names {
		require.Contains(t, r.stderr, "migration="+name+" ")
	}

	r = dtxctl(t, env, "migrate", "down")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, versionOutput(schema, latest-1, latest), r.stdout)
	require.Equal(t, 1, strings.Count(r.stderr, `msg="migration rolled back"`), r.stderr)
	require.Contains(t, r.stderr, "migration="+names[latest-1]+" ")

	r = dtxctl(t, env, "migrate", "status")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, statusOutput(schema, latest-1, names), r.stdout)

	r = dtxctl(t, env, "migrate", "up")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, versionOutput(schema, latest, latest), r.stdout)
	r = dtxctl(t, env, "migrate", "down", "--all")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, versionOutput(schema, 0, latest), r.stdout)
	r = dtxctl(t, env, "migrate", "down", "--steps", "2")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, versionOutput(schema, 0, latest), r.stdout)
}

func TestFlagsWinOverEnvironment(t *testing.T) {
	t.Parallel()
	schema := pgtest.NewSchemaName(t)
	env := map[string]string{
		"DTX_DATABASE_URL": "postgres://dtx:s3cret@127.0.0.1:1/nowhere",
		"DTX_SCHEMA":       "Not-Valid",
	}
	r := dtxctl(t, env, "migrate", "status", "--database-url", pgtest.URL(), "--schema", schema)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "schema   "+schema+"\n")
}

func TestErrors(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want string
		code int
	}{
		"bad schema": {
			env:  map[string]string{"DTX_SCHEMA": `x"; DROP SCHEMA public; --`},
			args: []string{"migrate", "up"},
			want: "DTX_SCHEMA",
			code: exitUsage,
		},
		"unreachable database": {
			env:  map[string]string{"DTX_DATABASE_URL": "postgres://dtx:s3cret@127.0.0.1:1/dtx?connect_timeout=2"},
			args: []string{"migrate", "status"},
			want: "connect to PostgreSQL at postgres://dtx:xxxxx@127.0.0.1:1/dtx",
			code: exitFailure,
		},
		"unreachable database, key=value": {
			args: []string{"migrate", "status", "--database-url", "host=127.0.0.1 port=1 user=dtx password=s3cret connect_timeout=2"},
			want: "password=xxxxx",
			code: exitFailure,
		},
		"unparsable connection string": {
			env:  map[string]string{"DTX_DATABASE_URL": "postgres://dtx:s3cret@127.0.0.1:5432/dtx?sslmode=bogus"},
			args: []string{"migrate", "up"},
			want: "DTX_DATABASE_URL",
			code: exitUsage,
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := dtxctl(t, tc.env, tc.args...)
			require.Equal(t, tc.code, r.code, "settings that cannot be used exit 2, before connecting; a failed connection 1")
			require.Empty(t, r.stdout)
			require.True(t, strings.HasPrefix(r.stderr, "dtxctl migrate "), r.stderr)
			require.Contains(t, r.stderr, tc.want)
			require.NotContains(t, r.stderr, "s3cret")
		})
	}
}

func TestStatusOfNewerDatabase(t *testing.T) {
	t.Parallel()
	s := pgtest.NewSchema(t)
	names := migrationNames(t)
	newer := len(names) + 5 // A version this build does not know.
	_, err := s.Pool.Exec(t.Context(), "UPDATE schema_version SET version = $1", newer)
	require.NoError(t, err)

	env := map[string]string{"DTX_DATABASE_URL": pgtest.URL(), "DTX_SCHEMA": s.Name}
	r := dtxctl(t, env, "migrate", "status")
	require.Equal(t, exitFailure, r.code)
	require.Equal(t, statusOutput(s.Name, newer, names), r.stdout)
	require.Contains(t, r.stderr, "newer than this build")

	r = dtxctl(t, env, "migrate", "up")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "newer than this build")
}

// migrationNames returns the file names of the embedded migrations in the
// order they apply, read from package migrations so that a new migration
// needs no change here.
func migrationNames(t *testing.T) []string {
	t.Helper()
	names, err := fs.Glob(migrations.FS(), "*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, names, "no migrations embedded")
	slices.Sort(names)
	for i, name := range names {
		require.True(t, strings.HasPrefix(name, fmt.Sprintf("%03d_", i+1)),
			"migration %s should be numbered %03d: migrations are numbered from 001 without gaps", name, i+1)
	}
	return names
}

// statusOutput is what `dtxctl migrate status` prints for schema at version
// current: the first current migrations applied, the others pending.
func statusOutput(schema string, current int, names []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "schema   %s\nversion  %d of %d\n", schema, current, len(names))
	for i, name := range names {
		state := "pending"
		if i < current {
			state = "applied"
		}
		fmt.Fprintf(&b, "%s  %s\n", state, name)
	}
	return b.String()
}

// versionOutput is what `dtxctl migrate up` and `down` print once schema is
// at version current of latest.
func versionOutput(schema string, current, latest int) string {
	return fmt.Sprintf("schema %s is at version %d of %d\n", schema, current, latest)
}
