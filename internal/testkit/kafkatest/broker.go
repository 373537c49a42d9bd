package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// EnvLibs is the environment variable naming the directory of the Apache
// Kafka jars StartBroker runs, when they are not in the repository's
// .dev/kafka/libs (where `make deps` caches them).
const EnvLibs = "DTX_KAFKA_LIBS"

// Time limits of a private broker: a JVM on a busy machine starts in a few
// seconds, a controlled shutdown takes a few more.
const (
	brokerStartTimeout = 90 * time.Second
	brokerStopTimeout  = 60 * time.Second
)

// BrokerOption configures the private broker of StartBroker.
type BrokerOption func(*brokerConfig)

type brokerConfig struct {
	scramUsers []scramUser
	authorizer bool
}

type scramUser struct{ name, password string }

// scramMechanisms are the mechanisms of the SASL listener; each user gets
// credentials for both.
var scramMechanisms = []string{"SCRAM-SHA-256", "SCRAM-SHA-512"}

// WithSCRAMUser gives the broker a SASL_PLAINTEXT listener (Broker.SASLAddr)
// that accepts SCRAM-SHA-256 and SCRAM-SHA-512, and creates the user name
// with password for both mechanisms when the storage is formatted. Its
// principal is User:<name>. Repeat it for more users. Name and password may
// hold letters, digits and "-_." only (the format tool's syntax has no
// quoting StartBroker relies on); StartBroker fails the test otherwise.
func WithSCRAMUser(name, password string) BrokerOption {
	return func(c *brokerConfig) { c.scramUsers = append(c.scramUsers, scramUser{name, password}) }
}

// WithAuthorizer turns on ACLs: the KRaft StandardAuthorizer, with no access
// for a principal no ACL allows (allow.everyone.if.no.acl.found=false). The
// PLAINTEXT listener (Broker.Addr), which authenticates nobody, stays
// all-powerful: its principal, User:ANONYMOUS, which the controller
// listener's traffic has too, is a super user. Create ACLs through it (kadm's
// CreateACLs).
func WithAuthorizer() BrokerOption {
	return func(c *brokerConfig) { c.authorizer = true }
}

// validate checks the SCRAM users' names and passwords.
func (c *brokerConfig) validate() error {
	ok := func(s string) bool {
		return s != "" && strings.IndexFunc(s, func(r rune) bool {
			return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' && r != '_' && r != '.'
		}) < 0
	}
	for _, u := range c.scramUsers {
		if !ok(u.name) {
			return fmt.Errorf("WithSCRAMUser: name %q: want letters, digits and -_. only", u.name)
		}
		if !ok(u.password) {
			return fmt.Errorf("WithSCRAMUser(%q): password: want letters, digits and -_. only", u.name)
		}
	}
	return nil
}

// Broker is a private single-node Apache Kafka broker (KRaft, combined broker
// and controller) for tests that stop and start Kafka, which they must never
// do to the shared one. It listens on 127.0.0.1 on free ports and keeps its
// data across Stop and Start. Its methods must be called from the test's
// goroutine, since they fail the test.
type Broker struct {
	t       testing.TB
	java    string
	libs    string
	dir     string // data, configuration and logs
	props   string
	port    int
	ctlPort int
	sasl    int // port of the SASL_PLAINTEXT listener; 0: none
	cfg     brokerConfig

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartBroker formats, starts and returns a private broker; cleanup kills it
// and removes its files. It runs the jars of $DTX_KAFKA_LIBS or of the
// repository's .dev/kafka/libs (found by walking up from the working
// directory to go.mod) with the java of $JAVA_HOME or PATH, in a 512 MB heap.
// When java or the jars are missing it skips the test, except when CI=true,
// where it fails it. Starting takes a few seconds. Without options the broker
// has one client listener, PLAINTEXT, open to all; opts add a SCRAM listener
// (WithSCRAMUser) and ACLs (WithAuthorizer).
func StartBroker(t testing.TB, opts ...BrokerOption) *Broker {
	t.Helper()
	var cfg brokerConfig
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("kafkatest: StartBroker: %v", err)
	}
	java, libs, err := findBrokerRuntime()
	if err != nil {
		brokerSkipOrFail(t, err)
	}
	b := &Broker{t: t, java: java, libs: libs, dir: t.TempDir(), cfg: cfg}
	t.Cleanup(b.kill)
	n := 2
	if len(cfg.scramUsers) > 0 {
		n = 3
	}
	ports, err := freeBrokerPorts(n)
	if err != nil {
		t.Fatalf("kafkatest: find free ports: %v", err)
	}
	b.port, b.ctlPort = ports[0], ports[1]
	if n == 3 {
		b.sasl = ports[2]
	}
	if err := b.configure(); err != nil {
		t.Fatalf("kafkatest: configure the broker: %v", err)
	}
	args := []string{"kafka.tools.StorageTool", "format", "--standalone", "-t", newClusterID(), "-c", b.props}
	for _, u := range cfg.scramUsers {
		for _, mech := range scramMechanisms {
			args = append(args, "--add-scram", fmt.Sprintf("%s=[name=%s,password=%s]", mech, u.name, u.password))
		}
	}
	out, err := b.javaCmd(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("kafkatest: format the broker's storage: %v\n%s", err, out)
	}
	b.Start()
	return b
}

