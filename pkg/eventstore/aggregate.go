package eventstore

import (
	"context"
	"errors"
	"fmt"
)

// loadPage is how many events Load reads per ReadStream.
const loadPage = 500

// Aggregate says how to rebuild the state S of one kind of aggregate from
// its stream, and of which stream type it is.
type Aggregate[S any] struct {
	// StreamType is the type of the aggregate's streams, e.g. "order".
	// Required.
	StreamType string
	// InitialFunc returns the state before the first event. Defaults to
	// S's zero value.
	InitialFunc func() S
	// ApplyFunc returns the state after ev. It must not fail on events it
	// has accepted before: a failure makes the aggregate unloadable.
	// Required.
	ApplyFunc func(state S, ev RecordedEvent) (S, error)
}

// Loaded is an aggregate's state and the version it was rebuilt at.
type Loaded[S any] struct {
	// State is the state after every event read.
	State S
	// Version is the stream's version: 0 for a new aggregate. Append with
	// Exact(Version).
	Version int64
}

// Load rebuilds the aggregate of stream streamID by applying its events in
// order. A stream without events loads as the initial state at version 0.
func Load[S any](ctx context.Context, store Store, agg Aggregate[S], streamID string) (Loaded[S], error) {
	var l Loaded[S]
	if agg.ApplyFunc == nil {
		return l, errors.New("eventstore: load: Aggregate.ApplyFunc is nil")
	}
	if agg.InitialFunc != nil {
		l.State = agg.InitialFunc()
	}
	for {
		evs, err := store.ReadStream(ctx, ReadStreamParams{StreamID: streamID, From: l.Version + 1, Limit: loadPage})
		if err != nil {
			return l, fmt.Errorf("eventstore: load %q: %w", streamID, err)
		}
		for _, ev := range evs {
			if l.State, err = agg.ApplyFunc(l.State, ev); err != nil {
				return l, fmt.Errorf("eventstore: load %q: apply version %d (%s): %w", streamID, ev.Version, ev.Type, err)
			}
			l.Version = ev.Version
		}
		if len(evs) < loadPage {
			return l, nil
		}
	}
}

// DecideFunc returns the events that handling a command produces in state,
// or an error to refuse it. It may be called several times for one command
// (see Update), so it must have no side effects.
type DecideFunc[S any] func(state S) ([]EventData, error)

// Update loads the aggregate of streamID, asks decide for new events and
// appends them with the loaded version as the expected one. It returns the
// state after the new events and the new version; when decide returns no
// events, nothing is appended. If another writer appended meanwhile, the
// error wraps ErrConcurrencyConflict: wrap Update in RetryOnConflict to
// load and decide again.
func Update[S any](ctx context.Context, store Store, agg Aggregate[S], streamID string, decide DecideFunc[S]) (Loaded[S], error) {
	l, err := Load(ctx, store, agg, streamID)
	if err != nil {
		return l, err
	}
	events, err := decide(l.State)
	if err != nil || len(events) == 0 {
		return l, err
	}
	res, err := store.Append(ctx, AppendParams{StreamID: streamID, StreamType: agg.StreamType, Expected: Exact(l.Version), Events: events})
	if err != nil {
		return l, err
	}
	// Apply the new events as the store recorded them, so the state
	// matches what a later Load returns.
	evs, err := store.ReadStream(ctx, ReadStreamParams{StreamID: streamID, From: l.Version + 1, Limit: len(events)})
	if err != nil {
		return l, fmt.Errorf("eventstore: update %q: read back: %w", streamID, err)
	}
	for _, ev := range evs {
		if l.State, err = agg.ApplyFunc(l.State, ev); err != nil {
			return l, fmt.Errorf("eventstore: update %q: apply version %d (%s): %w", streamID, ev.Version, ev.Type, err)
		}
	}
	l.Version = res.Version
	return l, nil
}

// RetryOnConflict calls fn until it returns an error that does not wrap
// ErrConcurrencyConflict, at most attempts times (at least once), and
// returns its last error. It stops early when ctx is done.
func RetryOnConflict(ctx context.Context, attempts int, fn func(ctx context.Context) error) error {
	var err error
	for range max(attempts, 1) {
		if err = fn(ctx); !errors.Is(err, ErrConcurrencyConflict) {
			return err
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return errors.Join(err, ctxErr)
		}
	}
	return err
}
