package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
)

// createProjection creates a subscriber's effect table: one row per handled event, in
// the order handled.
func createProjection(t *testing.T, f *fixture) {
	t.Helper()
	_, err := f.pool.Exec(t.Context(), `CREATE TABLE projection (
		seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		event_id text NOT NULL, stream_id text NOT NULL, version bigint NOT NULL)`)
	require.NoError(t, err)
}

func project(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	_, err := tx.Exec(ctx, "INSERT INTO projection (event_id, stream_id, version) VALUES ($1, $2, $3)", ev.ID, ev.StreamID, ev.Version)
	return err
}

// projected returns the ids of the projected events in the order handled.
func projected(t *testing.T, f *fixture) []string {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), "SELECT event_id FROM projection ORDER BY seq")
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return ids
}

func waitProjected(t *testing.T, f *fixture, n int) []string {
	t.Helper()
	var ids []string
	require.Eventually(t, func() bool {
		ids = projected(t, f)
		return len(ids) >= n
	}, 20*time.Second, 10*time.Millisecond, "waiting for %d projected events", n)
	return ids
}

// subscribe runs Subscribe until the returned stop is called (or the test
// ends) and returns its result from stop.
func subscribe(t *testing.T, f *fixture, p postgres.SubscribeParams) (stop func() error) {
	t.Helper()
	if p.PollInterval == 0 {
		p.PollInterval = 50 * time.Millisecond
	}
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.store.Subscribe(ctx, p) }()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			result = <-done
		})
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func appendN(t *testing.T, f *fixture, stream string, n int) {
	t.Helper()
	for range n {
		_, err := f.store.Append(t.Context(), eventstore.AppendParams{StreamID: stream, StreamType: "thing", Expected: eventstore.Any,
			Events: []eventstore.EventData{{Type: "thing.happened", Data: json.RawMessage(`{}`)}}})
		require.NoError(t, err)
	}
}

// allIDs reads every event with ReadAll, in global order.
func allIDs(t *testing.T, f *fixture) []string {
	t.Helper()
	var after eventstore.Position
	return readAllIDs(t, f.store, &after)
}

func TestSubscribeProjectsOnceInOrderAndResumes(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	createProjection(t, f)
	appendN(t, f, "before", 3)

	stop := subscribe(t, f, postgres.SubscribeParams{Reader: "projector", Handler: project, BatchSize: 4})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() { appendN(t, f, fmt.Sprintf("s-%d", w), 10) })
	}
	wg.Wait()
	got := waitProjected(t, f, 33)
	require.NoError(t, stop())
	want := allIDs(t, f)
	require.Len(t, want, 33)
	require.Equal(t, want, got, "every event once, in global commit order")

	// Restarted, it resumes after its checkpoint: nothing is applied twice.
	appendN(t, f, "after", 2)
	stop = subscribe(t, f, postgres.SubscribeParams{Reader: "projector", Handler: project, BatchSize: 4})
	got = waitProjected(t, f, 35)
	require.Never(t, func() bool { return len(projected(t, f)) > 35 }, 200*time.Millisecond, 20*time.Millisecond)
	require.NoError(t, stop())
	require.Equal(t, allIDs(t, f), got)

	// A new reader starting from a position handles only what follows it.
	b, err := f.store.ReadAll(t.Context(), eventstore.ReadAllParams{Limit: 30})
	require.NoError(t, err)
	from := b.End
	var seen atomic.Int64
	stop = subscribe(t, f, postgres.SubscribeParams{Reader: "late-joiner", From: from, Handler: func(context.Context, pgx.Tx, eventstore.RecordedEvent) error {
		seen.Add(1)
		return nil
	}})
	require.Eventually(t, func() bool { return seen.Load() == 5 }, 20*time.Second, 10*time.Millisecond)
	require.Never(t, func() bool { return seen.Load() > 5 }, 200*time.Millisecond, 20*time.Millisecond)
	require.NoError(t, stop())
}

