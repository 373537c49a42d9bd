package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// EnvBinDir is the environment variable naming the directory of initdb and
// pg_ctl for NewCluster, when they are not found where NewCluster looks.
const EnvBinDir = "DTX_PG_BINDIR"

// Cluster is a throwaway PostgreSQL server of its own, for tests that stop
// and start PostgreSQL. It listens on 127.0.0.1 on a free port, trusts every
// local connection, and keeps its data across Stop and Start. Its methods
// must be called from the test's goroutine, since they fail the test.
type Cluster struct {
	t       testing.TB
	binDir  string
	runAs   *user.User // nil: run the server as the current user
	root    string     // holds data, the socket directory and the log
	dataDir string
	logFile string
	port    int

	mu      sync.Mutex
	running bool
}

// NewCluster creates, starts and returns a new PostgreSQL server; cleanup
// stops it and removes its files. It needs the PostgreSQL server binaries:
// it looks in $DTX_PG_BINDIR, in `pg_config --bindir`, in the newest
// /usr/lib/postgresql/<version>/bin, in /usr/local/pgsql/bin and on PATH. When
// they are missing it skips the test, except when CI=true, where it fails it.
// PostgreSQL refuses to run as root: as root, NewCluster runs the server as
// the OS user postgres, through runuser.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	binDir, err := findBinDir()
	if err != nil {
		skipOrFail(t, err)
	}
	c := &Cluster{t: t, binDir: binDir}
	if os.Geteuid() == 0 {
		if c.runAs, err = user.Lookup("postgres"); err != nil {
			skipOrFail(t, fmt.Errorf("running as root, and PostgreSQL refuses to: no OS user postgres to run it as: %w", err))
		}
		if _, err := exec.LookPath("runuser"); err != nil {
			skipOrFail(t, fmt.Errorf("running as root, and PostgreSQL refuses to: runuser not found: %w", err))
		}
	}

	// Not t.TempDir: as root, the server's user must reach the directory,
	// and t.TempDir's parents are private to root.
	c.root, err = os.MkdirTemp("", "dtx-pgcluster-")
	if err != nil {
		t.Fatalf("pgtest: cluster directory: %v", err)
	}
	t.Cleanup(c.cleanup)
	c.dataDir = filepath.Join(c.root, "data")
	c.logFile = filepath.Join(c.root, "postgres.log")
	sockDir := filepath.Join(c.root, "sock")
	if err := os.Mkdir(sockDir, 0o700); err != nil {
		t.Fatalf("pgtest: cluster socket directory: %v", err)
	}
	if c.runAs != nil {
		for _, dir := range []string{c.root, sockDir} {
			if err := chownTo(dir, c.runAs); err != nil {
				t.Fatalf("pgtest: give the cluster directory to postgres: %v", err)
			}
		}
	}

	out, err := c.command("initdb", "--pgdata", c.dataDir, "--username", "postgres",
		"--auth", "trust", "--encoding", "UTF8", "--no-locale", "--no-sync").CombinedOutput()
	if err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	conf := fmt.Sprintf("\n# Throwaway test server.\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n"+
		"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\nshared_buffers = 32MB\n",
		strings.ReplaceAll(sockDir, "'", "''"))
	if err := appendFile(filepath.Join(c.dataDir, "postgresql.conf"), conf); err != nil {
		t.Fatalf("pgtest: configure the cluster: %v", err)
	}

	// A free port may be taken before the server binds it; try a few.
	for attempt := 1; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			t.Fatalf("pgtest: find a free port: %v", err)
		}
		if err := appendFile(filepath.Join(c.dataDir, "postgresql.conf"), fmt.Sprintf("port = %d\n", c.port)); err != nil {
			t.Fatalf("pgtest: configure the cluster: %v", err)
		}
		err = c.start()
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(c.logTail(), "could not bind") {
			t.Fatal(err)
		}
	}
	return c
}

// URL returns the connection string of the server's postgres database as the
// superuser postgres. It stays the same across Stop and Start.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Port returns the TCP port the server listens on, on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// Stop shuts the server down (fast mode: sessions are disconnected, open
// transactions roll back) and returns once it has exited. Stopping a stopped
// cluster does nothing.
func (c *Cluster) Stop() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return
	}
	if err := c.stop("fast"); err != nil {
		c.t.Fatal(err)
	}
}

