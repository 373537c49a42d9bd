package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	// pollInterval is the pause between two failed attempts.
	pollInterval = 500 * time.Millisecond
	// attemptTimeout bounds one attempt, so that a service that accepts
	// connections but never answers is retried rather than waited on.
	attemptTimeout = 5 * time.Second
)

// errTimedOut is the cause of the wait's context when its timeout passes.
var errTimedOut = errors.New("timed out")

func runWait(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, "Usage: dtx-dev wait kafka|postgres [flags]\n")
		return errUsage
	}
	switch args[0] {
	case "kafka":
		return runWaitKafka(ctx, args[1:], stdout, stderr)
	case "postgres":
		return runWaitPostgres(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "dtx-dev wait: unknown service %q: want kafka or postgres\n", args[0])
		return errUsage
	}
}

func runWaitKafka(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dtx-dev wait kafka", "dtx-dev wait kafka [flags]", stderr)
	brokersFlag := fs.String("brokers", os.Getenv("DTX_KAFKA_BROKERS"), "comma-separated `host:port` list of seed brokers (default $DTX_KAFKA_BROKERS)")
	timeout := fs.Duration("timeout", 90*time.Second, "how long to wait before giving up")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var brokers []string
	for b := range strings.SplitSeq(*brokersFlag, ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	if len(brokers) == 0 {
		fmt.Fprint(stderr, "dtx-dev wait kafka: name the brokers with --brokers or DTX_KAFKA_BROKERS\n")
		fs.Usage()
		return errUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "dtx-dev wait kafka: --timeout %s: must be positive\n", *timeout)
		return errUsage
	}

	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.DialTimeout(3*time.Second),
		kgo.ClientID("dtx-dev-wait"),
	)
	if err != nil {
		return fmt.Errorf("kafka client for %s: %w", strings.Join(brokers, ","), err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	var md kadm.Metadata
	err = poll(ctx, *timeout, func(ctx context.Context) error {
		m, err := adm.BrokerMetadata(ctx)
		if err != nil {
			return err
		}
		if len(m.Brokers) == 0 {
			return errors.New("metadata names no broker")
		}
		md = m
		return nil
	}, nil)
	if err != nil {
		return fmt.Errorf("kafka at %s: %w", strings.Join(brokers, ","), err)
	}
	fmt.Fprintf(stdout, "kafka at %s answers: %d broker(s), cluster %s\n", strings.Join(brokers, ","), len(md.Brokers), md.Cluster)
	return nil
}

func runWaitPostgres(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dtx-dev wait postgres", "dtx-dev wait postgres [flags]", stderr)
	url := fs.String("url", os.Getenv("DTX_DATABASE_URL"), "PostgreSQL connection `URL` (default $DTX_DATABASE_URL)")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to wait before giving up")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *url == "" {
		fmt.Fprint(stderr, "dtx-dev wait postgres: name the database with --url or DTX_DATABASE_URL\n")
		fs.Usage()
		return errUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "dtx-dev wait postgres: --timeout %s: must be positive\n", *timeout)
		return errUsage
	}
	// ParseConfig keeps the password out of its errors.
	cfg, err := pgx.ParseConfig(*url)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	where := fmt.Sprintf("%s:%d/%s as %s", cfg.Host, cfg.Port, cfg.Database, cfg.User)

	var version string
	err = poll(ctx, *timeout, func(ctx context.Context) error {
		conn, err := pgx.ConnectConfig(ctx, cfg.Copy())
		if err != nil {
			return err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		var one int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			return err
		}
		version = conn.PgConn().ParameterStatus("server_version")
		return nil
	}, permanentPostgresError)
	if err != nil {
		return fmt.Errorf("postgres at %s: %w", where, err)
	}
	fmt.Fprintf(stdout, "postgres at %s answers: PostgreSQL %s\n", where, version)
	return nil
}

// permanentPostgresError reports whether err cannot go away by waiting: the
// server answered and refused these credentials or this database.
func permanentPostgresError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return strings.HasPrefix(pgErr.Code, "28") || // invalid authorization
		pgErr.Code == "3D000" // invalid catalog name: no such database
}

// poll calls attempt until it succeeds, permanent (when not nil) reports its
// error as permanent, ctx ends or timeout passes. It returns nil on success
// and otherwise the most telling error seen.
func poll(ctx context.Context, timeout time.Duration, attempt func(context.Context) error, permanent func(error) bool) error {
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errTimedOut)
	defer cancel()

	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, attemptTimeout)
		err := attempt(actx)
		acancel()
		if err == nil {
			return nil
		}
		if permanent != nil && permanent(err) {
			return err
		}
		// An attempt cut short by the end of the wait says less than the
		// failure before it.
		if ctx.Err() == nil || last == nil {
			last = err
		}

		t := time.NewTimer(pollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(context.Cause(ctx), errTimedOut) {
				return fmt.Errorf("not answering after %s; last error: %w", timeout, last)
			}
			return fmt.Errorf("interrupted; last error: %w", last)
		case <-t.C:
		}
	}
}
