package saga_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/saga"
)

// The definitions shipped with the examples load and validate.
func TestExampleDefinitionsLoad(t *testing.T) {
	t.Parallel()
	defs, err := saga.LoadDir("../../examples/order-to-cash/sagas")
	require.NoError(t, err)
	require.Len(t, defs, 1)
	require.Equal(t, "order-to-cash@1", defs[0].Ref())
	require.Len(t, defs[0].Steps, 4)

	// deploy/k8s ships a copy for its ConfigMap: it must not drift.
	example, err := os.ReadFile("../../examples/order-to-cash/sagas/order-to-cash.yaml")
	require.NoError(t, err)
	deployed, err := os.ReadFile("../../deploy/k8s/sagas/order-to-cash.yaml")
	require.NoError(t, err)
	require.Equal(t, string(example), string(deployed), "deploy/k8s/sagas/order-to-cash.yaml differs from the example")
}
