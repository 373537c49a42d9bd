package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/eventstore"
	"github.com/vextrus/dtx/pkg/eventstore/postgres"
)

// account is a small aggregate: a balance that must not go negative.
type account struct{ Balance int }

var errInsufficient = errors.New("insufficient funds")

var accounts = eventstore.Aggregate[account]{
	StreamType: "account",
	ApplyFunc: func(s account, ev eventstore.RecordedEvent) (account, error) {
		var d struct{ Amount int }
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return s, err
		}
		switch ev.Type {
		case "account.deposited":
			s.Balance += d.Amount
		case "account.withdrawn":
			s.Balance -= d.Amount
		}
		return s, nil
	},
}

func withdraw(amount int) eventstore.DecideFunc[account] {
	return func(s account) ([]eventstore.EventData, error) {
		if s.Balance < amount {
			return nil, errInsufficient
		}
		b, err := json.Marshal(map[string]int{"amount": amount})
		return []eventstore.EventData{{Type: "account.withdrawn", Data: b}}, err
	}
}

// Concurrent withdrawals through Update and RetryOnConflict never overdraw:
// each decision is taken on the state it appends after.
func TestAggregateUpdateRetriesOnConflict(t *testing.T) {
	t.Parallel()
	f := setup(t, postgres.Config{})
	ctx := t.Context()
	l, err := eventstore.Update(ctx, f.store, accounts, "account-1", func(account) ([]eventstore.EventData, error) {
		return []eventstore.EventData{{Type: "account.deposited", Data: json.RawMessage(`{"amount": 10}`)}}, nil
	})
	require.NoError(t, err)
	require.Equal(t, eventstore.Loaded[account]{State: account{Balance: 10}, Version: 1}, l)

	const workers = 6
	var wg sync.WaitGroup
	results := make([]error, workers*3)
	for w := range workers {
		wg.Go(func() {
			for i := range 3 {
				results[w*3+i] = eventstore.RetryOnConflict(ctx, 100, func(ctx context.Context) error {
					_, err := eventstore.Update(ctx, f.store, accounts, "account-1", withdraw(1))
					return err
				})
			}
		})
	}
	wg.Wait()
	var ok, refused int
	for _, err := range results {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, errInsufficient):
			refused++
		default:
			require.NoError(t, err)
		}
	}
	require.Equal(t, 10, ok, "exactly the balance was withdrawn")
	require.Equal(t, workers*3-10, refused)
	l, err = eventstore.Load(ctx, f.store, accounts, "account-1")
	require.NoError(t, err)
	require.Equal(t, eventstore.Loaded[account]{State: account{Balance: 0}, Version: 11}, l)

	// RetryOnConflict gives up after its attempts and returns the conflict.
	calls := 0
	err = eventstore.RetryOnConflict(ctx, 3, func(context.Context) error {
		calls++
		return &eventstore.VersionConflictError{StreamID: "x", Expected: 1, Actual: 2}
	})
	require.ErrorIs(t, err, eventstore.ErrConcurrencyConflict)
	require.Equal(t, 3, calls)
}
