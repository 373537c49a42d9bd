package middleware_test

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	reg := registry(t)
	valid := envelopeMessage(t, "sales.order.placed", placedPayload(t))
	badBody := envelopeMessage(t, "sales.order.placed", []byte(`{"order_id":""}`))
	unknown := envelopeMessage(t, "sales.order.teleported", []byte(`{}`))
	garbage := message.NewMessage("orders/0/1", []byte("\x00\xffnot json"))

	for _, tt := range []struct {
		name    string
		reg     *messaging.SchemaRegistry
		msg     *message.Message
		wantErr error
		reason  string
	}{
		{name: "valid", reg: reg, msg: valid},
		{name: "undecodable", reg: reg, msg: garbage, wantErr: messaging.ErrInvalidEnvelope, reason: "messaging: cannot decode message: ce_specversion: missing"},
		{name: "schema violation", reg: reg, msg: badBody, wantErr: messaging.ErrSchemaViolation, reason: "messaging: payload of sales.order.placed v1 violates its schema: at '': missing properties"},
		{name: "unknown type", reg: reg, msg: unknown, wantErr: messaging.ErrUnknownType, reason: `messaging: type "sales.order.teleported" version 1: no schema for message type`},
		{name: "no registry: decoded only", msg: unknown},
		{name: "no registry: still decoded", msg: garbage, wantErr: messaging.ErrInvalidEnvelope},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got messaging.Envelope
			called := false
			h := middleware.Validate(tt.reg)(func(msg *message.Message) ([]*message.Message, error) {
				called = true
				var ok bool
				got, ok = middleware.EnvelopeFromContext(msg.Context())
				require.True(t, ok)
				return nil, nil
			})
			_, err := h(tt.msg.Copy())
			if tt.wantErr == nil {
				require.NoError(t, err)
				require.True(t, called)
				want, err := messaging.Decode(tt.msg)
				require.NoError(t, err)
				require.Equal(t, want, got)
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			require.ErrorIs(t, err, messaging.ErrPermanent)
			require.False(t, messaging.IsRetryable(err))
			require.False(t, called, "the handler never sees it")
			if tt.reason != "" {
				require.Contains(t, err.Error(), tt.reason)
			}
		})
	}

	_, ok := middleware.EnvelopeFromContext(context.Background())
	require.False(t, ok)
}

func TestRecover(t *testing.T) {
	t.Parallel()
	_, err := middleware.Recover(func(*message.Message) ([]*message.Message, error) {
		panic("nil map")
	})(message.NewMessage("m", nil))
	var pe *middleware.PanicError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "nil map", pe.Value)
	require.Contains(t, string(pe.Stack), "TestRecover")
	require.ErrorIs(t, err, messaging.ErrPermanent)
	require.Equal(t, "handler panicked: nil map", err.Error())

	cause := errors.New("boom")
	_, err = middleware.Recover(func(*message.Message) ([]*message.Message, error) {
		panic(cause)
	})(message.NewMessage("m", nil))
	require.ErrorIs(t, err, cause)
	require.True(t, messaging.IsPermanent(err))

	_, err = middleware.Recover(func(*message.Message) ([]*message.Message, error) {
		panic(nil)
	})(message.NewMessage("m", nil))
	require.ErrorAs(t, err, new(*runtime.PanicNilError))

	out, err := middleware.Recover(failWith(errTransient))(message.NewMessage("m", nil))
	require.Same(t, errTransient, err, "errors pass untouched")
	require.Len(t, out, 1)
}

func TestValidatingPublisher(t *testing.T) {
	t.Parallel()
	reg := registry(t)
	valid := envelopeMessage(t, "sales.order.placed", placedPayload(t))
	badBody := envelopeMessage(t, "sales.order.placed", []byte(`{"order_id":""}`))
	unknown := envelopeMessage(t, "sales.order.teleported", []byte(`{}`))
	garbage := message.NewMessage("raw-1", []byte("not an envelope"))

	inner := &recordingPublisher{}
	pub := middleware.ValidatingPublisher(inner, reg)
	require.NoError(t, pub.Publish("orders", valid))
	_, got := inner.published()
	require.Len(t, got, 1)

	for _, tt := range []struct {
		msg  *message.Message
		want error
	}{
		{badBody, messaging.ErrSchemaViolation},
		{unknown, messaging.ErrUnknownType},
		{garbage, messaging.ErrInvalidEnvelope},
	} {
		err := pub.Publish("orders", valid, tt.msg)
		require.ErrorIs(t, err, tt.want)
		require.ErrorContains(t, err, "message 1 ("+tt.msg.UUID+") refused")
	}
	_, got = inner.published()
	require.Len(t, got, 1, "a call with one bad message publishes none of its messages")
	require.NoError(t, pub.Close())
}
