package messaging_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: the Kafka
// clients of the interoperability tests must all be closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
