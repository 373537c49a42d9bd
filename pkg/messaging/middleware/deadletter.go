package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/pkg/messaging"
)

// Defaults and limits of DeadLetterConfig.
const (
	// DefaultMaxReasonBytes is DeadLetterConfig.MaxReasonBytes when it is
	// zero.
	DefaultMaxReasonBytes = 2048
	// MinMaxReasonBytes is the smallest DeadLetterConfig.MaxReasonBytes
	// accepted.
	MinMaxReasonBytes = 64
	// MaxMaxReasonBytes is the largest DeadLetterConfig.MaxReasonBytes
	// accepted: 64 KiB.
	MaxMaxReasonBytes = 64 << 10
	// DefaultLogInterval is DeadLetterConfig.LogInterval when it is zero.
	DefaultLogInterval = time.Second
)

// DeadLettersMetric is the name of the counter of dead letters, labelled
// by original topic and reason (one of the Cause* constants).
const DeadLettersMetric = "dtx_dead_letters_total"

// Causes of dead letters: the values of the "reason" label of the
// dead-letter counter (DeadLettersMetric) and of the "reason" attribute of
// the warning logged.
const (
	// CauseInvalidEnvelope is a message that does not decode
	// (messaging.ErrInvalidEnvelope).
	CauseInvalidEnvelope = "invalid_envelope"
	// CauseSchemaViolation is a payload that breaks its schema
	// (messaging.ErrSchemaViolation).
	CauseSchemaViolation = "schema_violation"
	// CauseUnknownType is a type and version without a schema
	// (messaging.ErrUnknownType).
	CauseUnknownType = "unknown_type"
	// CausePanic is a handler that panicked (*PanicError).
	CausePanic = "panic"
	// CauseRetriesExhausted is a handler that kept failing with retryable
	// errors (*RetryExhaustedError).
	CauseRetriesExhausted = "retries_exhausted"
	// CausePermanent is any other permanent error, such as one a handler
	// marked with messaging.Permanent.
	CausePermanent = "permanent"
)

// DeadLetterLogMsg is the message of the warning logged per dead letter.
const DeadLetterLogMsg = "middleware: message dead-lettered"

// DeadLetterConfig configures DeadLetter.
type DeadLetterConfig struct {
	// Suffix is appended to the topic a message was consumed from to name
	// its dead-letter topic. Defaults to messaging.DeadLetterSuffix
	// (".dlq").
	Suffix string
	// FallbackTopic is the dead-letter topic of a message that says neither
	// in its metadata (messaging.MetadataKafkaTopic) nor in its context (the
	// router's subscribe topic) where it came from. Defaults to "": such a
	// message's failure is returned, and the message nacked.
	FallbackTopic string
	// MaxReasonBytes bounds the reason header (messaging.HeaderDLQReason),
	// the error's text, which is cut at a character boundary and ends in
	// "..." when longer. Defaults to DefaultMaxReasonBytes (2048); between
	// MinMaxReasonBytes and MaxMaxReasonBytes.
	MaxReasonBytes int
	// NackExhausted returns the errors Retry gave up on
	// (*RetryExhaustedError) instead of dead-lettering them, so the message
	// is delivered again and its partition waits for it. Defaults to false:
	// they are dead-lettered, and a message whose handler keeps failing does
	// not block its partition for ever (G7, docs/guarantees.md). Either way, an
	// exhausted error that IsUnavailableFunc reports (a dependency is down)
	// is returned, not dead-lettered: the message is not at fault.
	NackExhausted bool
	// IsUnavailableFunc decides which exhausted errors mean that a
	// dependency is down, so the message is redelivered rather than set
	// aside. Defaults to messaging.IsUnavailable.
	IsUnavailableFunc func(err error) bool
	// IsRetryableFunc decides which errors are permanent (false) and are
	// dead-lettered at once. It must agree with RetryConfig.IsRetryableFunc.
	// Defaults to messaging.IsRetryable.
	IsRetryableFunc func(err error) bool
	// NowFunc returns the time written to messaging.HeaderDLQTime, and is
	// the clock of LogInterval. Defaults to time.Now.
	NowFunc func() time.Time
	// Logger receives a warning per dead letter (rate-limited, see
	// LogInterval) with the message's id and type, the original topic,
	// partition and offset, the dead-letter topic, the reason (a Cause*
	// constant) and the cause (the error's text, as the reason header), and
	// an error per dead letter that could not be published. Defaults to no
	// logging.
	Logger *slog.Logger
	// LogInterval is the shortest time between two warnings of the same
	// original topic and reason: the dead letters in between are published
	// and counted but not logged, and the next warning says how many were
	// left out (attribute "suppressed"). Defaults to DefaultLogInterval
	// (1s); negative logs every dead letter.
	LogInterval time.Duration
	// Registerer, when set, registers the counter
	// dtx_dead_letters_total{topic, reason} (DeadLettersMetric): dead
	// letters published, by original topic and reason (see the Cause*
	// constants). A counter registered before by another DeadLetter on the
	// same Registerer is shared. Defaults to nil: no metrics.
	Registerer prometheus.Registerer
}

