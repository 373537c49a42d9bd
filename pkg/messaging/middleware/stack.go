package middleware

import (
	"errors"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	wmiddleware "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/pkg/messaging"
)

// StackConfig configures Standard.
type StackConfig struct {
	// DeadLetterPublisher publishes dead letters (see DeadLetter). Required.
	// It should be a plain Publisher, not a TracingPublisher, so that a dead
	// letter keeps the trace context of the original message.
	DeadLetterPublisher message.Publisher
	// Schemas validates payloads (see Validate). Required: a consumer that
	// skipped validation would hand handlers payloads no schema vouches for.
	Schemas *messaging.SchemaRegistry
	// TracerProvider starts the spans of Tracing. Defaults to the global
	// TracerProvider (otel.GetTracerProvider).
	TracerProvider trace.TracerProvider
	// Propagator reads trace context from messages and writes it to the
	// messages handlers return. Defaults to W3C Trace Context
	// (propagation.TraceContext).
	Propagator propagation.TextMapPropagator
	// Retry configures Retry; its zero value gives its defaults.
	Retry RetryConfig
	// DeadLetter configures DeadLetter; its zero value gives its defaults.
	DeadLetter DeadLetterConfig
	// Logger, if set, is the Logger of DeadLetter and Retry where their
	// configs name none: a warning per dead letter (rate-limited) and per
	// retry. Defaults to nil: they log nothing unless configured.
	Logger *slog.Logger
	// Registerer, if set, is DeadLetter.Registerer where it is nil: the
	// dead letters are counted (DeadLettersMetric). Defaults to nil.
	Registerer prometheus.Registerer
}

// Standard returns dtx's consumer middleware stack, outermost first, for
// Router.AddMiddleware (or a handler's AddMiddleware):
//
//  1. Watermill's Recoverer: a panic in the stack itself (in publishing a
//     dead letter, say) becomes an error; the message is nacked.
//  2. Tracing: one CONSUMER span per delivery, around everything below, so
//     retries and the dead letter are events of it.
//  3. DeadLetter: permanent failures and exhausted retries go to
//     <topic>.dlq and the message is acked.
//  4. Retry: retryable failures are retried with backoff.
//  5. Recover: a panic of the handler (or of Correlation or Validate)
//     becomes a permanent *PanicError, and so a dead letter.
//  6. Correlation: the origin goes into the context; produced messages are
//     stamped with causation and correlation ids.
//  7. Validate: decode and schema check; failures are permanent. The
//     envelope goes into the context.
//
// and then the handler. It fails when cfg is not valid, naming each
// offending field.
func Standard(cfg StackConfig) ([]message.HandlerMiddleware, error) {
	var errs []error
	if cfg.DeadLetterPublisher == nil {
		errs = append(errs, errors.New("middleware: StackConfig.DeadLetterPublisher: required"))
	}
	if cfg.Schemas == nil {
		errs = append(errs, errors.New("middleware: StackConfig.Schemas: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.DeadLetter.Logger == nil {
		cfg.DeadLetter.Logger = cfg.Logger
	}
	if cfg.DeadLetter.Registerer == nil {
		cfg.DeadLetter.Registerer = cfg.Registerer
	}
	if cfg.Retry.Logger == nil {
		cfg.Retry.Logger = cfg.Logger
	}
	dl, err := DeadLetter(cfg.DeadLetterPublisher, cfg.DeadLetter)
	if err != nil {
		return nil, err
	}
	retry, err := Retry(cfg.Retry)
	if err != nil {
		return nil, err
	}
	return []message.HandlerMiddleware{
		wmiddleware.Recoverer,
		Tracing(cfg.TracerProvider, cfg.Propagator),
		dl,
		retry,
		Recover,
		Correlation,
		Validate(cfg.Schemas),
	}, nil
}
