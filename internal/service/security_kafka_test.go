package service

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// scramListener is Apache Kafka's SASL_PLAINTEXT listener with SCRAM users.
type scramListener struct {
	addr, user, passwordFile string
}

// devSCRAMListener returns the SCRAM listener that `make deps` wrote to
// .dev/env (DTX_DEV_KAFKA_SCRAM_*); without it, it starts a private Apache
// Kafka from the cached jars, configured by the same template
// (scripts/kafka/server.properties) and formatted with the same SCRAM users
// as the development broker, and stops it when the test ends. It skips the
// test when neither is possible, failing it instead when CI=true.
func devSCRAMListener(t *testing.T) scramListener {
	t.Helper()
	if addr := os.Getenv("DTX_DEV_KAFKA_SCRAM_BROKERS"); addr != "" {
		return scramListener{addr: addr, user: os.Getenv("DTX_DEV_KAFKA_SCRAM_USERNAME"), passwordFile: os.Getenv("DTX_DEV_KAFKA_SCRAM_PASSWORD_FILE")}
	}
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	libs := os.Getenv("DTX_KAFKA_LIBS")
	if libs == "" {
		libs = filepath.Join(root, ".dev", "kafka", "libs")
	}
	java := "java"
	if home := os.Getenv("JAVA_HOME"); home != "" {
		java = filepath.Join(home, "bin", "java")
	}
	javaPath, javaErr := exec.LookPath(java)
	jars, _ := filepath.Glob(filepath.Join(libs, "kafka_2.*.jar"))
	if javaErr != nil || len(jars) == 0 {
		why := fmt.Sprintf("no SCRAM listener: DTX_DEV_KAFKA_SCRAM_BROKERS is not set (the dev broker was started before it had one, "+
			"or is the embedded broker, which has none) and no private Apache Kafka can start (java: %v; jars in %s: %d)", javaErr, libs, len(jars))
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why)
	}

	dir := t.TempDir()
	ports := freePorts(t, 3)
	tmpl, err := os.ReadFile(filepath.Join(root, "scripts", "kafka", "server.properties"))
	require.NoError(t, err)
	props := strings.NewReplacer("@PORT@", fmt.Sprint(ports[0]), "@CONTROLLER_PORT@", fmt.Sprint(ports[1]),
		"@SCRAM_PORT@", fmt.Sprint(ports[2]), "@DATA_DIR@", filepath.Join(dir, "data")).Replace(string(tmpl))
	propsFile := filepath.Join(dir, "server.properties")
	require.NoError(t, os.WriteFile(propsFile, []byte(props), 0o600))
	password := randomHex(t)
	l := scramListener{addr: fmt.Sprintf("127.0.0.1:%d", ports[2]), user: "dtx", passwordFile: writeFile(t, "scram.password", password+"\n")}

	javaCmd := func(args ...string) *exec.Cmd {
		return exec.Command(javaPath, append([]string{"-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
			"-Dkafka.logs.dir=" + dir, "-Dlog4j2.configurationFile=" + filepath.Join(root, "scripts", "kafka", "log4j2.properties"),
			"-cp", filepath.Join(libs, "*")}, args...)...)
	}
	out, err := javaCmd("kafka.tools.StorageTool", "format", "--standalone", "-t", clusterID(t), "-c", propsFile,
		"--add-scram", "SCRAM-SHA-256=[name=dtx,password="+password+"]",
		"--add-scram", "SCRAM-SHA-512=[name=dtx,password="+password+"]").CombinedOutput()
	require.NoError(t, err, "format: %s", out)

	cmd := javaCmd("kafka.Kafka", propsFile)
	logf, err := os.Create(filepath.Join(dir, "kafka.out"))
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	// Ready once a SCRAM client is served.
	cfg := scramConfig(t, l, SASLScramSHA256, l.passwordFile)
	deadline := time.Now().Add(90 * time.Second)
	for {
		cl, err := kgo.NewClient(append(cfg.KafkaOpts(), kgo.SeedBrokers(l.addr))...)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err = cl.Ping(ctx)
		cancel()
		cl.Close()
		if err == nil {
			return l
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("private Apache Kafka exited during start-up: %s", tail(log))
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("private Apache Kafka did not serve SCRAM on %s within 90s: %v\n%s", l.addr, err, tail(log))
		}
	}
}

