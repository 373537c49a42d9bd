package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

// kafkaCommands are the commands that talk to Kafka, with what they need
// besides the Kafka settings to get that far.
var kafkaCommands = [][]string{
	{"topics", "plan"},
	{"topics", "apply"},
	{"dlq", "list"},
	{"dlq", "show", "0:0"},
	{"dlq", "replay", "--all"},
	{"saga", "start", "billing-invoice", "--data", "{}", "--definitions", billingSagas},
}

// databaseCommands are the commands that talk to PostgreSQL.
var databaseCommands = [][]string{
	{"migrate", "up"},
	{"migrate", "down"},
	{"migrate", "status"},
	{"saga", "list"},
	{"saga", "show", "ord-1"},
	{"saga", "abort", "ord-1", "--reason", "x", "--definitions", exampleSagas},
	{"outbox", "rejected", "list"},
	{"outbox", "rejected", "requeue", "1"},
	{"outbox", "rejected", "delete", "1", "--yes"},
}

// writeSecret writes content to a file of the test and returns its path.
func writeSecret(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

func TestSecuritySettingsInHelp(t *testing.T) {
	t.Parallel()
	for _, cmd := range kafkaCommands {
		r := dtxctl(t, nil, cmd[0], cmd[1], "--help")
		require.Equal(t, exitOK, r.code, cmd)
		for _, env := range []string{"DTX_KAFKA_TLS,", "DTX_KAFKA_TLS_CA_FILE", "DTX_KAFKA_TLS_CERT_FILE", "DTX_KAFKA_TLS_KEY_FILE",
			"DTX_KAFKA_TLS_SERVER_NAME", "DTX_KAFKA_TLS_INSECURE_SKIP_VERIFY", "DTX_KAFKA_SASL_MECHANISM",
			"DTX_KAFKA_SASL_USERNAME", "DTX_KAFKA_SASL_PASSWORD_FILE"} {
			require.Contains(t, r.stdout, "env "+env, cmd)
		}
		require.Contains(t, r.stdout, "Secured connections", cmd)
		require.NotContains(t, r.stdout, "--database-password-file", "%v talks to Kafka only", cmd)
	}
	for _, cmd := range databaseCommands {
		args := append([]string{}, cmd[:2]...)
		if cmd[0] == "outbox" {
			args = cmd[:3]
		}
		r := dtxctl(t, nil, slices.Concat(args, []string{"--help"})...)
		require.Equal(t, exitOK, r.code, cmd)
		require.Contains(t, r.stdout, "--database-url-file", cmd)
		require.Contains(t, r.stdout, "env DTX_DATABASE_URL_FILE", cmd)
		require.Contains(t, r.stdout, "--database-password-file", cmd)
		require.Contains(t, r.stdout, "env DTX_DATABASE_PASSWORD_FILE", cmd)
		require.NotContains(t, r.stdout, "env DTX_KAFKA", "%v talks to PostgreSQL only", cmd)
		require.Contains(t, r.stdout, "Secured connections", cmd)
	}
	r := dtxctl(t, nil, "--help")
	require.Contains(t, r.stdout, "Secured connections")
	require.Contains(t, r.stdout, "docs/security.md")
}

// Settings that cannot be used stop every command with exit status 2 and a
// line naming the setting, before it connects: the brokers and the
// database named here do not answer, which would be exit status 1.
func TestSecuritySettingsAreCheckedBeforeConnecting(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-do-not-print"
	password := writeSecret(t, "password", secret+"\n")
	empty := writeSecret(t, "empty", "")
	notPEM := writeSecret(t, "ca.pem", "not a certificate: "+secret)
	missing := filepath.Join(t.TempDir(), "missing")
	urlFile := writeSecret(t, "url", "postgres://dtx:"+secret+"@127.0.0.1:1/dtx?sslmode=bogus\n")
	deadKafka := map[string]string{"DTX_KAFKA_BROKERS": "127.0.0.1:1"}
	deadDB := map[string]string{"DTX_DATABASE_URL": "postgres://dtx@127.0.0.1:1/dtx?connect_timeout=1"}
	with := func(base map[string]string, kv ...string) map[string]string {
		env := maps.Clone(base)
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}

	type check struct {
		env  map[string]string
		args []string
		want []string
	}
	var checks []check
	for _, cmd := range kafkaCommands {
		checks = append(checks,
			check{deadKafka, slices.Concat(cmd, []string{"--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-username", "dtx"}),
				[]string{"kafka-sasl-password-file (DTX_KAFKA_SASL_PASSWORD_FILE): must be set with kafka-sasl-mechanism SCRAM-SHA-512"}},
			check{with(deadKafka, "DTX_KAFKA_TLS_CA_FILE", missing), cmd,
				[]string{"kafka-tls-ca-file (DTX_KAFKA_TLS_CA_FILE): cannot read " + missing}},
		)
	}
	checks = append(checks,
		check{with(deadKafka, "DTX_KAFKA_SASL_MECHANISM", "GSSAPI", "DTX_KAFKA_SASL_PASSWORD_FILE", empty), []string{"topics", "plan"},
			[]string{`kafka-sasl-mechanism (DTX_KAFKA_SASL_MECHANISM): "GSSAPI" is not one of`,
				"kafka-sasl-username (DTX_KAFKA_SASL_USERNAME): must be set",
				"kafka-sasl-password-file (DTX_KAFKA_SASL_PASSWORD_FILE): " + empty + " is empty"}},
		check{deadKafka, []string{"dlq", "list", "--kafka-sasl-password-file", password},
			[]string{"kafka-sasl-mechanism (DTX_KAFKA_SASL_MECHANISM): empty, but kafka-sasl-username or kafka-sasl-password-file is set"}},
		check{deadKafka, []string{"topics", "plan", "--kafka-tls-ca-file", notPEM},
			[]string{"kafka-tls-ca-file (DTX_KAFKA_TLS_CA_FILE): " + notPEM + " holds no PEM certificate"}},
		check{deadKafka, []string{"topics", "plan", "--kafka-tls-cert-file", password},
			[]string{"kafka-tls-cert-file (DTX_KAFKA_TLS_CERT_FILE): set without kafka-tls-key-file (DTX_KAFKA_TLS_KEY_FILE)"}},
		check{with(deadDB, "DTX_DATABASE_URL_FILE", urlFile), []string{"migrate", "status"},
			[]string{"database-url-file (DTX_DATABASE_URL_FILE): set together with database-url (DTX_DATABASE_URL); set only one"}},
		check{nil, []string{"migrate", "status", "--database-url-file", urlFile},
			[]string{"database-url-file (DTX_DATABASE_URL_FILE) postgres://dtx:xxxxx@127.0.0.1:1/dtx?sslmode=bogus: cannot be"}},
		check{nil, []string{"saga", "list", "--database-url", "postgres://dtx@127.0.0.1:1/dtx?sslmode=verify-full&sslrootcert=" + missing},
			[]string{"database-url (DTX_DATABASE_URL) postgres://dtx@127.0.0.1:1/dtx", "cannot be used", missing}},
	)
	for _, cmd := range databaseCommands {
		checks = append(checks, check{with(deadDB, "DTX_DATABASE_PASSWORD_FILE", missing), cmd,
			[]string{"database-password-file (DTX_DATABASE_PASSWORD_FILE): cannot read " + missing}})
	}
	for _, c := range checks {
		r := dtxctl(t, c.env, c.args...)
		require.Equal(t, exitUsage, r.code, "%v %v\n%s", c.env, c.args, r.stderr)
		require.Empty(t, r.stdout, c.args)
		for _, w := range c.want {
			require.Contains(t, r.stderr, w, "%v %v", c.env, c.args)
		}
		require.NotContains(t, r.stderr, secret, "a secret is printed: %v", c.args)
		require.NotContains(t, r.stderr, "does not answer", c.args)
		require.NotContains(t, r.stderr, "connect to PostgreSQL", c.args)
		for line := range strings.SplitSeq(strings.TrimSpace(r.stderr), "\n") {
			require.True(t, strings.HasPrefix(line, "dtxctl "), "each problem on a line of its own, naming the command: %q", line)
		}
	}
}

// Turning off the check of the brokers' certificates is said on every run.
func TestInsecureSkipVerifyWarns(t *testing.T) {
	t.Parallel()
	r := dtxctl(t, map[string]string{"DTX_KAFKA_TLS_INSECURE_SKIP_VERIFY": "true"},
		"topics", "plan", "--kafka-brokers", "127.0.0.1:1", "--timeout", "1s")
	require.Equal(t, exitFailure, r.code, "nothing answers on port 1")
	require.Contains(t, r.stderr, "dtxctl topics plan: warning: INSECURE: kafka-tls-insecure-skip-verify is on")
}

// The Kafka commands authenticate with SCRAM through a password file: the
// admin client (topics), the producer (saga start) and the reader (dlq).
// A wrong password fails with the broker's answer.
func TestKafkaCommandsOverSCRAM(t *testing.T) {
	t.Parallel()
	addr, user, passwordFile := scramListener(t)
	prefix := "t" + randomHex(t)[:12] + "."
	triggerTopic := prefix + "billing.events"
	defs := billingDefinitions(t, triggerTopic)
	scram512 := []string{"--kafka-brokers", addr, "--kafka-sasl-mechanism", "SCRAM-SHA-512",
		"--kafka-sasl-username", user, "--kafka-sasl-password-file", passwordFile}

	r := dtxctl(t, nil, append([]string{"topics", "plan", "--topic-prefix", prefix, "--definitions", defs}, scram512...)...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Regexp(t, `create\s+`+triggerTopic+`\s`, r.stdout)
	r = dtxctl(t, nil, append([]string{"topics", "apply", "--topic-prefix", prefix, "--definitions", defs, "--partitions", "1"}, scram512...)...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Regexp(t, `created\s+`+triggerTopic+`\s`, r.stdout)

	// The same settings through their environment variables, SCRAM-SHA-256.
	env := map[string]string{
		"DTX_KAFKA_BROKERS": addr, "DTX_KAFKA_SASL_MECHANISM": "scram-sha-256",
		"DTX_KAFKA_SASL_USERNAME": user, "DTX_KAFKA_SASL_PASSWORD_FILE": passwordFile,
		"DTX_DEFINITIONS": defs, "DTX_SCHEMAS": billingContracts, "DTX_TOPIC_PREFIX": prefix,
	}
	r = dtxctl(t, env, "saga", "start", "billing-invoice", "--json",
		"--data", `{"invoice_id":"inv-7","customer_id":"c-1","amount_cents":100,"currency":"EUR"}`)
	require.Equal(t, exitOK, r.code, r.stderr)
	var started startResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &started), r.stdout)
	r = dtxctl(t, env, "dlq", "list", "--topic", triggerTopic, "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, `"message_id": "`+started.MessageID+`"`, "the record published over SCRAM is read over SCRAM")

	wrongSecret := "wrong-" + randomHex(t)
	wrong := writeSecret(t, "wrong", wrongSecret+"\n")
	r = dtxctl(t, nil, "topics", "plan", "--kafka-brokers", addr, "--kafka-sasl-mechanism", "SCRAM-SHA-512",
		"--kafka-sasl-username", user, "--kafka-sasl-password-file", wrong, "--timeout", "20s")
	require.Equal(t, exitFailure, r.code, r.stderr)
	require.Contains(t, r.stderr, "dtxctl topics plan: kafka at "+addr+": ")
	require.Contains(t, r.stderr, "SASL_AUTHENTICATION_FAILED", "the broker's answer says why")
	require.NotContains(t, r.stderr, wrongSecret)
	require.Empty(t, r.stdout)
}

// scramListener returns a Kafka listener with SCRAM users: the development
// broker's (DTX_DEV_KAFKA_SCRAM_* of .dev/env) when it has one, else a
// private broker's, which kafkatest.StartBroker skips without java and the
// cached jars (and fails when CI=true).
func scramListener(t *testing.T) (addr, user, passwordFile string) {
	t.Helper()
	if addr := os.Getenv("DTX_DEV_KAFKA_SCRAM_BROKERS"); addr != "" {
		user, passwordFile := os.Getenv("DTX_DEV_KAFKA_SCRAM_USERNAME"), os.Getenv("DTX_DEV_KAFKA_SCRAM_PASSWORD_FILE")
		require.NotEmpty(t, user, "DTX_DEV_KAFKA_SCRAM_BROKERS is set without DTX_DEV_KAFKA_SCRAM_USERNAME")
		require.NotEmpty(t, passwordFile, "DTX_DEV_KAFKA_SCRAM_BROKERS is set without DTX_DEV_KAFKA_SCRAM_PASSWORD_FILE")
		return addr, user, passwordFile
	}
	password := randomHex(t)
	b := kafkatest.StartBroker(t, kafkatest.WithSCRAMUser("dtx", password))
	return b.SASLAddr(), "dtx", writeSecret(t, "scram.password", password+"\n")
}

// A connection string without a password connects with the password of
// --database-password-file, which overrides one the connection string has;
// the pool of the saga operations reads it too. A wrong one fails with
// PostgreSQL's answer, never printed.
func TestDatabasePasswordFile(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(pgtest.URL())
	require.NoError(t, err)
	pw, ok := u.User.Password()
	if !ok {
		t.Skipf("the test database's connection string %s has no password to move into a file", pgtest.URL())
	}
	u.User = url.User(u.User.Username())
	withoutPassword := u.String()
	u.User = url.UserPassword(u.User.Username(), "not-the-password")
	wrongInURL := u.String()
	passwordFile := writeSecret(t, "pg.password", pw+"\n")
	wrongFile := writeSecret(t, "wrong.password", "wrong-"+pw+"\n")

	schema := pgtest.NewSchemaName(t)
	r := dtxctl(t, map[string]string{"DTX_SCHEMA": schema},
		"migrate", "status", "--database-url", withoutPassword, "--database-password-file", passwordFile)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "schema   "+schema+"\nversion  0 of ")

	// Through the variables, the connection string from a file too.
	env := map[string]string{
		"DTX_SCHEMA": schema, "DTX_DATABASE_URL_FILE": writeSecret(t, "pg.url", wrongInURL+"\n"),
		"DTX_DATABASE_PASSWORD_FILE": passwordFile,
	}
	r = dtxctl(t, env, "migrate", "up")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "schema "+schema+" is at version ")

	env["DTX_DATABASE_PASSWORD_FILE"] = wrongFile
	r = dtxctl(t, env, "migrate", "status")
	require.Equal(t, exitFailure, r.code, r.stdout)
	require.Contains(t, r.stderr, "password authentication failed")
	require.NotContains(t, r.stderr, "wrong-"+pw)
	require.NotContains(t, r.stderr, "not-the-password")

	// The saga operations' pool.
	s := pgtest.NewSchema(t)
	reg, err := loadDefinitions(exampleSagas)
	require.NoError(t, err)
	o, err := orchestrator.New(s.Pool, orchestrator.Config{Schema: s.Name, Definitions: reg})
	require.NoError(t, err)
	data := map[string]any{"order_id": "ord-1", "lines": []any{map[string]any{"sku": "A", "quantity": 1}}}
	_, err = o.Start(context.Background(), nil, "order-to-cash", "ord-1", data, orchestrator.StartParams{})
	require.NoError(t, err)
	ops := map[string]string{"DTX_DATABASE_URL": withoutPassword, "DTX_SCHEMA": s.Name, "DTX_DEFINITIONS": exampleSagas}
	r = dtxctl(t, ops, "saga", "abort", "ord-1", "--reason", "test", "--database-password-file", wrongFile)
	require.Equal(t, exitFailure, r.code, r.stdout)
	require.Contains(t, r.stderr, "password authentication failed")
	r = dtxctl(t, ops, "saga", "abort", "ord-1", "--reason", "test", "--database-password-file", passwordFile)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "saga ord-1: abort, now failed")
}
