package eventstore

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Extension attributes the event store adds to every published event, beside
// the CloudEvents attributes; on Kafka they are the headers "ce_streamtype"
// and "ce_streamversion".
const (
	// ExtensionStreamType carries RecordedEvent.StreamType.
	ExtensionStreamType = "streamtype"
	// ExtensionStreamVersion carries RecordedEvent.Version, in decimal, so
	// that consumers can drop what they have seen and notice gaps.
	ExtensionStreamVersion = "streamversion"
)

// UpcastFunc turns the data of an event at one schema version into the data
// of the next version. It must be deterministic: the stored event is never
// rewritten, so it runs on every read.
type UpcastFunc func(data json.RawMessage) (json.RawMessage, error)

// ErrUpcast is wrapped by the error of a read whose upcaster failed.
var ErrUpcast = errors.New("eventstore: upcast failed")

type upcastKey struct {
	typ  string
	from int
}

// Upcasters holds the registered UpcastFuncs, by event type and the schema
// version they upcast from. Register every function before the Upcasters
// are used; afterwards it is safe for concurrent reads.
type Upcasters struct {
	m map[upcastKey]UpcastFunc
}

// NewUpcasters returns an empty set of upcasters.
func NewUpcasters() *Upcasters { return &Upcasters{m: map[upcastKey]UpcastFunc{}} }

// Register makes f turn events of eventType at schema version from into
// version from+1. Chains apply in turn: 1→2, 2→3, and so on. It fails if
// from is below 1, f is nil, or a function for (eventType, from) exists.
func (u *Upcasters) Register(eventType string, from int, f UpcastFunc) error {
	switch {
	case eventType == "":
		return errors.New("eventstore: register upcaster: empty event type")
	case from < 1:
		return fmt.Errorf("eventstore: register upcaster of %q: from version %d is below 1", eventType, from)
	case f == nil:
		return fmt.Errorf("eventstore: register upcaster of %q from version %d: nil function", eventType, from)
	}
	k := upcastKey{eventType, from}
	if _, ok := u.m[k]; ok {
		return fmt.Errorf("eventstore: register upcaster of %q from version %d: already registered", eventType, from)
	}
	u.m[k] = f
	return nil
}

// Upcast applies the registered functions to ev, from its schema version on,
// for as long as one is registered for the version reached, and returns the
// result with its new SchemaVersion. An event with none registered is
// returned as it is. A failing function fails with an error wrapping
// ErrUpcast that names the event.
func (u *Upcasters) Upcast(ev RecordedEvent) (RecordedEvent, error) {
	if u == nil {
		return ev, nil
	}
	for {
		f, ok := u.m[upcastKey{ev.Type, ev.SchemaVersion}]
		if !ok {
			return ev, nil
		}
		data, err := f(ev.Data)
		if err != nil {
			return ev, fmt.Errorf("%w: event %s (%s v%d, stream %q version %d): %w",
				ErrUpcast, ev.ID, ev.Type, ev.SchemaVersion, ev.StreamID, ev.Version, err)
		}
		if !json.Valid(data) {
			return ev, fmt.Errorf("%w: event %s (%s v%d): the upcaster returned invalid JSON", ErrUpcast, ev.ID, ev.Type, ev.SchemaVersion)
		}
		ev.Data = data
		ev.SchemaVersion++
	}
}
