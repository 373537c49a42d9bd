package main

// End to end against real PostgreSQL and Kafka: the outbox relay, the
// orchestrator (as cmd/orchestrator wires it) and the four services run in
// process, on a schema and topics of the test's own; the saga definition is
// sagas/order-to-cash.yaml with its topics renamed to the test's.

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/relay"
	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
	"github.com/vextrus/dtx/schemas"
)

// waitFor bounds every wait of the test.
const waitFor = 90 * time.Second

// renameTopics points def at topics: its trigger and every command topic.
func renameTopics(def *saga.Definition, topics Topics) {
	def.Triggers[0].Topic = topics.SalesEvents
	byService := map[string]string{
		DefaultTopics().Inventory: topics.Inventory, DefaultTopics().Accounting: topics.Accounting,
		DefaultTopics().Delivery: topics.Delivery, DefaultTopics().Sales: topics.Sales,
	}
	for i := range def.Steps {
		s := &def.Steps[i]
		s.Action.Topic = byService[s.Action.Topic]
		if s.Compensation != nil {
			s.Compensation.Topic = byService[s.Compensation.Topic]
		}
	}
}

// background runs fn until the test ends, then cancels its context and
// waits for it.
func background(t *testing.T, name string, fn func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { err = fn(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v", name, err)
		}
	})
}

func TestOrderToCashEndToEnd(t *testing.T) {
	t.Parallel()
	db := pgtest.NewSchema(t)
	exampleSchema := pgtest.NewSchemaName(t)
	topics := Topics{
		SalesEvents: kafkatest.NewTopic(t, 2), Inventory: kafkatest.NewTopic(t, 2), Accounting: kafkatest.NewTopic(t, 2),
		Delivery: kafkatest.NewTopic(t, 2), Sales: kafkatest.NewTopic(t, 2), Replies: kafkatest.NewTopic(t, 2),
		Events: kafkatest.NewTopic(t, 1),
	}
	groupPrefix, reg, logger := startSagaSide(t, db, topics)

	// The four services.
	st, err := newStore(exampleSchema)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, st.setup(ctx, db.Pool))
	background(t, "services", func(ctx context.Context) error {
		return RunServices(ctx, ServicesConfig{
			Pool: db.Pool, Schema: db.Name, ExampleSchema: exampleSchema,
			Brokers: kafkatest.Brokers(), Topics: topics, GroupPrefix: groupPrefix, Schemas: reg, Logger: logger,
		})
	})

	// 30 orders: 3 sold out, 4 declined, 4 undeliverable, 19 complete.
	ob, err := outbox.New(outbox.Config{Schema: db.Name, Registry: reg})
	require.NoError(t, err)
	p := PlaceParams{Run: "t1", Orders: 30, PerTx: 4, SoldOutEvery: 10, DeclineEvery: 6, FailDeliveryEvery: 7, Topic: topics.SalesEvents}
	counts, err := Place(ctx, db.Pool, ob, st, p)
	require.NoError(t, err)
	require.Equal(t, map[string]int{ScenarioOK: 19, ScenarioSoldOut: 3, ScenarioDeclined: 4, ScenarioUndeliverable: 4}, counts)

	rep, err := WaitTerminal(ctx, db.Pool, st, ReportParams{Schema: db.Name, Run: p.Run, CheckOutcomes: true}, waitFor, nil)
	require.NoError(t, err)
	require.True(t, rep.Terminal(), "sagas: %v", rep.Sagas)
	require.Empty(t, rep.Problems)
	require.Equal(t, map[string]int{"completed": 19, "compensated": 11}, rep.Sagas)
	// Declined ones were reserved then released; undeliverable ones also
	// charged then refunded; sold-out ones never reserved anything.
	require.Equal(t, 19+4, rep.Charged)
	require.Equal(t, 4, rep.Refunded)
	require.Equal(t, 19, rep.Scheduled)
	require.Equal(t, 19, rep.Confirmed)
	require.Equal(t, rep.CompletedUnits, rep.ReservedUnits)
	var released int
	require.NoError(t, db.Pool.QueryRow(ctx, st.sql(`SELECT count(DISTINCT order_id) FROM {s}.reservations WHERE status = 'released'`)).Scan(&released))
	require.Equal(t, 4+4, released)
	// 19 completed x 4 actions, 8 released reservations (action and
	// compensation), 4 refunded payments (action and compensation).
	require.Equal(t, 19*4+8*2+4*2, rep.LedgerRows)
}

