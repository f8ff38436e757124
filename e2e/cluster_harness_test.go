package e2e

// A cluster for the scale-out tests: three NATS servers with JetStream
// (the nats-server binary, built by TestMain from the module Herald's
// tests already use) and three Herald nodes on them, all on loopback.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldrt/herald/protocol"
)

// natsBin is the NATS server the cluster tests run, built by TestMain.
var natsBin string

// natsNode is one nats-server process of a test's cluster.
type natsNode struct {
	t                 testing.TB
	name              string
	port, clusterPort int
	dir               string
	routes            string
	cmd               *exec.Cmd
	log               *syncBuffer
	exited            chan struct{}
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// start runs the server and waits until it takes connections. It
// returns what went wrong rather than failing the test, so that a
// publisher's goroutine can call it.
func (n *natsNode) start() error {
	n.cmd = exec.Command(natsBin, "-a", "127.0.0.1", "-p", fmt.Sprint(n.port), "-n", n.name,
		"-js", "-sd", n.dir, "--cluster_name", "herald-e2e",
		"--cluster", fmt.Sprintf("nats://127.0.0.1:%d", n.clusterPort), "--routes", n.routes)
	n.log = &syncBuffer{}
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		return err
	}
	n.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(n.cmd, n.exited)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-n.exited:
			return fmt.Errorf("nats-server %s exited during start-up:\n%s", n.name, n.log.String())
		case <-time.After(20 * time.Millisecond): // a port to open: polled
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server %s not listening after 30s:\n%s", n.name, n.log.String())
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *natsNode) kill() {
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
}

func (n *natsNode) stop() {
	select {
	case <-n.exited:
		return
	default:
	}
	n.kill()
	if n.t.Failed() {
		n.t.Logf("nats-server %s log:\n%s", n.name, lastLines(n.log.String(), 30))
	}
}

// cluster is three NATS servers and three Herald nodes on them.
type cluster struct {
	t     testing.TB
	nats  []*natsNode
	nodes []*server
}

// startCluster starts three NATS servers as one JetStream cluster and
// three Herald nodes with replicas 3, each given every NATS server's URL
// (extra args are added to each node's command line). It returns once
// every node is ready.
func startCluster(t testing.TB, args ...string) *cluster {
	t.Helper()
	c := &cluster{t: t}
	var routes, urls []string
	for i := range 3 {
		n := &natsNode{t: t, name: fmt.Sprintf("nats%d", i+1), port: freePort(t), clusterPort: freePort(t), dir: t.TempDir()}
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", n.clusterPort))
		urls = append(urls, n.url())
		c.nats = append(c.nats, n)
	}
	for _, n := range c.nats {
		n.routes = strings.Join(routes, ",")
		if err := n.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.stop)
	}
	for range 3 {
		c.nodes = append(c.nodes, startServer(t, append([]string{"--nats-urls", strings.Join(urls, ","), "--nats-replicas", "3"}, args...)...))
	}
	return c
}

func freePort(t testing.TB) int {
	t.Helper()
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	return p
}

// urls are the Herald nodes' base URLs.
func (c *cluster) urls() []string {
	out := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		out[i] = s.url()
	}
	return out
}

// streamLeader returns the NATS server that leads the HERALD stream.
func (c *cluster) streamLeader() *natsNode {
	c.t.Helper()
	var urls []string
	for _, n := range c.nats {
		urls = append(urls, n.url())
	}
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		c.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "HERALD")
	if err != nil {
		c.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	if info.Cluster == nil {
		c.t.Fatal("the HERALD stream reports no cluster")
	}
	for _, n := range c.nats {
		if n.name == info.Cluster.Leader {
			return n
		}
	}
	c.t.Fatalf("the HERALD stream's leader %q is none of the cluster's servers", info.Cluster.Leader)
	return nil
}

// acked is a publish the cluster acknowledged.
type acked struct {
	channel string
	offset  uint64
	data    string
}

// publishAnyNode publishes data with an idempotency key through the node
// at bases[*at], moving on to the next node after a transport error or
// a 5xx (the node died, or the engine is failing over), until ctx ends.
// The key makes the retries safe. fails counts the answers that were not
// 200, each of which must be a clear 503.
func publishAnyNode(ctx context.Context, bases []string, at *int, channel, data, key string, fails *[]string) (publishResult, error) {
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		res, code, err := publish(ctx, bases[*at%len(bases)], channel, data, key)
		if err == nil {
			return res, nil
		}
		if code >= 400 && code < 500 {
			return res, err
		}
		if code != 0 {
			*fails = append(*fails, err.Error())
		}
		*at++
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
	}
}

// follower is one subscriber of the cluster: a transport's client on one
// node that, when its connection ends, resumes from its own position on
// the next node that answers.
type follower struct {
	d        driver
	bases    []string
	at       int // index of the node it is connected to
	channels []string
	got      map[string][]envelope
	resumes  int
	// notices are the data of the herald.disconnect notices received
	// (a poll answer carries one when the server ended the session; the
	// next poll goes on from its cursor).
	notices []string
}

// follow receives until it holds want messages in all, resuming across
// node failures; it returns what went wrong, for the test goroutine to
// report.
func (f *follower) follow(t *testing.T, c conn, want int, deadline time.Time) error {
	total := 0
	for total < want {
		env, err := c.recv(time.Until(deadline))
		switch {
		case errors.Is(err, errEnded):
			m := c.mark()
			c.close()
			c, err = f.reopen(t, m, deadline)
			if err != nil {
				return err
			}
			continue
		case err != nil:
			return fmt.Errorf("%s on node %d: after %d of %d: %w", f.d.name(), f.at%len(f.bases)+1, total, want, err)
		case env.Event == "herald.reset":
			return fmt.Errorf("%s: a reset on %s (%s): nothing was trimmed", f.d.name(), env.Channel, env.Data)
		case env.Event == protocol.EventDisconnect:
			f.notices = append(f.notices, string(env.Data))
			continue
		}
		f.got[env.Channel] = append(f.got[env.Channel], env)
		total++
	}
	c.close()
	return nil
}

// reopen resumes from m on the next node that takes the subscription.
func (f *follower) reopen(t *testing.T, m *mark, deadline time.Time) (conn, error) {
	for delay := 20 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		f.at++
		f.resumes++
		c, err := f.d.open(t, f.bases[f.at%len(f.bases)], apiKey, f.channels, m)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: no node took the resume from %v: %v", f.d.name(), m, err)
		}
		time.Sleep(delay) // the next node is tried after a pause: nothing to await
	}
}
