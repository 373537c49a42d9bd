package orchestrator

import (
	"fmt"
	"slices"
	"strings"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/saga"
)

// MissingSchemaError is a saga definition that names message types the
// orchestrator's schema registry holds no schema for: its triggers would be
// dead-lettered and its commands and replies refused, so New refuses it.
// It wraps messaging.ErrUnknownType.
type MissingSchemaError struct {
	// Missing maps "<name>@<version>" of each definition to the types it
	// names without a schema, sorted.
	Missing map[string][]string
}

func (e *MissingSchemaError) Error() string {
	var b strings.Builder
	b.WriteString("orchestrator: no schema for message types the saga definitions name")
	for _, def := range sortedKeys(e.Missing) {
		fmt.Fprintf(&b, "; %s: %s", def, strings.Join(e.Missing[def], ", "))
	}
	return b.String()
}

// Unwrap returns messaging.ErrUnknownType.
func (e *MissingSchemaError) Unwrap() error { return messaging.ErrUnknownType }

// CheckSchemas returns a *MissingSchemaError when a definition of defs names
// a message type (trigger, command, reply) that schemas holds no schema
// for, and nil when every type has one or schemas lets unknown types pass
// (messaging.AllowUnknownTypes).
func CheckSchemas(defs *saga.Registry, schemas *messaging.SchemaRegistry) error {
	if defs == nil || schemas == nil || schemas.UnknownTypes() == messaging.AllowUnknownTypes {
		return nil
	}
	missing := map[string][]string{}
	for _, d := range defs.Definitions() {
		for _, typ := range d.MessageTypes() {
			if !schemas.HasType(typ) {
				key := fmt.Sprintf("%s@%d", d.Name, d.Version)
				missing[key] = append(missing[key], typ)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return &MissingSchemaError{Missing: missing}
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
