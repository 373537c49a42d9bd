package eventstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Snapshot is an aggregate's state stored after the event at Version of
// its stream, so that loading can start there instead of at the first
// event.
type Snapshot struct {
	// StreamID is the snapshot's stream.
	StreamID string
	// Version is the stream version the state was taken after, from 1.
	Version int64
	// Type names the state's type, e.g. "order". Together with
	// SchemaVersion it tells whether a reader understands Data.
	Type string
	// SchemaVersion is the version of Type's shape Data follows, from 1.
	// Bump it when the state's shape changes: older snapshots are then
	// ignored and the state is rebuilt from the events.
	SchemaVersion int
	// Data is the encoded state, JSON.
	Data json.RawMessage
}

// LoadSnapshotParams says which snapshot to load.
type LoadSnapshotParams struct {
	// StreamID names the stream. Required.
	StreamID string
	// Type is the state's type; snapshots of other types are ignored.
	// Required.
	Type string
	// SchemaVersion is the state's shape version; snapshots of other
	// versions are ignored. Required (1 or more).
	SchemaVersion int
	// MaxVersion is the highest stream version to accept a snapshot at; 0
	// accepts any.
	MaxVersion int64
}

// SnapshotStore keeps snapshots. A Store that also implements it lets Load
// and Update of an Aggregate with a SnapshotPolicy use snapshots; with a
// Store that does not, they replay every event.
type SnapshotStore interface {
	// LoadSnapshot returns the snapshot of the highest version that
	// matches p, and false when there is none.
	LoadSnapshot(ctx context.Context, p LoadSnapshotParams) (Snapshot, bool, error)
	// SaveSnapshot stores s, replacing a snapshot of the same stream and
	// version.
	SaveSnapshot(ctx context.Context, s Snapshot) error
}

// Validate checks a snapshot before it is saved; the error names the
// field.
func (s Snapshot) Validate() error {
	var errs []error
	if s.StreamID == "" {
		errs = append(errs, errors.New("snapshot.StreamID: empty"))
	}
	if s.Version < 1 {
		errs = append(errs, fmt.Errorf("snapshot.Version: %d, want 1 or more", s.Version))
	}
	if s.Type == "" {
		errs = append(errs, errors.New("snapshot.Type: empty"))
	}
	if s.SchemaVersion < 1 {
		errs = append(errs, fmt.Errorf("snapshot.SchemaVersion: %d, want 1 or more", s.SchemaVersion))
	}
	if !json.Valid(s.Data) {
		errs = append(errs, errors.New("snapshot.Data: not valid JSON"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("eventstore: invalid snapshot of %q: %w", s.StreamID, err)
	}
	return nil
}

// SnapshotPolicy decides, after a successful append, whether Update saves a
// snapshot of the new state.
type SnapshotPolicy interface {
	// ShouldSnapshot is called with the state after the append, the
	// stream's new version and the number of events since the snapshot the
	// state was loaded from (since the stream's start without one).
	ShouldSnapshot(state any, version, sinceSnapshot int64) bool
}

// SnapshotFunc is a SnapshotPolicy written as a function.
type SnapshotFunc func(state any, version, sinceSnapshot int64) bool

// ShouldSnapshot calls f.
func (f SnapshotFunc) ShouldSnapshot(state any, version, sinceSnapshot int64) bool {
	return f(state, version, sinceSnapshot)
}

// EveryN returns a SnapshotPolicy that snapshots once at least n events were
// appended since the snapshot the state was loaded from: with appends of one
// event, at versions n, 2n, 3n and so on. A snapshot that failed to save is
// taken at the next append. n below 1 is taken as 1.
func EveryN(n int64) SnapshotPolicy {
	n = max(n, 1)
	return SnapshotFunc(func(_ any, _, since int64) bool { return since >= n })
}

// Codec turns an aggregate's state into a snapshot's data and back. Its
// output must be JSON (PostgreSQL stores it as jsonb).
type Codec[S any] interface {
	// Encode returns the JSON of s.
	Encode(s S) (json.RawMessage, error)
	// Decode returns the state data encodes.
	Decode(data json.RawMessage) (S, error)
}

// JSONCodec is the default Codec: encoding/json, so only the exported
// fields of S are kept.
type JSONCodec[S any] struct{}

// Encode marshals s with encoding/json.
func (JSONCodec[S]) Encode(s S) (json.RawMessage, error) { return json.Marshal(s) }

// Decode unmarshals data with encoding/json, refusing unknown fields so that
// a state whose shape changed without a new SnapshotSchemaVersion is not
// loaded half-filled.
func (JSONCodec[S]) Decode(data json.RawMessage) (S, error) {
	var s S
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(&s)
	return s, err
}
