package txlog_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/txlog"
)

func TestPosition(t *testing.T) {
	t.Parallel()
	require.True(t, txlog.Position{}.IsZero())
	require.False(t, txlog.Position{TxID: 1}.IsZero())
	require.Equal(t, "5755/42", txlog.Position{TxID: 5755, Pos: 42}.String())

	ordered := []txlog.Position{{}, {TxID: 3, Pos: 9}, {TxID: 4, Pos: 1}, {TxID: 4, Pos: 2}, {TxID: math.MaxUint64, Pos: 0}}
	for i, p := range ordered {
		same := p
		require.Zero(t, p.Compare(same))
		for _, q := range ordered[i+1:] {
			require.Equal(t, -1, p.Compare(q), "%s < %s", p, q)
			require.Equal(t, 1, q.Compare(p), "%s > %s", q, p)
		}
	}
}

func TestReaderConfig(t *testing.T) {
	t.Parallel()
	good := txlog.Config{Log: "outbox", Reader: "relay", Columns: []string{"topic"}}
	r, err := txlog.NewReader(good, msgDest)
	require.NoError(t, err)
	cfg := r.Config()
	require.Equal(t, txlog.DefaultSchema, cfg.Schema)
	require.Equal(t, txlog.DefaultBatchSize, cfg.BatchSize)

	_, err = txlog.NewReader(txlog.Config{Log: "outbox", Reader: "relay"}, (txlog.DestFunc[msg])(nil))
	require.NoError(t, err, "no columns, no DestFunc")
	_, err = txlog.NewReader(good, (txlog.DestFunc[msg])(nil))
	require.ErrorContains(t, err, "DestFunc is nil")

	_, err = txlog.NewReader(txlog.Config{
		Schema:    "Bad",
		Log:       "out-box",
		Reader:    strings.Repeat("r", txlog.MaxReaderLen+1),
		Columns:   []string{"topic", "tx_id", "Topic", "topic"},
		BatchSize: txlog.MaxBatchSize + 1,
	}, msgDest)
	for _, want := range []string{"Schema:", "Log:", "Reader:", "Columns[1]", "Columns[2]", "Columns[3]", "listed twice", "BatchSize:"} {
		require.ErrorContains(t, err, want)
	}
	_, err = txlog.NewReader(txlog.Config{Log: "outbox"}, msgDest)
	require.ErrorContains(t, err, "Reader: must not be empty")
	_, err = txlog.NewReader(txlog.Config{Log: "outbox", Reader: "a\x00b"}, msgDest)
	require.ErrorContains(t, err, "NUL")
	_, err = txlog.NewReader(txlog.Config{Log: "outbox", Reader: "r", BatchSize: -1}, msgDest)
	require.ErrorContains(t, err, "BatchSize: -1 is outside 1..10000")
}

func TestXID8(t *testing.T) {
	t.Parallel()
	// pgx encodes and decodes xid8 as uint64, in both directions, beyond
	// 32 bits.
	f := setup(t)
	ctx := t.Context()
	var back uint64
	big := uint64(1)<<40 + 7
	require.NoError(t, f.pool.QueryRow(ctx, "SELECT $1::xid8", big).Scan(&back))
	require.Equal(t, big, back)
	var text string
	require.NoError(t, f.pool.QueryRow(ctx, "SELECT ($1::xid8)::text", big).Scan(&text))
	require.Equal(t, fmt.Sprint(big), text)

	tx := begin(t, f.pool)
	xid := takeXID(t, tx)
	f.insert(t, tx, "x")
	var stored uint64
	require.NoError(t, tx.QueryRow(ctx, "SELECT tx_id FROM "+f.log).Scan(&stored))
	require.Equal(t, xid, stored, "tx_id defaults to the writer's transaction id")
}

