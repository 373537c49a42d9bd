package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// SASL mechanisms that --kafka-sasl-mechanism accepts.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// Security holds the settings that secure a binary's connections to Kafka
// and PostgreSQL. Secrets are only ever read from files (a Kubernetes secret
// mount, a Docker secret): no flag or variable holds a password itself, and
// none is logged.
type Security struct {
	// KafkaTLS dials the brokers with TLS. Defaults to false; setting any
	// other KafkaTLS* field turns it on too.
	KafkaTLS bool

	// KafkaTLSCAFile is a PEM file of the CA certificates that sign the
	// brokers' certificates. Defaults to "": the system's roots.
	KafkaTLSCAFile string

	// KafkaTLSCertFile and KafkaTLSKeyFile are the PEM client certificate and
	// its key, for brokers that require mutual TLS. Defaults to "": no
	// client certificate; one without the other is an error.
	KafkaTLSCertFile string
	KafkaTLSKeyFile  string

	// KafkaTLSServerName is the name checked against the brokers'
	// certificates. Defaults to "": the host of each broker address dialled.
	KafkaTLSServerName string

	// KafkaTLSInsecureSkipVerify accepts any broker certificate. Defaults to
	// false; for a test cluster only: it is logged as a warning at start.
	KafkaTLSInsecureSkipVerify bool

	// KafkaSASLMechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (any case).
	// Defaults to "": no SASL. It needs KafkaSASLUsername and
	// KafkaSASLPasswordFile.
	KafkaSASLMechanism string

	// KafkaSASLUsername is the SASL user name. Defaults to "".
	KafkaSASLUsername string

	// KafkaSASLPasswordFile is a file holding the SASL password; one trailing
	// newline is ignored. It is read at start (to fail early) and again at
	// each authentication, so a rotated secret is picked up by new
	// connections. Defaults to "".
	KafkaSASLPasswordFile string

	// DatabaseURLFile is a file holding the PostgreSQL connection string,
	// instead of --database-url (setting both is an error); one trailing
	// newline is ignored. Defaults to "".
	DatabaseURLFile string

	// DatabasePasswordFile is a file holding the PostgreSQL password; it
	// overrides any password of the connection string. Read at start and
	// again before each new connection. Defaults to "": the connection
	// string's password, PGPASSWORD, or PGPASSFILE (~/.pgpass), as pgx does.
	DatabasePasswordFile string

	databaseURLSet bool      // --database-url was given (flag or env)
	kafkaOpts      []kgo.Opt // built by loadSecurity
}

// setTracker records whether a flag was set, from the command line or its
// environment variable.
type setTracker struct {
	flag.Value
	set *bool
}

func (t setTracker) Set(s string) error {
	*t.set = true
	return t.Value.Set(s)
}

