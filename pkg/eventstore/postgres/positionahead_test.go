package postgres_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
)

// A position beyond the database's transaction ids (a logical dump restored
// into a new cluster) is refused with eventstore.ErrPositionAhead, which
// users can test for, by ReadAll and by Subscribe; nothing is handled.
func TestPositionAheadIsRefused(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	ahead := eventstore.Position{TxID: 1 << 60}

	_, err := f.store.ReadAll(t.Context(), eventstore.ReadAllParams{After: ahead})
	require.ErrorIs(t, err, eventstore.ErrPositionAhead)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	handled := 0
	err = f.store.Subscribe(ctx, postgres.SubscribeParams{
		Reader: "restored", From: ahead, PollInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
		Handler: func(context.Context, pgx.Tx, eventstore.RecordedEvent) error {
			handled++
			return nil
		},
	})
	require.ErrorIs(t, err, eventstore.ErrPositionAhead)
	require.NoError(t, ctx.Err(), "Subscribe returned, it did not wait")
	require.Zero(t, handled)
}
