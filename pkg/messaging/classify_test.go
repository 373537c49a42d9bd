package messaging_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
)

func TestIsRetryable(t *testing.T) {
	t.Parallel()
	pg := func(code string) error {
		return &pgconn.PgError{Severity: "ERROR", Code: code, Message: "sqlstate " + code}
	}
	boom := errors.New("boom")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},

		{"permanent", messaging.Permanent(boom), false},
		{"permanent wrapped", fmt.Errorf("handle: %w", messaging.Permanent(boom)), false},
		{"permanent around a retryable error", messaging.Permanent(pg("40001")), false},
		{"permanent joined with a retryable error", errors.Join(pg("40001"), messaging.Permanent(boom)), false},

		{"decode error", &messaging.DecodeError{Field: messaging.HeaderID, Reason: "missing"}, false},
		{"schema error", fmt.Errorf("validate: %w", &messaging.SchemaError{Type: "t", Version: 1}), false},
		{"unknown type", fmt.Errorf("validate: %w", messaging.ErrUnknownType), false},
		{"invalid envelope", messaging.ErrInvalidEnvelope, false},

		{"context canceled", context.Canceled, true},
		{"context deadline wrapped", fmt.Errorf("query: %w", context.DeadlineExceeded), true},

		{"pg serialization_failure", pg("40001"), true},
		{"pg deadlock_detected", pg("40P01"), true},
		{"pg transaction_rollback", pg("40000"), true},
		{"pg statement_completion_unknown", pg("40003"), true},
		{"pg deferred constraint at commit", pg("40002"), false},
		{"pg connection_failure", pg("08006"), true},
		{"pg sqlclient_unable_to_establish_sqlconnection", pg("08001"), true},
		{"pg admin_shutdown", pg("57P01"), true},
		{"pg crash_shutdown", pg("57P02"), true},
		{"pg cannot_connect_now", pg("57P03"), true},
		{"pg query_canceled", pg("57014"), true},
		{"pg lock_not_available", pg("55P03"), true},
		{"pg read_only_sql_transaction", pg("25006"), true},
		{"pg io_error", pg("58030"), true},
		{"pg too_many_connections", pg("53300"), true},
		{"pg disk_full", pg("53100"), true},
		{"pg unique_violation", pg("23505"), false},
		{"pg foreign_key_violation", pg("23503"), false},
		{"pg check_violation wrapped", fmt.Errorf("insert: %w", pg("23514")), false},
		{"pg invalid_text_representation", pg("22P02"), false},
		{"pg undefined_table", pg("42P01"), false},
		{"pg syntax_error", pg("42601"), false},
		{"pg internal_error", pg("XX000"), false},
		{"pg system_error", pg("58000"), false},
		{"pg no code", pg(""), false},

		{"kafka not leader", kerr.NotLeaderForPartition, true},
		{"kafka request timed out wrapped", fmt.Errorf("produce: %w", kerr.RequestTimedOut), true},
		{"kafka coordinator not available", kerr.CoordinatorNotAvailable, true},
		{"kafka message too large", kerr.MessageTooLarge, false},
		{"kafka topic authorization failed", fmt.Errorf("produce: %w", kerr.TopicAuthorizationFailed), false},
		{"kafka invalid record", kerr.InvalidRecord, false},

		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, true},
		{"network timeout", &net.DNSError{Err: "i/o timeout", IsTimeout: true}, true},
		{"eof", io.EOF, true},
		{"unexpected eof wrapped", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},

		{"unknown error", boom, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, messaging.IsRetryable(tt.err), "IsRetryable(%v)", tt.err)
			require.Equal(t, tt.err != nil && !tt.want, messaging.IsPermanent(tt.err), "IsPermanent(%v)", tt.err)
		})
	}
}

