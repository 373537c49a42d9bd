package topic_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/topic"
)

func TestForSagas(t *testing.T) {
	t.Parallel()
	defs, err := saga.LoadDir("../../examples/order-to-cash/sagas")
	require.NoError(t, err)
	reg, err := saga.NewRegistry(defs...)
	require.NoError(t, err)

	got := topic.ForSagas(reg, topic.SagaParams{Prefix: "acme."})
	require.Equal(t, []string{"acme.dtx.saga.replies", "sales.events"}, got.Consumed)
	require.Equal(t, []string{"accounting.commands", "acme.dtx.saga.events", "delivery.commands",
		"inventory.commands", "sales.commands"}, got.Produced)
	require.Equal(t, []string{"acme.dtx.saga.replies.dlq", "sales.events.dlq"}, got.DeadLetters)
	require.Len(t, got.All(), 9)

	plain := topic.ForSagas(nil, topic.SagaParams{})
	require.Equal(t, []string{saga.DefaultReplyTopic}, plain.Consumed)
	require.Equal(t, []string{saga.DefaultEventTopic}, plain.Produced)
	require.Equal(t, []string{saga.DefaultReplyTopic + ".dlq"}, plain.DeadLetters)

	custom := topic.ForSagas(nil, topic.SagaParams{Prefix: "x.", ReplyTopic: "r", EventTopic: "e"})
	require.Equal(t, []string{"e", "r", "r.dlq"}, custom.All())
}
