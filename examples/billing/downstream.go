package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/saga"
)

// Names of the two downstream consumers, as saga_events.consumer and GET
// /invoices/{id} show them.
const (
	consumerWatermill = "watermill"
	consumerFranz     = "franz-go"
)

// statusAfter is the invoice status a lifecycle event moves it to.
var statusAfter = map[string]string{
	saga.EventStarted:      "processing",
	saga.EventCompensating: "cancelling",
	saga.EventCompleted:    "issued",
	saga.EventCompensated:  "cancelled",
	saga.EventFailed:       "needs-attention",
}

// lifecycleHandler is the Watermill router handler of the saga lifecycle
// topic. The middleware (middleware.Standard) has decoded and validated the
// message; the handler records the event and moves the invoice's status, in
// one transaction, once per message id.
func lifecycleHandler(pool *pgxpool.Pool, st store, log *slog.Logger) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		ctx := msg.Context()
		env, ok := middleware.EnvelopeFromContext(ctx)
		if !ok {
			return messaging.Permanent(errors.New("billing: lifecycle handler runs without middleware.Standard"))
		}
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			first, err := st.recordEvent(ctx, tx, consumerWatermill, env.ID, env.SagaID, env.Type)
			if err != nil || !first {
				return err
			}
			if status, ok := statusAfter[env.Type]; ok {
				if err := st.setStatus(ctx, tx, env.SagaID, status); err != nil {
					return err
				}
			}
			log.InfoContext(ctx, "billing: saga event", "consumer", consumerWatermill, "saga_id", env.SagaID, "type", env.Type)
			return nil
		})
	}
}

// consumeWithFranz follows topic with a plain franz-go consumer in group
// and records each saga lifecycle event, decoded with kafka.DecodeRecord,
// until ctx ends. It commits a fetch's offsets only after its records are
// recorded, so a crash re-reads them (recording is idempotent). A record
// that is not a dtx envelope is logged and skipped.
func consumeWithFranz(ctx context.Context, brokers []string, group, topic string, pool *pgxpool.Pool, st store, log *slog.Logger) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ClientID("billing-audit"),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return fmt.Errorf("franz-go consumer of %s: %w", topic, err)
	}
	defer cl.Close() // leaves the group
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			log.WarnContext(ctx, "billing: fetch", "topic", t, "partition", p, "err", err)
		})
		var done []*kgo.Record
		for _, r := range fetches.Records() {
			env, err := kafka.DecodeRecord(r)
			if errors.Is(err, messaging.ErrInvalidEnvelope) {
				log.WarnContext(ctx, "billing: skipped a record that is not a dtx envelope", "err", err)
				done = append(done, r)
				continue
			}
			for {
				_, err = st.recordEvent(ctx, pool, consumerFranz, env.ID, env.SagaID, env.Type)
				if err == nil || ctx.Err() != nil {
					break
				}
				log.WarnContext(ctx, "billing: record a saga event; retrying", "err", err)
				time.Sleep(time.Second)
			}
			if err != nil {
				return nil // ctx ended: the record is read again next time
			}
			log.InfoContext(ctx, "billing: saga event", "consumer", consumerFranz, "saga_id", env.SagaID, "type", env.Type,
				"partition", r.Partition, "offset", r.Offset)
			done = append(done, r)
		}
		if len(done) > 0 {
			if err := cl.CommitRecords(context.WithoutCancel(ctx), done...); err != nil {
				log.WarnContext(ctx, "billing: commit offsets", "err", err)
			}
		}
	}
}
