package fault

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"go.uber.org/goleak"
)

// binDir holds the outbox-relay binary built once for this package's tests.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dtx-fault-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "../../cmd/outbox-relay")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building outbox-relay:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(cleanupAfter{m, dir})
}

// cleanupAfter removes the binaries once the tests have run, before goleak
// looks for leaked goroutines.
type cleanupAfter struct {
	m   *testing.M
	dir string
}

func (c cleanupAfter) Run() int {
	code := c.m.Run()
	_ = os.RemoveAll(c.dir)
	return code
}
