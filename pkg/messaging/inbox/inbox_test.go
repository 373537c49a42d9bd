package inbox_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait of these tests.
const waitFor = 10 * time.Second

type fixture struct {
	schema *pgtest.Schema
}

// setup gives a test its own migrated schema and an effects table in it: the
// stand-in for a handler's business effect.
func setup(t *testing.T) *fixture {
	t.Helper()
	s := pgtest.NewSchema(t)
	_, err := s.Pool.Exec(t.Context(), "CREATE TABLE effects (consumer text NOT NULL, message_id text NOT NULL)")
	require.NoError(t, err)
	return &fixture{schema: s}
}

func (f *fixture) inbox(t *testing.T, cfg inbox.Config) *inbox.Inbox {
	t.Helper()
	cfg.Schema = f.schema.Name
	if cfg.Consumer == "" {
		cfg.Consumer = "consumer-a"
	}
	ib, err := inbox.New(f.schema.Pool, cfg)
	require.NoError(t, err)
	return ib
}

func (f *fixture) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, f.schema.Pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func (f *fixture) effects(t *testing.T) int { return f.count(t, "SELECT count(*) FROM effects") }

// effect is the business effect of a handler: one row, in tx. Handlers
// return its error, since some run outside the test's goroutine.
func effect(ctx context.Context, tx pgx.Tx, consumer string, msg *message.Message) error {
	_, err := tx.Exec(ctx, "INSERT INTO effects (consumer, message_id) VALUES ($1, $2)", consumer, msg.UUID)
	return err
}

