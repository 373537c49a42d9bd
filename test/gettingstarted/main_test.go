package gettingstarted

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// binDir holds the binaries built once for the package's tests.
var binDir string

// TestMain builds the shipped binaries from the repository root and the
// billing example in its own module, as docs/getting-started.md does.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dtx-getting-started-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	builds := []struct {
		dir  string
		args []string
	}{
		{"../..", []string{"build", "-o", dir + string(os.PathSeparator), "./cmd/orchestrator", "./cmd/outbox-relay", "./cmd/dtxctl"}},
		{"../../examples/billing", []string{"build", "-o", filepath.Join(dir, "billing"), "."}},
	}
	for _, b := range builds {
		cmd := exec.Command("go", b.args...)
		cmd.Dir = b.dir
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "go %v in %s: %v\n", b.args, b.dir, err)
			_ = os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	goleak.VerifyTestMain(cleanupAfter{m, dir})
}

// cleanupAfter removes the binaries once the tests have run.
type cleanupAfter struct {
	m   *testing.M
	dir string
}

func (c cleanupAfter) Run() int {
	code := c.m.Run()
	_ = os.RemoveAll(c.dir)
	return code
}
