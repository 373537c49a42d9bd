package eventstoretest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/eventstore"
)

// waitFor bounds every wait of the suite; pollInterval paces its polls.
const (
	waitFor      = 10 * time.Second
	pollInterval = 10 * time.Millisecond
)

// Factory returns an empty Store for one test: no stream of another test
// may be visible through it, since the global read is checked exactly. The
// Store's resources must be released at the test's cleanup.
type Factory func(t *testing.T) eventstore.Store

// Run runs the conformance tests against the Stores newStore returns, each
// as a parallel subtest of t.
func Run(t *testing.T, newStore Factory) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, s eventstore.Store)
	}{
		{"AppendAndReadForward", testAppendAndReadForward},
		{"ReadBackward", testReadBackward},
		{"ReadMissingStream", testReadMissingStream},
		{"ExpectedVersion", testExpectedVersion},
		{"InvalidAppend", testInvalidAppend},
		{"StreamTypeIsFixed", testStreamTypeIsFixed},
		{"DuplicateEventID", testDuplicateEventID},
		{"ReadAllInOrder", testReadAllInOrder},
		{"ConcurrentAppenders", testConcurrentAppenders},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newStore(t))
		})
	}
}

// event returns an event of type "test.happened" with data {"n": n}.
func event(n int) eventstore.EventData {
	return eventstore.EventData{
		Type: "test.happened",
		Data: json.RawMessage(fmt.Sprintf(`{"n": %d}`, n)),
	}
}

func appendParams(stream string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) eventstore.AppendParams {
	return eventstore.AppendParams{StreamID: stream, StreamType: "test", Expected: expected, Events: events}
}

func testAppendAndReadForward(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	id := uuid.NewString()
	evs := []eventstore.EventData{
		{ID: id, Type: "test.created", SchemaVersion: 2, Data: json.RawMessage(`{"a":"x"}`),
			Metadata: eventstore.Metadata{CorrelationID: "corr", CausationID: "cause",
				TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "k=v"}},
		event(2),
		event(3),
	}
	res, err := s.Append(ctx, appendParams("s-1", eventstore.NoStream, evs...))
	require.NoError(t, err)
	require.Equal(t, int64(3), res.Version)
	require.False(t, res.Position.IsZero())

	got, err := s.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "s-1"})
	require.NoError(t, err)
	require.Len(t, got, 3)
	for i, ev := range got {
		require.Equal(t, "s-1", ev.StreamID)
		require.Equal(t, "test", ev.StreamType)
		require.Equal(t, int64(i+1), ev.Version)
		require.Equal(t, evs[i].Type, ev.Type)
		require.JSONEq(t, string(evs[i].Data), string(ev.Data))
		require.Equal(t, evs[i].Metadata, ev.Metadata)
		require.NotEmpty(t, ev.ID)
		require.False(t, ev.RecordedAt.IsZero())
		if i > 0 {
			require.Equal(t, 1, ev.SchemaVersion, "the default schema version")
			require.Equal(t, 1, ev.Position.Compare(got[i-1].Position), "positions grow with versions")
		}
	}
	require.Equal(t, id, got[0].ID)
	require.Equal(t, 2, got[0].SchemaVersion)
	require.Equal(t, res.Position, got[2].Position)

	from2, err := s.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "s-1", From: 2})
	require.NoError(t, err)
	require.Equal(t, []int64{2, 3}, versions(from2))
	limited, err := s.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "s-1", From: 1, Limit: 2})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, versions(limited))

	res, err = s.Append(ctx, appendParams("s-1", eventstore.Exact(3), event(4)))
	require.NoError(t, err)
	require.Equal(t, int64(4), res.Version)
}

func testReadBackward(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	_, err := s.Append(ctx, appendParams("s-b", eventstore.NoStream, event(1), event(2), event(3)))
	require.NoError(t, err)
	all, err := s.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "s-b", Direction: eventstore.Backward})
	require.NoError(t, err)
	require.Equal(t, []int64{3, 2, 1}, versions(all))
	last, err := s.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "s-b", Direction: eventstore.Backward, Limit: 1})
	require.NoError(t, err)
	require.Equal(t, []int64{3}, versions(last))
	from2, err := s.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "s-b", Direction: eventstore.Backward, From: 2})
	require.NoError(t, err)
	require.Equal(t, []int64{2, 1}, versions(from2))
}

