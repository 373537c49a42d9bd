package messaging

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
)

// RunRouter runs r until ctx ends, then drains it: Close stops consuming and
// waits for the handlers in flight (up to the router's CloseTimeout), so that
// their messages are acked or nacked before the process goes on. It returns
// an error when the router stopped before ctx ended, or when the drain
// failed; nil after a clean drain.
func RunRouter(ctx context.Context, r *message.Router) error {
	done := make(chan error, 1)
	// The router gets a context of its own: ending ctx must drain it (Close),
	// not cut its handlers short.
	go func() { done <- r.Run(context.WithoutCancel(ctx)) }()
	select {
	case <-ctx.Done():
	case err := <-done:
		if err == nil {
			err = errors.New("it returned")
		}
		return fmt.Errorf("messaging: router stopped: %w", err)
	}
	closeErr := r.Close()
	runErr := <-done
	if err := errors.Join(closeErr, runErr); err != nil {
		return fmt.Errorf("messaging: drain the router: %w", err)
	}
	return nil
}