func TestReadInOrder(t *testing.T) {
	t.Parallel()
	f := setup(t, func(c *txlog.Config) { c.BatchSize = 3 })
	ctx := t.Context()

	// Three transactions (the pool has four connections), open at once,
	// insert interleaved and commit in an order unrelated to their ids or
	// positions.
	txs := make([]pgx.Tx, 3)
	for i := range txs {
		txs[i] = begin(t, f.pool)
		takeXID(t, txs[i])
	}
	want := 0
	for round := range 4 {
		for i, tx := range txs {
			if (i+round)%2 == 0 {
				f.insert(t, tx, fmt.Sprintf("tx%d-row%d", i, round))
				want++
			}
		}
	}
	for _, i := range []int{1, 2, 0} {
		commit(t, txs[i])
	}
	f.insert(t, f.pool, "last") // A transaction of its own, after all the others.
	want++

	// Read batch by batch, each time from the checkpoint saved after the
	// previous batch, as a restarted reader would.
	var got []txlog.Row[msg]
	deadline := time.Now().Add(waitFor)
	for len(got) < want {
		after, err := f.reader.LoadCheckpoint(ctx, f.pool)
		require.NoError(t, err)
		b := read(t, f.reader, f.pool, after)
		require.LessOrEqual(t, len(b.Rows), 3)
		require.Equal(t, len(b.Rows) == 3, b.Full)
		got = append(got, b.Rows...)
		if len(b.Rows) > 0 {
			require.Equal(t, b.Rows[len(b.Rows)-1].Position, b.End)
			moved, err := f.reader.SaveCheckpoint(ctx, f.pool, b.End)
			require.NoError(t, err)
			require.True(t, moved)
			continue
		}
		require.Equal(t, after, b.End)
		require.True(t, time.Now().Before(deadline), "read %d rows of %d", len(got), want)
		pause(t)
	}
	require.Equal(t, f.allPositions(t), rowPositions(got), "every row once, in (tx_id, position) order")
	require.True(t, slices.IsSortedFunc(got, func(a, b txlog.Row[msg]) int { return a.Position.Compare(b.Position) }))
	require.Equal(t, "last", got[len(got)-1].Value.Topic)
	require.Equal(t, []byte("payload of last"), got[len(got)-1].Value.Payload)

	b := read(t, f.reader, f.pool, got[len(got)-1].Position)
	require.Empty(t, b.Rows)
	require.False(t, b.Full)
	require.NotZero(t, b.Horizon)
	require.Greater(t, b.Horizon, got[len(got)-1].Position.TxID)
}

// TestLateCommit is the case gap safety is about: a transaction that
// inserts first and commits last.
func TestLateCommit(t *testing.T) {
	t.Parallel()
	f := setup(t)

	a := begin(t, f.pool)
	posA := f.insert(t, a, "a")[0]
	b := begin(t, f.pool)
	posB := f.insert(t, b, "b")[0]
	commit(t, b)
	require.Less(t, posA, posB)

	// B took its transaction id after A, which is still open: B's row waits.
	batch := read(t, f.reader, f.pool, txlog.Position{})
	require.Empty(t, batch.Rows, "nothing of B while A is open")
	require.True(t, batch.HorizonBlocked, "B's committed row waits behind the horizon")
	require.LessOrEqual(t, batch.Horizon, takeXID(t, a))

	// Reading by position alone returns B's row and moves past A's position.
	require.Equal(t, []int64{posB}, f.readByPosition(t, 0))

	commit(t, a)
	// Now A's row is committed, but behind the position read: lost.
	require.Empty(t, f.readByPosition(t, posB), "the position-only reader skips the late row")
	require.Equal(t, []int64{posA, posB}, f.readByPosition(t, 0), "although it is there")

	// The gap-safe reader returns both, A's first.
	rows := readN(t, f.reader, f.pool, txlog.Position{}, 2)
	require.Equal(t, []string{"a", "b"}, topics(rows))
}

