package messaging

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kerr"
)

// ErrPermanent is matched (errors.Is) by every error that Permanent wrapped:
// retrying cannot fix it, so the message is dead-lettered at once.
var ErrPermanent = errors.New("permanent failure")

// PermanentError marks Err as permanent; Permanent returns one. Its message
// is Err's, unchanged, so logs and dead-letter reasons read as the cause.
type PermanentError struct {
	// Err is the failure; never nil.
	Err error
}

// Error returns Err's message.
func (e *PermanentError) Error() string { return e.Err.Error() }

// Unwrap returns Err, so errors.Is and errors.As see through the mark.
func (e *PermanentError) Unwrap() error { return e.Err }

// Is reports whether target is ErrPermanent.
func (e *PermanentError) Is(target error) bool { return target == ErrPermanent }

// Permanent marks err as permanent: IsRetryable reports false for it and
// for every error that wraps it. A handler returns Permanent(err) when the
// message itself is at fault (bad input, a business rule it can never
// satisfy), so the message is dead-lettered instead of retried. Permanent
// returns nil for nil and err itself when it is already marked.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	if pe, ok := errors.AsType[*PermanentError](err); ok && pe == err { //nolint:errorlint // identity: err itself is the mark, not an error it wraps
		return err
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err is a failure that retrying cannot fix: it
// is not nil and IsRetryable reports false for it.
func IsPermanent(err error) bool {
	return err != nil && !IsRetryable(err)
}

// IsRetryable is dtx's one answer to "may trying again succeed?", for a
// message handler's error, a database error or a Kafka error. The first rule
// that matches err or an error it wraps decides:
//
//  1. nil is not retryable (there is nothing to retry).
//  2. An error marked with Permanent is not.
//  3. ErrInvalidEnvelope, ErrSchemaViolation and ErrUnknownType are not: the
//     message will never decode or validate.
//  4. context.Canceled and context.DeadlineExceeded are. An error cannot
//     tell whether it was the handler's own timeout or the message's context
//     ending because its partition was revoked or the subscriber is closing;
//     in both cases the message must be delivered again, not dead-lettered.
//  5. A PostgreSQL error (*pgconn.PgError) is retryable when its SQLSTATE
//     says the condition passes: class 40 (transaction rollback, such as
//     serialization_failure 40001 and deadlock_detected 40P01) except 40002
//     (a deferred constraint failed at commit), class 08 (connection
//     exceptions), class 53 (insufficient resources), 57P01 admin_shutdown,
//     57P02 crash_shutdown, 57P03 cannot_connect_now, 57014 query_canceled
//     (statement_timeout), 55P03 lock_not_available (lock_timeout), 25006
//     read_only_sql_transaction (a standby after a failover) and 58030
//     io_error. Every other SQLSTATE (integrity violations 23, data
//     exceptions 22, syntax and undefined objects 42, ...) is not.
//  6. pgconn.SafeToRetry (the request never reached the server) and
//     pgconn.Timeout errors are retryable.
//  7. A Kafka error code (*kerr.Error) is retryable when kerr.IsRetriable
//     says so (leadership changes, timeouts, coordinator moves, ...); other
//     codes, such as MESSAGE_TOO_LARGE or TOPIC_AUTHORIZATION_FAILED, are
//     not.
//  8. Any other error is retryable. That covers network failures (timeouts,
//     refused, reset or broken connections, io.EOF, io.ErrUnexpectedEOF),
//     and a handler that fails for a reason dtx does not know, such as a
//     remote service being down, gets another chance. Handlers mark bad
//     input with Permanent.
//
// Retrying is bounded by whoever retries: the retry middleware gives up after
// its attempts and, by default, dead-letters the message then.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrPermanent) ||
		errors.Is(err, ErrInvalidEnvelope) ||
		errors.Is(err, ErrSchemaViolation) ||
		errors.Is(err, ErrUnknownType) {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return retryableSQLState(pgErr.Code)
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	if kErr, ok := errors.AsType[*kerr.Error](err); ok {
		return kErr.Retriable
	}
	return true
}

// retryableSQLState reports whether a PostgreSQL error with SQLSTATE code
// may succeed when tried again (rule 5 of IsRetryable).
func retryableSQLState(code string) bool {
	switch code {
	case "40002": // transaction_integrity_constraint_violation
		return false
	case "57P01", "57P02", "57P03", // admin_shutdown, crash_shutdown, cannot_connect_now
		"57014", // query_canceled
		"55P03", // lock_not_available
		"25006", // read_only_sql_transaction
		"58030": // io_error
		return true
	}
	if len(code) != 5 {
		return false
	}
	switch code[:2] {
	case "40", "08", "53":
		return true
	}
	return false
}

// IsUnavailable reports whether err says that a dependency (PostgreSQL,
// Kafka, the network) could not be reached or is shutting down, rather than
// that the message or its handling is wrong. Such a failure is no reason to
// set a message aside: every other message would meet it too. The consumer
// middleware keeps redelivering a message whose retries ran out on such an
// error instead of dead-lettering it, so an outage longer than the retry
// budget loses nothing to the dead-letter topic.
//
// It is true for PostgreSQL connection exceptions (class 08), server
// shutdowns (57P01-57P03), insufficient resources (class 53), errors pgconn
// reports as safe to retry (nothing was sent) or as timeouts, retriable
// Kafka error codes, refused or reset connections, network timeouts and
// unexpected ends of stream; false otherwise, and for permanent errors.
func IsUnavailable(err error) bool {
	if err == nil || !IsRetryable(err) {
		return false
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch {
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03":
			return true
		case len(pgErr.Code) == 5 && (pgErr.Code[:2] == "08" || pgErr.Code[:2] == "53"):
			return true
		}
		return false
	}
	if kErr, ok := errors.AsType[*kerr.Error](err); ok {
		return kErr.Retriable
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	if netErr, ok := errors.AsType[net.Error](err); ok && netErr.Timeout() {
		return true
	}
	_, isOpErr := errors.AsType[*net.OpError](err)
	return isOpErr
}
