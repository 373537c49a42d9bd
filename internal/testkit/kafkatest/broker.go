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

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartBroker formats, starts and returns a private broker; cleanup kills it
// and removes its files. It runs the jars of $DTX_KAFKA_LIBS or of the
// repository's .dev/kafka/libs (found by walking up from the working
// directory to go.mod) with the java of $JAVA_HOME or PATH, in a 512 MB heap.
// When java or the jars are missing it skips the test, except when CI=true,
// where it fails it. Starting takes a few seconds.
func StartBroker(t testing.TB) *Broker {
	t.Helper()
	java, libs, err := findBrokerRuntime()
	if err != nil {
		brokerSkipOrFail(t, err)
	}
	b := &Broker{t: t, java: java, libs: libs, dir: t.TempDir()}
	t.Cleanup(b.kill)
	if b.port, err = freeBrokerPort(); err != nil {
		t.Fatalf("kafkatest: find a free port: %v", err)
	}
	for b.ctlPort == 0 || b.ctlPort == b.port {
		if b.ctlPort, err = freeBrokerPort(); err != nil {
			t.Fatalf("kafkatest: find a free port: %v", err)
		}
	}
	if err := b.configure(); err != nil {
		t.Fatalf("kafkatest: configure the broker: %v", err)
	}
	out, err := b.javaCmd("kafka.tools.StorageTool", "format", "--standalone",
		"-t", newClusterID(), "-c", b.props).CombinedOutput()
	if err != nil {
		t.Fatalf("kafkatest: format the broker's storage: %v\n%s", err, out)
	}
	b.Start()
	return b
}

// Addr returns the broker's host:port, the same across Stop and Start.
func (b *Broker) Addr() string { return fmt.Sprintf("127.0.0.1:%d", b.port) }

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
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:%[2]d
listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d
advertised.listeners=PLAINTEXT://127.0.0.1:%[1]d
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
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
`, b.port, b.ctlPort, data)
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

// freeBrokerPort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freeBrokerPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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
