package kafka_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// restartableBroker is an embedded broker that a command can restart, for
// Watermill's TestReconnect, which runs Features.RestartServiceCommand. The
// broker keeps its state (topics, records, committed offsets) in a folder
// and listens on a fixed port, so a restart closes it and starts it again
// as the same broker. The command asks for the restart over a local control
// connection and returns once the new broker listens.
type restartableBroker struct {
	t    testing.TB
	opts []kfake.Opt
	ctl  net.Listener
	done chan struct{}

	mu      sync.Mutex
	cluster *kfake.Cluster
}

func startRestartableBroker(t testing.TB) (*restartableBroker, []string) {
	t.Helper()
	r := &restartableBroker{
		t:    t,
		opts: []kfake.Opt{kfake.NumBrokers(1), kfake.DataDir(t.TempDir())},
		done: make(chan struct{}),
	}
	c, err := kfake.NewCluster(r.opts...)
	require.NoError(t, err)
	addrs := c.ListenAddrs()
	_, port, err := net.SplitHostPort(addrs[0])
	require.NoError(t, err)
	n, err := strconv.Atoi(port)
	require.NoError(t, err)
	r.opts = append(r.opts, kfake.Ports(n))
	r.cluster = c

	r.ctl, err = net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go r.serve()
	t.Cleanup(func() {
		_ = r.ctl.Close()
		<-r.done
		r.mu.Lock()
		defer r.mu.Unlock()
		r.cluster.Close()
	})
	return r, addrs
}

// command is a restart command for Features.RestartServiceCommand.
func (r *restartableBroker) command() []string {
	port := r.ctl.Addr().(*net.TCPAddr).Port
	return []string{"bash", "-c", fmt.Sprintf(
		`exec 3<>/dev/tcp/127.0.0.1/%d && echo restart >&3 && read -r reply <&3 && [ "$reply" = ok ]`, port)}
}

func (r *restartableBroker) serve() {
	defer close(r.done)
	for {
		conn, err := r.ctl.Accept()
		if err != nil {
			return
		}
		reply := "ok"
		if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
			reply = err.Error()
		} else if err := r.restart(); err != nil {
			r.t.Errorf("restart embedded broker: %v", err)
			reply = err.Error()
		}
		_, _ = fmt.Fprintln(conn, reply)
		_ = conn.Close()
	}
}

func (r *restartableBroker) restart() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cluster.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := kfake.NewCluster(r.opts...)
		if err == nil {
			r.cluster = c
			return nil
		}
		if time.Now().After(deadline) {
			return errors.Join(errors.New("port not free again within 10s"), err)
		}
		time.Sleep(50 * time.Millisecond) // polling for the port to be released
	}
}
