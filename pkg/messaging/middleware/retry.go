package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/pkg/messaging"
)

// Defaults and limits of RetryConfig. With the defaults a message whose
// handler keeps failing is tried 10 times over about 33 seconds (0.1 s, 0.2
// s, ... doubling, at most 10 s apart), enough to ride out a PostgreSQL
// restart or a Kafka leader election.
const (
	// DefaultMaxAttempts is RetryConfig.MaxAttempts when it is zero.
	DefaultMaxAttempts = 10
	// MaxMaxAttempts is the largest RetryConfig.MaxAttempts accepted.
	MaxMaxAttempts = 1000
	// DefaultInitialInterval is RetryConfig.InitialInterval when it is zero.
	DefaultInitialInterval = 100 * time.Millisecond
	// DefaultMaxInterval is RetryConfig.MaxInterval when it is zero.
	DefaultMaxInterval = 10 * time.Second
	// DefaultMultiplier is RetryConfig.Multiplier when it is zero.
	DefaultMultiplier = 2.0
	// DefaultJitter is RetryConfig.Jitter when it is zero.
	DefaultJitter = 0.2
	// DefaultMaxElapsed is RetryConfig.MaxElapsed when it is zero.
	DefaultMaxElapsed = time.Minute
)

// NoJitter set as RetryConfig.Jitter makes every delay exactly the
// computed one. Any negative value means the same.
const NoJitter = -1.0

// NoLimit set as RetryConfig.MaxElapsed lets retries go on until
// MaxAttempts is reached. Any negative duration means the same.
const NoLimit time.Duration = -1

// RetryConfig configures Retry.
type RetryConfig struct {
	// MaxAttempts is how often the handler is run for one delivery of a
	// message, the first run included; 1 turns retrying off. Defaults to
	// DefaultMaxAttempts (10); between 1 and MaxMaxAttempts.
	MaxAttempts int
	// InitialInterval is the delay before the first retry; each further
	// delay is the previous one times Multiplier, at most MaxInterval, before
	// jitter. Defaults to DefaultInitialInterval (100ms); positive.
	InitialInterval time.Duration
	// MaxInterval caps the delay between two attempts, before jitter.
	// Defaults to DefaultMaxInterval (10s), or InitialInterval when that is
	// larger; at least InitialInterval.
	MaxInterval time.Duration
	// Multiplier is the factor between two successive delays. Defaults to
	// DefaultMultiplier (2); between 1 and 100.
	Multiplier float64
	// Jitter spreads the delays so that consumers failing together do not
	// retry together: each delay d is drawn uniformly from [d*(1-Jitter),
	// d*(1+Jitter)]. Defaults to DefaultJitter (0.2); at most 1; NoJitter (or
	// any negative value) for none.
	Jitter float64
	// MaxElapsed bounds the time spent on one delivery: no retry is started
	// whose delay would end later than MaxElapsed after the first attempt
	// began. Defaults to DefaultMaxElapsed (1 minute); NoLimit (or any
	// negative duration) for none.
	MaxElapsed time.Duration
	// IsRetryableFunc decides which errors are retried. Defaults to
	// messaging.IsRetryable, which every dtx component uses: replace it only
	// to narrow it.
	IsRetryableFunc func(err error) bool
	// SleepFunc waits d, or until ctx ends, and returns ctx's error then.
	// Defaults to a timer. Tests set it to skip the waiting.
	SleepFunc func(ctx context.Context, d time.Duration) error
	// NowFunc returns the current time, for MaxElapsed. Defaults to
	// time.Now.
	NowFunc func() time.Time
	// RandFunc returns a number in [0, 1), for Jitter. Defaults to
	// math/rand/v2.Float64.
	RandFunc func() float64
	// Logger receives one warning per retry. Defaults to no logging.
	Logger *slog.Logger
}