func TestSubscribeHandlerErrorRollsBackAndRetries(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	createProjection(t, f)
	appendN(t, f, "s", 5)

	var calls, fourth, failures atomic.Int64
	var attempts []int
	var mu sync.Mutex
	errBoom := errors.New("boom")
	stop := subscribe(t, f, postgres.SubscribeParams{
		Reader:        "projector",
		BatchSize:     10,
		MinRetryDelay: time.Millisecond,
		MaxRetryDelay: 5 * time.Millisecond,
		Handler: func(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
			calls.Add(1)
			if ev.Version == 4 {
				fourth.Add(1)
			}
			if err := project(ctx, tx, ev); err != nil {
				return err
			}
			if ev.Version == 4 && failures.Load() < 2 {
				failures.Add(1)
				return errBoom
			}
			return nil
		},
		ErrorFunc: func(_ context.Context, err error, attempt int) error {
			var he *postgres.HandlerError
			if errors.As(err, &he) && errors.Is(err, errBoom) && he.Event.Version == 4 {
				mu.Lock()
				attempts = append(attempts, attempt)
				mu.Unlock()
			}
			return nil
		},
	})
	got := waitProjected(t, f, 5)
	require.NoError(t, stop())
	require.Equal(t, allIDs(t, f), got, "the failed batches left no effect")
	// How the five events split into batches depends on the horizon (other
	// transactions of the cluster), so count the failing event's handlings:
	// two failed attempts, then the one that succeeds.
	require.Equal(t, int64(3), fourth.Load(), "two failed attempts, then the batch")
	require.GreaterOrEqual(t, calls.Load(), int64(4+2), "every event, and the retried ones again")
	mu.Lock()
	require.Equal(t, []int{1, 2}, attempts)
	mu.Unlock()

	// An ErrorFunc that returns an error ends Subscribe with it, leaving
	// the checkpoint where it was.
	appendN(t, f, "s", 1)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err := f.store.Subscribe(ctx, postgres.SubscribeParams{
		Reader:        "projector",
		PollInterval:  50 * time.Millisecond,
		MinRetryDelay: time.Millisecond,
		Logger:        slog.New(slog.DiscardHandler),
		Handler: func(context.Context, pgx.Tx, eventstore.RecordedEvent) error {
			return errBoom
		},
		ErrorFunc: func(_ context.Context, err error, attempt int) error {
			if attempt == 3 {
				return fmt.Errorf("giving up: %w", err)
			}
			return nil
		},
	})
	var he *postgres.HandlerError
	require.ErrorAs(t, err, &he)
	require.ErrorIs(t, err, errBoom)
	require.Equal(t, int64(6), he.Event.Version)
	require.Len(t, projected(t, f), 5)
}

func TestSubscribeDeliversLateCommitOnceInOrder(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	createProjection(t, f)
	stop := subscribe(t, f, postgres.SubscribeParams{Reader: "projector", Handler: project})

	// The late transaction takes its id first and commits last.
	ctx := t.Context()
	late, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = late.Rollback(ctx) }()
	_, err = f.store.AppendTx(ctx, late, eventstore.AppendParams{StreamID: "late", StreamType: "thing", Expected: eventstore.NoStream,
		Events: []eventstore.EventData{{Type: "thing.happened", Data: json.RawMessage(`{}`)}}})
	require.NoError(t, err)
	appendN(t, f, "early", 2)

	require.Never(t, func() bool { return len(projected(t, f)) > 0 }, 300*time.Millisecond, 20*time.Millisecond,
		"events behind an open transaction wait for it")
	require.NoError(t, late.Commit(ctx))
	got := waitProjected(t, f, 3)
	require.Never(t, func() bool { return len(projected(t, f)) > 3 }, 200*time.Millisecond, 20*time.Millisecond)
	require.NoError(t, stop())
	require.Equal(t, allIDs(t, f), got)

	var first string
	require.NoError(t, f.pool.QueryRow(ctx, "SELECT stream_id FROM projection ORDER BY seq LIMIT 1").Scan(&first))
	require.Equal(t, "late", first, "the late transaction's event comes first: it took its id first")
}

func TestSubscribeParamsAreChecked(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	err := f.store.Subscribe(t.Context(), postgres.SubscribeParams{BatchSize: -1, MinRetryDelay: time.Second, MaxRetryDelay: time.Millisecond})
	require.ErrorContains(t, err, "Handler is nil")
	require.ErrorContains(t, err, "BatchSize")
	require.ErrorContains(t, err, "MaxRetryDelay")
	err = f.store.Subscribe(t.Context(), postgres.SubscribeParams{Handler: project})
	require.ErrorContains(t, err, "Reader")
}

// Two subscribers of one reader name, with different batch sizes so that
// their batches overlap, apply every event once between them.
func TestSubscribeTwoSubscribersOfOneReaderApplyOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	createProjection(t, f)
	stopA := subscribe(t, f, postgres.SubscribeParams{Reader: "shared", Handler: project, BatchSize: 3})
	stopB := subscribe(t, f, postgres.SubscribeParams{Reader: "shared", Handler: project, BatchSize: 7})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() { appendN(t, f, fmt.Sprintf("s-%d", w), 20) })
	}
	wg.Wait()
	got := waitProjected(t, f, 80)
	require.Never(t, func() bool { return len(projected(t, f)) > 80 }, 300*time.Millisecond, 20*time.Millisecond)
	require.NoError(t, stopA())
	require.NoError(t, stopB())
	require.Equal(t, allIDs(t, f), got, "every event once, in global commit order")
}