// Addr returns the broker's host:port, the same across Stop and Start.
func (b *Broker) Addr() string { return fmt.Sprintf("127.0.0.1:%d", b.port) }

// SASLAddr returns the host:port of the broker's SASL_PLAINTEXT listener
// (SCRAM-SHA-256 and SCRAM-SHA-512), the same across Stop and Start. It
// fails the test if the broker was started without WithSCRAMUser.
func (b *Broker) SASLAddr() string {
	b.t.Helper()
	if b.sasl == 0 {
		b.t.Fatalf("kafkatest: SASLAddr: the broker has no SASL listener (start it with WithSCRAMUser)")
	}
	return fmt.Sprintf("127.0.0.1:%d", b.sasl)
}

// Start starts a stopped broker again, on the same ports with the same data,
// and returns once it answers a metadata request. Starting a running broker
// does nothing.
func (b *Broker) Start() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		return
	}
	logf, err := os.OpenFile(filepath.Join(b.dir, "kafka.out"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		b.t.Fatalf("kafkatest: broker output file: %v", err)
	}
	cmd := b.javaCmd("kafka.Kafka", b.props)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		b.t.Fatalf("kafkatest: start the broker: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // The exit status says nothing more than the log.
		logf.Close()
		close(done)
	}()
	b.cmd, b.done = cmd, done
	if err := b.waitAnswers(done); err != nil {
		b.t.Fatalf("kafkatest: private broker at %s: %v\n%s", b.Addr(), err, b.logTail())
	}
}

// Stop shuts the broker down (SIGTERM: a controlled shutdown) and returns once
// it has exited; after a minute it kills it. Stopping a stopped broker does
// nothing.
func (b *Broker) Stop() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM) // Fails only if it already exited.
	select {
	case <-b.done:
	case <-time.After(brokerStopTimeout):
		_ = b.cmd.Process.Kill()
		<-b.done
		b.t.Errorf("kafkatest: the broker did not stop within %s of SIGTERM; killed it", brokerStopTimeout)
	}
	b.cmd = nil
}

// kill ends the broker at cleanup without a clean shutdown: its data is
// thrown away.
func (b *Broker) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Kill()
	<-b.done
	b.cmd = nil
}

// waitAnswers polls the broker until it answers a metadata request with
// itself as a broker, giving up early if its process exits.
func (b *Broker) waitAnswers(exited <-chan struct{}) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(brokerStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		md, err := adm.BrokerMetadata(ctx)
		cancel()
		if err == nil && len(md.Brokers) > 0 && md.Controller >= 0 {
			return nil
		}
		if err == nil {
			err = errors.New("no broker or controller in the metadata yet")
		}
		select {
		case <-exited:
			return errors.New("the broker exited during start-up")
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("did not answer within %s: %w", brokerStartTimeout, err)
		}
	}
}

