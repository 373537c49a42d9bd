package messaging_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/vextrus/dtx/pkg/messaging"
)

// An order service announces a placed order. The envelope becomes a
// Watermill message whose metadata are the record headers of the CloudEvents
// Kafka binding; the partition key becomes the record key.
func ExampleEnvelope_ToMessage() {
	e, err := messaging.NewEnvelope("sales.order.placed", "/sales/api", map[string]any{
		"order_id": "ord-1001", "total_amount": 4348,
	})
	if err != nil {
		panic(err)
	}
	// Fixed here so the output does not change.
	e.ID = "0190a2b4-6c1e-7d3a-9f00-1234567890ab"
	e.Time = time.Date(2026, 11, 23, 9, 15, 2, 0, time.UTC)
	e.Subject = "ord-1001"
	e.PartitionKey = "ord-1001"
	e.CorrelationID = "0190a2b4-0000-7000-8000-000000000001"

	msg, err := e.ToMessage()
	if err != nil {
		panic(err)
	}
	for _, k := range slices.Sorted(maps.Keys(msg.Metadata)) {
		fmt.Printf("%s: %s\n", k, msg.Metadata[k])
	}
	fmt.Printf("payload: %s\n", msg.Payload)
	// Output:
	// ce_correlationid: 0190a2b4-0000-7000-8000-000000000001
	// ce_id: 0190a2b4-6c1e-7d3a-9f00-1234567890ab
	// ce_partitionkey: ord-1001
	// ce_schemaversion: 1
	// ce_source: /sales/api
	// ce_specversion: 1.0
	// ce_subject: ord-1001
	// ce_time: 2026-11-23T09:15:02Z
	// ce_type: sales.order.placed
	// content-type: application/json
	// dtx_partition_key: ord-1001
	// payload: {"order_id":"ord-1001","total_amount":4348}
}

// A consumer decodes what it received; a message that is not a valid
// envelope is rejected with an error that marks it as permanent.
func ExampleDecode() {
	placed := messaging.Envelope{
		ID: "evt-1", Type: "sales.order.placed", Source: "/sales/api", SchemaVersion: 1,
		Data: json.RawMessage(`{"order_id":"ord-1001"}`),
	}
	msg, err := placed.ToMessage()
	if err != nil {
		panic(err)
	}

	e, err := messaging.Decode(msg)
	fmt.Println(e.Type, e.SchemaVersion, string(e.Data), err)

	delete(msg.Metadata, messaging.HeaderSource)
	_, err = messaging.Decode(msg)
	fmt.Println(err)
	fmt.Println("permanent:", errors.Is(err, messaging.ErrInvalidEnvelope))
	// Output:
	// sales.order.placed 1 {"order_id":"ord-1001"} <nil>
	// messaging: cannot decode message: ce_source: missing
	// permanent: true
}

// A handler replies to a command: the reply records the command as its cause
// and carries on its correlation and saga ids.
func ExampleEnvelope_CausedBy() {
	reserve := messaging.Envelope{
		ID: "cmd-7", Type: "inventory.stock.reserve", Source: "/orchestrator",
		CorrelationID: "ord-1001-saga", SagaID: "saga-42",
	}
	reserved, err := messaging.NewEnvelope("inventory.stock.reserved", "/inventory", nil)
	if err != nil {
		panic(err)
	}
	reserved = reserved.CausedBy(reserve)
	fmt.Println(reserved.CausationID, reserved.CorrelationID, reserved.SagaID)
	// Output: cmd-7 ord-1001-saga saga-42
}
