package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
)

const exampleSagas = "../../examples/order-to-cash/sagas"

func TestSagaListShowAndOperate(t *testing.T) {
	t.Parallel()
	schema := pgtest.NewSchema(t)
	reg, err := loadDefinitions(exampleSagas)
	require.NoError(t, err)
	o, err := orchestrator.New(schema.Pool, orchestrator.Config{Schema: schema.Name, Definitions: reg})
	require.NoError(t, err)
	data := map[string]any{"order_id": "ord-1", "lines": []any{map[string]any{"sku": "A", "quantity": 1}}}
	for _, id := range []string{"ord-1", "ord-2"} {
		data["order_id"] = id
		_, err := o.Start(context.Background(), nil, "order-to-cash", id, data, orchestrator.StartParams{})
		require.NoError(t, err)
	}
	env := map[string]string{"DTX_DATABASE_URL": pgtest.URL(), "DTX_SCHEMA": schema.Name, "DTX_DEFINITIONS": exampleSagas}

	r := dtxctl(t, env, "saga", "list")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "ord-1")
	require.Contains(t, r.stdout, "order-to-cash@1")
	require.Contains(t, r.stdout, "reserve-stock")

	r = dtxctl(t, env, "saga", "show", "ord-1")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "status      running")
	require.Contains(t, r.stdout, "waiting for a reply to the action of step reserve-stock (attempt 1)")
	require.Contains(t, r.stdout, "reserve-stock  action")

	r = dtxctl(t, env, "saga", "abort", "ord-1", "--reason", "customer called")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "saga ord-1: abort, now failed")
	r = dtxctl(t, env, "saga", "list", "--status", "failed", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, `"id": "ord-1"`)
	require.NotContains(t, r.stdout, "ord-2")

	r = dtxctl(t, env, "saga", "retry", "ord-1")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "does not apply")
	r = dtxctl(t, env, "saga", "compensate", "ord-2")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "now "+string(saga.StatusCompensating))

	r = dtxctl(t, env, "saga", "show", "nope")
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, "no such saga")
	r = dtxctl(t, env, "saga", "show")
	require.Equal(t, exitUsage, r.code)
	r = dtxctl(t, map[string]string{"DTX_DATABASE_URL": pgtest.URL(), "DTX_SCHEMA": schema.Name}, "saga", "retry", "ord-2")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "--definitions (DTX_DEFINITIONS) is required")
	r = dtxctl(t, env, "saga", "list", "--status", "sideways")
	require.Equal(t, exitUsage, r.code)
}
