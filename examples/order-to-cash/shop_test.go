package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

// TestShopAgainstTheSalesAPI runs the shop against the real sales API with
// the saga side running: every order ends as its scenario says, and the
// repeated request is answered from the store, so there is one order.
func TestShopAgainstTheSalesAPI(t *testing.T) {
	t.Parallel()
	db := pgtest.NewSchema(t)
	exampleSchema := pgtest.NewSchemaName(t)
	topics := newTestTopics(t)
	groupPrefix, reg, logger := startSagaSide(t, db, topics)
	_, c := newTestSalesAPI(t, db, exampleSchema, topics.SalesEvents)
	background(t, "services", func(ctx context.Context) error {
		return RunServices(ctx, ServicesConfig{
			Pool: db.Pool, Schema: db.Name, ExampleSchema: exampleSchema,
			Brokers: kafkatest.Brokers(), Topics: topics, GroupPrefix: groupPrefix, Schemas: reg, Logger: logger,
		})
	})

	var out strings.Builder
	res, err := Shop(t.Context(), ShopParams{API: c.url, Token: "shop-test", Run: "shoptest", Orders: 4, Wait: waitFor}, &out)
	require.NoError(t, err)
	require.Empty(t, res.Problems, out.String())
	require.Len(t, res.Orders, 4)
	require.Equal(t, "ord-shoptest-00001", res.Replayed)
	for _, o := range res.Orders {
		require.Len(t, o.TraceID, 32)
		require.NotNil(t, o.View.Saga, o.OrderID)
		require.NotEmpty(t, o.View.Saga.Timeline, o.OrderID)
	}
	require.Equal(t, []string{ScenarioOK, ScenarioDeclined, ScenarioSoldOut, ScenarioUndeliverable},
		[]string{res.Orders[0].Scenario, res.Orders[1].Scenario, res.Orders[2].Scenario, res.Orders[3].Scenario})
	require.Equal(t, 1, count(t, db, `SELECT count(*) FROM `+db.Name+`.saga_instances WHERE id = 'ord-shoptest-00001'`))
	require.Equal(t, 1, count(t, db, `SELECT count(*) FROM `+exampleSchema+`.orders WHERE order_id = 'ord-shoptest-00001'`))

	var table strings.Builder
	res.Print(&table)
	require.Contains(t, table.String(), "ord-shoptest-00002  declined")
}

func count(t *testing.T, db *pgtest.Schema, query string) int {
	t.Helper()
	var n int
	require.NoError(t, db.Pool.QueryRow(t.Context(), query).Scan(&n))
	return n
}

// TestShopFindsWhatDoesNotHold runs the shop against an API that runs a
// repeated request again (a new answer, no replay) and whose sagas end
// completed whatever the scenario: each is a problem of the result.
func TestShopFindsWhatDoesNotHold(t *testing.T) {
	t.Parallel()
	var posts atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"n": %d}`, posts.Add(1))
			return
		}
		id := strings.TrimPrefix(r.URL.Path, "/orders/")
		_ = json.NewEncoder(w).Encode(OrderView{OrderID: id, Status: OrderStatusConfirmed,
			Saga: &orchestrator.Detail{Summary: orchestrator.Summary{ID: id, Status: saga.StatusCompleted}}})
	}))
	t.Cleanup(api.Close)

	res, err := Shop(t.Context(), ShopParams{API: api.URL, Token: "t", Run: "fake", Orders: 2, Wait: time.Second}, io.Discard)
	require.NoError(t, err)
	require.EqualValues(t, 3, posts.Load(), "two orders and the repeated request")
	require.Len(t, res.Problems, 2, "%q", res.Problems)
	require.Contains(t, res.Problems[0], "was not the stored answer replayed")
	require.Contains(t, res.Problems[1], "ord-fake-00002 (declined): saga completed and order confirmed, expected compensated and cancelled")
}