func newMessage(t *testing.T) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"n":1}`))
	msg.SetContext(t.Context())
	return msg
}

// redeliver is how a subscriber hands the same record over again: a new
// message value with the same id.
func redeliver(t *testing.T, msg *message.Message) *message.Message {
	c := msg.Copy()
	c.SetContext(t.Context())
	return c
}

func TestConfig(t *testing.T) {
	t.Parallel()
	s := pgtest.NewSchema(t)

	ib, err := inbox.New(s.Pool, inbox.Config{Consumer: "c"})
	require.NoError(t, err)
	require.Equal(t, "c", ib.Consumer())

	for _, tc := range []struct {
		name string
		cfg  inbox.Config
		want []string
	}{
		{"no consumer", inbox.Config{}, []string{"Consumer: must not be empty"}},
		{"long consumer", inbox.Config{Consumer: strings.Repeat("c", 256)}, []string{"Consumer: is 256 bytes long"}},
		{"NUL in consumer", inbox.Config{Consumer: "a\x00b"}, []string{"Consumer: contains a NUL byte"}},
		{"bad schema", inbox.Config{Consumer: "c", Schema: "Bad-Name"}, []string{"Schema:"}},
		{"short retention", inbox.Config{Consumer: "c", Retention: time.Minute}, []string{"Retention: 1m0s is shorter than 1h0m0s"}},
		{"several", inbox.Config{Schema: "pg_x", SweepInterval: time.Millisecond, SweepBatchSize: -1}, []string{
			"Schema:", "Consumer:", "SweepInterval: 1ms is outside", "SweepBatchSize: -1 is outside",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := inbox.New(s.Pool, tc.cfg)
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
	_, err = inbox.New(nil, inbox.Config{Consumer: "c"})
	require.Error(t, err)
}

func TestRecord(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ib := f.inbox(t, inbox.Config{Retention: 2 * time.Hour})
	ctx := t.Context()

	rolledBack := pgtest.Tx(t, f.schema.Pool)
	first, err := ib.Record(ctx, rolledBack, "m1")
	require.NoError(t, err)
	require.True(t, first)
	require.NoError(t, rolledBack.Rollback(ctx))

	tx := pgtest.Tx(t, f.schema.Pool)
	first, err = ib.Record(ctx, tx, "m1")
	require.NoError(t, err)
	require.True(t, first, "a rolled-back record does not count")
	first, err = ib.Record(ctx, tx, "m1")
	require.NoError(t, err)
	require.False(t, first, "the transaction sees its own record")
	require.NoError(t, tx.Commit(ctx))

	tx = pgtest.Tx(t, f.schema.Pool)
	first, err = ib.Record(ctx, tx, "m1")
	require.NoError(t, err)
	require.False(t, first)

	require.Equal(t, 1, f.count(t, "SELECT count(*) FROM inbox WHERE consumer = 'consumer-a' AND message_id = 'm1' AND expires_at - received_at = interval '2 hours'"),
		"expires_at is received_at plus Retention")
}

func TestRecordRefusesInvalidIDs(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ib := f.inbox(t, inbox.Config{})
	tx := pgtest.Tx(t, f.schema.Pool)
	for _, id := range []string{"", strings.Repeat("x", 513), "a\x00b", "\xff\xfe"} {
		_, err := ib.Record(t.Context(), tx, id)
		require.ErrorIs(t, err, inbox.ErrInvalidMessageID, "id %q", id)
	}
	first, err := ib.Record(t.Context(), tx, strings.Repeat("x", 512))
	require.NoError(t, err)
	require.True(t, first)

	// Through the handler the error reaches the router, which can dead-letter it.
	h := ib.Handler(func(context.Context, pgx.Tx, *message.Message) ([]*message.Message, error) {
		t.Error("the handler must not run")
		return nil, nil
	})
	msg := message.NewMessage("", nil)
	msg.SetContext(t.Context())
	_, err = h(msg)
	require.ErrorIs(t, err, inbox.ErrInvalidMessageID)
}

func TestHandlerDeliveredThreeTimesHasOneEffect(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ib := f.inbox(t, inbox.Config{})
	var runs atomic.Int32
	h := ib.Handler(func(ctx context.Context, tx pgx.Tx, msg *message.Message) ([]*message.Message, error) {
		runs.Add(1)
		if err := effect(ctx, tx, ib.Consumer(), msg); err != nil {
			return nil, err
		}
		return []*message.Message{message.NewMessage("reply-"+msg.UUID, nil)}, nil
	})

	msg := newMessage(t)
	out, err := h(msg)
	require.NoError(t, err)
	require.Len(t, out, 1, "the first delivery returns the handler's messages")
	for range 2 {
		out, err := h(redeliver(t, msg))
		require.NoError(t, err, "a duplicate is acked")
		require.Empty(t, out)
	}
	require.EqualValues(t, 1, runs.Load())
	require.Equal(t, 1, f.effects(t))
}

func TestHandlerTxIsInContext(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ib := f.inbox(t, inbox.Config{})

	_, ok := inbox.TxFromContext(t.Context())
	require.False(t, ok)

	h := ib.Handler(func(ctx context.Context, tx pgx.Tx, msg *message.Message) ([]*message.Message, error) {
		got, ok := inbox.TxFromContext(ctx)
		require.True(t, ok)
		require.Same(t, tx, got)
		// Work done through the context's transaction is part of the effect.
		if err := effect(ctx, got, ib.Consumer(), msg); err != nil {
			return nil, err
		}
		return nil, errors.New("roll back")
	})
	_, err := h(newMessage(t))
	require.Error(t, err)
	require.Zero(t, f.effects(t))
}

func TestHandlerFailureRollsBackAndRedeliveryRuns(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ib := f.inbox(t, inbox.Config{})
	errBusiness := errors.New("downstream unavailable")
	var runs atomic.Int32
	h := ib.Handler(func(ctx context.Context, tx pgx.Tx, msg *message.Message) ([]*message.Message, error) {
		if err := effect(ctx, tx, ib.Consumer(), msg); err != nil {
			return nil, err
		}
		if runs.Add(1) == 1 {
			return nil, errBusiness
		}
		return nil, nil
	})

	msg := newMessage(t)
	_, err := h(msg)
	require.ErrorIs(t, err, errBusiness)
	require.Zero(t, f.effects(t), "the failed attempt's effect is rolled back")
	require.Zero(t, f.count(t, "SELECT count(*) FROM inbox"), "and so is its record")

	_, err = h(redeliver(t, msg))
	require.NoError(t, err)
	_, err = h(redeliver(t, msg))
	require.NoError(t, err)
	require.EqualValues(t, 2, runs.Load())
	require.Equal(t, 1, f.effects(t))
}

func TestHandlerPanicRollsBack(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ib := f.inbox(t, inbox.Config{})
	var runs atomic.Int32
	h := ib.Handler(func(ctx context.Context, tx pgx.Tx, msg *message.Message) ([]*message.Message, error) {
		if err := effect(ctx, tx, ib.Consumer(), msg); err != nil {
			return nil, err
		}
		if runs.Add(1) == 1 {
			panic("handler bug")
		}
		return nil, nil
	})

	msg := newMessage(t)
	require.PanicsWithValue(t, "handler bug", func() { _, _ = h(msg) })
	require.Zero(t, f.effects(t))
	_, err := h(redeliver(t, msg))
	require.NoError(t, err)
	require.Equal(t, 1, f.effects(t))
}

func TestConsumersDoNotDedupEachOther(t *testing.T) {
	t.Parallel()
	f := setup(t)
	a := f.inbox(t, inbox.Config{Consumer: "billing"})
	b := f.inbox(t, inbox.Config{Consumer: "shipping"})
	handler := func(ib *inbox.Inbox) message.HandlerFunc {
		return ib.Handler(func(ctx context.Context, tx pgx.Tx, msg *message.Message) ([]*message.Message, error) {
			if err := effect(ctx, tx, ib.Consumer(), msg); err != nil {
				return nil, err
			}
			return nil, nil
		})
	}
	ha, hb := handler(a), handler(b)

	msg := newMessage(t)
	for range 2 {
		_, err := ha(redeliver(t, msg))
		require.NoError(t, err)
		_, err = hb(redeliver(t, msg))
		require.NoError(t, err)
	}
	require.Equal(t, 1, f.count(t, "SELECT count(*) FROM effects WHERE consumer = 'billing'"))
	require.Equal(t, 1, f.count(t, "SELECT count(*) FROM effects WHERE consumer = 'shipping'"))
}

// TestConcurrentDelivery delivers one message to two handlers at once, as two
// consumers of a group do around a rebalance. The second delivery's record
// waits for the first delivery's transaction; the outcome of the first decides
// whether the second runs.
func TestConcurrentDelivery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		firstFails    bool
		wantRuns      int32
		wantSecondRan bool
	}{
		{name: "first commits, second is skipped", wantRuns: 1},
		{name: "first rolls back, second runs", firstFails: true, wantRuns: 2, wantSecondRan: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			ib := f.inbox(t, inbox.Config{})
			errFirst := errors.New("first delivery fails")

			firstPID := make(chan uint32, 1)
			release := make(chan struct{})
			var runs atomic.Int32
			h := ib.Handler(func(ctx context.Context, tx pgx.Tx, msg *message.Message) ([]*message.Message, error) {
				if err := effect(ctx, tx, ib.Consumer(), msg); err != nil {
					return nil, err
				}
				if runs.Add(1) > 1 {
					return nil, nil
				}
				firstPID <- tx.Conn().PgConn().PID()
				select {
				case <-release:
				case <-time.After(waitFor):
					return nil, errors.New("never released")
				}
				if tc.firstFails {
					return nil, errFirst
				}
				return nil, nil
			})

			msg := newMessage(t)
			firstErr := make(chan error, 1)
			go func() {
				_, err := h(msg)
				firstErr <- err
			}()
			var pid uint32
			select {
			case pid = <-firstPID:
			case <-time.After(waitFor):
				t.Fatal("the first delivery did not reach its handler")
			}

			secondErr := make(chan error, 1)
			go func() {
				_, err := h(redeliver(t, msg))
				secondErr <- err
			}()
			// The second delivery is blocked on the first's uncommitted record.
			require.Eventually(t, func() bool {
				return f.count(t, `SELECT count(*) FROM pg_stat_activity
					WHERE wait_event_type = 'Lock' AND $1::int = ANY (pg_blocking_pids(pid))`, int32(pid)) == 1
			}, waitFor, 5*time.Millisecond)
			require.EqualValues(t, 1, runs.Load(), "the blocked delivery has not run its handler")

			close(release)
			if tc.firstFails {
				require.ErrorIs(t, <-firstErr, errFirst)
			} else {
				require.NoError(t, <-firstErr)
			}
			require.NoError(t, <-secondErr)
			require.Equal(t, tc.wantRuns, runs.Load())
			require.Equal(t, 1, f.effects(t), "the effect happens once")
			require.Equal(t, 1, f.count(t, "SELECT count(*) FROM inbox"))
		})
	}
}

func TestHandlerInRouter(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ib := f.inbox(t, inbox.Config{Consumer: "router"})
	logger := watermill.NopLogger{}
	// Publish returns once the handler has acked, so the test knows when the
	// deliveries are done.
	pubsub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, logger)
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	require.NoError(t, err)

	router.AddConsumerHandler("dedup", "orders", pubsub,
		func(msg *message.Message) error {
			_, err := ib.Handler(func(ctx context.Context, tx pgx.Tx, msg *message.Message) ([]*message.Message, error) {
				if err := effect(ctx, tx, ib.Consumer(), msg); err != nil {
					return nil, err
				}
				return nil, nil
			})(msg)
			return err
		})
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(context.Background()) }()
	<-router.Running()
	t.Cleanup(func() {
		require.NoError(t, router.Close())
		require.NoError(t, <-routerDone)
		require.NoError(t, pubsub.Close())
	})

	msg := message.NewMessage(watermill.NewUUID(), nil)
	for range 3 {
		require.NoError(t, pubsub.Publish("orders", msg.Copy()))
	}
	require.NoError(t, pubsub.Publish("orders", message.NewMessage(watermill.NewUUID(), nil)))
	require.Equal(t, 2, f.effects(t))
	require.Equal(t, 1, f.count(t, "SELECT count(*) FROM effects WHERE message_id = $1", msg.UUID))
}
