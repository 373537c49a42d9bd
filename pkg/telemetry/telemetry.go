package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// Config is what Setup needs besides the environment.
type Config struct {
	// ServiceName names the service in its spans' resource when
	// OTEL_SERVICE_NAME is unset. Required.
	ServiceName string
	// ServiceVersion, if set, is the resource's service.version.
	ServiceVersion string
	// Logger receives what the OpenTelemetry SDK reports (export errors,
	// at most one a minute) and one line saying where traces go. Defaults
	// to slog.Default().
	Logger *slog.Logger
}

// Exporters of OTEL_TRACES_EXPORTER.
const (
	ExporterOTLP    = "otlp"
	ExporterConsole = "console"
	ExporterNone    = "none"
)

// ShutdownFunc flushes the spans buffered and stops the exporter, within
// ctx's deadline. Calling it more than once does nothing more.
type ShutdownFunc func(ctx context.Context) error

// Setup installs the global TracerProvider and propagator from the
// environment (see the package documentation) and returns the function
// that flushes and stops them. It fails, installing nothing, on an
// environment it cannot use, naming the variable.
func Setup(ctx context.Context, cfg Config) (ShutdownFunc, error) {
	if cfg.ServiceName == "" {
		return nil, errors.New("telemetry: Config.ServiceName: required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	exporter, err := ExporterName()
	if err != nil {
		return nil, err
	}
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	if exporter == ExporterNone {
		cfg.Logger.Debug("telemetry: traces are not exported (set OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT)")
		return func(context.Context) error { return nil }, nil
	}

	// autoexport reads the same variables (unset OTEL_TRACES_EXPORTER: otlp).
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER=%s: %w", exporter, err)
	}
	attrs := []resource.Option{
		resource.WithAttributes(semconv.ServiceName(cfg.ServiceName)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
	}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, resource.WithAttributes(semconv.ServiceVersion(cfg.ServiceVersion)))
	}
	res, err := resource.New(ctx, attrs...)
	if err != nil && res == nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry: OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetErrorHandler(&errorLog{log: cfg.Logger, every: time.Minute})
	cfg.Logger.Info("telemetry: exporting traces", "exporter", exporter, "service", serviceName(cfg))

	var once sync.Once
	var shutdownErr error
	return func(ctx context.Context) error {
		once.Do(func() { shutdownErr = tp.Shutdown(ctx) })
		return shutdownErr
	}, nil
}

// ExporterName returns the trace exporter the environment asks for: the
// value of OTEL_TRACES_EXPORTER, or, when it is unset or empty, otlp if an
// OTLP endpoint is set and none otherwise. It fails on a value that is not
// otlp, console or none.
func ExporterName() (string, error) {
	v := os.Getenv("OTEL_TRACES_EXPORTER")
	v = strings.TrimSpace(strings.ToLower(v))
	switch v {
	case ExporterOTLP, ExporterConsole, ExporterNone:
		return v, nil
	case "":
		for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
			if strings.TrimSpace(os.Getenv(name)) != "" {
				return ExporterOTLP, nil
			}
		}
		return ExporterNone, nil
	}
	return "", fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER: %q is not one of otlp, console, none", v)
}

func serviceName(cfg Config) string {
	if v := os.Getenv("OTEL_SERVICE_NAME"); v != "" {
		return v
	}
	return cfg.ServiceName
}

// errorLog is the OpenTelemetry error handler: it logs the SDK's errors
// (export failures, mostly), at most one every `every`, with how many it
// did not log.
type errorLog struct {
	log   *slog.Logger
	every time.Duration

	mu      sync.Mutex
	last    time.Time
	skipped int
}

func (e *errorLog) Handle(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now := time.Now(); now.Sub(e.last) >= e.every {
		e.log.Warn("telemetry: OpenTelemetry error (spans may be dropped)", "err", err, "not_logged", e.skipped)
		e.last, e.skipped = now, 0
		return
	}
	e.skipped++
}
