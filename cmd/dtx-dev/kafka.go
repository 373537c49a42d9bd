package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
)

// kafkaParams are the settings of the embedded development broker.
type kafkaParams struct {
	// Addr is the host:port the broker listens on and advertises to clients.
	// Defaults to 127.0.0.1:9092; the host must be a specific address that
	// clients can dial (not 0.0.0.0 or ::), and port 0 picks a free port.
	Addr string
	// DataDir is where the broker saves its state between runs. Defaults to
	// empty: everything is kept in memory only.
	DataDir string
	// Partitions is how many partitions an automatically created topic gets.
	// Defaults to 1; must be between 1 and 1000.
	Partitions int
	// LogLevel is the least severe broker log line printed: none, error,
	// warn, info or debug. Defaults to warn.
	LogLevel string
}

func runKafka(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	p := kafkaParams{}
	fs := newFlagSet("dtx-dev kafka", "dtx-dev kafka [flags]", stderr)
	fs.StringVar(&p.Addr, "addr", "127.0.0.1:9092", "`host:port` to listen on and advertise (port 0 picks a free one)")
	fs.StringVar(&p.DataDir, "data-dir", "", "`folder` to persist the broker's state in (default: memory only)")
	fs.IntVar(&p.Partitions, "partitions", 1, "partitions of an automatically created topic (1-1000)")
	fs.StringVar(&p.LogLevel, "log-level", "warn", "broker log level: none, error, warn, info or debug")
	if err := parseFlags(fs, args); err != nil {
		return err
	}

	opts, listenAddr, err := p.options(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "dtx-dev kafka: %v\n", err)
		fs.Usage()
		return errUsage
	}

	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start embedded broker on %s: %w", listenAddr, err)
	}
	addrs := strings.Join(c.ListenAddrs(), ",")
	fmt.Fprintf(stderr, `WARNING: ================================================================
WARNING: dtx-dev kafka is the EMBEDDED DEVELOPMENT BROKER (franz-go kfake),
WARNING: not Apache Kafka. It is for development only: results obtained
WARNING: against it are not proof that dtx works with Apache Kafka.
WARNING: ================================================================
`)
	fmt.Fprintf(stdout, "dtx-dev kafka: listening on %s (auto topic creation on, %d partition(s) per new topic)\n", addrs, p.Partitions)

	<-ctx.Done()
	fmt.Fprintf(stdout, "dtx-dev kafka: stopping\n")
	c.Close()
	return nil
}

// options validates p and returns the kfake options it stands for and the
// address the broker will listen on.
func (p kafkaParams) options(stderr io.Writer) ([]kfake.Opt, string, error) {
	host, portText, err := net.SplitHostPort(p.Addr)
	if err != nil {
		return nil, "", fmt.Errorf("--addr %q: %w", p.Addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 0 || port > 65535 {
		return nil, "", fmt.Errorf("--addr %q: port must be a number between 0 and 65535", p.Addr)
	}
	if host == "" {
		return nil, "", fmt.Errorf("--addr %q: name a host, such as 127.0.0.1", p.Addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		// The broker advertises its listener's address, which clients could
		// not dial for an unspecified address.
		return nil, "", fmt.Errorf("--addr %q: the host must be an address clients can dial, not %s", p.Addr, host)
	}
	if p.Partitions < 1 || p.Partitions > 1000 {
		return nil, "", fmt.Errorf("--partitions %d: must be between 1 and 1000", p.Partitions)
	}
	level, err := parseKfakeLevel(p.LogLevel)
	if err != nil {
		return nil, "", err
	}

	listenAddr := net.JoinHostPort(host, portText)
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ClusterID("dtx-dev-kfake"),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(p.Partitions),
		kfake.WithLogger(kfake.BasicLogger(stderr, level)),
		// kfake always asks for 127.0.0.1; listen on the address asked for.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, listenAddr)
		}),
	}
	if p.DataDir != "" {
		opts = append(opts, kfake.DataDir(p.DataDir))
	}
	return opts, listenAddr, nil
}

func parseKfakeLevel(s string) (kfake.LogLevel, error) {
	switch strings.ToLower(s) {
	case "none":
		return kfake.LogLevelNone, nil
	case "error":
		return kfake.LogLevelError, nil
	case "warn", "warning":
		return kfake.LogLevelWarn, nil
	case "info":
		return kfake.LogLevelInfo, nil
	case "debug":
		return kfake.LogLevelDebug, nil
	default:
		return kfake.LogLevelNone, fmt.Errorf("--log-level %q: must be none, error, warn, info or debug", s)
	}
}
