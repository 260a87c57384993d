package clustertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ddhq/dd/internal/natsproc"
)

// A test that must kill a NATS node the way a machine dies (SIGKILL: no shutdown, no goodbye to its
// routes, its store as the kill left it) runs the nodes as processes of their own, built from this
// module: ProcessCluster starts the test binary again as a NATS child (internal/natsproc) serving one
// node of the cluster, until SIGTERM, or until SIGKILL ends it. A test package that calls
// ProcessCluster must call natsproc.RunChild first thing in its TestMain.

// Node is one NATS node of a ProcessCluster, a process of its own.
type Node struct {
	name, url, log string
	cmd            *exec.Cmd
	done           chan struct{} // closed once the process exited and was waited for
}

// Name is the node's server name, as JetStream's cluster info gives it (StreamInfo.Cluster.Leader).
func (n *Node) Name() string { return n.name }

// ClientURL is the node's client URL.
func (n *Node) ClientURL() string { return n.url }

// Kill ends the node's process with SIGKILL and waits until it is gone.
func (n *Node) Kill() {
	n.cmd.Process.Kill()
	<-n.done
}

// NodeURLs lists nodes' client URLs, comma-separated, as cluster.Options.URL takes them.
func NodeURLs(nodes ...*Node) string {
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.url)
	}
	return strings.Join(urls, ",")
}

// ProcessCluster starts n JetStream nodes, each a process of its own (the test binary again, which must
// call natsproc.RunChild in TestMain), routed to each other (cluster "dd-test", servers n1..nN), and
// waits until the cluster can hold a stream with n replicas. Each is killed when the test ends; a test may kill one
// sooner. A node's log is shown when the test fails.
func ProcessCluster(t testing.TB, n int) []*Node {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ports := FreePorts(t, 2*n) // n client ports, then n route ports
	var routes []string
	for i := 0; i < n; i++ {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[n+i]))
	}
	var nodes []*Node
	for i := 0; i < n; i++ {
		dir := t.TempDir()
		node := &Node{name: fmt.Sprintf("n%d", i+1), url: fmt.Sprintf("nats://127.0.0.1:%d", ports[i]),
			log: filepath.Join(dir, "node.log"), done: make(chan struct{})}
		logFile, err := os.Create(node.log)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(self)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), natsproc.Config{Name: node.name, StoreDir: filepath.Join(dir, "store"),
			URLFile: filepath.Join(dir, "url"), Port: ports[i],
			Cluster: "dd-test", RoutePort: ports[n+i], Routes: routes}.Env())
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			logFile.Close()
			t.Fatalf("starting nats node %s: %v", node.name, err)
		}
		node.cmd = cmd
		go func() {
			cmd.Wait()
			logFile.Close()
			close(node.done)
		}()
		nodes = append(nodes, node)
		t.Cleanup(func() {
			node.Kill()
			if t.Failed() {
				b, _ := os.ReadFile(node.log)
				t.Logf("log of nats node %s:\n%s", node.name, b)
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for _, node := range nodes {
		url, err := natsproc.WaitURL(ctx, filepath.Join(filepath.Dir(node.log), "url"), node.done)
		if err != nil {
			t.Fatalf("nats node %s: %v", node.name, err)
		}
		if url != node.url {
			t.Fatalf("nats node %s listens at %s, not %s", node.name, url, node.url)
		}
	}
	// Formed: a stream with a replica on every node can be created (and is deleted again).
	nc, err := natsgo.Connect(NodeURLs(nodes...))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "DD_TEST_FORMED", Subjects: []string{"dd-test.formed"}, Replicas: n})
		if err == nil {
			err = js.DeleteStream(ctx, "DD_TEST_FORMED")
		}
		cancel()
		if err == nil {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream cluster of %d nats nodes not formed in 30s: %v", n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
