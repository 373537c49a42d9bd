package projection

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmiddleware "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

// ErrNotAnEvent is wrapped by the error of EventFromEnvelope for a message
// that is not an event the event store published: it lacks the stream id,
// type or version. The Kafka source dead-letters such a message.
var ErrNotAnEvent = errors.New("projection: not an event-store event")

// EventFromEnvelope returns the event an event-store record carries (see
// pkg/eventstore/postgres: one record per event, the stream id as subject
// and key, the stream type and version as the extensions
// eventstore.ExtensionStreamType and ExtensionStreamVersion). RecordedAt is
// the envelope's time, the append's; Position is zero, as a record does not
// carry it. It fails with an error wrapping ErrNotAnEvent when env lacks the
// stream id (subject and partition key), the stream type or a version of at
// least 1.
func EventFromEnvelope(env messaging.Envelope) (eventstore.RecordedEvent, error) {
	stream := env.Subject
	if stream == "" {
		stream = env.PartitionKey
	}
	streamType := env.Extensions[eventstore.ExtensionStreamType]
	rawVersion := env.Extensions[eventstore.ExtensionStreamVersion]
	version, err := strconv.ParseInt(rawVersion, 10, 64)
	switch {
	case stream == "":
		return eventstore.RecordedEvent{}, fmt.Errorf("%w: message %s has neither subject nor partition key", ErrNotAnEvent, env.ID)
	case streamType == "":
		return eventstore.RecordedEvent{}, fmt.Errorf("%w: message %s has no extension %q", ErrNotAnEvent, env.ID, eventstore.ExtensionStreamType)
	case err != nil || version < 1:
		return eventstore.RecordedEvent{}, fmt.Errorf("%w: message %s: extension %q is %q, not a version from 1", ErrNotAnEvent, env.ID, eventstore.ExtensionStreamVersion, rawVersion)
	}
	return eventstore.RecordedEvent{
		StreamID:      stream,
		StreamType:    streamType,
		Version:       version,
		ID:            env.ID,
		Type:          env.Type,
		SchemaVersion: max(env.SchemaVersion, 1),
		Data:          env.Data,
		Metadata: eventstore.Metadata{
			CorrelationID: env.CorrelationID,
			CausationID:   env.CausationID,
			TraceParent:   env.TraceParent,
			TraceState:    env.TraceState,
		},
		RecordedAt: env.Time,
	}, nil
}

// KafkaParams configures RunKafka.
type KafkaParams struct {
	// Subscriber reads the topics, as one consumer group: the group's
	// members share the partitions (several replicas are safe, see the
	// package documentation). It must deliver a partition's messages in
	// order, one at a time, as pkg/messaging/kafka's Subscriber does by
	// default. The caller closes it after RunKafka returned. Required.
	Subscriber message.Subscriber

	// DeadLetterPublisher publishes the messages that cannot be applied
	// for good (not an event, invalid envelope, schema violation, a
	// projection's permanent error) to "<topic>.dlq", as
	// middleware.DeadLetter does. The caller closes it after RunKafka
	// returned. Required.
	DeadLetterPublisher message.Publisher

	// Topics are the topics of the events, one handler each: those the
	// outbox relay publishes the store's events to
	// (postgres.Config.TopicFunc of their stream types). Required: at
	// least one, none empty nor repeated.
	Topics []string

	// Schemas validates payloads before they are applied; a payload that
	// breaks its schema is dead-lettered (and applied from the store
	// before the next event of its stream, see the package documentation).
	// Defaults to nil: records are decoded, not validated (the events were
	// validated when they were appended, if the store has a registry).
	Schemas *messaging.SchemaRegistry

	// TracerProvider starts the span of each delivery. Defaults to the
	// global TracerProvider.
	TracerProvider trace.TracerProvider

	// Retry configures the retries of failed deliveries (middleware.Retry);
	// its zero value gives its defaults.
	Retry middleware.RetryConfig

	// DeadLetter configures the dead letters (middleware.DeadLetter); its
	// zero value gives its defaults.
	DeadLetter middleware.DeadLetterConfig
}

func (p *KafkaParams) validate() error {
	var errs []error
	if p.Subscriber == nil {
		errs = append(errs, errors.New("projection: KafkaParams.Subscriber: required"))
	}
	if p.DeadLetterPublisher == nil {
		errs = append(errs, errors.New("projection: KafkaParams.DeadLetterPublisher: required"))
	}
	if len(p.Topics) == 0 {
		errs = append(errs, errors.New("projection: KafkaParams.Topics: none"))
	}
	seen := make(map[string]bool)
	for i, t := range p.Topics {
		switch {
		case t == "":
			errs = append(errs, fmt.Errorf("projection: KafkaParams.Topics[%d]: empty", i))
		case seen[t]:
			errs = append(errs, fmt.Errorf("projection: KafkaParams.Topics[%d]: %q is repeated", i, t))
		}
		seen[t] = true
	}
	return errors.Join(errs...)
}

