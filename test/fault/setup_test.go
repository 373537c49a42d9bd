package fault

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/migrate"
)

// sharedDB returns a schema of its own on the shared PostgreSQL, migrated,
// with the ledger table.
func sharedDB(t *testing.T) *outboxDB {
	t.Helper()
	s := pgtest.NewSchema(t)
	db := &outboxDB{url: pgtest.URL(), schema: s.Name, pool: s.Pool}
	db.createLedger(t)
	return db
}

// clusterDB migrates the default schema of a private PostgreSQL server and
// returns it with a pool (closed at cleanup) and the ledger table.
func clusterDB(t *testing.T, c *pgtest.Cluster) *outboxDB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL())
	require.NoError(t, err)
	require.NoError(t, migrate.Up(ctx, conn, migrate.Config{Schema: migrate.DefaultSchema}))
	require.NoError(t, conn.Close(ctx))
	cfg, err := pgxpool.ParseConfig(c.URL())
	require.NoError(t, err)
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	db := &outboxDB{url: c.URL(), schema: migrate.DefaultSchema, pool: pool}
	db.createLedger(t)
	return db
}

// commitTx writes one row per key in one transaction and commits it,
// recording the rows in j. pad is the least payload size.
func commitTx(t *testing.T, db *outboxDB, topic string, j *journal, pad int, keys ...string) []row {
	t.Helper()
	tx, rows := openTx(t, db, topic, j, pad, keys...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, tx.Commit(ctx))
	j.ended(rows...)
	return rows
}

// openTx begins a transaction and writes one row per key in it, leaving it
// open; cleanup rolls it back if the test did not end it. The caller records
// the rows in j when it ends the transaction.
func openTx(t *testing.T, db *outboxDB, topic string, j *journal, pad int, keys ...string) (pgx.Tx, []row) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx := pgtest.Tx(t, db.pool)
	rows := make([]row, len(keys))
	for i, k := range keys {
		rows[i] = j.newRow(k)
		require.NoError(t, db.insertRow(ctx, tx, topic, rows[i], pad))
	}
	return tx, rows
}

func joinBrokers(brokers []string) string { return strings.Join(brokers, ",") }
