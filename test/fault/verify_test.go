package fault

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/messaging"
)

// expectation is what a topic must hold once the relay has caught up.
type expectation struct {
	// committed lists the ids of every committed row in commit order.
	committed []string
	// keyOf maps every id, committed or not, to its key.
	keyOf map[string]string
	// notCommitted counts the rows a test wrote that did not commit (rolled
	// back or failed): none may be on the topic.
	notCommitted int
}

// expect splits the rows a test tried to write into the ones the ledger
// says committed, in commit order, and the rest. except lists ids that must
// not reach the topic although they committed (rows the broker refuses).
func expect(attempted []row, ledger map[string]bool, except ...string) expectation {
	e := expectation{keyOf: make(map[string]string, len(attempted))}
	for _, r := range attempted {
		e.keyOf[r.id] = r.key
		if ledger[r.id] && !slices.Contains(except, r.id) {
			e.committed = append(e.committed, r.id)
		} else {
			e.notCommitted++
		}
	}
	return e
}

// report is what the verifier found on the topic.
type report struct {
	Committed    int      // rows that committed and must be on the topic
	NotCommitted int      // rows that did not commit (or were refused)
	Records      int      // records read from the topic
	Distinct     int      // distinct ids among them
	Duplicates   int      // Records - Distinct
	Missing      []string // committed ids not on the topic: loss
	Phantoms     []string // ids on the topic that never committed
	OutOfOrder   []string // per key, first occurrences out of commit order
}

func (r report) String() string {
	return fmt.Sprintf("rows committed %d, not committed %d; records on Kafka %d (distinct %d, duplicates %d); missing %d, phantoms %d, out of order %d",
		r.Committed, r.NotCommitted, r.Records, r.Distinct, r.Duplicates, len(r.Missing), len(r.Phantoms), len(r.OutOfOrder))
}

// verify reads topic from the beginning until every committed id has been
// seen or wait has passed, then checks the records against e: nothing
// committed is missing, nothing uncommitted is there, and per key the first
// occurrences of ids are in commit order. It logs the counts.
func verify(t *testing.T, brokers []string, topic string, e expectation, wait time.Duration) report {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(250*time.Millisecond),
	)
	require.NoError(t, err)
	defer cl.Close()

	want := make(map[string]int, len(e.committed)) // id -> commit index
	for i, id := range e.committed {
		want[id] = i
	}
	seen := make(map[string]int) // id -> times seen
	var perKey = make(map[string][]string)
	rep := report{Committed: len(e.committed), NotCommitted: e.notCommitted}
	missing := len(want)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for missing > 0 && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachError(func(topic string, p int32, err error) {
			if ctx.Err() == nil {
				t.Logf("verifier: fetching %s/%d: %v", topic, p, err)
			}
		})
		// Records of one partition come in offset order, and every record of
		// a key is in one partition: perKey keeps each key's log order.
		fs.EachRecord(func(rec *kgo.Record) {
			rep.Records++
			id := header(rec, messaging.HeaderID)
			seen[id]++
			if seen[id] > 1 {
				return
			}
			if _, ok := want[id]; ok {
				missing--
			} else {
				rep.Phantoms = append(rep.Phantoms, id)
			}
			perKey[string(rec.Key)] = append(perKey[string(rec.Key)], id)
		})
	}

	rep.Distinct = len(seen)
	rep.Duplicates = rep.Records - rep.Distinct
	for _, id := range e.committed {
		if seen[id] == 0 {
			rep.Missing = append(rep.Missing, id)
		}
	}
	for key, ids := range perKey {
		last := -1
		for _, id := range ids {
			i, ok := want[id]
			if !ok {
				continue
			}
			if i < last {
				rep.OutOfOrder = append(rep.OutOfOrder, fmt.Sprintf("key %s: %s (commit #%d) after commit #%d", key, id, i, last))
			}
			last = max(last, i)
		}
	}
	t.Logf("verifier: %s", rep)
	return rep
}

// requireClean fails the test if anything committed is missing, anything
// uncommitted is there, or a key is out of order; and if there are more
// duplicates than maxDuplicates.
func requireClean(t *testing.T, rep report, maxDuplicates int) {
	t.Helper()
	require.Empty(t, rep.Missing, "committed rows missing from Kafka (loss): %s", rep)
	require.Empty(t, rep.Phantoms, "records of rows that never committed (phantoms): %s", rep)
	require.Empty(t, rep.OutOfOrder, "per-key order broken: %s", rep)
	require.LessOrEqual(t, rep.Duplicates, maxDuplicates, "more duplicates than the faults explain: %s", rep)
}

func header(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