// RunKafka runs every projection live from the events the outbox relay
// publishes to Kafka, until ctx ends, and returns nil then. It runs a
// Watermill router with a handler per topic behind dtx's middleware stack
// (middleware.Standard: tracing, dead letters, retries, panic recovery,
// correlation, decoding and validation), so a record that cannot
// be applied for good is dead-lettered and its partition moves on.
//
// Each message is applied to each projection in a transaction of its own
// that locks the version of the event's stream for that projection and
// moves it with the read model: an event at or below it is a duplicate
// and changes nothing; one right after it is applied; one further ahead is
// preceded, in the same transaction, by the stream's missing events, read
// from the store. Events of types a projection does not handle are skipped
// and counted, and move the version. See the package documentation for how
// this combines with Run, CatchUp and Rebuild.
//
// RunKafka fails at once for invalid params or projections, and when the
// router cannot start (a topic cannot be subscribed to).
func (r *Runner) RunKafka(ctx context.Context, params KafkaParams, projections ...Projection) error {
	var errs []error
	errs = append(errs, params.validate())
	if err := validateProjections(projections); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	stack, err := kafkaStack(params)
	if err != nil {
		return fmt.Errorf("projection: RunKafka: %w", err)
	}
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NewSlogLogger(r.cfg.Logger))
	if err != nil {
		return fmt.Errorf("projection: RunKafka: %w", err)
	}
	router.AddMiddleware(stack...)
	h := kafkaHandler{r: r, lockKey: make([]string, len(projections))}
	for i, p := range projections {
		h.appliers = append(h.appliers, newApplier(p, r.m))
		h.lockKey[i] = liveLockKey(r.store.Config().Schema, p.Name())
	}
	for _, t := range params.Topics {
		router.AddConsumerHandler("projection:"+t, t, params.Subscriber, h.handle)
	}
	if err := messaging.RunRouter(ctx, router); err != nil {
		return fmt.Errorf("projection: RunKafka: %w", err)
	}
	return nil
}

// kafkaStack returns middleware.Standard's stack for params; without
// Schemas, the same stack whose Validate only decodes.
func kafkaStack(params KafkaParams) ([]message.HandlerMiddleware, error) {
	if params.Schemas != nil {
		return middleware.Standard(middleware.StackConfig{
			DeadLetterPublisher: params.DeadLetterPublisher,
			Schemas:             params.Schemas,
			TracerProvider:      params.TracerProvider,
			Retry:               params.Retry,
			DeadLetter:          params.DeadLetter,
		})
	}
	dl, err := middleware.DeadLetter(params.DeadLetterPublisher, params.DeadLetter)
	if err != nil {
		return nil, err
	}
	retry, err := middleware.Retry(params.Retry)
	if err != nil {
		return nil, err
	}
	return []message.HandlerMiddleware{
		wmiddleware.Recoverer,
		middleware.Tracing(params.TracerProvider, nil),
		dl,
		retry,
		middleware.Recover,
		middleware.Correlation,
		middleware.Validate(nil),
	}, nil
}

// kafkaHandler applies messages to the projections of a RunKafka.
type kafkaHandler struct {
	r        *Runner
	appliers []applier
	lockKey  []string // per projection, liveLockKey
}

// handle applies one message to every projection, each in a transaction
// of its own: a failure is retried (or dead-lettered) as a whole, and the
// projections that applied it before find a duplicate.
func (h kafkaHandler) handle(msg *message.Message) error {
	ctx := msg.Context()
	env, ok := middleware.EnvelopeFromContext(ctx)
	if !ok {
		var err error
		if env, err = messaging.Decode(msg); err != nil {
			return messaging.Permanent(err)
		}
	}
	ev, err := EventFromEnvelope(env)
	if err != nil {
		return messaging.Permanent(err)
	}
	if up := h.r.store.Config().Upcasters; up != nil {
		if ev, err = up.Upcast(ev); err != nil {
			return messaging.Permanent(err)
		}
	}
	for i, a := range h.appliers {
		if err := h.apply(ctx, a, h.lockKey[i], ev); err != nil {
			return err
		}
	}
	return nil
}

// apply applies ev, and the events of its stream before it that the
// projection's version does not hold, in one transaction.
func (h kafkaHandler) apply(ctx context.Context, a applier, lockKey string, ev eventstore.RecordedEvent) error {
	var dup bool
	err := pgx.BeginFunc(ctx, h.r.pool, func(tx pgx.Tx) error {
		var b pgx.Batch
		b.Queue("SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", lockKey)
		var stored int64
		b.Queue(h.r.streams.lock, a.name, []string{ev.StreamID}).QueryRow(func(row pgx.Row) error {
			var id string
			return row.Scan(&id, &stored)
		})
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("lock the version of stream %q: %w", ev.StreamID, err)
		}
		if ev.Version <= stored {
			dup = true
			return nil
		}
		events := []eventstore.RecordedEvent{ev}
		if missing := ev.Version - stored - 1; missing > 0 {
			gap, err := h.r.store.WithTx(tx).ReadStream(ctx, eventstore.ReadStreamParams{StreamID: ev.StreamID, From: stored + 1, Limit: int(missing)})
			if err != nil {
				return err
			}
			if int64(len(gap)) != missing {
				return fmt.Errorf("stream %q: read %d events after version %d, want %d before event %s", ev.StreamID, len(gap), stored, missing, ev.ID)
			}
			gap = append(gap, ev)
			events = gap
		}
		if err := a.apply(ctx, tx, events); err != nil {
			return err
		}
		return h.r.streams.saveVersions(ctx, tx, a.name, map[string]int64{ev.StreamID: ev.Version})
	})
	if err != nil {
		return err
	}
	if dup {
		h.r.m.duplicates.WithLabelValues(a.name).Inc()
	}
	h.r.m.lag.WithLabelValues(a.name).Set(time.Since(ev.RecordedAt).Seconds())
	return nil
}
