package clustertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A test that must kill a NATS node the way a machine dies (SIGKILL: no shutdown, no goodbye to its
// routes, its store as the kill left it) runs the nodes as processes of their own, built from this
// module: ProcessCluster starts the test binary again with nodeEnv set, and that process serves one node
// of the cluster (RunChild) until SIGTERM, or until SIGKILL ends it. A test package that calls
// ProcessCluster must call RunChild first thing in its TestMain.
const (
	nodeEnv        = "DD_TEST_NATS_NODE"     // the node's server name: this process is a NATS node
	nodeStoreEnv   = "DD_TEST_NATS_STORE"    // its JetStream store
	nodePortEnv    = "DD_TEST_NATS_PORT"     // its client port on 127.0.0.1
	nodeClusterEnv = "DD_TEST_NATS_CLUSTER"  // its cluster's name and its route port: "name:port"
	nodeRoutesEnv  = "DD_TEST_NATS_ROUTES"   // every node's route URL, comma-separated
	nodeURLFileEnv = "DD_TEST_NATS_URL_FILE" // where it writes its client URL once it accepts connections
)

// RunChild serves as a NATS node ProcessCluster started, when this process's environment says it is
// one, and then returns its exit status and true; otherwise it returns at once with false. Use:
//
//	func TestMain(m *testing.M) {
//		if code, ok := clustertest.RunChild(); ok {
//			os.Exit(code)
//		}
//		...
//	}
func RunChild() (code int, ok bool) {
	name := os.Getenv(nodeEnv)
	if name == "" {
		return 0, false
	}
	if err := serveNode(name); err != nil {
		fmt.Fprintf(os.Stderr, "nats node %s: %v\n", name, err)
		return 1, true
	}
	return 0, true
}

// serveNode runs one JetStream node of a cluster as the environment describes it, writes its client URL
// to the URL file, and shuts down on SIGTERM or SIGINT, or when the test process that started it is
// gone.
func serveNode(name string) error {
	store, urlFile := os.Getenv(nodeStoreEnv), os.Getenv(nodeURLFileEnv)
	port, err := strconv.Atoi(os.Getenv(nodePortEnv))
	if err != nil {
		return fmt.Errorf("%s: %v", nodePortEnv, err)
	}
	clusterName, routePort, found := strings.Cut(os.Getenv(nodeClusterEnv), ":")
	rport, err := strconv.Atoi(routePort)
	if !found || err != nil || clusterName == "" {
		return fmt.Errorf("%s=%q: want name:port", nodeClusterEnv, os.Getenv(nodeClusterEnv))
	}
	if store == "" || urlFile == "" || os.Getenv(nodeRoutesEnv) == "" {
		return fmt.Errorf("%s, %s and %s must be set", nodeStoreEnv, nodeURLFileEnv, nodeRoutesEnv)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	parent := os.Getppid()
	s, err := server.NewServer(&server.Options{
		ServerName: name, Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: store, NoLog: true, NoSigs: true,
		Cluster: server.ClusterOpts{Name: clusterName, Host: "127.0.0.1", Port: rport},
		Routes:  server.RoutesFromStr(os.Getenv(nodeRoutesEnv)),
	})
	if err != nil {
		return err
	}
	s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(20 * time.Second) {
		return errors.New("not ready for connections in 20s")
	}
	// Written whole and then renamed, so that the test never reads half a URL.
	tmp := urlFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(s.ClientURL()+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, urlFile); err != nil {
		return err
	}
	fmt.Printf("nats-server %s: node %s of cluster %s, JetStream, listening at %s, routes on %d, store %s\n",
		server.VERSION, name, clusterName, s.ClientURL(), rport, store)
	// A test process killed before its cleanup ran leaves no node behind: the node goes once its parent
	// has (it is then re-parented).
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case sig := <-sigs:
			fmt.Printf("nats node %s: %v, shutting down\n", name, sig)
			return nil
		case <-tick.C:
			if os.Getppid() != parent {
				fmt.Printf("nats node %s: the test process is gone, shutting down\n", name)
				return nil
			}
		}
	}
}

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
// call RunChild in TestMain), routed to each other (cluster "dd-test", servers n1..nN), and waits until
// the cluster can hold a stream with n replicas. Each is killed when the test ends; a test may kill one
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
		cmd.Env = append(os.Environ(),
			nodeEnv+"="+node.name,
			nodeStoreEnv+"="+filepath.Join(dir, "store"),
			nodePortEnv+"="+strconv.Itoa(ports[i]),
			nodeClusterEnv+"=dd-test:"+strconv.Itoa(ports[n+i]),
			nodeRoutesEnv+"="+strings.Join(routes, ","),
			nodeURLFileEnv+"="+filepath.Join(dir, "url"))
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
	for _, node := range nodes {
		for {
			b, err := os.ReadFile(filepath.Join(filepath.Dir(node.log), "url"))
			if err == nil && strings.TrimSpace(string(b)) == node.url {
				break
			}
			select {
			case <-node.done:
				t.Fatalf("nats node %s exited before it listened", node.name)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("nats node %s not listening in 30s", node.name)
			}
			time.Sleep(20 * time.Millisecond)
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