// IsBoolFlag keeps a tracked boolean flag usable without a value.
func (t setTracker) IsBoolFlag() bool {
	b, ok := t.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// registerSecurity declares the flags of Security; it runs after
// --database-url is declared.
func registerSecurity(s *Settings, c *Config) {
	c.RegisterKafkaFlags(s.fs)
	c.RegisterDatabaseFlags(s.fs)
}

// RegisterKafkaFlags declares the Kafka TLS and SASL settings of s on fs,
// with the binaries' names and help (--kafka-tls, --kafka-tls-ca-file,
// --kafka-tls-cert-file, --kafka-tls-key-file, --kafka-tls-server-name,
// --kafka-tls-insecure-skip-verify, --kafka-sasl-mechanism,
// --kafka-sasl-username, --kafka-sasl-password-file), and returns their
// names; EnvName gives each one's variable. KafkaOptions checks them.
func (s *Security) RegisterKafkaFlags(fs *flag.FlagSet) []string {
	fs.BoolVar(&s.KafkaTLS, "kafka-tls", false,
		"dial the Kafka brokers with TLS (implied by any other --kafka-tls-* setting)")
	fs.StringVar(&s.KafkaTLSCAFile, "kafka-tls-ca-file", "",
		"PEM file of the CA certificates that sign the brokers' certificates (default: the system's roots)")
	fs.StringVar(&s.KafkaTLSCertFile, "kafka-tls-cert-file", "",
		"PEM client certificate, for brokers that require mutual TLS (needs --kafka-tls-key-file)")
	fs.StringVar(&s.KafkaTLSKeyFile, "kafka-tls-key-file", "",
		"PEM private key of --kafka-tls-cert-file")
	fs.StringVar(&s.KafkaTLSServerName, "kafka-tls-server-name", "",
		"name checked against the brokers' certificates (default: the host of each broker address)")
	fs.BoolVar(&s.KafkaTLSInsecureSkipVerify, "kafka-tls-insecure-skip-verify", false,
		"accept any broker certificate: test clusters only, logged as a warning")
	fs.StringVar(&s.KafkaSASLMechanism, "kafka-sasl-mechanism", "",
		"Kafka SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default: no SASL)")
	fs.StringVar(&s.KafkaSASLUsername, "kafka-sasl-username", "", "Kafka SASL user name")
	fs.StringVar(&s.KafkaSASLPasswordFile, "kafka-sasl-password-file", "",
		"file holding the Kafka SASL password (one trailing newline ignored; re-read at each authentication)")
	return []string{"kafka-tls", "kafka-tls-ca-file", "kafka-tls-cert-file", "kafka-tls-key-file", "kafka-tls-server-name",
		"kafka-tls-insecure-skip-verify", "kafka-sasl-mechanism", "kafka-sasl-username", "kafka-sasl-password-file"}
}

// RegisterDatabaseFlags declares --database-url-file and
// --database-password-file of s on fs and returns their names. It runs after
// --database-url is declared on fs, so that ResolveDatabaseURL knows whether
// that flag was set too.
func (s *Security) RegisterDatabaseFlags(fs *flag.FlagSet) []string {
	if f := fs.Lookup("database-url"); f != nil {
		f.Value = setTracker{Value: f.Value, set: &s.databaseURLSet}
	}
	fs.StringVar(&s.DatabaseURLFile, "database-url-file", "",
		"file holding the PostgreSQL connection string, instead of --database-url (one trailing newline ignored)")
	fs.StringVar(&s.DatabasePasswordFile, "database-password-file", "",
		"file holding the PostgreSQL password, overriding the connection string's (re-read for each new connection)")
	return []string{"database-url-file", "database-password-file"}
}

// readSecretFile reads a secret from path, without one trailing newline.
// Its errors name the setting and the path, never the content.
func readSecretFile(setting, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s (%s): cannot read %s: %w", setting, EnvName(setting), path, unwrapPathError(err))
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if v == "" {
		return "", fmt.Errorf("%s (%s): %s is empty", setting, EnvName(setting), path)
	}
	return v, nil
}

// unwrapPathError drops the path os.ReadFile repeats in its error.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// loadSecurity checks the security settings, reads the files they name and
// builds the Kafka options; it replaces DatabaseURL with the content of
// DatabaseURLFile. Every error names its setting.
func (c *Config) loadSecurity() error {
	sec := &c.Security
	var errs []error
	u, err := sec.ResolveDatabaseURL(c.DatabaseURL)
	c.DatabaseURL = u
	if err != nil {
		errs = append(errs, err)
	}
	opts, err := sec.KafkaOptions()
	if err != nil {
		errs = append(errs, err)
	}
	sec.kafkaOpts = opts
	return errors.Join(errs...)
}

// ResolveDatabaseURL checks the PostgreSQL settings and returns the
// connection string to use: the content of DatabaseURLFile, else
// databaseURL (--database-url). It reads DatabasePasswordFile, to fail
// early, and the files the connection string names (sslrootcert, sslcert,
// sslkey, passfile). Every error names its setting, never a secret; the
// connection string is returned even with an error.
func (s *Security) ResolveDatabaseURL(databaseURL string) (string, error) {
	var errs []error
	if s.DatabaseURLFile != "" {
		if s.databaseURLSet {
			errs = append(errs, errors.New("database-url-file (DTX_DATABASE_URL_FILE): set together with database-url (DTX_DATABASE_URL); set only one"))
		} else if u, err := readSecretFile("database-url-file", s.DatabaseURLFile); err != nil {
			errs = append(errs, err)
		} else {
			databaseURL = u
		}
	}
	if s.DatabasePasswordFile != "" {
		if _, err := readSecretFile("database-password-file", s.DatabasePasswordFile); err != nil {
			errs = append(errs, err)
		}
	}
	if strings.TrimSpace(databaseURL) != "" {
		// sslrootcert, sslcert, sslkey and passfile are read here: a
		// missing file is a configuration error, not a connection error.
		if _, err := pgconn.ParseConfig(databaseURL); err != nil {
			errs = append(errs, s.databaseURLError(databaseURL, err))
		}
	}
	return databaseURL, errors.Join(errs...)
}

// databaseURLError names the setting the connection string came from and
// what pgx found wrong, without the connection string's password.
func (s *Security) databaseURLError(databaseURL string, err error) error {
	setting := "database-url (DTX_DATABASE_URL)"
	if s.DatabaseURLFile != "" {
		setting = "database-url-file (DTX_DATABASE_URL_FILE)"
	}
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) && errors.Unwrap(pe) != nil {
		// pe.Error() quotes the connection string; what it wraps does not
		// (e.g. "unable to read CA file: open ...").
		return fmt.Errorf("%s %s: cannot be used: %w", setting, RedactURL(databaseURL), errors.Unwrap(pe))
	}
	return fmt.Errorf("%s %s: cannot be parsed", setting, RedactURL(databaseURL))
}

