package telemetry_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(envConsoleChild) != "" {
		os.Exit(consoleChild())
	}
	goleak.VerifyTestMain(m)
}