// TestLateCommitLowerPosition covers rows whose positions run against their
// transactions' order.
func TestLateCommitLowerPosition(t *testing.T) {
	t.Parallel()

	t.Run("the higher transaction commits first", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		// A takes its id first; B inserts first (lower position), then A.
		a := begin(t, f.pool)
		takeXID(t, a)
		b := begin(t, f.pool)
		posB := f.insert(t, b, "b")[0]
		posA := f.insert(t, a, "a")[0]
		require.Less(t, posB, posA)
		commit(t, b)

		batch := read(t, f.reader, f.pool, txlog.Position{})
		require.Empty(t, batch.Rows, "B's id is above A's, which is open")
		require.True(t, batch.HorizonBlocked)

		commit(t, a)
		rows := readN(t, f.reader, f.pool, txlog.Position{}, 2)
		require.Equal(t, []string{"a", "b"}, topics(rows), "by transaction id, although B's position is lower")
	})

	t.Run("the lower transaction commits first", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		a := begin(t, f.pool)
		takeXID(t, a)
		b := begin(t, f.pool)
		posB := f.insert(t, b, "b")[0]
		posA := f.insert(t, a, "a")[0]
		require.Less(t, posB, posA)
		commit(t, a)

		// A's row is readable once every transaction older than A has ended;
		// B, newer, may stay open.
		rows := readN(t, f.reader, f.pool, txlog.Position{}, 1)
		require.Equal(t, []string{"a"}, topics(rows))
		end := rows[0].Position

		// The reader that keeps to the horizon but checkpoints by position
		// returns A's row too, and its checkpoint becomes A's position.
		require.Equal(t, []int64{posA}, f.readByPositionBelowHorizon(t, 0))

		commit(t, b)
		// B's row, below A's position, is readable now, and the position
		// reader, resuming after A's position, skips it.
		require.Eventually(t, func() bool {
			return slices.Equal(f.readByPositionBelowHorizon(t, 0), []int64{posB, posA})
		}, waitFor, 20*time.Millisecond)
		require.Empty(t, f.readByPositionBelowHorizon(t, posA), "the position checkpoint skips B's row")

		// The gap-safe reader resumes after A's (tx_id, position) and gets B.
		rows = readN(t, f.reader, f.pool, end, 1)
		require.Equal(t, []string{"b"}, topics(rows))
	})
}

// TestHorizonBlocked shows that any transaction holding an id, not only a
// log writer, holds readers back, and that the batch says so.
func TestHorizonBlocked(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	_, err := f.pool.Exec(ctx, "CREATE TABLE other (x int)")
	require.NoError(t, err)

	other := begin(t, f.pool)
	_, err = other.Exec(ctx, "INSERT INTO other VALUES (1)")
	require.NoError(t, err)
	f.insert(t, f.pool, "held")

	b := read(t, f.reader, f.pool, txlog.Position{})
	require.Empty(t, b.Rows)
	require.True(t, b.HorizonBlocked)
	require.False(t, b.Full)

	commit(t, other)
	rows := readN(t, f.reader, f.pool, txlog.Position{}, 1)
	require.Equal(t, []string{"held"}, topics(rows))
	b = read(t, f.reader, f.pool, rows[0].Position)
	require.Empty(t, b.Rows)
	require.False(t, b.HorizonBlocked, "nothing committed waits")

	// A read-only transaction, even a long REPEATABLE READ one, holds no
	// transaction id and holds nothing back.
	ro, err := f.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	require.NoError(t, err)
	defer func() { _ = ro.Rollback(context.Background()) }()
	var n int
	require.NoError(t, ro.QueryRow(ctx, "SELECT count(*) FROM "+f.log).Scan(&n))
	f.insert(t, f.pool, "after the snapshot")
	rows = readN(t, f.reader, f.pool, rows[0].Position, 1)
	require.Equal(t, []string{"after the snapshot"}, topics(rows))
}

// TestOrderIsTransactionIDOrder documents the limit of the order: rows come
// out by the order in which transactions took their ids, which is not their
// commit order when they overlap without a common lock.
func TestOrderIsTransactionIDOrder(t *testing.T) {
	t.Parallel()
	f := setup(t)
	early := begin(t, f.pool)
	takeXID(t, early) // takes its id first, e.g. by writing something else
	late := begin(t, f.pool)
	f.insert(t, late, "committed first")
	commit(t, late)
	f.insert(t, early, "committed second")
	commit(t, early)

	rows := readN(t, f.reader, f.pool, txlog.Position{}, 2)
	require.Equal(t, []string{"committed second", "committed first"}, topics(rows))
}

func TestReadInsideTransaction(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.insert(t, f.pool, "one", "two")
	tx := begin(t, f.pool)
	rows := readN(t, f.reader, tx, txlog.Position{}, 2)
	require.Equal(t, []string{"one", "two"}, topics(rows))
	moved, err := f.reader.SaveCheckpoint(t.Context(), tx, rows[1].Position)
	require.NoError(t, err)
	require.True(t, moved)
	commit(t, tx)
	cp, err := f.reader.LoadCheckpoint(t.Context(), f.pool)
	require.NoError(t, err)
	require.Equal(t, rows[1].Position, cp)
}

func TestPositionAhead(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, err := f.reader.ReadBatch(t.Context(), f.pool, txlog.Position{TxID: math.MaxInt64, Pos: 1})
	require.ErrorIs(t, err, txlog.ErrPositionAhead)
	require.ErrorContains(t, err, `reader "r" of log "test_log"`)
}

