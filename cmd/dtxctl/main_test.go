package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
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

	r := dtxctl(t, env, "migrate", "status")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "schema   "+schema+"\nversion  0 of 3\npending  001_inbox.sql\npending  002_idempotency_keys.sql\npending  003_txlog.sql\n", r.stdout)

	r = dtxctl(t, env, "migrate", "up")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "schema "+schema+" is at version 3 of 3\n", r.stdout)
	require.Equal(t, 3, strings.Count(r.stderr, `msg="migration applied"`), r.stderr)

	r = dtxctl(t, env, "migrate", "down")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "schema "+schema+" is at version 2 of 3\n", r.stdout)
	require.Contains(t, r.stderr, "migration=003_txlog.sql")

	r = dtxctl(t, env, "migrate", "status")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "schema   "+schema+"\nversion  2 of 3\napplied  001_inbox.sql\napplied  002_idempotency_keys.sql\npending  003_txlog.sql\n", r.stdout)

	r = dtxctl(t, env, "migrate", "up")
	require.Equal(t, exitOK, r.code, r.stderr)
	r = dtxctl(t, env, "migrate", "down", "--all")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "schema "+schema+" is at version 0 of 3\n", r.stdout)
	r = dtxctl(t, env, "migrate", "down", "--steps", "2")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "schema "+schema+" is at version 0 of 3\n", r.stdout)
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
	}{
		"bad schema": {
			env:  map[string]string{"DTX_SCHEMA": `x"; DROP SCHEMA public; --`},
			args: []string{"migrate", "up"},
			want: "DTX_SCHEMA",
		},
		"unreachable database": {
			env:  map[string]string{"DTX_DATABASE_URL": "postgres://dtx:s3cret@127.0.0.1:1/dtx?connect_timeout=2"},
			args: []string{"migrate", "status"},
			want: "connect to PostgreSQL at postgres://dtx:xxxxx@127.0.0.1:1/dtx",
		},
		"unreachable database, key=value": {
			args: []string{"migrate", "status", "--database-url", "host=127.0.0.1 port=1 user=dtx password=s3cret connect_timeout=2"},
			want: "password=xxxxx",
		},
		"unparsable connection string": {
			env:  map[string]string{"DTX_DATABASE_URL": "postgres://dtx:s3cret@127.0.0.1:5432/dtx?sslmode=bogus"},
			args: []string{"migrate", "up"},
			want: "DTX_DATABASE_URL",
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := dtxctl(t, tc.env, tc.args...)
			require.Equal(t, exitFailure, r.code)
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
	_, err := s.Pool.Exec(t.Context(), "UPDATE schema_version SET version = 9")
	require.NoError(t, err)

	env := map[string]string{"DTX_DATABASE_URL": pgtest.URL(), "DTX_SCHEMA": s.Name}
	r := dtxctl(t, env, "migrate", "status")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stdout, "version  9 of 3\n")
	require.Contains(t, r.stderr, "newer than this build")

	r = dtxctl(t, env, "migrate", "up")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "newer than this build")
}