// Start starts a stopped server again, on the same port with the same data,
// and returns once it accepts connections. Starting a running cluster does
// nothing.
func (c *Cluster) Start() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return
	}
	if err := c.start(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *Cluster) start() error {
	out, err := c.command("pg_ctl", "start", "--wait", "--timeout", "60",
		"--pgdata", c.dataDir, "--log", c.logFile, "--silent").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: start the cluster: %w\n%s\nserver log:\n%s", err, out, c.logTail())
	}
	c.running = true
	return nil
}

func (c *Cluster) stop(mode string) error {
	out, err := c.command("pg_ctl", "stop", "--wait", "--timeout", "60",
		"--pgdata", c.dataDir, "--mode", mode, "--silent").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: stop the cluster: %w\n%s\nserver log:\n%s", err, out, c.logTail())
	}
	c.running = false
	return nil
}

func (c *Cluster) cleanup() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		// The data is thrown away: no need for a clean shutdown.
		if err := c.stop("immediate"); err != nil {
			c.t.Error(err)
		}
	}
	if err := os.RemoveAll(c.root); err != nil {
		c.t.Errorf("pgtest: remove the cluster directory: %v", err)
	}
}

// command runs a PostgreSQL program of binDir, as the postgres user when the
// test runs as root.
func (c *Cluster) command(program string, args ...string) *exec.Cmd {
	path := filepath.Join(c.binDir, program)
	var cmd *exec.Cmd
	if c.runAs != nil {
		cmd = exec.Command("runuser", append([]string{"-u", c.runAs.Username, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	// The server must not inherit settings meant for the client of another
	// server, nor a data directory of its own choosing.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PG")
	})
	cmd.Dir = c.root
	return cmd
}

// logTail returns the end of the server log, for failure messages.
func (c *Cluster) logTail() string {
	b, err := os.ReadFile(c.logFile)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const keep = 4 << 10
	if len(b) > keep {
		b = b[len(b)-keep:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// errNoBinaries reports that the PostgreSQL server binaries are missing.
var errNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found")

// findBinDir returns the first directory, in the order NewCluster documents,
// that holds initdb and pg_ctl.
func findBinDir() (string, error) {
	var candidates []string
	if dir := os.Getenv(EnvBinDir); dir != "" {
		if !hasServerBinaries(dir) {
			return "", fmt.Errorf("%s=%s holds no initdb and pg_ctl", EnvBinDir, dir)
		}
		return dir, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	candidates = append(candidates, debianBinDirs()...)
	candidates = append(candidates, "/usr/local/pgsql/bin")
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			candidates = append(candidates, filepath.Dir(real))
		}
		candidates = append(candidates, filepath.Dir(p))
	}
	for _, dir := range candidates {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("%w: install PostgreSQL's server package (Debian: postgresql) or set %s", errNoBinaries, EnvBinDir)
}

// debianBinDirs returns /usr/lib/postgresql/<version>/bin, newest first.
func debianBinDirs() []string {
	entries, err := os.ReadDir("/usr/lib/postgresql")
	if err != nil {
		return nil
	}
	type versioned struct {
		major int
		dir   string
	}
	var found []versioned
	for _, e := range entries {
		major, err := strconv.Atoi(strings.SplitN(e.Name(), ".", 2)[0])
		if err != nil {
			continue
		}
		found = append(found, versioned{major, filepath.Join("/usr/lib/postgresql", e.Name(), "bin")})
	}
	slices.SortFunc(found, func(a, b versioned) int { return b.major - a.major })
	dirs := make([]string, len(found))
	for i, f := range found {
		dirs[i] = f.dir
	}
	return dirs
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// skipOrFail skips the test because of err, or fails it when CI=true: CI
// must run every test.
func skipOrFail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("pgtest: %v (CI=true: not skipping)", err)
	}
	t.Skipf("pgtest: %v", err)
}

func chownTo(path string, u *user.User) error {
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return fmt.Errorf("uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return fmt.Errorf("gid %q: %w", u.Gid, err)
	}
	return os.Chown(path, uid, gid)
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