func (c *DeadLetterConfig) setDefaults() {
	if c.Suffix == "" {
		c.Suffix = messaging.DeadLetterSuffix
	}
	if c.MaxReasonBytes == 0 {
		c.MaxReasonBytes = DefaultMaxReasonBytes
	}
	if c.IsRetryableFunc == nil {
		c.IsRetryableFunc = messaging.IsRetryable
	}
	if c.IsUnavailableFunc == nil {
		c.IsUnavailableFunc = messaging.IsUnavailable
	}
	if c.NowFunc == nil {
		c.NowFunc = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.LogInterval == 0 {
		c.LogInterval = DefaultLogInterval
	}
}

func (c *DeadLetterConfig) validate() error {
	var errs []error
	if c.MaxReasonBytes < MinMaxReasonBytes || c.MaxReasonBytes > MaxMaxReasonBytes {
		errs = append(errs, fmt.Errorf("middleware: DeadLetterConfig.MaxReasonBytes: %d is outside %d..%d", c.MaxReasonBytes, MinMaxReasonBytes, MaxMaxReasonBytes))
	}
	if strings.ContainsFunc(c.Suffix, invalidTopicRune) {
		errs = append(errs, fmt.Errorf("middleware: DeadLetterConfig.Suffix: %q holds characters a Kafka topic may not", c.Suffix))
	}
	if strings.ContainsFunc(c.FallbackTopic, invalidTopicRune) {
		errs = append(errs, fmt.Errorf("middleware: DeadLetterConfig.FallbackTopic: %q holds characters a Kafka topic may not", c.FallbackTopic))
	}
	return errors.Join(errs...)
}

// invalidTopicRune reports whether r may not appear in a Kafka topic name.
func invalidTopicRune(r rune) bool {
	return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '.' && r != '_' && r != '-'
}

// DeadLetter returns a router middleware that routes the messages the
// handler fails on for good to a dead-letter topic, so that a poison message
// never blocks its partition (G7, docs/guarantees.md). When the handler's error is
// permanent (IsRetryableFunc reports false: an undecodable envelope, a
// schema violation, an unknown type, an error marked with
// messaging.Permanent, a recovered panic) or is a *RetryExhaustedError
// (unless NackExhausted), it publishes the original message with pub to
// "<topic><Suffix>", where topic is messaging.MetadataKafkaTopic or else the
// router's subscribe topic, or to FallbackTopic, and returns no error and no
// messages, so the message is acked and its partition moves on.
//
// The dead letter is the original message: the same UUID, payload and
// metadata, so the same record key (messaging.MetadataPartitionKey) and the
// same headers, without the receive-only metadata (prefix
// messaging.ReceiveOnlyPrefix), and with these headers added:
//
//   - messaging.HeaderDLQReason: the error's text, cut to MaxReasonBytes;
//   - messaging.HeaderDLQOriginalTopic, HeaderDLQOriginalPartition and
//     HeaderDLQOriginalOffset: where the message was read, those that are
//     known;
//   - messaging.HeaderDLQConsumerGroup: the group that read it, if known;
//   - messaging.HeaderDLQTime: when it was dead-lettered, RFC 3339 in UTC.
//
// A messaging.HeaderID that differs from the UUID (a record whose ce_id
// header is empty) is dropped, since a Publisher writes the UUID as ce_id.
//
// When publishing the dead letter fails, the error is returned (wrapping the
// publish error and the handler's), so the message is nacked and delivered
// again: nothing is lost. Retryable errors that Retry has not given up on
// are returned untouched.
//
// Each dead letter is logged as a warning (at most one per original topic
// and reason per LogInterval, the next saying how many were left out),
// counted (Registerer) and recorded on the span in the message's context as
// an event "dead_letter" with the error.
//
// It fails when pub is nil, when cfg is not valid, naming each offending
// field, or when the counter cannot be registered.
func DeadLetter(pub message.Publisher, cfg DeadLetterConfig) (message.HandlerMiddleware, error) {
	if pub == nil {
		return nil, errors.New("middleware: dead letter: publisher is nil")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	d := &deadLetter{pub: pub, cfg: cfg, logged: make(map[logKey]*logState)}
	if cfg.Registerer != nil {
		c, err := registerCounter(cfg.Registerer)
		if err != nil {
			return nil, err
		}
		d.counter = c
	}
	return d.middleware, nil
}

type deadLetter struct {
	pub     message.Publisher
	cfg     DeadLetterConfig
	counter *prometheus.CounterVec

	mu     sync.Mutex
	logged map[logKey]*logState // by original topic and reason
}

// logKey is what the warnings are rate-limited by.
type logKey struct{ topic, reason string }

// logState is when a key's last warning was logged and how many dead
// letters were not logged since.
type logState struct {
	at         time.Time
	suppressed int
}

// shouldLog reports whether the dead letter of key is logged at now, and
// how many of key's were left out since the last warning.
func (d *deadLetter) shouldLog(key logKey, now time.Time) (ok bool, suppressed int) {
	if d.cfg.LogInterval < 0 {
		return true, 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st, seen := d.logged[key]
	if !seen {
		d.logged[key] = &logState{at: now}
		return true, 0
	}
	if now.Sub(st.at) < d.cfg.LogInterval {
		st.suppressed++
		return false, 0
	}
	suppressed = st.suppressed
	st.at, st.suppressed = now, 0
	return true, suppressed
}

func registerCounter(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: DeadLettersMetric,
		Help: "Messages published to a dead-letter topic, by original topic and reason.",
	}, []string{"topic", "reason"})
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, fmt.Errorf("middleware: dead letter: register metrics: %w", err)
	}
	return c, nil
}