func (c *RetryConfig) setDefaults() {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.InitialInterval == 0 {
		c.InitialInterval = DefaultInitialInterval
	}
	if c.MaxInterval == 0 {
		c.MaxInterval = max(DefaultMaxInterval, c.InitialInterval)
	}
	if c.Multiplier == 0 {
		c.Multiplier = DefaultMultiplier
	}
	if c.Jitter == 0 {
		c.Jitter = DefaultJitter
	}
	if c.Jitter < 0 {
		c.Jitter = 0
	}
	if c.MaxElapsed == 0 {
		c.MaxElapsed = DefaultMaxElapsed
	}
	if c.IsRetryableFunc == nil {
		c.IsRetryableFunc = messaging.IsRetryable
	}
	if c.SleepFunc == nil {
		c.SleepFunc = sleep
	}
	if c.NowFunc == nil {
		c.NowFunc = time.Now
	}
	if c.RandFunc == nil {
		c.RandFunc = rand.Float64
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *RetryConfig) validate() error {
	var errs []error
	if c.MaxAttempts < 1 || c.MaxAttempts > MaxMaxAttempts {
		errs = append(errs, fmt.Errorf("middleware: RetryConfig.MaxAttempts: %d is outside 1..%d", c.MaxAttempts, MaxMaxAttempts))
	}
	if c.InitialInterval < 0 {
		errs = append(errs, fmt.Errorf("middleware: RetryConfig.InitialInterval: %s is negative", c.InitialInterval))
	}
	if c.MaxInterval < c.InitialInterval {
		errs = append(errs, fmt.Errorf("middleware: RetryConfig.MaxInterval: %s is shorter than InitialInterval %s", c.MaxInterval, c.InitialInterval))
	}
	if math.IsNaN(c.Multiplier) || c.Multiplier < 1 || c.Multiplier > 100 {
		errs = append(errs, fmt.Errorf("middleware: RetryConfig.Multiplier: %v is outside 1..100", c.Multiplier))
	}
	if math.IsNaN(c.Jitter) || c.Jitter > 1 {
		errs = append(errs, fmt.Errorf("middleware: RetryConfig.Jitter: %v is more than 1", c.Jitter))
	}
	return errors.Join(errs...)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RetryExhaustedError is returned by Retry when it gave up on a message
// whose handler kept failing with retryable errors. It wraps the last error,
// so it is still retryable by messaging.IsRetryable; DeadLetter recognises
// it and dead-letters the message (see DeadLetterConfig.NackExhausted).
type RetryExhaustedError struct {
	// Attempts is how often the handler ran.
	Attempts int
	// Elapsed is the time from the start of the first attempt to the end of
	// the last.
	Elapsed time.Duration
	// Err is the last attempt's error.
	Err error
}

// Error says that retries are exhausted, and why the last attempt failed.
func (e *RetryExhaustedError) Error() string {
	return "retries exhausted after " + strconv.Itoa(e.Attempts) + " attempts in " +
		e.Elapsed.Round(time.Millisecond).String() + ": " + e.Err.Error()
}

// Unwrap returns Err.
func (e *RetryExhaustedError) Unwrap() error { return e.Err }

// Retry returns a router middleware that runs the handler again, after a
// growing and jittered delay, while it fails with an error that
// IsRetryableFunc (messaging.IsRetryable) deems retryable. It returns:
//
//   - the handler's result as soon as it succeeds;
//   - a permanent error at once, untouched, for DeadLetter to handle;
//   - a *RetryExhaustedError wrapping the last error once MaxAttempts runs
//     have failed, or the next retry would end past MaxElapsed;
//   - the last error, untouched, when the message's context ends (its
//     partition was revoked or the subscriber is closing): the message will
//     be delivered again, so it must not be dead-lettered. A wait is cut
//     short by it.
//
// Each attempt starts with the message's context as Retry received it, so
// values that inner middlewares and the handler added do not pile up, and
// the messages a failed attempt returned are dropped. Each retry is logged
// and added as an event "retry" to the span in the message's context.
//
// While it waits, the partition's later messages wait too: that is what
// keeps them in order (G4, docs/guarantees.md).
//
// It fails only when cfg is not valid, naming each offending field.
func Retry(cfg RetryConfig) (message.HandlerMiddleware, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := msg.Context()
			start := cfg.NowFunc()
			for attempt := 1; ; attempt++ {
				msg.SetContext(ctx)
				out, err := h(msg)
				if err == nil {
					return out, nil
				}
				if !cfg.IsRetryableFunc(err) || ctx.Err() != nil {
					return nil, err
				}
				elapsed := cfg.NowFunc().Sub(start)
				delay := cfg.delay(attempt)
				if attempt >= cfg.MaxAttempts || (cfg.MaxElapsed > 0 && elapsed+delay > cfg.MaxElapsed) {
					return nil, &RetryExhaustedError{Attempts: attempt, Elapsed: elapsed, Err: err}
				}
				cfg.Logger.WarnContext(ctx, "middleware: handler failed, retrying",
					"message_id", msg.UUID, "attempt", attempt, "delay", delay, "error", err.Error())
				trace.SpanFromContext(ctx).AddEvent("retry", trace.WithAttributes(
					attribute.Int("attempt", attempt),
					attribute.String("delay", delay.String()),
					attribute.String("error", err.Error()),
				))
				if serr := cfg.SleepFunc(ctx, delay); serr != nil {
					return nil, err
				}
			}
		}
	}, nil
}

// delay returns the wait after the given failed attempt (1 for the first).
func (c *RetryConfig) delay(attempt int) time.Duration {
	d := float64(c.InitialInterval) * math.Pow(c.Multiplier, float64(attempt-1))
	d = min(d, float64(c.MaxInterval))
	if c.Jitter > 0 {
		d *= 1 + c.Jitter*(2*c.RandFunc()-1)
	}
	return time.Duration(d)
}
