package saga_test

import (
	"fmt"
	"time"

	"github.com/vextrus/dtx/pkg/saga"
)

func Example() {
	def := &saga.Definition{
		Name:    "order-to-cash",
		Version: 1,
		Steps: []saga.Step{
			{
				Name: "reserve-stock",
				Action: saga.Command{Topic: "inventory.commands", Type: "inventory.stock.reserve",
					Payload: map[string]any{"order_id": "$.order_id"}},
				Success: []string{"inventory.stock.reserved"},
				Failure: []string{"inventory.stock.reservation_failed"},
				Compensation: &saga.Compensation{
					Command: saga.Command{Topic: "inventory.commands", Type: "inventory.stock.release",
						Payload: map[string]any{"reservation_id": "$.reservation_id"}},
					Success: []string{"inventory.stock.released"},
				},
			},
			{
				Name: "charge-payment",
				Action: saga.Command{Topic: "accounting.commands", Type: "accounting.payment.charge",
					Payload: map[string]any{"order_id": "$.order_id", "amount": "$.total"}},
				Success: []string{"accounting.payment.charged"},
				Failure: []string{"accounting.payment.declined"},
			},
		},
	}
	reg, err := saga.NewRegistry(def) // sets the defaults and validates
	if err != nil {
		panic(err)
	}
	def, _ = reg.Latest("order-to-cash")

	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	res, _ := saga.Transition(def, saga.State{}, saga.Start{ID: "order-1", Data: map[string]any{"order_id": "order-1", "total": 1999}}, now)
	fmt.Println(res.State.Status, res.Commands[0].Type, res.Commands[0].Payload, "wake in", res.State.WakeAt().Sub(now))

	res, _ = saga.Transition(def, res.State, saga.Reply{Step: "reserve-stock", Attempt: 1, Phase: saga.PhaseAction,
		Type: "inventory.stock.reserved", Data: map[string]any{"reservation_id": "r-7"}}, now.Add(time.Second))
	fmt.Println(res.State.Status, res.Commands[0].Type, res.Commands[0].Payload)

	res, _ = saga.Transition(def, res.State, saga.Reply{Step: "charge-payment", Attempt: 1, Phase: saga.PhaseAction,
		Type: "accounting.payment.declined"}, now.Add(2*time.Second))
	fmt.Println(res.State.Status, res.Commands[0].Type, res.Commands[0].Payload, "-", res.State.Reason)

	res, _ = saga.Transition(def, res.State, saga.Reply{Step: "reserve-stock", Attempt: 1, Phase: saga.PhaseCompensation,
		Type: "inventory.stock.released"}, now.Add(3*time.Second))
	for _, e := range res.Events {
		fmt.Println(e.Type, e.Status)
	}
	// Output:
	// running inventory.stock.reserve map[order_id:order-1] wake in 30s
	// running accounting.payment.charge map[amount:1999 order_id:order-1]
	// compensating inventory.stock.release map[reservation_id:r-7] - step charge-payment failed: accounting.payment.declined
	// dtx.saga.compensated compensated
}

func ExampleMap() {
	data := map[string]any{"order_id": "o-1", "lines": []any{map[string]any{"sku": "A-1", "qty": 2}}}
	out, err := saga.Map(map[string]any{
		"order":     "$.order_id",
		"first_sku": "$.lines.0.sku",
		"saga":      "$saga.id",
		"price":     "$$9.99",
	}, data, saga.Vars{SagaID: "s-1"})
	fmt.Println(out, err)
	// Output: map[first_sku:A-1 order:o-1 price:$9.99 saga:s-1] <nil>
}

func ExampleParse() {
	def, err := saga.Parse("greet.yaml", []byte(`
name: greet
version: 1
steps:
  - name: say-hello
    action: {topic: greeter.commands, type: greeter.hello}
    success: [greeter.said]
    timeout: 10s
`))
	fmt.Println(def.Ref(), def.Steps[0].Timeout, def.Steps[0].Retry.Attempts, err)

	_, err = saga.Parse("greet.yaml", []byte(`
name: greet
version: 1
steps:
  - name: say-hello
    action: {type: greeter.hello}
    success: [greeter.said]
`))
	fmt.Println(err)
	// Output:
	// greet@1 10s 3 <nil>
	// greet.yaml: step "say-hello": field "action.topic": required
}
