package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ExpectedVersion is what an append expects of its stream's current version:
// Any, NoStream, StreamExists, or an exact version (Exact). A version is the
// number of events in the stream: 0 before the first append, then the
// version of its last event.
type ExpectedVersion int64

const (
	// Any appends whatever the stream's version is, creating the stream if
	// needed. Concurrent appends are still serialised, never lost.
	Any ExpectedVersion = -1
	// StreamExists appends only to a stream that has at least one event.
	StreamExists ExpectedVersion = -2
	// NoStream appends only to a stream that has no event yet: it creates
	// it. It equals Exact(0).
	NoStream ExpectedVersion = 0
)

// Exact expects the stream to be at version v exactly (v >= 0; Exact(0) is
// NoStream): the version of the last event the caller has seen.
func Exact(v int64) ExpectedVersion { return ExpectedVersion(v) }

// String returns "any", "stream exists", "no stream" or the version.
func (e ExpectedVersion) String() string {
	switch e {
	case Any:
		return "any"
	case StreamExists:
		return "stream exists"
	case NoStream:
		return "no stream"
	}
	if e > 0 {
		return strconv.FormatInt(int64(e), 10)
	}
	return "ExpectedVersion(" + strconv.FormatInt(int64(e), 10) + ")"
}

// Matches reports whether a stream at version actual satisfies e.
func (e ExpectedVersion) Matches(actual int64) bool {
	switch e {
	case Any:
		return true
	case StreamExists:
		return actual > 0
	}
	return int64(e) == actual
}

// valid reports whether e is one of the constants or an exact version.
func (e ExpectedVersion) valid() bool { return e >= StreamExists }

// ErrConcurrencyConflict is wrapped by every *VersionConflictError: the
// stream was not at the expected version. Reload and decide again.
var ErrConcurrencyConflict = errors.New("eventstore: concurrency conflict")

// ErrInvalidAppend is wrapped by the error of an append that can never
// succeed as it is: no stream id or type, no events, an event without type,
// data that is not JSON, an unknown ExpectedVersion, a stream type that
// differs from the stream's. Nothing was written.
var ErrInvalidAppend = errors.New("eventstore: invalid append")

// ErrDuplicateEventID is wrapped by the error of an append whose event id is
// already stored (event ids are unique across all streams). Nothing was
// written; the transaction it ran in is aborted.
var ErrDuplicateEventID = errors.New("eventstore: duplicate event id")

// ErrPositionAhead is wrapped by the error of a read or a subscription
// whose position (or saved checkpoint) lies beyond the newest transaction
// id the database has reached: transaction ids restart lower after a
// logical dump is restored into a new cluster. Nothing is skipped and
// nothing read; an operator resets the checkpoint.
var ErrPositionAhead = errors.New("eventstore: position ahead of the database's transaction ids")

// VersionConflictError reports an append whose stream was not at the
// expected version. It wraps ErrConcurrencyConflict.
type VersionConflictError struct {
	// StreamID is the stream appended to.
	StreamID string
	// Expected is what the append expected.
	Expected ExpectedVersion
	// Actual is the stream's version the append found, or -1 when unknown
	// (another writer inserted the same version first, under an isolation
	// level whose snapshot could not see it).
	Actual int64
}

// Error implements error.
func (e *VersionConflictError) Error() string {
	actual := strconv.FormatInt(e.Actual, 10)
	if e.Actual < 0 {
		actual = "unknown"
	}
	return fmt.Sprintf("eventstore: stream %q: expected version %s, found %s: %v",
		e.StreamID, e.Expected, actual, ErrConcurrencyConflict)
}

// Unwrap returns ErrConcurrencyConflict.
func (e *VersionConflictError) Unwrap() error { return ErrConcurrencyConflict }

// Metadata travels with an event: into the store and, as CloudEvents
// extensions, into the Kafka record the outbox publishes (G8, docs/guarantees.md).
// Every field is optional.
type Metadata struct {
	// CorrelationID ties the event to its business transaction.
	CorrelationID string `json:"correlation_id,omitempty"`
	// CausationID is the id of the message that caused the event.
	CausationID string `json:"causation_id,omitempty"`
	// TraceParent is the W3C traceparent of the appending span.
	TraceParent string `json:"traceparent,omitempty"`
	// TraceState is the W3C tracestate.
	TraceState string `json:"tracestate,omitempty"`
}

// EventData is an event to append.
type EventData struct {
	// ID identifies the event, unique across all streams; it becomes the
	// record's ce_id. Defaults to a new UUID version 7.
	ID string
	// Type says what happened, e.g. "sales.order.placed". Required.
	Type string
	// SchemaVersion is the version of Type's schema Data follows.
	// Defaults to 1; must not be negative.
	SchemaVersion int
	// Data is the event's JSON payload. Required (use "{}" for none).
	Data json.RawMessage
	// Metadata are the correlation, causation and trace context.
	Metadata Metadata
}

// RecordedEvent is an event as the store holds it.
type RecordedEvent struct {
	// StreamID is the event's stream.
	StreamID string
	// StreamType is the stream's category, e.g. "order".
	StreamType string
	// Version is the event's version in its stream, from 1.
	Version int64
	// ID is the event's id, unique across all streams.
	ID string
	// Type is the event's type.
	Type string
	// SchemaVersion is the version of Type's schema Data follows: the
	// stored one, or the one an upcaster brought it to.
	SchemaVersion int
	// Data is the JSON payload.
	Data json.RawMessage
	// Metadata are the correlation, causation and trace context.
	Metadata Metadata
	// RecordedAt is the start of the appending transaction.
	RecordedAt time.Time
	// Position is the event's place in the global order (ReadAll).
	Position Position
}

