package orchestrator_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
	"github.com/vextrus/dtx/pkg/saga/participant"
)

// TestPrefixedDeploymentEndToEnd runs a saga of a deployment whose built-in
// names start with a prefix: the orchestrator names the prefixed reply topic
// in its command, a participant (configured with nothing about the prefix)
// replies there, and the reply, consumed from that topic, completes the saga.
func TestPrefixedDeploymentEndToEnd(t *testing.T) {
	t.Parallel()
	names := saga.Names("team-a.")
	require.Equal(t, saga.TopicNames{
		Prefix: "team-a.", Replies: "team-a.dtx.saga.replies", Events: "team-a.dtx.saga.events",
		OrchestratorGroup: "team-a.dtx-orchestrator",
	}, names)

	def := shopDefinition(func(d *saga.Definition) { d.Steps = d.Steps[:1] })
	f := &fixture{t: t, schema: pgtest.NewSchema(t)}
	reg, err := saga.NewRegistry(def)
	require.NoError(t, err)
	f.o, err = orchestrator.New(f.schema.Pool, orchestrator.Config{
		Schema: f.schema.Name, Definitions: reg, ScanInterval: 20 * time.Millisecond,
		Consumer: names.OrchestratorGroup, ReplyTopic: names.Replies, EventTopic: names.Events,
	})
	require.NoError(t, err)
	f.run(f.o)

	ob, err := outbox.New(outbox.Config{Schema: f.schema.Name})
	require.NoError(t, err)
	p, err := participant.New(f.schema.Pool, participant.Config{Name: "inventory", Schema: f.schema.Name, Outbox: ob})
	require.NoError(t, err)
	p.Action("inv.reserve", func(context.Context, pgx.Tx, participant.Command) (participant.Reply, error) {
		return participant.Reply{Type: "inv.reserved", Data: map[string]string{"reservation_id": "r-1"}}, nil
	})

	started, err := f.o.Start(context.Background(), nil, "shop", "order-1", map[string]any{"order_id": "order-1"}, orchestrator.StartParams{})
	require.NoError(t, err)
	require.True(t, started)
	rs := f.records()
	require.Equal(t, []string{"inv.reserve", saga.EventStarted}, types(rs))
	require.Equal(t, names.Replies, rs[0].Headers[saga.HeaderReplyTo], "the command names the prefixed reply topic")
	require.Equal(t, names.Events, rs[1].Topic)

	// The participant consumes the command and replies through its outbox.
	require.NoError(t, p.Handle(consumedFrom(t, rs[0])))
	replies := f.records()
	require.Len(t, replies, 1)
	require.Equal(t, names.Replies, replies[0].Topic, "the participant replies to the prefixed topic")

	// The orchestrator consumes the reply from that topic.
	require.NoError(t, f.o.Handle(consumedFrom(t, replies[0])))
	require.Eventually(t, func() bool { return f.show("order-1").Status == saga.StatusCompleted }, 10*time.Second, 20*time.Millisecond)
	var last record
	for _, r := range f.records() {
		last = r
	}
	require.Equal(t, saga.EventCompleted, last.Type)
	require.Equal(t, names.Events, last.Topic)
}

// consumedFrom returns the message a subscriber of r's topic would deliver
// once the relay published outbox row r.
func consumedFrom(t *testing.T, r record) *message.Message {
	t.Helper()
	payload, err := json.Marshal(r.Payload)
	require.NoError(t, err)
	msg := message.NewMessage(r.Headers[messaging.HeaderID], payload)
	for k, v := range r.Headers {
		msg.Metadata.Set(k, v)
	}
	msg.Metadata.Set(messaging.MetadataPartitionKey, r.Key)
	msg.Metadata.Set(messaging.MetadataKafkaTopic, r.Topic)
	msg.SetContext(context.Background())
	return msg
}
