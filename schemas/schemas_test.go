package schemas_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/schemas"
)

const (
	idBase   = "https://github.com/vextrus/dtx/schemas/"
	draft202 = "https://json-schema.org/draft/2020-12/schema"
)

// orderToCash are the message types of the Order-to-Cash flow; each must
// have a schema of version 1.
var orderToCash = []string{
	"sales.order.place", "sales.order.placed",
	"inventory.stock.reserve", "inventory.stock.reserved",
	"inventory.stock.reservation_failed", "inventory.stock.release",
	"accounting.invoice.create", "accounting.invoice.created", "accounting.invoice.cancel",
	"delivery.shipment.schedule", "delivery.shipment.scheduled", "delivery.shipment.failed",
}

func newRegistry(t *testing.T) *messaging.SchemaRegistry {
	t.Helper()
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	require.NoError(t, err)
	return reg
}

// TestEverySchemaCompiles loads the embedded schemas, which compiles them,
// and checks that the embedded files are exactly the directory's.
func TestEverySchemaCompiles(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)

	var onDisk []string
	entries, err := os.ReadDir(".")
	require.NoError(t, err)
	for _, e := range entries {
		if !e.IsDir() && path.Ext(e.Name()) == ".json" {
			onDisk = append(onDisk, strings.TrimSuffix(e.Name(), ".json"))
		}
	}
	var loaded []string
	for _, k := range reg.Keys() {
		loaded = append(loaded, k.String())
	}
	require.ElementsMatch(t, onDisk, loaded)

	for _, typ := range orderToCash {
		_, ok := reg.SchemaID(typ, 1)
		require.True(t, ok, "no schema for %s v1", typ)
	}
}

// TestSchemaHeaders checks the conventions every schema file follows.
func TestSchemaHeaders(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	for _, k := range reg.Keys() {
		name := k.String() + ".json"
		raw, err := fs.ReadFile(schemas.FS(), name)
		require.NoError(t, err)
		var doc map[string]any
		require.NoError(t, json.Unmarshal(raw, &doc), name)
		require.Equal(t, draft202, doc["$schema"], name)
		require.Equal(t, idBase+name, doc["$id"], name)
		require.NotEmpty(t, doc["title"], name)
		require.NotEmpty(t, doc["description"], name)
		require.Equal(t, "object", doc["type"], name)
		require.Equal(t, false, doc["additionalProperties"], name)

		id, ok := reg.SchemaID(k.Type, k.Version)
		require.True(t, ok)
		require.Equal(t, idBase+name, id)
	}
}

// TestExamples validates every example: those of examples/<key>/ must
// conform, those of examples/<key>/invalid/ must not. Every schema has at
// least one valid example, and every example directory has a schema.
func TestExamples(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	keys := map[string]messaging.SchemaKey{}
	for _, k := range reg.Keys() {
		keys[k.String()] = k
	}

	dirs, err := os.ReadDir("examples")
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, d := range dirs {
		require.True(t, d.IsDir(), "examples/%s is not a directory", d.Name())
		k, ok := keys[d.Name()]
		require.True(t, ok, "examples/%s: no schema %s.json", d.Name(), d.Name())
		seen[d.Name()] = true

		valid := jsonFiles(t, path.Join("examples", d.Name()))
		require.NotEmpty(t, valid, "examples/%s holds no valid example", d.Name())
		for _, f := range valid {
			t.Run(f, func(t *testing.T) {
				t.Parallel()
				require.NoError(t, reg.Validate(k.Type, k.Version, readFile(t, f)))
			})
		}
		invalidDir := path.Join("examples", d.Name(), "invalid")
		if _, err := os.Stat(invalidDir); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		for _, f := range jsonFiles(t, invalidDir) {
			t.Run(f, func(t *testing.T) {
				t.Parallel()
				err := reg.Validate(k.Type, k.Version, readFile(t, f))
				require.ErrorIs(t, err, messaging.ErrSchemaViolation)
				var serr *messaging.SchemaError
				require.ErrorAs(t, err, &serr)
				require.Equal(t, k.Type, serr.Type)
				require.Equal(t, k.Version, serr.Version)
				require.NotEmpty(t, serr.Details)
				t.Log(err)
			})
		}
	}
	for name := range keys {
		require.True(t, seen[name], "schema %s.json has no examples/%s directory", name, name)
	}
}

func jsonFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var files []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		require.Equal(t, ".json", path.Ext(e.Name()), "%s/%s is not a .json example", dir, e.Name())
		files = append(files, path.Join(dir, e.Name()))
	}
	return files
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	require.NoError(t, err)
	return b
}

// TestSource checks that Source is the embedded schemas under the name
// errors call them by.
func TestSource(t *testing.T) {
	t.Parallel()
	src := schemas.Source()
	require.Equal(t, "built-in", src.Name)
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{Sources: []messaging.SchemaSource{src}})
	require.NoError(t, err)
	require.Equal(t, newRegistry(t).Keys(), reg.Keys())
}
