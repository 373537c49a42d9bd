package fault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
	"github.com/vextrus/dtx/pkg/projection"
)

// Log messages of the projector the tests wait for.
const (
	msgProjectorRunning = "projector: running"
	msgRebuildDone      = "projector: rebuild done"
)

// The event types the projector test appends and projects.
var projectorEventTypes = []string{"fault.created", "fault.changed", "fault.closed"}

var buildProjector = sync.OnceValue(func() error {
	out, err := exec.Command("go", "build", "-o", binDir+string(os.PathSeparator), "../../cmd/projector").CombinedOutput()
	if err != nil {
		return fmt.Errorf("building projector: %w\n%s", err, out)
	}
	return nil
})

// startProjector runs the projector binary (built once) on schema and
// waits until it runs its projection. Cleanup kills it if it still runs.
func startProjector(t *testing.T, name, schema string, batchSize int, args ...string) *relayProc {
	t.Helper()
	require.NoError(t, buildProjector())
	args = append([]string{
		"--batch-size", fmt.Sprint(batchSize),
		"--poll-interval", "100ms",
		"--event-types", strings.Join(projectorEventTypes, ","),
	}, args...)
	cmd := exec.Command(filepath.Join(binDir, "projector"), args...)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"DTX_DATABASE_URL=" + pgtest.URL(),
		"DTX_KAFKA_BROKERS=" + joinBrokers(kafkatest.Brokers()),
		"DTX_SCHEMA=" + schema,
		"DTX_ADMIN_ADDR=127.0.0.1:0",
		"DTX_LOG_FORMAT=json",
		"DTX_DRAIN_TIMEOUT=15s",
		"DTX_INSTANCE_ID=" + name,
	}
	p := startProcess(t, name, cmd)
	p.logs.WaitFor(t, msgProjectorRunning, 30*time.Second)
	return p
}

// eventWriter appends txs transactions of streamsPerTx streams times
// eventsPerStream events each, over streams streams, one transaction at a
// time.
type eventWriter struct {
	store   *postgres.Store
	db      *pgtest.Schema
	streams int
	done    chan struct{} // closed when run returns

	mu     sync.Mutex
	last   eventstore.Position // of the last committed transaction
	events int                 // appended and committed
	err    error
}

// appended returns the events committed so far.
func (w *eventWriter) appended() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.events
}