// startSagaSide starts, on db and topics, what runs beside the services:
// the relay, and the orchestrator with its router wired as
// cmd/orchestrator does. It deletes the test's consumer groups at cleanup
// and returns the services' group prefix, the schema registry and a
// newTestTopics creates the saga's topics for one test: two partitions for
// the trigger, one for each other.
func newTestTopics(t *testing.T) Topics {
	t.Helper()
	return Topics{
		SalesEvents: kafkatest.NewTopic(t, 2), Inventory: kafkatest.NewTopic(t, 1), Accounting: kafkatest.NewTopic(t, 1),
		Delivery: kafkatest.NewTopic(t, 1), Sales: kafkatest.NewTopic(t, 1), Replies: kafkatest.NewTopic(t, 1),
		Events: kafkatest.NewTopic(t, 1),
	}
}

// logger.
func startSagaSide(t *testing.T, db *pgtest.Schema, topics Topics) (groupPrefix string, reg *messaging.SchemaRegistry, logger *slog.Logger) {
	t.Helper()
	groupPrefix = topics.SalesEvents // unique per test
	orchestratorGroup := groupPrefix + "-orchestrator"
	adm := kadm.NewClient(kafkatest.NewClient(t))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		groups := []string{orchestratorGroup}
		for _, s := range append(allServices(), salesOutcomes) {
			groups = append(groups, groupPrefix+"-"+s)
		}
		for _, g := range groups {
			if _, err := adm.DeleteGroup(ctx, g); err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
				t.Logf("delete group %s: %v", g, err)
			}
		}
	})

	def, err := saga.LoadFile("sagas/order-to-cash.yaml")
	require.NoError(t, err)
	renameTopics(def, topics)
	defs, err := saga.NewRegistry(def)
	require.NoError(t, err)
	reg, err = messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	require.NoError(t, err)
	logger = slog.New(slog.DiscardHandler)

	// The relay publishes what everyone writes to the outbox.
	r, err := relay.New(db.Pool, []kgo.Opt{kgo.SeedBrokers(kafkatest.Brokers()...)},
		relay.Config{Schema: db.Name, PollInterval: 100 * time.Millisecond, LeaseDuration: 2 * time.Second})
	require.NoError(t, err)
	background(t, "relay", r.Run)

	// The orchestrator, wired as cmd/orchestrator does.
	o, err := orchestrator.New(db.Pool, orchestrator.Config{
		Schema: db.Name, Definitions: defs, Schemas: reg, Consumer: orchestratorGroup,
		ReplyTopic: topics.Replies, EventTopic: topics.Events, ScanInterval: 50 * time.Millisecond, Logger: logger,
	})
	require.NoError(t, err)
	client := kafka.ClientConfig{Brokers: kafkatest.Brokers()}
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: client, AutoCreateTopics: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{ClientConfig: client, ConsumerGroup: orchestratorGroup,
		MaxInFlightPerPartition: 64, CommitInterval: 100 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	mws, err := middleware.Standard(middleware.StackConfig{DeadLetterPublisher: pub, Schemas: reg})
	require.NoError(t, err)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddMiddleware(mws...)
	for _, topic := range o.Topics() {
		router.AddConsumerHandler("saga:"+topic, topic, sub, o.Handle)
	}
	background(t, "orchestrator", o.Run)
	background(t, "orchestrator router", func(ctx context.Context) error {
		done := make(chan error, 1)
		go func() { done <- router.Run(ctx) }()
		<-ctx.Done()
		_ = router.Close()
		return <-done
	})

	return groupPrefix, reg, logger
}