func (d *deadLetter) middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err == nil {
			return out, nil
		}
		exhausted := errors.As(err, new(*RetryExhaustedError))
		if d.cfg.IsRetryableFunc(err) && (!exhausted || d.cfg.NackExhausted || d.cfg.IsUnavailableFunc(err)) {
			return out, err
		}
		if pubErr := d.publish(msg, err); pubErr != nil {
			return nil, pubErr
		}
		return nil, nil
	}
}

// publish sends msg's dead letter for err.
func (d *deadLetter) publish(msg *message.Message, cause error) error {
	ctx := msg.Context()
	md := msg.Metadata
	origTopic := md.Get(messaging.MetadataKafkaTopic)
	if origTopic == "" {
		origTopic = message.SubscribeTopicFromCtx(ctx)
	}
	topic := d.cfg.FallbackTopic
	if origTopic != "" {
		topic = origTopic + d.cfg.Suffix
	}
	if topic == "" {
		return fmt.Errorf("middleware: dead letter for message %s: no topic known (set DeadLetterConfig.FallbackTopic): %w", msg.UUID, cause)
	}

	reason := truncate(cause.Error(), d.cfg.MaxReasonBytes)
	dl := message.NewMessage(msg.UUID, msg.Payload)
	for k, v := range md {
		if !strings.HasPrefix(k, messaging.ReceiveOnlyPrefix) {
			dl.Metadata[k] = v
		}
	}
	if id, ok := dl.Metadata[messaging.HeaderID]; ok && id != msg.UUID {
		delete(dl.Metadata, messaging.HeaderID)
	}
	dl.Metadata[messaging.HeaderDLQReason] = reason
	for _, h := range []struct{ header, value string }{
		{messaging.HeaderDLQOriginalTopic, origTopic},
		{messaging.HeaderDLQOriginalPartition, md.Get(messaging.MetadataKafkaPartition)},
		{messaging.HeaderDLQOriginalOffset, md.Get(messaging.MetadataKafkaOffset)},
		{messaging.HeaderDLQConsumerGroup, md.Get(messaging.MetadataKafkaConsumerGroup)},
	} {
		if h.value != "" {
			dl.Metadata[h.header] = h.value
		} else {
			delete(dl.Metadata, h.header)
		}
	}
	dl.Metadata[messaging.HeaderDLQTime] = d.cfg.NowFunc().UTC().Format(time.RFC3339Nano)
	// The message's context may be cancelled already; the dead letter must
	// still go out.
	dl.SetContext(context.WithoutCancel(ctx))

	span := trace.SpanFromContext(ctx)
	if err := d.pub.Publish(topic, dl); err != nil {
		d.cfg.Logger.ErrorContext(ctx, "middleware: cannot publish dead letter; the message will be delivered again",
			"message_id", msg.UUID, "dead_letter_topic", topic, "reason", reason, "error", err.Error())
		span.AddEvent("dead_letter_failed", trace.WithAttributes(
			attribute.String("dtx.dead_letter.topic", topic),
			attribute.String("error", err.Error()),
		))
		return fmt.Errorf("middleware: publish dead letter of message %s to %s: %w (handler failed with: %w)", msg.UUID, topic, err, cause)
	}

	c := causeOf(cause)
	if ok, suppressed := d.shouldLog(logKey{origTopic, c}, d.cfg.NowFunc()); ok {
		attrs := []any{
			"message_id", msg.UUID, "type", md.Get(messaging.HeaderType),
			"topic", origTopic, "partition", md.Get(messaging.MetadataKafkaPartition), "offset", md.Get(messaging.MetadataKafkaOffset),
			"dead_letter_topic", topic, "reason", c, "cause", reason,
		}
		if suppressed > 0 {
			attrs = append(attrs, "suppressed", suppressed)
		}
		if pe, ok := errors.AsType[*PanicError](cause); ok {
			attrs = append(attrs, "stack", string(pe.Stack))
		}
		d.cfg.Logger.WarnContext(ctx, DeadLetterLogMsg, attrs...)
	}
	span.AddEvent("dead_letter", trace.WithAttributes(
		attribute.String("dtx.dead_letter.topic", topic),
		attribute.String("dtx.dead_letter.cause", c),
	))
	recordError(span, cause)
	if d.counter != nil {
		d.counter.WithLabelValues(origTopic, c).Inc()
	}
	return nil
}

// causeOf names the kind of failure err is, for metrics and logs.
func causeOf(err error) string {
	switch {
	case errors.As(err, new(*PanicError)):
		return CausePanic
	case errors.Is(err, messaging.ErrInvalidEnvelope):
		return CauseInvalidEnvelope
	case errors.Is(err, messaging.ErrSchemaViolation):
		return CauseSchemaViolation
	case errors.Is(err, messaging.ErrUnknownType):
		return CauseUnknownType
	case errors.As(err, new(*RetryExhaustedError)):
		return CauseRetriesExhausted
	}
	return CausePermanent
}

// truncate cuts s to at most n bytes at a character boundary, ending in
// "..." when it cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
