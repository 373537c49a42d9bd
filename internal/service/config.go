package service

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/topic"
	"github.com/vextrus/dtx/schemas"
)

// EnvPrefix starts the name of every environment variable a dtx binary reads.
const EnvPrefix = "DTX_"

// LookupEnvFunc looks up one environment variable, as os.LookupEnv does.
type LookupEnvFunc func(key string) (string, bool)

// Config holds the settings every dtx binary shares.
type Config struct {
	// DatabaseURL is the PostgreSQL connection string (URL or key=value form).
	// Defaults to postgres://dtx:dtx@127.0.0.1:5432/dtx?sslmode=disable.
	DatabaseURL string

	// KafkaBrokers are the seed brokers, host:port each.
	// Defaults to 127.0.0.1:9092.
	KafkaBrokers []string

	// Schema is the PostgreSQL schema that holds dtx's tables.
	// Defaults to "dtx"; must be a plain lower-case identifier.
	Schema string

	// Migrate applies pending migrations at start, under an advisory lock, so
	// several replicas may start at once. Defaults to false.
	Migrate bool

	// AdminAddr is where /healthz, /readyz and /metrics are served.
	// Defaults to the binary's own port (see each binary's --help); an empty
	// port (":0") picks a free one, which the start-up log line reports.
	AdminAddr string

	// LogLevel is the least severe level logged: debug, info, warn or error.
	// Defaults to info.
	LogLevel string

	// LogFormat is json or text. Defaults to json.
	LogFormat string

	// DrainTimeout bounds the graceful shutdown after SIGTERM or SIGINT: work in
	// flight finishes, then the process exits 0; past it, the process exits 1.
	// Defaults to 30s; must be between 1s and 10m.
	DrainTimeout time.Duration

	// ReadyTimeout bounds each dependency check behind /readyz.
	// Defaults to 2s; must be between 100ms and 30s.
	ReadyTimeout time.Duration

	// InstanceID names this replica in logs and metrics. Defaults to the host
	// name (the pod name on Kubernetes).
	InstanceID string

	// CreateTopics makes the binary create the Kafka topics it uses that do
	// not exist, at start (Env.RequireTopics). Defaults to false: topics are
	// provisioned with `dtxctl topics apply`, and a missing one keeps the
	// binary not ready.
	CreateTopics bool

	// TopicPartitions is the partition count of the topics CreateTopics
	// creates. Defaults to 3; -1 means the broker's num.partitions,
	// otherwise 1..10000.
	TopicPartitions int

	// TopicReplicationFactor is the replication factor of the topics
	// CreateTopics creates. Defaults to -1, the broker's
	// default.replication.factor (1 on a one-broker development cluster);
	// otherwise 1..32.
	TopicReplicationFactor int

	// SchemaDirs are directories of the service's own JSON Schemas
	// (<type>.v<version>.json each), merged with dtx's built-in schemas into
	// Env.Schemas. A directory that cannot be read, holds no schema, or
	// defines a type and version defined elsewhere stops the process at
	// start. Defaults to none: the built-in schemas only.
	SchemaDirs []string

	// TopicPrefix goes in front of every built-in topic and consumer group
	// name (see Names), so that deployments sharing a cluster keep apart.
	// Defaults to ""; it may hold what a Kafka topic may (a-z A-Z 0-9 . _ -).
	TopicPrefix string

	// Security holds Kafka TLS and SASL and the secrets read from files
	// (security.go).
	Security
}

// Names returns the built-in topic and consumer group names of the
// deployment: saga.Names(TopicPrefix).
func (c *Config) Names() saga.TopicNames { return saga.Names(c.TopicPrefix) }

var schemaNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (c *Config) validate() error {
	// First: the URL may come from a file.
	errs := []error{c.loadSecurity()}
	if strings.TrimSpace(c.DatabaseURL) == "" {
		errs = append(errs, errors.New("database-url (DTX_DATABASE_URL): must not be empty"))
	}
	if len(c.KafkaBrokers) == 0 {
		errs = append(errs, errors.New("kafka-brokers (DTX_KAFKA_BROKERS): must name at least one broker"))
	}
	for _, b := range c.KafkaBrokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("kafka-brokers (DTX_KAFKA_BROKERS): %q is not host:port", b))
		}
	}
	if !schemaNameRE.MatchString(c.Schema) {
		errs = append(errs, fmt.Errorf("schema (DTX_SCHEMA): %q is not a plain lower-case identifier", c.Schema))
	}
	if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
		errs = append(errs, fmt.Errorf("admin-addr (DTX_ADMIN_ADDR): %q is not [host]:port", c.AdminAddr))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("log-level (DTX_LOG_LEVEL): %w", err))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("log-format (DTX_LOG_FORMAT): %q is neither json nor text", c.LogFormat))
	}
	if c.DrainTimeout < time.Second || c.DrainTimeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("drain-timeout (DTX_DRAIN_TIMEOUT): %s is outside 1s..10m", c.DrainTimeout))
	}
	if c.ReadyTimeout < 100*time.Millisecond || c.ReadyTimeout > 30*time.Second {
		errs = append(errs, fmt.Errorf("ready-timeout (DTX_READY_TIMEOUT): %s is outside 100ms..30s", c.ReadyTimeout))
	}
	if strings.TrimSpace(c.InstanceID) == "" {
		errs = append(errs, errors.New("instance-id (DTX_INSTANCE_ID): must not be empty"))
	}
	if p := c.TopicPartitions; p != -1 && (p < 1 || p > 10000) {
		errs = append(errs, fmt.Errorf("topic-partitions (DTX_TOPIC_PARTITIONS): %d is neither -1 nor within 1..10000", p))
	}
	if rf := c.TopicReplicationFactor; rf != -1 && (rf < 1 || rf > 32) {
		errs = append(errs, fmt.Errorf("topic-replication-factor (DTX_TOPIC_REPLICATION_FACTOR): %d is neither -1 nor within 1..32", rf))
	}
	if c.TopicPrefix != "" {
		// The longest built-in name it starts is the reply topic's
		// dead-letter topic.
		if err := topic.ValidateName(c.Names().Replies + messaging.DeadLetterSuffix); err != nil {
			errs = append(errs, fmt.Errorf("topic-prefix (DTX_TOPIC_PREFIX): %q makes a name Kafka refuses: %w", c.TopicPrefix, err))
		}
	}
	for _, d := range c.SchemaDirs {
		if strings.TrimSpace(d) == "" {
			errs = append(errs, errors.New("schemas (DTX_SCHEMAS): a directory is empty"))
		}
	}
	return errors.Join(errs...)
}

// loadSchemas merges dtx's built-in schemas with those of dirs.
func loadSchemas(dirs []string) (*messaging.SchemaRegistry, error) {
	srcs := append([]messaging.SchemaSource{schemas.Source()}, messaging.SchemaDirs(dirs...)...)
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{Sources: srcs})
	if err != nil {
		return nil, fmt.Errorf("schemas (DTX_SCHEMAS): %w", err)
	}
	return reg, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
	}
	return l, nil
}

// Settings parses a binary's command line and DTX_* environment: a flag given
// on the command line wins over its environment variable, which wins over the
// default. Each flag --some-name reads DTX_SOME_NAME.
type Settings struct {
	fs      *flag.FlagSet
	secrets map[string]bool
}

// NewSettings returns the settings of the binary name; summary heads --help.
func NewSettings(name, summary string, output io.Writer) *Settings {
	s := &Settings{fs: flag.NewFlagSet(name, flag.ContinueOnError), secrets: map[string]bool{}}
	s.fs.SetOutput(output)
	s.fs.Usage = func() { s.usage(summary) }
	return s
}

// FlagSet returns the underlying flag set, for binary-specific settings.
func (s *Settings) FlagSet() *flag.FlagSet { return s.fs }

// Secret marks the flag name as holding credentials: --help and errors redact
// any password in it.
func (s *Settings) Secret(name string) { s.secrets[name] = true }

// EnvName returns the environment variable that sets the flag name.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse reads args, then fills every flag not given on the command line from
// its environment variable. It returns flag.ErrHelp for -h/--help.
func (s *Settings) Parse(args []string, env LookupEnvFunc) error {
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	if s.fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(s.fs.Args(), " "))
	}
	given := map[string]bool{}
	s.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	s.fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		v, ok := env(EnvName(f.Name))
		if !ok {
			return
		}
		if err := f.Value.Set(v); err != nil {
			shown := v
			if s.secrets[f.Name] {
				shown = RedactURL(v)
			}
			errs = append(errs, fmt.Errorf("%s (%s): invalid value %q: %w", f.Name, EnvName(f.Name), shown, err))
		}
	})
	return errors.Join(errs...)
}