func testReadMissingStream(t *testing.T, s eventstore.Store) {
	got, err := s.ReadStream(t.Context(), eventstore.ReadStreamParams{StreamID: "missing"})
	require.NoError(t, err)
	require.Empty(t, got)
	b, err := s.ReadAll(t.Context(), eventstore.ReadAllParams{})
	require.NoError(t, err)
	require.Empty(t, b.Events)
	require.True(t, b.End.IsZero())
}

func testExpectedVersion(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	conflict := func(err error, stream string, expected eventstore.ExpectedVersion, actual int64) {
		t.Helper()
		require.ErrorIs(t, err, eventstore.ErrConcurrencyConflict)
		var vc *eventstore.VersionConflictError
		require.ErrorAs(t, err, &vc)
		require.Equal(t, eventstore.VersionConflictError{StreamID: stream, Expected: expected, Actual: actual}, *vc)
		require.Contains(t, err.Error(), stream)
	}

	_, err := s.Append(ctx, appendParams("s-e", eventstore.StreamExists, event(1)))
	conflict(err, "s-e", eventstore.StreamExists, 0)
	_, err = s.Append(ctx, appendParams("s-e", eventstore.Exact(1), event(1)))
	conflict(err, "s-e", eventstore.Exact(1), 0)

	res, err := s.Append(ctx, appendParams("s-e", eventstore.Any, event(1)))
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Version)
	_, err = s.Append(ctx, appendParams("s-e", eventstore.NoStream, event(2)))
	conflict(err, "s-e", eventstore.NoStream, 1)
	_, err = s.Append(ctx, appendParams("s-e", eventstore.Exact(2), event(2)))
	conflict(err, "s-e", eventstore.Exact(2), 1)
	_, err = s.Append(ctx, appendParams("s-e", eventstore.Exact(0), event(2)))
	conflict(err, "s-e", eventstore.NoStream, 1)

	res, err = s.Append(ctx, appendParams("s-e", eventstore.StreamExists, event(2)))
	require.NoError(t, err)
	require.Equal(t, int64(2), res.Version)
	res, err = s.Append(ctx, appendParams("s-e", eventstore.Exact(2), event(3), event(4)))
	require.NoError(t, err)
	require.Equal(t, int64(4), res.Version)
	res, err = s.Append(ctx, appendParams("s-e", eventstore.Any, event(5)))
	require.NoError(t, err)
	require.Equal(t, int64(5), res.Version)

	got, err := s.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "s-e"})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3, 4, 5}, versions(got))
	for i, ev := range got {
		require.JSONEq(t, fmt.Sprintf(`{"n": %d}`, i+1), string(ev.Data), "failed appends wrote nothing")
	}
}

func testInvalidAppend(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	for name, p := range map[string]eventstore.AppendParams{
		"no stream id":     appendParams("", eventstore.Any, event(1)),
		"no stream type":   {StreamID: "s-i", Expected: eventstore.Any, Events: []eventstore.EventData{event(1)}},
		"no events":        appendParams("s-i", eventstore.Any),
		"no event type":    appendParams("s-i", eventstore.Any, eventstore.EventData{Data: json.RawMessage(`{}`)}),
		"data not JSON":    appendParams("s-i", eventstore.Any, eventstore.EventData{Type: "t", Data: json.RawMessage(`{`)}),
		"no data":          appendParams("s-i", eventstore.Any, eventstore.EventData{Type: "t"}),
		"bad expectation":  appendParams("s-i", eventstore.ExpectedVersion(-3), event(1)),
		"negative version": appendParams("s-i", eventstore.Any, eventstore.EventData{Type: "t", SchemaVersion: -1, Data: json.RawMessage(`{}`)}),
	} {
		_, err := s.Append(ctx, p)
		require.ErrorIs(t, err, eventstore.ErrInvalidAppend, name)
	}
	got, err := s.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "s-i"})
	require.NoError(t, err)
	require.Empty(t, got)
}

func testStreamTypeIsFixed(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	_, err := s.Append(ctx, appendParams("s-t", eventstore.NoStream, event(1)))
	require.NoError(t, err)
	p := appendParams("s-t", eventstore.Any, event(2))
	p.StreamType = "other"
	_, err = s.Append(ctx, p)
	require.ErrorIs(t, err, eventstore.ErrInvalidAppend)
}

