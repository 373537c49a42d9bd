package fault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/messaging"
)

// partitions of every test topic: several, so that per-key order is checked
// across partitions, not just in one log.
const partitions = 3

// outboxDB is the outbox of one test: a schema (migrated) and a pool on it.
type outboxDB struct {
	url    string // of the server, for the relay
	schema string
	pool   *pgxpool.Pool
}

// qualified returns schema.table, quoted.
func (d *outboxDB) qualified(table string) string {
	return pgx.Identifier{d.schema, table}.Sanitize()
}

// createLedger creates the table that records, in each writer transaction,
// the ids of its outbox rows: after a fault it tells which commits took.
func (d *outboxDB) createLedger(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := d.pool.Exec(ctx, "CREATE TABLE "+d.qualified("fault_ledger")+" (id text PRIMARY KEY)")
	require.NoError(t, err)
}

// row is one outbox row a test tried to write.
type row struct {
	id, key string
}

// insertRow adds an outbox row and its ledger entry in tx. pad makes the
// payload at least that many bytes.
func (d *outboxDB) insertRow(ctx context.Context, tx pgx.Tx, topic string, r row, pad int) error {
	headers, err := json.Marshal(map[string]string{
		messaging.HeaderID:          r.id,
		messaging.HeaderType:        "dtx.fault.written",
		messaging.HeaderSource:      "/dtx/fault-test",
		messaging.HeaderSpecVersion: "1.0",
		messaging.HeaderContentType: "application/json",
	})
	if err != nil {
		return err
	}
	payload, err := json.Marshal(map[string]string{"id": r.id, "key": r.key, "pad": incompressible(pad)})
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+d.qualified("outbox")+" (topic, key, headers, payload) VALUES ($1, $2, $3::jsonb, $4)",
		topic, r.key, string(headers), payload); err != nil {
		return fmt.Errorf("insert outbox row %s: %w", r.id, err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+d.qualified("fault_ledger")+" (id) VALUES ($1)", r.id); err != nil {
		return fmt.Errorf("insert ledger row %s: %w", r.id, err)
	}
	return nil
}

// incompressible returns n characters of random base64: the producer's
// compression cannot shrink them much, so a payload's size on the broker is
// close to its size in the outbox.
func incompressible(n int) string {
	b := make([]byte, n*3/4+3)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return base64.StdEncoding.EncodeToString(b)[:n]
}

// journal is the list of rows a test tried to write, in the order their
// transactions ended (committed, rolled back or failed): for the rows that
// committed, this is commit order, since one goroutine ends them in turn.
type journal struct {
	mu         sync.Mutex
	rows       []row
	rolledBack int
	failedTxs  int
	next       int
	prefix     string
}

func newJournal(prefix string) *journal { return &journal{prefix: prefix} }

// newRow returns a row with a fresh id.
func (j *journal) newRow(key string) row {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.next++
	return row{id: fmt.Sprintf("%s-%06d", j.prefix, j.next), key: key}
}

// ended records rows whose transaction has ended.
func (j *journal) ended(rows ...row) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.rows = append(j.rows, rows...)
}

func (j *journal) snapshot() []row {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]row(nil), j.rows...)
}

// writer commits small transactions of outbox rows continuously (1 to 4
// rows on random keys, about one transaction in six rolled back) until
// stopped. Failed transactions (PostgreSQL down) are counted and the
// writer carries on: the pool reconnects.
type writer struct {
	db     *outboxDB
	topic  string
	keys   []string
	j      *journal
	cancel context.CancelFunc
	done   chan struct{}
	// Owned by the writer's goroutine until stop returns.
	txs      int
	firstErr error
}

func startWriter(t *testing.T, db *outboxDB, topic string, j *journal) *writer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{db: db, topic: topic, j: j, cancel: cancel, done: make(chan struct{})}
	for i := range 8 {
		w.keys = append(w.keys, fmt.Sprintf("key-%d", i))
	}
	go w.run(ctx)
	t.Cleanup(w.stop)
	return w
}

func (w *writer) run(ctx context.Context) {
	defer close(w.done)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := w.one(); err != nil && w.firstErr == nil {
			w.firstErr = err
		}
		w.txs++
	}
}

// one writes one transaction. Its own deadline, not the writer's context,
// bounds it: stopping the writer never leaves a commit half known.
func (w *writer) one() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 1 + rand.IntN(4)
	rows := make([]row, n)
	for i := range rows {
		rows[i] = w.j.newRow(w.keys[rand.IntN(len(w.keys))])
	}
	defer w.j.ended(rows...)
	tx, err := w.db.pool.Begin(ctx)
	if err != nil {
		w.j.failed()
		return err
	}
	for _, r := range rows {
		if err := w.db.insertRow(ctx, tx, w.topic, r, 0); err != nil {
			_ = tx.Rollback(ctx)
			w.j.failed()
			return err
		}
	}
	if rand.IntN(6) == 0 {
		w.j.rollback()
		return tx.Rollback(ctx)
	}
	if err := tx.Commit(ctx); err != nil {
		w.j.failed()
		return err
	}
	return nil
}

func (j *journal) failed() {
	j.mu.Lock()
	j.failedTxs++
	j.mu.Unlock()
}

func (j *journal) rollback() {
	j.mu.Lock()
	j.rolledBack++
	j.mu.Unlock()
}

// stop stops the writer and waits for its transaction in flight. Safe to
// call twice.
func (w *writer) stop() {
	w.cancel()
	<-w.done
}

// summary says what the writer did; call it after stop.
func (w *writer) summary() string {
	s := fmt.Sprintf("writer: %d transactions, %d rolled back, %d failed", w.txs, w.j.rolledBack, w.j.failedTxs)
	if w.firstErr != nil {
		s += fmt.Sprintf(" (first failure: %v)", w.firstErr)
	}
	return s
}

// committedIDs reads the ledger: the ids of every row that committed.
func (d *outboxDB) committedIDs(t *testing.T) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids map[string]bool
	// PostgreSQL may just have restarted: the pool's first tries may fail.
	require.Eventually(t, func() bool {
		rows, err := d.pool.Query(ctx, "SELECT id FROM "+d.qualified("fault_ledger"))
		if err != nil {
			return false
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return false
		}
		ids = make(map[string]bool, len(got))
		for _, id := range got {
			ids[id] = true
		}
		return true
	}, 30*time.Second, 100*time.Millisecond)
	return ids
}

// createTopic creates a topic with replication factor 1 and the given
// configs on brokers, waits until every partition has a leader, and deletes
// it at cleanup.
func createTopic(t *testing.T, brokers []string, name string, configs map[string]*string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := adm.CreateTopic(ctx, partitions, 1, configs, name)
	if err == nil {
		err = res.Err
	}
	require.NoError(t, err, "create topic %s", name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := adm.DeleteTopic(ctx, name)
		if err == nil {
			err = res.Err
		}
		if err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("delete topic %s: %v", name, err)
		}
	})
	require.Eventually(t, func() bool {
		md, err := adm.Metadata(ctx, name)
		if err != nil {
			return false
		}
		td, ok := md.Topics[name]
		if !ok || td.Err != nil || len(td.Partitions) != partitions {
			return false
		}
		for _, p := range td.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 100*time.Millisecond, "topic %s has no leader for every partition", name)
}
