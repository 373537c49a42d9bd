package messaging_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
)

// Ending the context drains the router: the handler in flight finishes and
// its message is acked before RunRouter returns nil.
func TestRunRouterDrainsOnCancel(t *testing.T) {
	t.Parallel()
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer pubsub.Close()
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	started, release := make(chan struct{}), make(chan struct{})
	var handled atomic.Bool
	router.AddConsumerHandler("h", "t", pubsub, func(*message.Message) error {
		close(started)
		<-release
		handled.Store(true)
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- messaging.RunRouter(ctx, router) }()
	<-router.Running()
	require.NoError(t, pubsub.Publish("t", message.NewMessage("m-1", nil)))
	<-started
	cancel()
	close(release)
	require.NoError(t, <-done)
	require.True(t, handled.Load(), "the handler in flight finished")
}

// A router that stops on its own is an error.
func TestRunRouterReportsAnEarlyStop(t *testing.T) {
	t.Parallel()
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- messaging.RunRouter(context.Background(), router) }()
	<-router.Running()
	require.NoError(t, router.Close())
	require.ErrorContains(t, <-done, "router stopped")
}
