package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
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
	if err := CheckEnv(); err != nil {
		return nil, err
	}
	exporter, _ := ExporterName() // checked
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
	if err != nil {
		if res == nil {
			_ = exp.Shutdown(ctx)
			return nil, fmt.Errorf("telemetry: resource: %w", err)
		}
		// A detector (host, process) fell short: the rest of the
		// resource is used.
		cfg.Logger.Warn("telemetry: part of the resource could not be detected", "err", err)
	}
	// Before the provider: it reports an OTEL_TRACES_SAMPLER it cannot use
	// to the error handler (CheckEnv has refused those already).
	otel.SetErrorHandler(&errorLog{log: cfg.Logger, every: time.Minute})
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
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
// exactly otlp, console or none (one exporter; lower case, as the
// OpenTelemetry exporter registry reads it).
func ExporterName() (string, error) {
	switch v := os.Getenv("OTEL_TRACES_EXPORTER"); v {
	case ExporterOTLP, ExporterConsole, ExporterNone:
		return v, nil
	case "":
		for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
			if strings.TrimSpace(os.Getenv(name)) != "" {
				return ExporterOTLP, nil
			}
		}
		return ExporterNone, nil
	default:
		return "", fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER: %q is not one of otlp, console, none", v)
	}
}

// CheckEnv reports every OTEL_* variable Setup reads and cannot use, each
// error naming its variable (errors.Join): OTEL_TRACES_EXPORTER, the OTLP
// protocol when traces go over OTLP, OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG, and OTEL_RESOURCE_ATTRIBUTES. Setup calls it
// first; a binary calls it with the rest of its configuration to refuse to
// start on a typo.
func CheckEnv() error {
	exporter, err := ExporterName()
	errs := []error{err}
	if exporter == ExporterOTLP {
		errs = append(errs, checkProtocol())
	}
	errs = append(errs, checkSampler())
	if _, err := resource.New(context.Background(), resource.WithFromEnv()); err != nil {
		errs = append(errs, fmt.Errorf("telemetry: OTEL_RESOURCE_ATTRIBUTES: %w (want key=value,key=value)", err))
	}
	return errors.Join(errs...)
}

// checkProtocol checks the OTLP protocol for traces: the traces variable
// wins over the general one, and http/protobuf is the default.
func checkProtocol() error {
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		switch v := os.Getenv(name); v {
		case "":
			continue
		case "http/protobuf", "grpc":
			return nil
		default:
			return fmt.Errorf("telemetry: %s: %q is not one of http/protobuf, grpc", name, v)
		}
	}
	return nil
}

// samplers are the values of OTEL_TRACES_SAMPLER the SDK knows, and
// whether each reads OTEL_TRACES_SAMPLER_ARG (a ratio).
var samplers = map[string]bool{
	"always_on": false, "always_off": false, "traceidratio": true,
	"parentbased_always_on": false, "parentbased_always_off": false, "parentbased_traceidratio": true,
}

// checkSampler checks what the SDK would otherwise only report to the
// error handler before falling back to its default sampler.
func checkSampler() error {
	name := strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER")))
	if name == "" {
		return nil
	}
	ratio, known := samplers[name]
	if !known {
		return fmt.Errorf("telemetry: OTEL_TRACES_SAMPLER: %q is not one of always_on, always_off, traceidratio, "+
			"parentbased_always_on, parentbased_always_off, parentbased_traceidratio", name)
	}
	arg := strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER_ARG"))
	if !ratio || arg == "" {
		return nil
	}
	if v, err := strconv.ParseFloat(arg, 64); err != nil || v < 0 || v > 1 {
		return fmt.Errorf("telemetry: OTEL_TRACES_SAMPLER_ARG: %q is not a ratio between 0 and 1 (for OTEL_TRACES_SAMPLER=%s)", arg, name)
	}
	return nil
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
