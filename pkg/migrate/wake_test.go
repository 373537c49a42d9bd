package migrate_test

import (
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

// A transaction wakes the readers of the outbox and of the events once, at
// commit, however many rows it inserts: the deferred trigger function runs
// once per transaction and table, not once per row. A savepoint rolled back
// takes its wake-up with it, and the next row queues it again; two schemas
// written in one transaction each wake their own readers.
func TestLogWakeUpRunsOncePerTransaction(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, b := pgtest.NewSchema(t), pgtest.NewSchema(t)
	// Count the trigger function's runs instead of notifying.
	for _, s := range []*pgtest.Schema{a, b} {
		q := pgx.Identifier{s.Name}.Sanitize()
		_, err := s.Pool.Exec(ctx, `CREATE TABLE `+q+`.wake_calls (channel text NOT NULL)`)
		require.NoError(t, err)
		_, err = s.Pool.Exec(ctx, `CREATE OR REPLACE FUNCTION `+q+`.txlog_notify_at_commit() RETURNS trigger
			LANGUAGE plpgsql AS $$ BEGIN
				INSERT INTO `+q+`.wake_calls (channel) VALUES (TG_ARGV[0]); RETURN NULL;
			END $$`)
		require.NoError(t, err)
	}
	calls := func(s *pgtest.Schema) map[string]int {
		t.Helper()
		rows, err := s.Pool.Query(ctx, "SELECT channel, count(*)::int FROM "+pgx.Identifier{s.Name, "wake_calls"}.Sanitize()+" GROUP BY channel")
		require.NoError(t, err)
		got := map[string]int{}
		for rows.Next() {
			var ch string
			var n int
			require.NoError(t, rows.Scan(&ch, &n))
			got[ch] = n
		}
		require.NoError(t, rows.Err())
		_, err = s.Pool.Exec(ctx, "TRUNCATE "+pgx.Identifier{s.Name, "wake_calls"}.Sanitize())
		require.NoError(t, err)
		return got
	}
	outbox := func(s *pgtest.Schema, n int) string {
		return "INSERT INTO " + pgx.Identifier{s.Name, "outbox"}.Sanitize() + " (topic, key, headers, payload) " +
			"SELECT 't', 'k' || g, '{}', '\\x00' FROM generate_series(1, " + itoa(n) + ") AS g"
	}
	events := func(s *pgtest.Schema, stream string, n int) string {
		return "INSERT INTO " + pgx.Identifier{s.Name, "events"}.Sanitize() +
			" (stream_id, stream_type, version, event_id, type, schema_version, data) " +
			"SELECT '" + stream + "', 'order', g, '" + stream + "-' || g, 'order.placed', 1, '{}' FROM generate_series(1, " + itoa(n) + ") AS g"
	}
	run := func(stmts ...string) {
		t.Helper()
		tx, err := a.Pool.Begin(ctx)
		require.NoError(t, err)
		for _, s := range stmts {
			_, err := tx.Exec(ctx, s)
			require.NoError(t, err, s)
		}
		require.NoError(t, tx.Commit(ctx))
	}
	chA, chB := map[string]int{a.Name + ".outbox": 1, a.Name + ".events": 1}, map[string]int{b.Name + ".outbox": 1}

	// 1,000 outbox rows and 500 events in three statements: one run each.
	run(outbox(a, 600), events(a, "s1", 500), outbox(a, 400))
	require.Equal(t, chA, calls(a))

	// Each transaction queues its own.
	run(outbox(a, 3), events(a, "s2", 2))
	run(outbox(a, 1), events(a, "s3", 1))
	require.Equal(t, map[string]int{a.Name + ".outbox": 2, a.Name + ".events": 2}, calls(a))

	// A rolled-back savepoint takes its wake-up with it: the next row queues
	// it again; with no row after it, nothing runs.
	run("SAVEPOINT s", outbox(a, 5), events(a, "s4", 5), "ROLLBACK TO SAVEPOINT s", outbox(a, 2), events(a, "s4", 1))
	require.Equal(t, chA, calls(a))
	run("SAVEPOINT s", outbox(a, 5), "ROLLBACK TO SAVEPOINT s")
	require.Empty(t, calls(a))
	// A released savepoint keeps it.
	run("SAVEPOINT s", outbox(a, 5), events(a, "s5", 1), "RELEASE SAVEPOINT s", outbox(a, 2), events(a, "s6", 1))
	require.Equal(t, chA, calls(a))

	// Two schemas in one transaction: each is woken.
	run(outbox(a, 10), events(a, "s7", 1), outbox(b, 10))
	require.Equal(t, chA, calls(a))
	require.Equal(t, chB, calls(b))

	// A rolled-back transaction runs nothing.
	tx, err := a.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, outbox(a, 10))
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))
	require.Empty(t, calls(a))
}

func itoa(n int) string { return strconv.Itoa(n) }