func (s *Settings) usage(summary string) {
	w := s.fs.Output()
	fmt.Fprintf(w, "%s\n\nUsage: %s [flags]\n\nEvery flag --name can be set by the environment variable DTX_NAME\n(upper case, dashes as underscores); a flag on the command line wins.\n\nSettings:\n", strings.TrimSpace(summary), s.fs.Name())
	var flags []*flag.Flag
	s.fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	for _, f := range flags {
		def := f.DefValue
		if s.secrets[f.Name] {
			def = RedactURL(def)
		}
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%s  (env %s, default %s)\n      %s\n", f.Name, EnvName(f.Name), def, f.Usage)
	}
}

// listValue is a comma-separated list flag.
type listValue struct{ p *[]string }

func (l listValue) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listValue) Set(s string) error {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	*l.p = out
	return nil
}

// appendListValue is a list flag that may be repeated: each value, itself
// comma-separated, adds to the list.
type appendListValue struct{ p *[]string }

func (l appendListValue) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l appendListValue) Set(s string) error {
	var more []string
	if err := (listValue{&more}).Set(s); err != nil {
		return err
	}
	*l.p = append(*l.p, more...)
	return nil
}

// registerShared declares the flags of Config with their defaults.
func registerShared(s *Settings, c *Config, defaultAdminAddr string) {
	fs := s.fs
	c.KafkaBrokers = []string{"127.0.0.1:9092"}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "dtx"
	}
	fs.StringVar(&c.DatabaseURL, "database-url", "postgres://dtx:dtx@127.0.0.1:5432/dtx?sslmode=disable",
		"PostgreSQL connection string")
	s.Secret("database-url")
	fs.Var(listValue{&c.KafkaBrokers}, "kafka-brokers", "Kafka seed brokers, comma-separated host:port")
	fs.StringVar(&c.Schema, "schema", "dtx", "PostgreSQL schema of dtx's tables")
	fs.BoolVar(&c.Migrate, "migrate", false, "apply pending migrations at start (under an advisory lock)")
	fs.StringVar(&c.AdminAddr, "admin-addr", defaultAdminAddr, "address of /healthz, /readyz and /metrics")
	fs.StringVar(&c.LogLevel, "log-level", "info", "least severe level logged: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "json", "log format: json or text")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 30*time.Second, "graceful shutdown limit after SIGTERM/SIGINT (1s..10m)")
	fs.DurationVar(&c.ReadyTimeout, "ready-timeout", 2*time.Second, "limit of each dependency check behind /readyz (100ms..30s)")
	fs.StringVar(&c.InstanceID, "instance-id", host, "name of this replica in logs and metrics")
	fs.BoolVar(&c.CreateTopics, "create-topics", false,
		"create the Kafka topics the binary uses that do not exist, at start (otherwise provision them with dtxctl topics apply)")
	fs.IntVar(&c.TopicPartitions, "topic-partitions", 3, "with --create-topics: partitions of each topic created (-1: the broker's num.partitions)")
	fs.IntVar(&c.TopicReplicationFactor, "topic-replication-factor", -1,
		"with --create-topics: replication factor of each topic created (-1: the broker's default.replication.factor)")
	fs.Var(appendListValue{&c.SchemaDirs}, "schemas",
		"directory of the service's own JSON Schemas (<type>.v<version>.json), merged with the built-in ones; repeat the flag (or separate with commas) for several; a type and version defined twice is an error")
	fs.StringVar(&c.TopicPrefix, "topic-prefix", "",
		"prefix of every built-in topic and consumer group name (e.g. team-a. gives team-a.dtx.saga.replies), to share a cluster between deployments")
	registerSecurity(s, c)
}

// RedactURL hides the password of a PostgreSQL URL or key=value connection
// string, so configuration errors and logs never show it.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return keywordPasswordRE.ReplaceAllString(s, "${1}xxxxx")
}

var keywordPasswordRE = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