func tail(b []byte) string {
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		require.NoError(t, l.Close())
	}
	return ports
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// clusterID returns a random Kafka cluster id, as Kafka's Uuid prints one.
func clusterID(t *testing.T) string {
	t.Helper()
	id := make([]byte, 16)
	_, err := rand.Read(id)
	require.NoError(t, err)
	id[0] = id[0]&0x7f | 0x01
	return base64.RawURLEncoding.EncodeToString(id)
}

// scramConfig returns validated settings for the listener l.
func scramConfig(t *testing.T, l scramListener, mechanism, passwordFile string) Config {
	t.Helper()
	cfg, err := parse(t, []string{"--kafka-brokers", l.addr, "--kafka-sasl-mechanism", mechanism,
		"--kafka-sasl-username", l.user, "--kafka-sasl-password-file", passwordFile}, nil)
	require.NoError(t, err)
	return cfg
}

// Against Apache Kafka's SCRAM listener: clients built from the settings
// authenticate with SCRAM-SHA-256 and SCRAM-SHA-512, produce and consume; a
// wrong password is refused with an error naming SASL authentication, and
// a process configured with it says so on /readyz.
func TestKafkaSCRAMAgainstApacheKafka(t *testing.T) {
	t.Parallel()
	l := devSCRAMListener(t)
	wrong := writeFile(t, "wrong.password", "not-the-password\n")

	for _, mech := range []string{SASLScramSHA256, SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			topic := fmt.Sprintf("dtx-test-scram-%s-%s", strings.ToLower(mech), randomHex(t)[:8])
			cfg := scramConfig(t, l, mech, l.passwordFile)
			createTopic(t, cfg, topic)
			require.NoError(t, produceConsume(t, cfg, cfg.KafkaBrokers, topic))

			err := produceConsume(t, scramConfig(t, l, mech, wrong), cfg.KafkaBrokers, topic)
			require.Error(t, err)
			require.Contains(t, err.Error(), "SASL_AUTHENTICATION_FAILED")
			require.Contains(t, err.Error(), "Authentication failed")
		})
	}

	t.Run("readyz", func(t *testing.T) {
		app := App{Name: "scram-test", DefaultAdminAddr: ":0", RunFunc: Idle("nothing")}
		vars := map[string]string{
			"DTX_KAFKA_BROKERS":            l.addr,
			"DTX_KAFKA_SASL_MECHANISM":     SASLScramSHA512,
			"DTX_KAFKA_SASL_USERNAME":      l.user,
			"DTX_KAFKA_SASL_PASSWORD_FILE": wrong,
		}
		r := runAppEnv(t, app, "5s", vars)
		require.Eventually(t, func() bool {
			_, rep := readyz(t, r.admin)
			return strings.Contains(rep.Checks["kafka"], "SASL_AUTHENTICATION_FAILED")
		}, 30*time.Second, 200*time.Millisecond, "logs: %s", r.logs)
		code, _ := readyz(t, r.admin)
		require.Equal(t, http.StatusServiceUnavailable, code)

		vars["DTX_KAFKA_SASL_PASSWORD_FILE"] = l.passwordFile
		r = runAppEnv(t, app, "5s", vars)
		require.Eventually(t, func() bool {
			_, rep := readyz(t, r.admin)
			return rep.Checks["kafka"] == "ok"
		}, 30*time.Second, 200*time.Millisecond, "logs: %s", r.logs)
		require.NotContains(t, r.logs.String(), mustRead(t, l.passwordFile))
	})
}

// createTopic creates topic with a client of cfg and deletes it at the end.
func createTopic(t *testing.T, cfg Config, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(append(cfg.KafkaOpts(), kgo.SeedBrokers(cfg.KafkaBrokers...))...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, 1, 1, nil, topic)
	require.NoError(t, err)
	require.NoError(t, resp.Err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopic(ctx, topic)
	})
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}
