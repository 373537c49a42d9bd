package cqrs_test

import (
	"testing"

	wcqrs "github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/cqrs"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/inbox"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

// names gives the schema type of the tests' Go types.
func names(v any) string {
	switch v.(type) {
	case *createInvoice, createInvoice:
		return createInvoiceType
	case *invoiceCreated, invoiceCreated:
		return invoiceCreatedType
	}
	return wcqrs.FullyQualifiedStructName(v)
}

// Watermill's CommandBus with the Marshaler publishes through
// outbox.ContextPublisher in the caller's transaction; the record reads back
// as a dtx envelope and unmarshals to the command sent.
func TestMarshalerThroughContextPublisher(t *testing.T) {
	t.Parallel()
	f := setup(t)
	marshaler := cqrs.Marshaler{Source: "/test/watermill", NameFunc: names}
	newBus := func(m wcqrs.CommandEventMarshaler) *wcqrs.CommandBus {
		bus, err := wcqrs.NewCommandBusWithConfig(f.ob.ContextPublisher(), wcqrs.CommandBusConfig{
			GeneratePublishTopic: func(p wcqrs.CommandBusGeneratePublishTopicParams) (string, error) {
				return "billing.commands", nil
			},
			Marshaler: m,
		})
		require.NoError(t, err)
		return bus
	}

	// Watermill's own JSON marshaler writes no CloudEvents attributes.
	tx := pgtest.Tx(t, f.pool)
	err := newBus(wcqrs.JSONMarshaler{}).Send(inbox.ContextWithTx(t.Context(), tx), &createInvoice{OrderID: "o-1", Amount: 5})
	require.ErrorContains(t, err, "ce_specversion: missing")
	require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)
	require.NoError(t, tx.Rollback(t.Context()))

	tx = pgtest.Tx(t, f.pool)
	ctx := middleware.ContextWithOrigin(inbox.ContextWithTx(t.Context(), tx),
		middleware.Origin{MessageID: "request-1", CorrelationID: "corr-1"})
	sent := &createInvoice{OrderID: "o-1", Amount: 5}
	require.NoError(t, newBus(marshaler).Send(ctx, sent))
	require.NoError(t, tx.Commit(t.Context()))

	rows := f.outboxRows(t)
	require.Len(t, rows, 1)
	row := rows[0]
	require.Equal(t, "billing.commands", row.Topic)
	require.Equal(t, "o-1", *row.Key, "Keyed gives the partition key")
	h := row.Headers
	require.Equal(t, messaging.SpecVersion, h[messaging.HeaderSpecVersion])
	require.Equal(t, createInvoiceType, h[messaging.HeaderType])
	require.Equal(t, "/test/watermill", h[messaging.HeaderSource])
	require.Equal(t, "1", h[messaging.HeaderSchemaVersion])
	require.Equal(t, "request-1", h[messaging.HeaderCausationID], "stamped from the context")
	require.Equal(t, "corr-1", h[messaging.HeaderCorrelationID])

	// The record as a consumer receives it.
	msg := message.NewMessage(h[messaging.HeaderID], row.Payload)
	for k, v := range h {
		msg.Metadata[k] = v
	}
	env, err := messaging.Decode(msg)
	require.NoError(t, err)
	require.NoError(t, f.reg.ValidateEnvelope(env), "the payload follows the command's schema")
	require.Equal(t, createInvoiceType, marshaler.NameFromMessage(msg))
	var got createInvoice
	require.NoError(t, marshaler.Unmarshal(msg, &got))
	require.Equal(t, *sent, got)

	// The outbox validates against the registry: a command that breaks its
	// schema is refused and nothing is written.
	tx = pgtest.Tx(t, f.pool)
	err = newBus(marshaler).Send(inbox.ContextWithTx(t.Context(), tx), &createInvoice{OrderID: "o-2"})
	require.ErrorIs(t, err, messaging.ErrSchemaViolation)
}

func TestMarshalerNeedsSource(t *testing.T) {
	t.Parallel()
	_, err := cqrs.Marshaler{}.Marshal(&createInvoice{})
	require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)
	require.ErrorContains(t, err, "Source")
}
