package service

import (
	"bytes"
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func envOf(m map[string]string) LookupEnvFunc {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func parse(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	var cfg Config
	s := NewSettings("test", "a test binary", &bytes.Buffer{})
	registerShared(s, &cfg, ":9999")
	if err := s.Parse(args, envOf(env)); err != nil {
		return cfg, err
	}
	return cfg, cfg.validate()
}

func TestSettingsDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := parse(t, nil, nil)
	require.NoError(t, err)
	require.Equal(t, "postgres://dtx:dtx@127.0.0.1:5432/dtx?sslmode=disable", cfg.DatabaseURL)
	require.Equal(t, []string{"127.0.0.1:9092"}, cfg.KafkaBrokers)
	require.Equal(t, "dtx", cfg.Schema)
	require.False(t, cfg.Migrate)
	require.Equal(t, ":9999", cfg.AdminAddr)
	require.Equal(t, 30*time.Second, cfg.DrainTimeout)
	require.NotEmpty(t, cfg.InstanceID)
}

func TestSettingsEnvThenFlags(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"DTX_KAFKA_BROKERS": "k1:9092, k2:9092",
		"DTX_SCHEMA":        "from_env",
		"DTX_MIGRATE":       "true",
		"DTX_DRAIN_TIMEOUT": "5s",
	}
	cfg, err := parse(t, []string{"--schema", "from_flag"}, env)
	require.NoError(t, err)
	require.Equal(t, []string{"k1:9092", "k2:9092"}, cfg.KafkaBrokers)
	require.Equal(t, "from_flag", cfg.Schema, "a flag wins over its environment variable")
	require.True(t, cfg.Migrate)
	require.Equal(t, 5*time.Second, cfg.DrainTimeout)
}

func TestSettingsInvalidNamesTheField(t *testing.T) {
	t.Parallel()
	_, err := parse(t, nil, map[string]string{"DTX_DRAIN_TIMEOUT": "forever"})
	require.ErrorContains(t, err, "DTX_DRAIN_TIMEOUT")

	_, err = parse(t, []string{"--schema", "Bad-Name", "--log-level", "loud", "--kafka-brokers", "nohostport"}, nil)
	require.ErrorContains(t, err, "schema (DTX_SCHEMA)")
	require.ErrorContains(t, err, "log-level (DTX_LOG_LEVEL)")
	require.ErrorContains(t, err, "kafka-brokers (DTX_KAFKA_BROKERS)")

	_, err = parse(t, []string{"--drain-timeout", "0s"}, nil)
	require.ErrorContains(t, err, "drain-timeout (DTX_DRAIN_TIMEOUT)")

	_, err = parse(t, []string{"stray"}, nil)
	require.ErrorContains(t, err, "unexpected arguments: stray")
}

func TestSettingsInvalidSecretIsRedacted(t *testing.T) {
	t.Parallel()
	var cfg Config
	s := NewSettings("test", "", &bytes.Buffer{})
	registerShared(s, &cfg, ":1")
	var n int
	s.FlagSet().IntVar(&n, "database-pool-size", 4, "")
	s.Secret("database-pool-size")
	err := s.Parse(nil, envOf(map[string]string{"DTX_DATABASE_POOL_SIZE": "postgres://u:hunter2@h/db"}))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "hunter2")
}

func TestHelpListsEverySetting(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	var cfg Config
	s := NewSettings("test", "a test binary", &out)
	registerShared(s, &cfg, ":9999")
	err := s.Parse([]string{"--help"}, envOf(nil))
	require.ErrorIs(t, err, flag.ErrHelp)
	help := out.String()
	require.Contains(t, help, "a test binary")
	s.FlagSet().VisitAll(func(f *flag.Flag) {
		require.Contains(t, help, "--"+f.Name+"  (env "+EnvName(f.Name)+", default ")
	})
	require.Contains(t, help, "default postgres://dtx:xxxxx@127.0.0.1:5432/dtx?sslmode=disable")
	require.NotContains(t, help, "dtx:dtx@")
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u:secret@h:5432/db?sslmode=disable": "postgres://u:xxxxx@h:5432/db?sslmode=disable",
		"postgres://u@h/db?password=secret":             "postgres://u@h/db?password=xxxxx",
		"postgres://h/db":                               "postgres://h/db",
		"host=h user=u password=secret dbname=d":        "host=h user=u password=xxxxx dbname=d",
		"host=h password='se cret' dbname=d":            "host=h password=xxxxx dbname=d",
	} {
		got := RedactURL(in)
		require.Equal(t, want, got, in)
		require.NotContains(t, got, "secret")
	}
}