// lastPosition returns the position of the last committed event.
func (w *eventWriter) lastPosition() eventstore.Position {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

func (w *eventWriter) run(ctx context.Context, txs, streamsPerTx, eventsPerStream int) {
	defer close(w.done)
	stream := 0
	for i := range txs {
		var last eventstore.Position
		err := pgx.BeginFunc(ctx, w.db.Pool, func(tx pgx.Tx) error {
			for range streamsPerTx {
				events := make([]eventstore.EventData, eventsPerStream)
				for k := range events {
					events[k] = eventstore.EventData{
						Type: projectorEventTypes[(i+k)%len(projectorEventTypes)],
						Data: json.RawMessage(fmt.Sprintf(`{"tx":%d,"n":%d}`, i, k)),
					}
				}
				res, err := w.store.AppendTx(ctx, tx, eventstore.AppendParams{
					StreamID: fmt.Sprintf("fault-%d", stream%w.streams), StreamType: "fault",
					Expected: eventstore.Any, Events: events,
				})
				if err != nil {
					return err
				}
				last = res.Position
				stream++
			}
			return nil
		})
		w.mu.Lock()
		if err != nil {
			w.err = fmt.Errorf("transaction %d: %w", i, err)
		} else {
			w.last = last
			w.events += streamsPerTx * eventsPerStream
		}
		w.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// finished reports whether done is closed.
func finished(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// projectorCheckpoint returns the stream_summaries projection's checkpoint.
func projectorCheckpoint(t *testing.T, db *pgtest.Schema) eventstore.Position {
	t.Helper()
	var p eventstore.Position
	err := db.Pool.QueryRow(t.Context(), `SELECT tx_id::text::bigint, position FROM txlog_checkpoints
		WHERE log_name = 'events' AND reader = $1`, projection.StreamSummariesName).Scan(&p.TxID, &p.Pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Position{}
	}
	require.NoError(t, err)
	return p
}

// summaryDiff counts the rows of stream_summaries that differ from the
// summaries computed straight from the events table, both ways.
func summaryDiff(t *testing.T, db *pgtest.Schema) (missing, unexpected int) {
	t.Helper()
	const expected = `SELECT DISTINCT ON (stream_id) stream_id, stream_type, version, type AS last_event_type,
		event_id AS last_event_id, count(*) OVER (PARTITION BY stream_id) AS event_count, recorded_at AS updated_at
		FROM events ORDER BY stream_id, version DESC`
	const live = `SELECT stream_id, stream_type, version, last_event_type, last_event_id, event_count, updated_at
		FROM stream_summaries`
	require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT
		(SELECT count(*) FROM ((`+expected+`) EXCEPT (`+live+`)) m),
		(SELECT count(*) FROM ((`+live+`) EXCEPT (`+expected+`)) u)`).Scan(&missing, &unexpected))
	return missing, unexpected
}

// Killed with SIGKILL at random moments, at least five times, while 100,000
// events are appended (1,000 transactions of 100 events over 500 streams),
// and restarted each time, the projector catches up to a stream_summaries
// table equal to the one computed from the events: every stream's version
// and event count exact, each event applied once. A rebuild by shadow and
// swap, while the projector runs, yields the same table.
func TestProjectorKillNineWhileAppending(t *testing.T) {
	t.Parallel()
	const (
		kills           = 6
		batchSize       = 500
		txs             = 1000
		streamsPerTx    = 10
		eventsPerStream = 10
		streams         = 500
		total           = txs * streamsPerTx * eventsPerStream
	)
	require.NoError(t, buildProjector())
	db := pgtest.NewSchema(t)
	store, err := postgres.New(db.Pool, postgres.Config{Schema: db.Name})
	require.NoError(t, err)

	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	w := &eventWriter{store: store, db: db, streams: streams, done: make(chan struct{})}
	go w.run(ctx, txs, streamsPerTx, eventsPerStream)
	t.Cleanup(func() {
		cancel()
		<-w.done
	})

	progress := eventstore.Position{}
	for i := range kills {
		// Spread the kills over the appends: the projector is down until
		// the writer has gone that far, then catches up under load.
		require.Eventually(t, func() bool {
			return w.appended() >= i*total/(kills+1) || finished(w.done)
		}, 60*time.Second, 20*time.Millisecond, "the writer is stuck")
		p := startProjector(t, fmt.Sprintf("projector-kill-%d", i), db.Name, batchSize)
		// The projector must have committed a batch since the last kill
		// (unless the writer is done and it has caught up).
		require.Eventually(t, func() bool {
			cp := projectorCheckpoint(t, db)
			return cp.Compare(progress) > 0 || finished(w.done) && cp.Compare(w.lastPosition()) >= 0
		}, 30*time.Second, 20*time.Millisecond, "projector %d made no progress", i)
		// The fault's moment, not a wait for something: anywhere in the
		// projector's read, apply, commit cycle.
		<-time.After(time.Duration(rand.IntN(400)) * time.Millisecond)
		p.kill9(t)
		progress = projectorCheckpoint(t, db)
		t.Logf("kill %d at checkpoint %s (%d events appended)", i+1, progress, w.appended())
	}

	final := startProjector(t, "projector-final", db.Name, batchSize)
	select {
	case <-w.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the writer did not finish within 60s")
	}
	require.NoError(t, w.err)
	require.Equal(t, total, w.events)
	last := w.lastPosition()
	require.Eventually(t, func() bool {
		return projectorCheckpoint(t, db).Compare(last) >= 0
	}, 60*time.Second, 50*time.Millisecond, "the projector did not catch up to %s", last)

	var rows, events, maxVersion int64
	require.NoError(t, db.Pool.QueryRow(t.Context(),
		"SELECT count(*), coalesce(sum(event_count), 0), coalesce(max(version), 0) FROM stream_summaries").
		Scan(&rows, &events, &maxVersion))
	missing, unexpected := summaryDiff(t, db)
	t.Logf("after %d kills: %d events in %d streams (max version %d) projected in %s",
		kills, events, rows, maxVersion, time.Since(start).Round(time.Millisecond))
	require.Equal(t, int64(streams), rows)
	require.Equal(t, int64(total), events, "an event was applied twice or lost")
	require.Zero(t, missing, "summaries missing or different")
	require.Zero(t, unexpected, "summaries not derived from the events")
	final.stop(t)

	rebuilt := startProjector(t, "projector-rebuild", db.Name, batchSize, "--rebuild")
	rebuilt.logs.WaitFor(t, msgRebuildDone, 60*time.Second)
	missing, unexpected = summaryDiff(t, db)
	require.Zero(t, missing, "rebuilt summaries missing or different")
	require.Zero(t, unexpected, "rebuilt summaries not derived from the events")
	rebuilt.stop(t)
}