func testDuplicateEventID(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	e := event(1)
	e.ID = uuid.NewString()
	_, err := s.Append(ctx, appendParams("s-d1", eventstore.NoStream, e))
	require.NoError(t, err)
	_, err = s.Append(ctx, appendParams("s-d2", eventstore.NoStream, event(0), e))
	require.ErrorIs(t, err, eventstore.ErrDuplicateEventID)
	got, err := s.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: "s-d2"})
	require.NoError(t, err)
	require.Empty(t, got, "a failed append writes nothing")
}

func testReadAllInOrder(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	var want []string
	for i := range 7 {
		stream := fmt.Sprintf("s-all-%d", i%3)
		res, err := s.Append(ctx, appendParams(stream, eventstore.Any, event(2*i), event(2*i+1)))
		require.NoError(t, err)
		want = append(want, fmt.Sprintf("%s/%d", stream, res.Version-1), fmt.Sprintf("%s/%d", stream, res.Version))
	}
	var got []string
	var after eventstore.Position
	// Committed events may be held back for a while by transactions still
	// open elsewhere (a gap-safe store waits for them): read until every
	// event arrived, or the deadline.
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for deadline := time.Now().Add(waitFor); len(got) < len(want) && time.Now().Before(deadline); {
		b, err := s.ReadAll(ctx, eventstore.ReadAllParams{After: after, Limit: 3})
		require.NoError(t, err)
		require.LessOrEqual(t, len(b.Events), 3)
		for _, ev := range b.Events {
			require.Equal(t, 1, ev.Position.Compare(after), "positions grow")
			after = ev.Position
			got = append(got, fmt.Sprintf("%s/%d", ev.StreamID, ev.Version))
		}
		require.Equal(t, after, b.End)
		if !b.Full && len(got) < len(want) {
			<-tick.C
		}
	}
	require.Equal(t, want, got, "ReadAll returns every event once, in commit order")
}

// testConcurrentAppenders runs writers that each append to one stream with
// the exact version they last read, retrying on conflict: each version is
// won by exactly one append, nothing is lost, and every lost race is
// reported as a conflict.
func testConcurrentAppenders(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	const writers, appends = 8, 50
	const stream = "s-concurrent"
	var (
		mu        sync.Mutex
		winners   = map[int64]string{}
		conflicts int
	)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range appends {
				name := fmt.Sprintf("w%d-%d", w, i)
				e := eventstore.EventData{Type: "test.appended", Data: json.RawMessage(fmt.Sprintf(`{"by":%q}`, name))}
				for {
					last, err := s.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: stream, Direction: eventstore.Backward, Limit: 1})
					if err != nil {
						errs <- err
						return
					}
					var v int64
					if len(last) == 1 {
						v = last[0].Version
					}
					res, err := s.Append(ctx, appendParams(stream, eventstore.Exact(v), e))
					if errors.Is(err, eventstore.ErrConcurrencyConflict) {
						mu.Lock()
						conflicts++
						mu.Unlock()
						continue
					}
					if err != nil {
						errs <- fmt.Errorf("%s: %w", name, err)
						return
					}
					mu.Lock()
					if prev, ok := winners[res.Version]; ok {
						mu.Unlock()
						errs <- fmt.Errorf("version %d won twice: by %s and %s", res.Version, prev, name)
						return
					}
					winners[res.Version] = name
					mu.Unlock()
					break
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, winners, writers*appends)
	got, err := s.ReadStream(ctx, eventstore.ReadStreamParams{StreamID: stream})
	require.NoError(t, err)
	require.Len(t, got, writers*appends, "nothing lost")
	for i, ev := range got {
		require.Equal(t, int64(i+1), ev.Version)
		var d struct{ By string }
		require.NoError(t, json.Unmarshal(ev.Data, &d))
		require.Equal(t, winners[ev.Version], d.By, "the stored event of version %d is the winner's", ev.Version)
	}
	t.Logf("%d writers × %d appends: %d conflicts reported and retried", writers, appends, conflicts)
}

func versions(evs []eventstore.RecordedEvent) []int64 {
	out := make([]int64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Version
	}
	return out
}
