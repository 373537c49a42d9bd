package service

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/saga"
)

const invoiceSchema = `{"type": "object", "required": ["order_id"], "properties": {"order_id": {"type": "string"}}}`

// schemaDir writes files into a new directory and returns its path.
func schemaDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600))
	}
	return dir
}

func TestSettingsSchemasRepeatable(t *testing.T) {
	t.Parallel()
	cfg, err := parse(t, []string{"--schemas", "a", "--schemas", "b, c"}, map[string]string{"DTX_SCHEMAS": "x"})
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b", "c"}, cfg.SchemaDirs, "repeated flags add up; they win over the environment")

	cfg, err = parse(t, nil, map[string]string{"DTX_SCHEMAS": "x, y,"})
	require.NoError(t, err)
	require.Equal(t, []string{"x", "y"}, cfg.SchemaDirs)

	cfg, err = parse(t, nil, nil)
	require.NoError(t, err)
	require.Empty(t, cfg.SchemaDirs)
}

func TestSettingsTopicPrefix(t *testing.T) {
	t.Parallel()
	cfg, err := parse(t, nil, nil)
	require.NoError(t, err)
	require.Equal(t, saga.Names(""), cfg.Names())

	for _, p := range []string{"team-a.", "team_a-", "billing.", "x"} {
		cfg, err = parse(t, nil, map[string]string{"DTX_TOPIC_PREFIX": p})
		require.NoError(t, err, p)
		require.Equal(t, p+"dtx.saga.replies", cfg.Names().Replies)
		require.Equal(t, p+"dtx-orchestrator", cfg.Names().OrchestratorGroup)
	}

	for _, p := range []string{"team a.", "team/a.", "é.", strings.Repeat("a", 230)} {
		_, err = parse(t, []string{"--topic-prefix", p}, nil)
		require.ErrorContains(t, err, "topic-prefix (DTX_TOPIC_PREFIX)", p)
	}
}

// A --schemas directory that is missing, or that redefines a type and
// version, stops the process at start with exit code 2 and a message naming
// the directory or both files; nothing else is needed to tell.
func TestRunBadSchemasExitsUsage(t *testing.T) {
	t.Parallel()
	app := App{Name: "schemas-test", DefaultAdminAddr: ":0", RunFunc: func(context.Context, *Env) error {
		t.Error("the work loop ran")
		return nil
	}}
	run := func(args ...string) (int, string) {
		var stderr bytes.Buffer
		code := Run(context.Background(), app, args, envOf(nil), &bytes.Buffer{}, &stderr)
		return code, stderr.String()
	}

	missing := filepath.Join(t.TempDir(), "nonexistent")
	code, out := run("--schemas", missing)
	require.Equal(t, ExitUsage, code)
	require.Contains(t, out, "schemas (DTX_SCHEMAS): messaging: schema source "+missing+": read schemas: no such file or directory")

	own := schemaDir(t, map[string]string{"billing.invoice.create.v1.json": invoiceSchema})
	again := schemaDir(t, map[string]string{"billing.invoice.create.v1.json": invoiceSchema})
	code, out = run("--schemas", own, "--schemas", again)
	require.Equal(t, ExitUsage, code)
	require.Contains(t, out, "schema billing.invoice.create.v1 is defined twice: "+
		own+"/billing.invoice.create.v1.json and "+again+"/billing.invoice.create.v1.json")

	builtin := schemaDir(t, map[string]string{"dtx.saga.started.v1.json": `{}`})
	code, out = run("--schemas", builtin)
	require.Equal(t, ExitUsage, code)
	require.Contains(t, out, "schema dtx.saga.started.v1 is defined twice: built-in/dtx.saga.started.v1.json and "+
		builtin+"/dtx.saga.started.v1.json")
}

// The work loop gets the built-in schemas merged with those of --schemas.
func TestRunHandsMergedSchemasToWorkLoop(t *testing.T) {
	t.Parallel()
	dir := schemaDir(t, map[string]string{"billing.invoice.create.v1.json": invoiceSchema})
	got := make(chan *messaging.SchemaRegistry, 1)
	app := App{Name: "schemas-test", DefaultAdminAddr: ":0", RunFunc: func(ctx context.Context, env *Env) error {
		got <- env.Schemas
		<-ctx.Done()
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, app, []string{"--schemas", dir}, envOf(map[string]string{
			"DTX_DATABASE_URL":  pgtest.URL(),
			"DTX_KAFKA_BROKERS": strings.Join(kafkatest.Brokers(), ","),
			"DTX_ADMIN_ADDR":    "127.0.0.1:0",
		}), &bytes.Buffer{}, &syncBuffer{})
	}()
	var reg *messaging.SchemaRegistry
	select {
	case reg = <-got:
	case code := <-done:
		t.Fatalf("Run returned %d before the work loop ran", code)
	case <-time.After(time.Minute):
		t.Fatal("the work loop did not run")
	}
	cancel()
	require.Equal(t, ExitOK, <-done)

	require.NoError(t, reg.Validate("billing.invoice.create", 1, []byte(`{"order_id":"o-1"}`)))
	require.ErrorIs(t, reg.Validate("billing.invoice.create", 1, []byte(`{}`)), messaging.ErrSchemaViolation)
	_, ok := reg.SchemaID(saga.EventStarted, 1)
	require.True(t, ok, "the built-in schemas are there too")
}
