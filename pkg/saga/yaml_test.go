package saga_test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/saga"
)

func TestParseOrderToCash(t *testing.T) {
	t.Parallel()
	def, err := saga.LoadFile(filepath.Join("testdata", "valid", "order-to-cash.yaml"))
	require.NoError(t, err)
	require.Equal(t, "order-to-cash@1", def.Ref())
	require.Equal(t, 2*time.Minute, def.Timeout)
	require.Equal(t, []saga.Trigger{{Topic: "sales.commands", Type: "sales.order.place", SagaID: "$.order_id"}}, def.Triggers)
	names := make([]string, len(def.Steps))
	for i, s := range def.Steps {
		names[i] = s.Name
	}
	require.Equal(t, []string{"reserve-stock", "charge-payment", "schedule-delivery", "confirm-order"}, names)

	reserve := def.Steps[0]
	require.Equal(t, saga.Command{
		Topic: "inventory.commands", Type: "inventory.stock.reserve", Key: "$.order_id",
		Payload: map[string]any{"order_id": "$.order_id", "lines": "$.lines"},
	}, reserve.Action)
	require.Equal(t, []string{"inventory.stock.reserved"}, reserve.Success)
	require.Equal(t, []string{"inventory.stock.reservation_failed"}, reserve.Failure)
	require.Equal(t, "reservation", reserve.ReplyInto)
	// Defaults.
	require.Equal(t, 30*time.Second, reserve.Timeout)
	require.Equal(t, saga.RetryPolicy{Attempts: 3, Backoff: time.Second, Multiplier: 2, MaxBackoff: time.Minute}, reserve.Retry)
	require.NotNil(t, reserve.Compensation)
	require.Equal(t, "inventory.stock.release", reserve.Compensation.Type)
	require.Equal(t, []string{"inventory.stock.released"}, reserve.Compensation.Success)
	require.Equal(t, 30*time.Second, reserve.Compensation.Timeout)
	require.Equal(t, saga.RetryPolicy{Attempts: 5, Backoff: time.Second, Multiplier: 2, MaxBackoff: time.Minute}, reserve.Compensation.Retry)

	require.Equal(t, "accounting.payment.refund", def.Steps[1].Compensation.Type)
	require.Equal(t, []string{"accounting.payment.declined"}, def.Steps[1].Failure)
	require.Equal(t, "delivery.shipment.cancel", def.Steps[2].Compensation.Type)
	require.Equal(t, []string{"delivery.shipment.cancelled"}, def.Steps[2].Compensation.Success)
	require.Nil(t, def.Steps[3].Compensation)
	require.Equal(t, []string{"sales.order.confirmed"}, def.Steps[3].Success)

	require.NoError(t, def.Validate())
}

func TestParseLiterals(t *testing.T) {
	t.Parallel()
	def, err := saga.LoadFile(filepath.Join("testdata", "valid", "literal-dollars.yaml"))
	require.NoError(t, err)
	step := def.Steps[0]
	require.Equal(t, map[string]any{
		"text":   "$$5 off",
		"ref":    []any{"$saga.name", "$saga.version", "$.invoice"},
		"urgent": false,
		"count":  int64(3),
	}, step.Action.Payload)
	require.Equal(t, saga.RetryPolicy{Attempts: 1, Backoff: time.Second, Multiplier: 2, MaxBackoff: time.Minute}, step.Retry)
	require.Equal(t, saga.RetryPolicy{Attempts: 10, Backoff: 500 * time.Millisecond, Multiplier: 1.5, MaxBackoff: 30 * time.Second},
		step.Compensation.Retry)
	require.Equal(t, 5*time.Minute, step.Timeout)
	require.Equal(t, 10*time.Second, step.Compensation.Timeout)

	got, err := saga.Map(step.Action.Payload, map[string]any{"invoice": "inv-9"},
		saga.Vars{SagaID: "s1", Name: def.Name, Version: def.Version})
	require.NoError(t, err)
	require.Equal(t, map[string]any{
		"text": "$5 off", "ref": []any{"literal-dollars", 1, "inv-9"}, "urgent": false, "count": int64(3),
	}, got)

	data, err := def.Triggers[0].InitialData(map[string]any{"invoice_id": "inv-9", "other": 1}, saga.Vars{})
	require.NoError(t, err)
	require.Equal(t, map[string]any{"invoice": "inv-9", "note": "$ is kept literally"}, data)
}

func TestLoadDir(t *testing.T) {
	t.Parallel()
	defs, err := saga.LoadDir(filepath.Join("testdata", "valid"))
	require.NoError(t, err)
	var refs []string
	for _, d := range defs {
		refs = append(refs, d.Ref())
	}
	require.Equal(t, []string{"literal-dollars@1", "minimal@2", "order-to-cash@1"}, refs)

	_, err = saga.LoadDir(filepath.Join("testdata", "invalid"))
	require.Error(t, err)
	require.ErrorContains(t, err, `missing-action-topic.yaml: step "charge": field "action.topic": required`)
	require.ErrorContains(t, err, `trigger.yaml: field "triggers[1].saga_id"`)

	_, err = saga.LoadDir(filepath.Join("testdata", "nope"))
	require.Error(t, err)
}

// TestParseInvalid parses every file of testdata/invalid and asserts the
// errors its "# expect:" lines list, and nothing else.
func TestParseInvalid(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "invalid", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			var want []string
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				if w, ok := strings.CutPrefix(sc.Text(), "# expect: "); ok {
					want = append(want, w)
				}
			}
			require.NotEmpty(t, want, "the file lists no expected error")
			def, err := saga.Parse(name, data)
			require.Nil(t, def)
			require.Error(t, err)
			lines := strings.Split(err.Error(), "\n")
			require.Len(t, lines, len(want), "errors:\n%s", err)
			for i, w := range want {
				require.True(t, strings.HasPrefix(lines[i], w), "error %d:\n got %s\nwant %s...", i, lines[i], w)
			}
			var derr *saga.DefinitionError
			require.ErrorAs(t, err, &derr)
			require.Equal(t, name, derr.File)
		})
	}
}

func TestDefinitionErrorText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  saga.DefinitionError
		want string
	}{
		{saga.DefinitionError{File: "orders.yaml", Step: "charge", Field: "action.topic", Msg: "required"},
			`orders.yaml: step "charge": field "action.topic": required`},
		{saga.DefinitionError{Step: "charge", Msg: "bad"}, `step "charge": bad`},
		{saga.DefinitionError{Field: "name", Msg: "required"}, `field "name": required`},
		{saga.DefinitionError{File: "a.yaml", Msg: "empty document"}, `a.yaml: empty document`},
	} {
		require.Equal(t, tc.want, tc.err.Error())
	}
}

func TestParseEmpty(t *testing.T) {
	t.Parallel()
	_, err := saga.Parse("e.yaml", []byte("# nothing\n"))
	require.EqualError(t, err, "e.yaml: empty document")
	_, err = saga.Parse("l.yaml", []byte("- a\n- b\n"))
	require.EqualError(t, err, "l.yaml: got array, want object")
}
