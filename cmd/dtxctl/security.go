package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/service"
)

// clientID is the client id of every Kafka client dtxctl opens, seen in the
// brokers' logs, metrics and quotas.
const clientID = "dtxctl"

// securedConnectionsHelp closes the help of every command that talks to
// Kafka or PostgreSQL, and dtxctl's own.
const securedConnectionsHelp = `Secured connections: the --kafka-tls*, --kafka-sasl-* and --database-*-file
settings are those of the dtx binaries, with the same environment variables;
see docs/security.md. Secrets are read from files only (one trailing newline is
ignored); dtxctl prints the files' names, never their content.`

// settingsError is a setting that cannot be used, found before connecting:
// run prints it, one line per problem, and exits 2.
type settingsError struct{ err error }

func (e settingsError) Error() string { return e.err.Error() }
func (e settingsError) Unwrap() error { return e.err }

// printSettingsError prints each line of err prefixed with path.
func printSettingsError(w io.Writer, path string, err error) {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintf(w, "%s: %s\n", path, line)
	}
}

// kafkaSecurity are the Kafka TLS and SASL settings of a command that talks
// to Kafka, as the binaries have them.
type kafkaSecurity struct {
	sec  service.Security
	opts []kgo.Opt // built by load
}

func (k *kafkaSecurity) register(f *flags) {
	for _, name := range k.sec.RegisterKafkaFlags(f.fs) {
		f.env(name, service.EnvName(name), false)
	}
}

// load checks the settings and reads the files they name; its errors name
// the setting. It warns on w when the brokers' certificates go unchecked.
func (k *kafkaSecurity) load(w io.Writer, path string) error {
	opts, err := k.sec.KafkaOptions()
	if err != nil {
		return err
	}
	k.opts = opts
	if k.sec.KafkaTLSInsecureSkipVerify {
		fmt.Fprintf(w, "%s: warning: %s\n", path, service.InsecureSkipVerifyWarning)
	}
	return nil
}

// clientOpts returns the options of a Kafka client of brokers: the seed
// brokers, dtxctl's client id, TLS and SASL, then more.
func (k *kafkaSecurity) clientOpts(brokers []string, more ...kgo.Opt) []kgo.Opt {
	opts := append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ClientID(clientID)}, k.opts...)
	return append(opts, more...)
}
