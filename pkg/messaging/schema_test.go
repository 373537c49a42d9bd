package messaging_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/schemas"
)

const orderSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": "https://example.com/schemas/shop.order.placed.v1.json",
  "type": "object",
  "additionalProperties": false,
  "required": ["order_id", "lines"],
  "properties": {
    "order_id": {"type": "string", "minLength": 1},
    "placed_at": {"type": "string", "format": "date-time"},
    "lines": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/line"}}
  },
  "$defs": {
    "line": {
      "type": "object",
      "required": ["sku", "quantity"],
      "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}}
    }
  }
}`

func schemaFS(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, data := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return fsys
}

func newRegistry(t *testing.T, files map[string]string, policy messaging.UnknownTypePolicy) *messaging.SchemaRegistry {
	t.Helper()
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemaFS(files), UnknownTypes: policy})
	require.NoError(t, err)
	return reg
}

func TestSchemaRegistryValidate(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t, map[string]string{
		"shop.order.placed.v1.json": orderSchema,
		"shop.order.placed.v2.json": `{"type": "object", "required": ["id"]}`,
		"README.md":                 "not a schema",
		"examples/x.json":           "not looked at",
	}, messaging.RejectUnknownTypes)

	require.Equal(t, []messaging.SchemaKey{{"shop.order.placed", 1}, {"shop.order.placed", 2}}, reg.Keys())
	require.Equal(t, "shop.order.placed.v2", reg.Keys()[1].String())

	require.NoError(t, reg.Validate("shop.order.placed", 1,
		[]byte(`{"order_id":"o-1","placed_at":"2026-11-23T09:15:02Z","lines":[{"sku":"A","quantity":2}]}`)))
	require.NoError(t, reg.Validate("shop.order.placed", 2, []byte(`{"id":1}`)))

	for name, tt := range map[string]struct {
		payload string
		details []string
	}{
		"several violations": {
			`{"order_id":"","lines":[{"sku":"A","quantity":0}],"extra":true}`,
			[]string{
				"at '': additional properties 'extra' not allowed",
				"at '/order_id': minLength: got 0, want 1",
				"at '/lines/0/quantity': minimum: got 0, want 1",
			},
		},
		"format asserted": {
			`{"order_id":"o","placed_at":"yesterday","lines":[{"sku":"A","quantity":1}]}`,
			[]string{"at '/placed_at': 'yesterday' is not valid date-time: less than 20 characters long"},
		},
		"escaped pointer": {
			`{"order_id":"o","lines":[{"sku":"A","quantity":1}],"a/b~c":1}`,
			[]string{"at '': additional properties 'a/b~c' not allowed"},
		},
		"empty":      {` `, []string{"at '': the payload is empty"}},
		"not JSON":   {`{"order_id":`, []string{"at '': not JSON: unexpected EOF"}},
		"two values": {`{} {}`, []string{"at '': not JSON: invalid character after top-level value"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := reg.Validate("shop.order.placed", 1, []byte(tt.payload))
			require.ErrorIs(t, err, messaging.ErrSchemaViolation)
			var serr *messaging.SchemaError
			require.ErrorAs(t, err, &serr)
			require.Equal(t, "shop.order.placed", serr.Type)
			require.Equal(t, 1, serr.Version)
			require.ElementsMatch(t, tt.details, serr.Details)
		})
	}
}

func TestSchemaRegistryUnknownTypes(t *testing.T) {
	t.Parallel()
	files := map[string]string{"shop.order.placed.v1.json": orderSchema}

	reject := newRegistry(t, files, messaging.RejectUnknownTypes)
	err := reject.Validate("shop.order.cancelled", 1, []byte(`{}`))
	require.ErrorIs(t, err, messaging.ErrUnknownType)
	require.NotErrorIs(t, err, messaging.ErrSchemaViolation)
	require.EqualError(t, err, `messaging: type "shop.order.cancelled" version 1: no schema for message type`)
	err = reject.Validate("shop.order.placed", 2, []byte(`{}`))
	require.ErrorIs(t, err, messaging.ErrUnknownType)
	err = reject.ValidateEnvelope(messaging.Envelope{Type: "shop.order.placed", Data: json.RawMessage(`{}`)})
	require.ErrorIs(t, err, messaging.ErrUnknownType)
	require.EqualError(t, err, `messaging: type "shop.order.placed" carries no schema version: no schema for message type`)

	allow := newRegistry(t, files, messaging.AllowUnknownTypes)
	require.NoError(t, allow.Validate("shop.order.cancelled", 1, []byte(`not even JSON`)))
	require.NoError(t, allow.ValidateEnvelope(messaging.Envelope{Type: "shop.order.placed"}))
	require.ErrorIs(t, allow.Validate("shop.order.placed", 1, []byte(`{}`)), messaging.ErrSchemaViolation,
		"a type with a schema is still checked")
}

func TestSchemaRegistryValidateEnvelope(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t, map[string]string{"shop.order.placed.v1.json": orderSchema}, messaging.RejectUnknownTypes)

	e, err := messaging.NewEnvelope("shop.order.placed", "/shop", map[string]any{
		"order_id": "o-1", "lines": []map[string]any{{"sku": "A", "quantity": 1}},
	})
	require.NoError(t, err)
	require.NoError(t, reg.ValidateEnvelope(e))

	e.Data = json.RawMessage(`{"order_id":"o-1","lines":[]}`)
	err = reg.ValidateEnvelope(e)
	require.ErrorIs(t, err, messaging.ErrSchemaViolation)
	require.EqualError(t, err, "messaging: payload of shop.order.placed v1 violates its schema: at '/lines': minItems: got 0, want 1")

	e.Data = nil
	require.ErrorIs(t, reg.ValidateEnvelope(e), messaging.ErrSchemaViolation, "no data")

	e.DataContentType = "text/plain"
	e.Data = json.RawMessage(`{"order_id":"o-1","lines":[{"sku":"A","quantity":1}]}`)
	err = reg.ValidateEnvelope(e)
	require.ErrorIs(t, err, messaging.ErrSchemaViolation)
	require.ErrorContains(t, err, `the content type "text/plain" is not JSON`)
}

func TestSchemaRegistrySchemaID(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t, map[string]string{
		"shop.order.placed.v1.json": orderSchema,
		"shop.order.placed.v2.json": `{"type": "object"}`,
	}, messaging.RejectUnknownTypes)

	id, ok := reg.SchemaID("shop.order.placed", 1)
	require.True(t, ok)
	require.Equal(t, "https://example.com/schemas/shop.order.placed.v1.json", id)
	id, ok = reg.SchemaID("shop.order.placed", 2)
	require.True(t, ok)
	require.Empty(t, id)
	_, ok = reg.SchemaID("shop.order.placed", 3)
	require.False(t, ok)

	e := messaging.Envelope{ID: "1", Type: "t", Source: "/s", DataSchema: "https://example.com/schemas/shop.order.placed.v1.json"}
	require.NoError(t, e.Validate(), "an $id is a valid dataschema")
}

func TestSchemaRegistryReferences(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t, map[string]string{
		// By $id, relative to the referring schema's $id.
		"shop.order.placed.v1.json": `{"$id": "https://example.com/s/shop.order.placed.v1.json",
			"$ref": "money.v1.json"}`,
		"money.v1.json": `{"$id": "https://example.com/s/money.v1.json", "type": "integer", "minimum": 0}`,
		// By file name, between schemas without $id.
		"a.v1.json": `{"$ref": "b.v1.json"}`,
		"b.v1.json": `{"type": "string"}`,
	}, messaging.RejectUnknownTypes)
	require.NoError(t, reg.Validate("shop.order.placed", 1, []byte(`5`)))
	require.ErrorIs(t, reg.Validate("shop.order.placed", 1, []byte(`-5`)), messaging.ErrSchemaViolation)
	require.NoError(t, reg.Validate("a", 1, []byte(`"x"`)))
	require.ErrorIs(t, reg.Validate("a", 1, []byte(`1`)), messaging.ErrSchemaViolation)
}

func TestNewSchemaRegistryFails(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		files map[string]string
		err   string
	}{
		"no schema": {map[string]string{"README.md": "x", "sub/a.v1.json": "{}"},
			"messaging: schema source FS: holds no <type>.v<version>.json file"},
		"no version": {map[string]string{"shop.order.placed.json": "{}"},
			"messaging: schema file FS/shop.order.placed.json: name is not <type>.v<version>.json"},
		"version zero": {map[string]string{"t.v0.json": "{}"},
			"messaging: schema file FS/t.v0.json: name is not <type>.v<version>.json"},
		"leading zero": {map[string]string{"t.v01.json": "{}"},
			"messaging: schema file FS/t.v01.json: name is not <type>.v<version>.json"},
		"bad type": {map[string]string{"shop order.v1.json": "{}"},
			"messaging: schema file FS/shop order.v1.json: name is not <type>.v<version>.json"},
		"not JSON": {map[string]string{"t.v1.json": "{"},
			"messaging: schema file FS/t.v1.json: not JSON: unexpected EOF"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemaFS(tt.files)})
			require.EqualError(t, err, tt.err)
		})
	}

	// Errors of the compiler name the file too.
	for name, files := range map[string]map[string]string{
		"invalid schema":   {"t.v1.json": `{"type": 12}`},
		"duplicate $id":    {"t.v1.json": `{"$id": "https://x/a"}`, "u.v1.json": `{"$id": "https://x/a"}`},
		"external $ref":    {"t.v1.json": `{"$ref": "https://example.com/elsewhere.json"}`},
		"file $ref":        {"t.v1.json": `{"$ref": "file:///etc/hosts"}`},
		"missing $ref":     {"t.v1.json": `{"$ref": "u.v1.json"}`},
		"missing fragment": {"t.v1.json": `{"$ref": "#/$defs/nothing"}`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemaFS(files)})
			require.Error(t, err)
			require.Regexp(t, `^messaging: schema file FS/[tu]\.v1\.json: `, err.Error())
		})
	}

	_, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{UnknownTypes: 7})
	require.EqualError(t, err, "messaging: schema registry config: FS, Sources: one of them is required\n"+
		"UnknownTypes: 7 is neither RejectUnknownTypes nor AllowUnknownTypes")
}

func TestUnknownTypePolicyString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "reject", messaging.RejectUnknownTypes.String())
	require.Equal(t, "allow", messaging.AllowUnknownTypes.String())
	require.Equal(t, "UnknownTypePolicy(9)", messaging.UnknownTypePolicy(9).String())
}

// TestSchemaRegistryConcurrent validates from many goroutines at once; run
// with -race it shows that a loaded registry needs no locking.
func TestSchemaRegistryConcurrent(t *testing.T) {
	t.Parallel()
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	require.NoError(t, err)
	valid := []byte(`{"order_id":"ord-1","items":[{"sku":"BOOK-0001","quantity":2}]}`)
	invalid := []byte(`{"order_id":"ord-1","items":[{"sku":"book","quantity":0}]}`)

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				if err := reg.Validate("inventory.stock.reserve", 1, valid); err != nil {
					errs <- fmt.Errorf("goroutine %d, round %d: %w", g, i, err)
					return
				}
				err := reg.Validate("inventory.stock.reserve", 1, invalid)
				if serr := (*messaging.SchemaError)(nil); !errors.As(err, &serr) || len(serr.Details) != 2 {
					got := "no error"
					if err != nil {
						got = err.Error()
					}
					errs <- fmt.Errorf("goroutine %d, round %d: want a *SchemaError with 2 details, got %s", g, i, got)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// billingSchema refers to a schema of another source by its $id.
const billingSchema = `{
  "$id": "https://billing.example.com/schemas/billing.invoice.create.v1.json",
  "type": "object",
  "required": ["order_id", "amount"],
  "properties": {
    "order_id": {"type": "string", "minLength": 1},
    "amount": {"$ref": "https://shared.example.com/schemas/money.v1.json"}
  }
}`

const moneySchema = `{
  "$id": "https://shared.example.com/schemas/money.v1.json",
  "type": "integer", "minimum": 0
}`

// TestSchemaRegistrySources merges a service's own schemas with dtx's: both
// validate, and a schema refers by $id to one of another source.
func TestSchemaRegistrySources(t *testing.T) {
	t.Parallel()
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{Sources: []messaging.SchemaSource{
		schemas.Source(),
		{Name: "./contracts", FS: schemaFS(map[string]string{"billing.invoice.create.v1.json": billingSchema})},
		{Name: "./shared", FS: schemaFS(map[string]string{"money.v1.json": moneySchema})},
	}})
	require.NoError(t, err)

	require.NoError(t, reg.Validate("billing.invoice.create", 1, []byte(`{"order_id":"o-1","amount":1200}`)))
	err = reg.Validate("billing.invoice.create", 1, []byte(`{"order_id":"o-1","amount":-1}`))
	require.ErrorIs(t, err, messaging.ErrSchemaViolation, "the $ref into the other source applies")
	require.ErrorContains(t, err, "at '/amount': minimum")

	// The built-in lifecycle events are still there.
	_, ok := reg.SchemaID("dtx.saga.started", 1)
	require.True(t, ok)
	require.ErrorIs(t, reg.Validate("billing.invoice.void", 1, []byte(`{}`)), messaging.ErrUnknownType)

	// FS is one more source, after Sources.
	reg, err = messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{
		Sources: []messaging.SchemaSource{{Name: "own", FS: schemaFS(map[string]string{"billing.invoice.create.v1.json": billingSchema})}},
		FS:      schemaFS(map[string]string{"money.v1.json": moneySchema}),
	})
	require.NoError(t, err)
	require.Len(t, reg.Keys(), 2)
}

func TestSchemaRegistryDuplicate(t *testing.T) {
	t.Parallel()
	_, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{Sources: []messaging.SchemaSource{
		{Name: "./contracts", FS: schemaFS(map[string]string{
			"billing.invoice.create.v1.json": billingSchema,
			"money.v1.json":                  moneySchema,
			"billing.invoice.void.v1.json":   `{}`,
		})},
		{Name: "built-in/", FS: schemaFS(map[string]string{
			"billing.invoice.create.v1.json": `{"type": "object"}`,
			"billing.invoice.create.v2.json": `{"type": "object"}`, // another version: no conflict
			"money.v1.json":                  moneySchema,
		})},
	}})
	require.EqualError(t, err, "messaging: schema billing.invoice.create.v1 is defined twice: "+
		"./contracts/billing.invoice.create.v1.json and built-in/billing.invoice.create.v1.json\n"+
		"messaging: schema money.v1 is defined twice: ./contracts/money.v1.json and built-in/money.v1.json")
	var dup *messaging.DuplicateSchemaError
	require.ErrorAs(t, err, &dup)
	require.Equal(t, messaging.SchemaKey{Type: "billing.invoice.create", Version: 1}, dup.Key)
	require.Equal(t, "./contracts/billing.invoice.create.v1.json", dup.First)
	require.Equal(t, "built-in/billing.invoice.create.v1.json", dup.Second)

	// dtx's own schemas cannot be redefined either.
	_, err = messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{Sources: []messaging.SchemaSource{
		schemas.Source(),
		{Name: "mine", FS: schemaFS(map[string]string{"dtx.saga.started.v1.json": `{}`})},
	}})
	require.EqualError(t, err, "messaging: schema dtx.saga.started.v1 is defined twice: "+
		"built-in/dtx.saga.started.v1.json and mine/dtx.saga.started.v1.json")
}

func TestSchemaRegistrySourcesFail(t *testing.T) {
	t.Parallel()
	_, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{})
	require.EqualError(t, err, "messaging: schema registry config: FS, Sources: one of them is required")
	_, err = messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{Sources: []messaging.SchemaSource{}})
	require.EqualError(t, err, "messaging: schema registry config: FS, Sources: one of them is required")

	_, err = messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{Sources: []messaging.SchemaSource{{Name: "x"}}})
	require.EqualError(t, err, "messaging: schema registry config: SchemaRegistryConfig.Sources[0] (x): FS must not be nil")

	_, err = messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{Sources: []messaging.SchemaSource{
		schemas.Source(), {FS: schemaFS(map[string]string{"README.md": "x"})},
	}})
	require.EqualError(t, err, "messaging: schema source Sources[1]: holds no <type>.v<version>.json file")

	// A file of a named source is named by the source.
	_, err = messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{Sources: []messaging.SchemaSource{
		{Name: "./contracts", FS: schemaFS(map[string]string{"t.v1.json": "{"})},
	}})
	require.EqualError(t, err, "messaging: schema file ./contracts/t.v1.json: not JSON: unexpected EOF")
}

func TestSchemaDirs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "billing.invoice.create.v1.json"), []byte(billingSchema), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "money.v1.json"), []byte(moneySchema), 0o600))

	srcs := messaging.SchemaDirs(dir)
	require.Len(t, srcs, 1)
	require.Equal(t, dir, srcs[0].Name)
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{Sources: append(srcs, schemas.Source())})
	require.NoError(t, err)
	require.NoError(t, reg.Validate("billing.invoice.create", 1, []byte(`{"order_id":"o-1","amount":5}`)))

	missing := filepath.Join(dir, "nope")
	_, err = messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{Sources: messaging.SchemaDirs(dir, missing)})
	require.EqualError(t, err, "messaging: schema source "+missing+": read schemas: no such file or directory")
	require.ErrorIs(t, err, fs.ErrNotExist)
}
