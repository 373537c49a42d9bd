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

	// Snapshot, when set, turns snapshots on for a Store that is also a
	// SnapshotStore: Load starts from the latest snapshot of the state's
	// SnapshotType and SnapshotSchemaVersion and applies only the events
	// after it, and Update saves a snapshot after its append when the
	// policy says so. Defaults to nil: no snapshots, every Load replays
	// the whole stream.
	Snapshot SnapshotPolicy
	// SnapshotCodec encodes the state into a snapshot and back. Defaults
	// to JSONCodec[S].
	SnapshotCodec Codec[S]
	// SnapshotType names the state's type in snapshots. Defaults to
	// StreamType.
	SnapshotType string
	// SnapshotSchemaVersion is the version of the state's shape. Bump it
	// when S changes so that its older snapshots no longer decode right:
	// they are then ignored and the state is rebuilt from the events.
	// Defaults to 1; must not be negative.
	SnapshotSchemaVersion int
	// SnapshotErrorFunc is told of a snapshot that could not be decoded
	// (Load replayed the stream instead) or taken (Update succeeded
	// without it). Defaults to nil: such errors are dropped, since they
	// cost only speed.
	SnapshotErrorFunc func(ctx context.Context, streamID string, err error)
}

// snapshotType returns the snapshot type and schema version of the state,
// or an error naming the field that cannot be used.
func (a Aggregate[S]) snapshotType() (string, int, error) {
	typ := a.SnapshotType
	if typ == "" {
		typ = a.StreamType
	}
	if typ == "" {
		return "", 0, errors.New("eventstore: Aggregate.SnapshotType and StreamType are empty")
	}
	if a.SnapshotSchemaVersion < 0 {
		return "", 0, fmt.Errorf("eventstore: Aggregate.SnapshotSchemaVersion: negative (%d)", a.SnapshotSchemaVersion)
	}
	return typ, max(a.SnapshotSchemaVersion, 1), nil
}

func (a Aggregate[S]) codec() Codec[S] {
	if a.SnapshotCodec != nil {
		return a.SnapshotCodec
	}
	return JSONCodec[S]{}
}

func (a Aggregate[S]) snapshotError(ctx context.Context, streamID string, err error) {
	if a.SnapshotErrorFunc != nil {
		a.SnapshotErrorFunc(ctx, streamID, err)
	}
}

// start returns the state Load begins from: the latest usable snapshot, or
// the initial state at version 0.
func (a Aggregate[S]) start(ctx context.Context, store Store, streamID string) (Loaded[S], error) {
	var l Loaded[S]
	if a.InitialFunc != nil {
		l.State = a.InitialFunc()
	}
	ss, ok := store.(SnapshotStore)
	if a.Snapshot == nil || !ok {
		return l, nil
	}
	typ, version, err := a.snapshotType()
	if err != nil {
		return l, err
	}
	snap, found, err := ss.LoadSnapshot(ctx, LoadSnapshotParams{StreamID: streamID, Type: typ, SchemaVersion: version})
	if err != nil {
		return l, fmt.Errorf("eventstore: load %q: snapshot: %w", streamID, err)
	}
	if !found {
		return l, nil
	}
	state, err := a.codec().Decode(snap.Data)
	if err != nil {
		a.snapshotError(ctx, streamID, fmt.Errorf("eventstore: load %q: decode the snapshot at version %d: %w", streamID, snap.Version, err))
		return l, nil
	}
	return Loaded[S]{State: state, Version: snap.Version, SnapshotVersion: snap.Version}, nil
}

// maybeSnapshot saves a snapshot of l when the policy says so, and reports
// a failure to SnapshotErrorFunc rather than to the caller.
func (a Aggregate[S]) maybeSnapshot(ctx context.Context, store Store, streamID string, l *Loaded[S]) {
	ss, ok := store.(SnapshotStore)
	if a.Snapshot == nil || !ok || !a.Snapshot.ShouldSnapshot(l.State, l.Version, l.Version-l.SnapshotVersion) {
		return
	}
	err := func() error {
		typ, version, err := a.snapshotType()
		if err != nil {
			return err
		}
		data, err := a.codec().Encode(l.State)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		return ss.SaveSnapshot(ctx, Snapshot{StreamID: streamID, Version: l.Version, Type: typ, SchemaVersion: version, Data: data})
	}()
	if err != nil {
		a.snapshotError(ctx, streamID, fmt.Errorf("eventstore: update %q: snapshot at version %d: %w", streamID, l.Version, err))
		return
	}
	l.SnapshotVersion = l.Version
}

// Loaded is an aggregate's state and the version it was rebuilt at.
type Loaded[S any] struct {
	// State is the state after every event read.
	State S
	// Version is the stream's version: 0 for a new aggregate. Append with
	// Exact(Version).
	Version int64
	// SnapshotVersion is the version of the snapshot State was loaded
	// from, or that Update took; 0 for none.
	SnapshotVersion int64
}

// Load rebuilds the aggregate of stream streamID by applying its events in
// order. A stream without events loads as the initial state at version 0.
// With snapshots on (Aggregate.Snapshot) and a Store that is a
// SnapshotStore, it starts from the latest snapshot of the state's type and
// schema version and reads only the events after it; a snapshot that does
// not decode is reported to SnapshotErrorFunc and the stream is replayed
// from its start.
func Load[S any](ctx context.Context, store Store, agg Aggregate[S], streamID string) (Loaded[S], error) {
	if agg.ApplyFunc == nil {
		return Loaded[S]{}, errors.New("eventstore: load: Aggregate.ApplyFunc is nil")
	}
	l, err := agg.start(ctx, store, streamID)
	if err != nil {
		return l, err
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
//
// With snapshots on, Update saves a snapshot of the new state through the
// same Store after the append when Aggregate.Snapshot says so. Through a
// Store bound to the caller's transaction (postgres.Store.WithTx) the
// snapshot commits or rolls back with the append; otherwise it is saved
// after the append committed. Either way a snapshot that cannot be taken
// never fails Update: the append stands, SnapshotErrorFunc is told, and a
// later Update tries again.
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
	agg.maybeSnapshot(ctx, store, streamID, &l)
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