func TestReadErrors(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()

	// A column that does not exist fails the query, naming reader and log.
	r, err := txlog.NewReader(txlog.Config{Schema: f.schema.Name, Log: f.log, Reader: "x", Columns: []string{"nope"}},
		func(v *string) []any { return []any{v} })
	require.NoError(t, err)
	_, err = r.ReadBatch(ctx, f.pool, txlog.Position{})
	require.ErrorContains(t, err, `reader "x" of log "test_log"`)
	require.ErrorContains(t, err, "nope")

	// A DestFunc that does not match the columns fails clearly.
	f.insert(t, f.pool, "row")
	r2, err := txlog.NewReader(txlog.Config{Schema: f.schema.Name, Log: f.log, Reader: "y", Columns: []string{"topic", "payload"}},
		func(v *string) []any { return []any{v} })
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := r2.ReadBatch(ctx, f.pool, txlog.Position{})
		return err != nil && strings.Contains(err.Error(), "DestFunc returned 1 destinations for 2 columns")
	}, waitFor, 20*time.Millisecond)

	// A cancelled context is returned as such.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = f.reader.ReadBatch(cancelled, f.pool, txlog.Position{})
	require.ErrorIs(t, err, context.Canceled)
}

// TestConcurrentWriters runs writers that commit and roll back at random
// while a reader tails the log, woken by notifications: the reader must end
// with every committed row exactly once, in order, and nothing rolled back.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	f := setup(t, func(c *txlog.Config) { c.BatchSize = 7 })
	ctx := t.Context()
	const channel = "test_concurrent"
	l := newListener(t, f.pool, txlog.ListenerConfig{Channel: channel, PollInterval: 50 * time.Millisecond, BlockedPollInterval: 5 * time.Millisecond})
	sub := l.Subscribe()
	defer sub.Close()

	const writers, txsPerWriter = 4, 15
	var mu sync.Mutex
	committed := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			errs <- func() error {
				for i := range txsPerWriter {
					if err := writeRandomTx(ctx, f, channel, w, i, &mu, committed); err != nil {
						return err
					}
				}
				return nil
			}()
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	seen := map[string]int{}
	var got []txlog.Row[msg]
	var after txlog.Position
	writing := true
	deadline := time.Now().Add(2 * waitFor)
	for {
		b, err := f.reader.ReadBatch(ctx, f.pool, after)
		require.NoError(t, err)
		for _, r := range b.Rows {
			seen[r.Value.Topic]++
		}
		got = append(got, b.Rows...)
		after = b.End
		if b.Full {
			continue
		}
		if !writing {
			mu.Lock()
			all := len(seen) >= len(committed)
			mu.Unlock()
			if all {
				break
			}
		}
		require.True(t, time.Now().Before(deadline), "read %d rows by the deadline", len(got))
		select {
		case <-done:
			writing = false
		default:
		}
		_, err = sub.Wait(ctx, b.HorizonBlocked)
		require.NoError(t, err)
	}
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	require.NotEmpty(t, committed)
	for topic, n := range seen {
		require.Equal(t, 1, n, "row %s read %d times", topic, n)
		require.True(t, committed[topic], "row %s was rolled back, yet read", topic)
	}
	require.Len(t, seen, len(committed))
	require.Equal(t, f.allPositions(t), rowPositions(got))
}

// writeRandomTx writes one transaction of 1 to 3 rows with short pauses
// inside it, and commits it (and notifies) or, one time in five, rolls it
// back.
func writeRandomTx(ctx context.Context, f *fixture, channel string, w, i int, mu *sync.Mutex, committed map[string]bool) (err error) {
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.Background())
		}
	}()
	var topics []string
	for j := range 1 + rand.IntN(3) {
		topic := fmt.Sprintf("w%d-tx%d-row%d", w, i, j)
		// The pause holds the transaction open while others commit.
		if _, err := tx.Exec(ctx, "INSERT INTO "+f.log+" (topic) VALUES ($1)", topic); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_sleep($1)", rand.Float64()*0.005); err != nil {
			return err
		}
		topics = append(topics, topic)
	}
	if rand.IntN(5) == 0 {
		return tx.Rollback(ctx)
	}
	if err := txlog.Notify(ctx, tx, channel); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	for _, topic := range topics {
		committed[topic] = true
	}
	return nil
}