// configure writes server.properties and a log configuration into b.dir.
func (b *Broker) configure() error {
	data := filepath.Join(b.dir, "data")
	listeners := fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", b.port, b.ctlPort)
	advertised := fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", b.port)
	protocols := "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
	if b.sasl != 0 {
		listeners += fmt.Sprintf(",SASL_PLAINTEXT://127.0.0.1:%d", b.sasl)
		advertised += fmt.Sprintf(",SASL_PLAINTEXT://127.0.0.1:%d", b.sasl)
		protocols += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
	}
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:%[2]d
listeners=%[4]s
advertised.listeners=%[5]s
listener.security.protocol.map=%[6]s
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=%[3]s
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
num.partitions=1
auto.create.topics.enable=true
group.initial.rebalance.delay.ms=0
`, b.port, b.ctlPort, data, listeners, advertised, protocols)
	if b.sasl != 0 {
		// As the development broker's SCRAM listener: both mechanisms, the
		// users' credentials in the metadata log (written at format time).
		props += `listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
`
	}
	if b.cfg.authorizer {
		// The PLAINTEXT and CONTROLLER listeners authenticate nobody: their
		// principal is User:ANONYMOUS, for the test's own clients, the
		// inter-broker traffic and the broker's requests to its controller
		// (registration, heartbeats) alike. As a super user it may do
		// anything; every other principal needs ACLs.
		props += `authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:ANONYMOUS
`
	}
	b.props = filepath.Join(b.dir, "server.properties")
	if err := os.WriteFile(b.props, []byte(props), 0o600); err != nil {
		return err
	}
	logConf := `status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
`
	return os.WriteFile(filepath.Join(b.dir, "log4j2.properties"), []byte(logConf), 0o600)
}

// javaCmd runs a main class of the broker's jars with a small heap and
// tiered compilation cut short: the JVM starts faster, which matters more
// here than throughput.
func (b *Broker) javaCmd(args ...string) *exec.Cmd {
	return exec.Command(b.java, append([]string{
		"-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Djava.awt.headless=true",
		"-Dkafka.logs.dir=" + b.dir,
		"-Dlog4j2.configurationFile=" + filepath.Join(b.dir, "log4j2.properties"),
		"-cp", filepath.Join(b.libs, "*"),
	}, args...)...)
}

// logTail returns the end of the broker's logs, for failure messages.
func (b *Broker) logTail() string {
	var sb strings.Builder
	for _, name := range []string{"server.log", "kafka.out"} {
		data, err := os.ReadFile(filepath.Join(b.dir, name))
		if err != nil || len(data) == 0 {
			continue
		}
		const keep = 4 << 10
		if len(data) > keep {
			data = data[len(data)-keep:]
		}
		fmt.Fprintf(&sb, "--- end of %s ---\n%s\n", name, data)
	}
	return sb.String()
}

// findBrokerRuntime returns the java binary and the directory of the
// broker's jars.
func findBrokerRuntime() (java, libs string, err error) {
	if home := os.Getenv("JAVA_HOME"); home != "" {
		if p := filepath.Join(home, "bin", "java"); isExecutable(p) {
			java = p
		}
	}
	if java == "" {
		if java, err = exec.LookPath("java"); err != nil {
			return "", "", errors.New("no java found (set JAVA_HOME or put Java 17+ on PATH)")
		}
	}
	libs = os.Getenv(EnvLibs)
	if libs == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", "", fmt.Errorf("finding the Kafka jars: %w (or set %s)", err, EnvLibs)
		}
		libs = filepath.Join(root, ".dev", "kafka", "libs")
	}
	jars, _ := filepath.Glob(filepath.Join(libs, "kafka_2.*.jar"))
	if len(jars) == 0 {
		return "", "", fmt.Errorf("no Apache Kafka jars in %s (run `make deps` to fetch them, or set %s)", libs, EnvLibs)
	}
	return java, libs, nil
}

// moduleRoot walks up from the working directory to the directory of go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode().Perm()&0o111 != 0
}

// newClusterID returns a random Kafka cluster id: 16 bytes in unpadded
// URL-safe base64, as Kafka's Uuid prints them.
func newClusterID() string {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	id[0] &= 0x7f // keep clear of Kafka's reserved ids
	id[0] |= 0x01
	return base64.RawURLEncoding.EncodeToString(id)
}

// freeBrokerPorts returns n different TCP ports on 127.0.0.1 that were free
// a moment ago.
func freeBrokerPorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		// Held open until all are chosen, so that the ports differ.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// brokerSkipOrFail skips the test because of err, or fails it when CI=true:
// CI must run every test.
func brokerSkipOrFail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("kafkatest: private broker: %v (CI=true: not skipping)", err)
	}
	t.Skipf("kafkatest: private broker: %v", err)
}
