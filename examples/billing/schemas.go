package main

import (
	"io/fs"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/schemas"
)

// schemaRegistry returns one registry of dtx's own schemas (the saga
// lifecycle events among them) and the service's contracts, built into the
// binary. The outbox validates what the service writes with it, the
// middleware what it reads.
func schemaRegistry() (*messaging.SchemaRegistry, error) {
	own, err := fs.Sub(contracts, "contracts")
	if err != nil {
		return nil, err
	}
	return messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{
		Sources: []messaging.SchemaSource{schemas.Source(), {Name: "contracts", FS: own}},
	})
}
