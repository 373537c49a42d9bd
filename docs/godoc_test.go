package docs

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestGoDocNamesNoInternalIdentifier reads `go doc -all` of every public
// package: what users read there (comments and declarations) must not send
// them to an internal package they cannot import, nor show an internal
// identifier as a value.
func TestGoDocNamesNoInternalIdentifier(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	goCmd, err := exec.LookPath("go")
	require.NoError(t, err)
	loadModuleGraph(t, goCmd, root)
	run := func(args ...string) string {
		cmd := exec.Command(goCmd, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local")
		out, err := cmd.Output()
		require.NoError(t, err, "go %s", strings.Join(args, " "))
		return string(out)
	}
	internal := strings.Fields(run("list", "-f", "{{.Name}}", "./internal/..."))
	require.NotEmpty(t, internal)
	bad := regexp.MustCompile(`\binternal/|\b(` + strings.Join(internal, "|") + `)\.[A-Z]\w*`)
	public := strings.Fields(run("list", "./pkg/..."))
	require.NotEmpty(t, public)
	for _, pkg := range public {
		for i, line := range strings.Split(run("doc", "-all", pkg), "\n") {
			if m := bad.FindString(line); m != "" {
				t.Errorf("go doc -all %s, line %d names %q, which users cannot reach: %s", pkg, i+1, m, strings.TrimSpace(line))
			}
		}
	}
}
