package kafka_test

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
)

// ExampleDecodeRecord reads dtx envelopes in a plain franz-go consumer. The
// records here are built by hand, as a fetch would return them; in a
// consumer they come from client.PollFetches(ctx).EachRecord.
func ExampleDecodeRecord() {
	records := []*kgo.Record{
		{
			Topic: "dtx.saga.events", Partition: 0, Offset: 41,
			Key: []byte("inv-7"),
			Headers: []kgo.RecordHeader{
				{Key: "ce_specversion", Value: []byte("1.0")},
				{Key: "ce_id", Value: []byte("0190f3a4-5b6c-7d8e-9f00-112233445566")},
				{Key: "ce_type", Value: []byte("dtx.saga.completed")},
				{Key: "ce_source", Value: []byte("/dtx/orchestrator")},
				{Key: "ce_sagaid", Value: []byte("inv-7")},
				{Key: "content-type", Value: []byte("application/json")},
			},
			Value: []byte(`{"saga_id":"inv-7"}`),
		},
		{Topic: "dtx.saga.events", Partition: 0, Offset: 42, Value: []byte("written by something else")},
	}
	for _, r := range records {
		env, err := kafka.DecodeRecord(r)
		if errors.Is(err, messaging.ErrInvalidEnvelope) {
			fmt.Println("skipped:", err)
			continue
		}
		fmt.Println(env.Type, env.SagaID, env.PartitionKey, string(env.Data))
	}
	// Output:
	// dtx.saga.completed inv-7 inv-7 {"saga_id":"inv-7"}
	// skipped: kafka: record dtx.saga.events/0/42 is not a dtx CloudEvents record: messaging: cannot decode message: ce_specversion: missing
}
