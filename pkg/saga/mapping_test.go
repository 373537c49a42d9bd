package saga_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/saga"
)

func TestMap(t *testing.T) {
	t.Parallel()
	data := map[string]any{
		"order_id": "o1",
		"total":    1999,
		"lines":    []any{map[string]any{"sku": "A", "qty": 2}, map[string]any{"sku": "B", "qty": 1}},
		"customer": map[string]any{"id": "c7", "vip": true, "note": nil},
		"7":        "seven",
	}
	vars := saga.Vars{SagaID: "s1", CorrelationID: "corr", Name: "orders", Version: 3}
	for _, tc := range []struct {
		name     string
		template any
		want     any
	}{
		{"whole data", "$", data},
		{"path", "$.customer.id", "c7"},
		{"keeps the JSON type", "$.total", 1999},
		{"bool", "$.customer.vip", true},
		{"present null", "$.customer.note", nil},
		{"array index", "$.lines.1.sku", "B"},
		{"array", "$.lines", data["lines"]},
		{"numeric map key", "$.7", "seven"},
		{"saga id", "$saga.id", "s1"},
		{"correlation id", "$saga.correlation_id", "corr"},
		{"saga name", "$saga.name", "orders"},
		{"saga version", "$saga.version", 3},
		{"escaped dollar", "$$.order_id", "$.order_id"},
		{"double escaped", "$$$", "$$"},
		{"literal string", "order $.x", "order $.x"},
		{"number literal", 12.5, 12.5},
		{"bool literal", false, false},
		{"nil literal", nil, nil},
		{"object", map[string]any{"id": "$.order_id", "first": map[string]any{"sku": "$.lines.0.sku"}, "n": 1},
			map[string]any{"id": "o1", "first": map[string]any{"sku": "A"}, "n": 1}},
		{"array template", []any{"$saga.id", "x", 2}, []any{"s1", "x", 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.NoError(t, saga.ValidateTemplate(tc.template))
			got, err := saga.Map(tc.template, data, vars)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestMapCopies(t *testing.T) {
	t.Parallel()
	data := map[string]any{"o": map[string]any{"a": []any{1}}}
	got, err := saga.Map("$.o", data, saga.Vars{})
	require.NoError(t, err)
	got.(map[string]any)["a"].([]any)[0] = 2
	require.Equal(t, 1, data["o"].(map[string]any)["a"].([]any)[0])
}

func TestMapErrors(t *testing.T) {
	t.Parallel()
	data := map[string]any{"a": map[string]any{"b": []any{1}}, "s": "x"}
	for _, tc := range []struct {
		template any
		path     string
		msg      string
	}{
		{"$.nope", "$.nope", `no key "nope" at $`},
		{"$.a.c", "$.a.c", `no key "c" at $.a`},
		{"$.a.b.1", "$.a.b.1", `no index 1 in the array of 1 at $.a.b`},
		{"$.a.b.x", "$.a.b.x", `no index x`},
		{"$.s.t", "$.s.t", `$.s is a string, not an object or array`},
		{map[string]any{"k": []any{"$.zzz"}}, "$.zzz", `no key "zzz"`},
		{"$saga.nope", "$saga.nope", "unknown saga field"},
		{"$nope", "$nope", "not a reference"},
		{"$.", "$.", "empty path element"},
	} {
		_, err := saga.Map(tc.template, data, saga.Vars{})
		var merr *saga.MappingError
		require.ErrorAs(t, err, &merr, "%v", tc.template)
		require.Equal(t, tc.path, merr.Path)
		require.Contains(t, merr.Msg, tc.msg)
	}
}

func TestValidateTemplate(t *testing.T) {
	t.Parallel()
	for _, bad := range []any{"$saga.nope", "$x", "$.a..b", map[string]any{"x": []any{"$saga"}}, struct{}{}, []string{"a"}} {
		require.Error(t, saga.ValidateTemplate(bad), "%#v", bad)
	}
	for _, good := range []any{nil, "", "$", "$$x", "x$", 1, int64(2), 1.5, true, map[string]any{"a": []any{"$.b.0"}}} {
		require.NoError(t, saga.ValidateTemplate(good), "%#v", good)
	}
}

func TestTriggerMapping(t *testing.T) {
	t.Parallel()
	tr := saga.Trigger{Topic: "t", Type: "x", SagaID: "$.order_id"}
	id, err := tr.SagaIDFrom(map[string]any{"order_id": "o1"}, "m1")
	require.NoError(t, err)
	require.Equal(t, "o1", id)
	id, err = tr.SagaIDFrom(map[string]any{"order_id": 42}, "m1")
	require.NoError(t, err)
	require.Equal(t, "42", id)
	_, err = tr.SagaIDFrom(map[string]any{}, "m1")
	require.Error(t, err)
	_, err = tr.SagaIDFrom(map[string]any{"order_id": map[string]any{}}, "m1")
	require.ErrorContains(t, err, "want a string or a number")
	_, err = tr.SagaIDFrom(map[string]any{"order_id": ""}, "m1")
	require.ErrorContains(t, err, "is empty")

	id, err = saga.Trigger{}.SagaIDFrom(nil, "m1")
	require.NoError(t, err)
	require.Equal(t, "m1", id)

	payload := map[string]any{"order_id": "o1", "n": 1}
	d, err := tr.InitialData(payload, saga.Vars{})
	require.NoError(t, err)
	require.Equal(t, payload, d)
	tr.Data = map[string]any{"id": "$.order_id", "saga": "$saga.id"}
	d, err = tr.InitialData(payload, saga.Vars{SagaID: "o1"})
	require.NoError(t, err)
	require.Equal(t, map[string]any{"id": "o1", "saga": "o1"}, d)
	tr.Data = "$.n"
	_, err = tr.InitialData(payload, saga.Vars{})
	require.ErrorContains(t, err, "want an object")
}

func TestMapEachAndOptionalReferences(t *testing.T) {
	t.Parallel()
	data := map[string]any{
		"order_id": "o-1",
		"lines": []any{
			map[string]any{"sku": "A", "quantity": 2, "unit_price": 100},
			map[string]any{"sku": "B", "quantity": 1, "unit_price": 50},
		},
	}
	tmpl := map[string]any{
		"order_id":   "$.order_id",
		"payment_id": "$.payment_id?",
		"items": map[string]any{"$each": "$.lines", "$map": map[string]any{
			"sku": "$item.sku", "quantity": "$item.quantity", "order": "$.order_id", "note": "$item.note?",
		}},
	}
	require.NoError(t, saga.ValidateTemplate(tmpl))
	got, err := saga.Map(tmpl, data, saga.Vars{})
	require.NoError(t, err)
	require.Equal(t, map[string]any{
		"order_id": "o-1",
		"items": []any{
			map[string]any{"sku": "A", "quantity": 2, "order": "o-1"},
			map[string]any{"sku": "B", "quantity": 1, "order": "o-1"},
		},
	}, got)

	_, err = saga.Map(map[string]any{"x": "$.payment_id"}, data, saga.Vars{})
	require.ErrorContains(t, err, `mapping "$.payment_id"`, "a reference without ? must be there")
	_, err = saga.Map(map[string]any{"$each": "$.order_id", "$map": "$item"}, data, saga.Vars{})
	require.ErrorContains(t, err, "$each needs an array")
	require.ErrorContains(t, saga.ValidateTemplate(map[string]any{"sku": "$item.sku"}), "only defined inside")
	require.ErrorContains(t, saga.ValidateTemplate(map[string]any{"$each": "$.lines"}), `"$each" needs`)
}