// tlsOn reports whether the brokers are dialled with TLS.
func (s *Security) tlsOn() bool {
	return s.KafkaTLS || s.KafkaTLSCAFile != "" || s.KafkaTLSCertFile != "" || s.KafkaTLSKeyFile != "" ||
		s.KafkaTLSServerName != "" || s.KafkaTLSInsecureSkipVerify
}

// KafkaOptions checks the Kafka TLS and SASL settings, reading the files
// they name, and returns the franz-go options that apply them (TLS dialing,
// SASL); none when neither is configured. Every error names its setting.
func (s *Security) KafkaOptions() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	var errs []error
	if s.tlsOn() {
		cfg, err := s.KafkaTLSConfig()
		if err != nil {
			errs = append(errs, err)
		} else {
			opts = append(opts, kgo.DialTLSConfig(cfg))
		}
	}
	mech, err := s.saslMechanism()
	if err != nil {
		errs = append(errs, err)
	} else if mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	return opts, errors.Join(errs...)
}

// KafkaTLSConfig builds the TLS configuration of the Kafka settings: the CA
// pool of KafkaTLSCAFile (else the system's), the client certificate of
// KafkaTLSCertFile and KafkaTLSKeyFile, the server name and TLS 1.2 at
// least. Its errors name the setting.
func (s *Security) KafkaTLSConfig() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         s.KafkaTLSServerName,
		InsecureSkipVerify: s.KafkaTLSInsecureSkipVerify, //nolint:gosec // opt-in, warned about at start
	}
	var errs []error
	if s.KafkaTLSCAFile != "" {
		pem, err := os.ReadFile(s.KafkaTLSCAFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("kafka-tls-ca-file (DTX_KAFKA_TLS_CA_FILE): cannot read %s: %w", s.KafkaTLSCAFile, unwrapPathError(err)))
		} else {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("kafka-tls-ca-file (DTX_KAFKA_TLS_CA_FILE): %s holds no PEM certificate", s.KafkaTLSCAFile))
			}
			cfg.RootCAs = pool
		}
	}
	switch {
	case s.KafkaTLSCertFile != "" && s.KafkaTLSKeyFile == "":
		errs = append(errs, errors.New("kafka-tls-cert-file (DTX_KAFKA_TLS_CERT_FILE): set without kafka-tls-key-file (DTX_KAFKA_TLS_KEY_FILE)"))
	case s.KafkaTLSKeyFile != "" && s.KafkaTLSCertFile == "":
		errs = append(errs, errors.New("kafka-tls-key-file (DTX_KAFKA_TLS_KEY_FILE): set without kafka-tls-cert-file (DTX_KAFKA_TLS_CERT_FILE)"))
	case s.KafkaTLSCertFile != "":
		for _, f := range []struct{ name, path string }{
			{"kafka-tls-cert-file", s.KafkaTLSCertFile}, {"kafka-tls-key-file", s.KafkaTLSKeyFile},
		} {
			if _, err := os.Stat(f.path); err != nil {
				errs = append(errs, fmt.Errorf("%s (%s): cannot read %s: %w", f.name, EnvName(f.name), f.path, unwrapPathError(err)))
			}
		}
		if len(errs) > 0 {
			break
		}
		cert, err := tls.LoadX509KeyPair(s.KafkaTLSCertFile, s.KafkaTLSKeyFile)
		if err != nil {
			// tls's message is about the PEM blocks, never their content.
			errs = append(errs, fmt.Errorf("kafka-tls-cert-file (DTX_KAFKA_TLS_CERT_FILE), kafka-tls-key-file (DTX_KAFKA_TLS_KEY_FILE): %w", err))
		} else {
			cfg.Certificates = []tls.Certificate{cert}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// saslMechanism returns the SASL mechanism of the settings, nil for none.
// The password file is read now, to fail early, and at each authentication.
func (s *Security) saslMechanism() (sasl.Mechanism, error) {
	mech := strings.ToUpper(strings.TrimSpace(s.KafkaSASLMechanism))
	if mech == "" {
		if s.KafkaSASLUsername != "" || s.KafkaSASLPasswordFile != "" {
			return nil, errors.New("kafka-sasl-mechanism (DTX_KAFKA_SASL_MECHANISM): empty, but kafka-sasl-username or kafka-sasl-password-file is set; name PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
		return nil, nil
	}
	var errs []error
	if mech != SASLPlain && mech != SASLScramSHA256 && mech != SASLScramSHA512 {
		errs = append(errs, fmt.Errorf("kafka-sasl-mechanism (DTX_KAFKA_SASL_MECHANISM): %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", s.KafkaSASLMechanism))
	}
	if strings.TrimSpace(s.KafkaSASLUsername) == "" {
		errs = append(errs, fmt.Errorf("kafka-sasl-username (DTX_KAFKA_SASL_USERNAME): must be set with kafka-sasl-mechanism %s", mech))
	}
	if s.KafkaSASLPasswordFile == "" {
		errs = append(errs, fmt.Errorf("kafka-sasl-password-file (DTX_KAFKA_SASL_PASSWORD_FILE): must be set with kafka-sasl-mechanism %s", mech))
	} else if _, err := readSecretFile("kafka-sasl-password-file", s.KafkaSASLPasswordFile); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	user, file := s.KafkaSASLUsername, s.KafkaSASLPasswordFile
	password := func() (string, error) { return readSecretFile("kafka-sasl-password-file", file) }
	switch mech {
	case SASLPlain:
		return plain.Plain(func(context.Context) (plain.Auth, error) {
			p, err := password()
			return plain.Auth{User: user, Pass: p}, err
		}), nil
	case SASLScramSHA256:
		return scram.Sha256(func(context.Context) (scram.Auth, error) {
			p, err := password()
			return scram.Auth{User: user, Pass: p}, err
		}), nil
	default:
		return scram.Sha512(func(context.Context) (scram.Auth, error) {
			p, err := password()
			return scram.Auth{User: user, Pass: p}, err
		}), nil
	}
}

// KafkaOpts returns the franz-go options that secure a Kafka client (TLS
// dialing, SASL), built from validated settings: every Kafka client a binary
// creates adds them to its own options. Empty when neither is configured.
func (c *Config) KafkaOpts() []kgo.Opt { return append([]kgo.Opt(nil), c.kafkaOpts...) }

// applyDatabaseSecrets makes the pool read the password of
// DatabasePasswordFile before each new connection.
func (c *Config) applyDatabaseSecrets(poolCfg *pgxpool.Config) {
	c.ApplyDatabasePassword(poolCfg)
}

// ApplyDatabasePassword makes the pool read the password of
// DatabasePasswordFile before each new connection (SetDatabasePassword);
// it changes nothing without the file.
func (s *Security) ApplyDatabasePassword(poolCfg *pgxpool.Config) {
	file := s.DatabasePasswordFile
	if file == "" {
		return
	}
	next := poolCfg.BeforeConnect
	poolCfg.BeforeConnect = func(ctx context.Context, cc *pgx.ConnConfig) error {
		p, err := readSecretFile("database-password-file", file)
		if err != nil {
			return err
		}
		cc.Password = p
		if next != nil {
			return next(ctx, cc)
		}
		return nil
	}
}

// SetDatabasePassword sets the password of cc to the content of
// DatabasePasswordFile, read now, for one connection (pgx.ConnectConfig);
// it changes nothing without the file. Its error names the setting.
func (s *Security) SetDatabasePassword(cc *pgx.ConnConfig) error {
	if s.DatabasePasswordFile == "" {
		return nil
	}
	p, err := readSecretFile("database-password-file", s.DatabasePasswordFile)
	if err != nil {
		return err
	}
	cc.Password = p
	return nil
}

// securityLogAttrs describes the security settings for the start-up log
// line: which are on and the files used, never a secret.
func (c *Config) securityLogAttrs() []any {
	attrs := []any{"kafka_tls", c.tlsOn()}
	if m := c.KafkaSASLMechanism; m != "" {
		attrs = append(attrs, "kafka_sasl_mechanism", strings.ToUpper(m), "kafka_sasl_username", c.KafkaSASLUsername)
	}
	if c.DatabaseURLFile != "" {
		attrs = append(attrs, "database_url_file", c.DatabaseURLFile)
	}
	if c.DatabasePasswordFile != "" {
		attrs = append(attrs, "database_password_file", c.DatabasePasswordFile)
	}
	return attrs
}

// InsecureSkipVerifyWarning is the warning given when
// KafkaTLSInsecureSkipVerify is on.
const InsecureSkipVerifyWarning = "INSECURE: kafka-tls-insecure-skip-verify is on: the brokers' certificates are NOT verified, " +
	"so anyone on the network path can impersonate them; use it only against a test cluster"

// warnInsecure logs what weakens the connections' security.
func (c *Config) warnInsecure(log *slog.Logger) {
	if c.KafkaTLSInsecureSkipVerify {
		log.Warn(InsecureSkipVerifyWarning)
	}
}