func TestPermanent(t *testing.T) {
	t.Parallel()
	require.NoError(t, messaging.Permanent(nil))

	cause := &messaging.DecodeError{Field: messaging.HeaderType, Reason: "missing"}
	err := messaging.Permanent(cause)
	require.Equal(t, cause.Error(), err.Error(), "the mark keeps the message")
	require.ErrorIs(t, err, messaging.ErrPermanent)
	require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)
	var de *messaging.DecodeError
	require.ErrorAs(t, err, &de)
	require.Same(t, cause, de)

	require.Same(t, err, messaging.Permanent(err), "marking twice adds nothing")
	wrapped := fmt.Errorf("handle: %w", err)
	again := messaging.Permanent(wrapped)
	require.ErrorIs(t, again, messaging.ErrPermanent)
	require.Equal(t, wrapped.Error(), again.Error())

	require.NotErrorIs(t, errors.New("boom"), messaging.ErrPermanent)
}

// TestIsRetryablePostgres classifies errors that a real server and a real
// connection attempt produce.
func TestIsRetryablePostgres(t *testing.T) {
	t.Parallel()
	conn := pgtest.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	_, err := conn.Exec(ctx, "SELECT 1/0")
	require.Error(t, err)
	require.False(t, messaging.IsRetryable(err), "division by zero (22012): %v", err)

	_, err = conn.Exec(ctx, "SELECT FROM no_such_table_here")
	require.Error(t, err)
	require.False(t, messaging.IsRetryable(err), "undefined table (42P01): %v", err)

	// Another session holds a lock this one waits for past lock_timeout:
	// 55P03 lock_not_available.
	holder := pgtest.Connect(t)
	key := time.Now().UnixNano()
	tx, err := holder.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", key)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "SET lock_timeout = '50ms'")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", key)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "55P03", pgErr.Code)
	require.True(t, messaging.IsRetryable(err), "lock timeout: %v", err)

	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	_, err = conn.Exec(short, "SELECT pg_sleep(10)")
	require.Error(t, err)
	require.True(t, messaging.IsRetryable(err), "query cut by its context: %v", err)
	require.True(t, pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded), "%v", err)

	// A port nothing listens on: the connection is refused.
	refused, err := pgconn.Connect(ctx, "postgres://dtx@127.0.0.1:1/dtx?sslmode=disable&connect_timeout=5")
	if err == nil {
		_ = refused.Close(ctx)
		t.Skip("something listens on 127.0.0.1:1")
	}
	require.True(t, messaging.IsRetryable(err), "refused connection: %v", err)
	require.True(t, messaging.IsUnavailable(err), "refused connection: %v", err)
}

func TestIsUnavailable(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "08006"}, true},  // connection_failure
		{&pgconn.PgError{Code: "57P01"}, true},  // admin_shutdown
		{&pgconn.PgError{Code: "53300"}, true},  // too_many_connections
		{&pgconn.PgError{Code: "40001"}, false}, // serialization failure: retry, but the database is up
		{&pgconn.PgError{Code: "23505"}, false}, // unique violation
		{kerr.NotLeaderForPartition, true},      // retriable Kafka code
		{kerr.MessageTooLarge, false},           // permanent Kafka code
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), true},
		{io.ErrUnexpectedEOF, true},
		{errors.New("payment service said no"), false}, // a handler's own failure
		{messaging.Permanent(syscall.ECONNREFUSED), false},
		{nil, false},
	} {
		require.Equal(t, tt.want, messaging.IsUnavailable(tt.err), "%v", tt.err)
	}
}

func ExampleIsRetryable() {
	serialization := &pgconn.PgError{Code: "40001"}
	duplicate := &pgconn.PgError{Code: "23505"}
	badInput := messaging.Permanent(errors.New("order has no lines"))

	fmt.Println(messaging.IsRetryable(serialization))
	fmt.Println(messaging.IsRetryable(duplicate))
	fmt.Println(messaging.IsRetryable(badInput))
	fmt.Println(messaging.IsRetryable(errors.New("payment service unavailable")))
	// Output:
	// true
	// false
	// false
	// true
}
