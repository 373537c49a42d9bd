package messaging_test

import (
	"errors"
	"fmt"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/schemas"
)

// A service checks a command against dtx's schemas before it writes it to
// its outbox; a consumer does the same after Decode.
func ExampleSchemaRegistry_ValidateEnvelope() {
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	if err != nil {
		panic(err)
	}

	reserve, err := messaging.NewEnvelope("inventory.stock.reserve", "/orchestrator", map[string]any{
		"order_id": "ord-1001",
		"items":    []map[string]any{{"sku": "BOOK-0001", "quantity": 2}},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(reg.ValidateEnvelope(reserve))

	bad, err := messaging.NewEnvelope("inventory.stock.reserve", "/orchestrator", map[string]any{
		"order_id": "ord-1001",
		"items":    []map[string]any{{"sku": "BOOK-0001", "quantity": 0}},
	})
	if err != nil {
		panic(err)
	}
	err = reg.ValidateEnvelope(bad)
	fmt.Println(err)
	var serr *messaging.SchemaError
	fmt.Println(errors.As(err, &serr), serr.Details)

	bad.Type = "inventory.stock.teleport"
	fmt.Println(errors.Is(reg.ValidateEnvelope(bad), messaging.ErrUnknownType))
	// Output:
	// <nil>
	// messaging: payload of inventory.stock.reserve v1 violates its schema: at '/items/0/quantity': minimum: got 0, want 1
	// true [at '/items/0/quantity': minimum: got 0, want 1]
	// true
}