// Position is a place in the global order of all events: the id of the
// appending transaction and the event's insert position. Events are read
// after a Position; the zero Position lies before the first event.
type Position struct {
	// TxID is the appending transaction's 64-bit id.
	TxID uint64
	// Pos numbers events at insert.
	Pos int64
}

// IsZero reports whether p is the zero Position, the beginning.
func (p Position) IsZero() bool { return p == Position{} }

// Compare returns -1, 0 or +1 as p is before, equal to or after q.
func (p Position) Compare(q Position) int {
	switch {
	case p.TxID < q.TxID:
		return -1
	case p.TxID > q.TxID:
		return 1
	case p.Pos < q.Pos:
		return -1
	case p.Pos > q.Pos:
		return 1
	}
	return 0
}

// String returns p as "tx_id/position".
func (p Position) String() string { return fmt.Sprintf("%d/%d", p.TxID, p.Pos) }

// AppendParams says what to append where.
type AppendParams struct {
	// StreamID names the stream, e.g. "order-42". Required; 1 to 255
	// bytes.
	StreamID string
	// StreamType is the stream's category, e.g. "order": it picks the
	// outbox topic. Required; 1 to 255 bytes; the same for every append to
	// a stream.
	StreamType string
	// Expected is the version the stream must be at. The zero value is
	// NoStream: pass Any explicitly to skip the check.
	Expected ExpectedVersion
	// Events are appended in order, at the versions after the current one.
	// At least one.
	Events []EventData
}

// Validate checks what can be checked without the store; the error wraps
// ErrInvalidAppend and names the field.
func (p AppendParams) Validate() error {
	var errs []error
	if l := len(p.StreamID); l < 1 || l > 255 {
		errs = append(errs, fmt.Errorf("params.StreamID: %d bytes, want 1..255", l))
	}
	if l := len(p.StreamType); l < 1 || l > 255 {
		errs = append(errs, fmt.Errorf("params.StreamType: %d bytes, want 1..255", l))
	}
	if !p.Expected.valid() {
		errs = append(errs, fmt.Errorf("params.Expected: %d is neither Any, StreamExists nor a version >= 0", int64(p.Expected)))
	}
	if len(p.Events) == 0 {
		errs = append(errs, errors.New("params.Events: none"))
	}
	for i, e := range p.Events {
		if l := len(e.Type); l < 1 || l > 255 {
			errs = append(errs, fmt.Errorf("params.Events[%d].Type: %d bytes, want 1..255", i, l))
		}
		if len(e.ID) > 255 {
			errs = append(errs, fmt.Errorf("params.Events[%d].ID: %d bytes, want at most 255", i, len(e.ID)))
		}
		if e.SchemaVersion < 0 {
			errs = append(errs, fmt.Errorf("params.Events[%d].SchemaVersion: negative (%d)", i, e.SchemaVersion))
		}
		if !json.Valid(e.Data) {
			errs = append(errs, fmt.Errorf("params.Events[%d].Data: not valid JSON", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: stream %q: %w", ErrInvalidAppend, p.StreamID, err)
	}
	return nil
}

// AppendResult is what an append did.
type AppendResult struct {
	// Version is the stream's version after the append: the version of its
	// last event. Pass Exact(Version) to the next append.
	Version int64
	// Position is the global position of the append's last event.
	Position Position
}

// Direction is the order ReadStream reads a stream in.
type Direction int

const (
	// Forward reads by ascending version.
	Forward Direction = iota
	// Backward reads by descending version.
	Backward
)

// ReadStreamParams says which events of a stream to read.
type ReadStreamParams struct {
	// StreamID names the stream. Required.
	StreamID string
	// Direction is Forward (the default) or Backward.
	Direction Direction
	// From is the first version to read. Forward: events at From and
	// after; 0 means from the first. Backward: events at From and before;
	// 0 means from the last.
	From int64
	// Limit is the most events to return. 0 means no limit.
	Limit int
}

// ReadAllParams says where to continue the global read.
type ReadAllParams struct {
	// After is the Position of the last event handled; the zero Position
	// reads from the beginning.
	After Position
	// Limit is the most events to return. 0 means the store's default
	// batch size.
	Limit int
}

// AllBatch is one step of the global read.
type AllBatch struct {
	// Events are the events read, in global order.
	Events []RecordedEvent
	// End is where the next read continues: the Position of the last
	// event, or the one read after when Events is empty.
	End Position
	// Full reports that Limit events were returned: read again at once.
	Full bool
}

// Store keeps event streams. Implementations are safe for concurrent use and
// pass the conformance suite in package eventstoretest.
type Store interface {
	// Append adds events to the end of a stream if it is at the expected
	// version, atomically: all of them or none. A stream at another version
	// fails with a *VersionConflictError and nothing is written.
	Append(ctx context.Context, p AppendParams) (AppendResult, error)
	// ReadStream returns events of one stream in version order (see
	// ReadStreamParams). A stream without events reads as none.
	ReadStream(ctx context.Context, p ReadStreamParams) ([]RecordedEvent, error)
	// ReadAll returns the events after a Position in global commit order.
	// It never skips an event that a transaction commits after later
	// events were read: such an event is held back, and what follows it,
	// until its transaction ends.
	ReadAll(ctx context.Context, p ReadAllParams) (AllBatch, error)
}
