// Package clustertest starts real NATS servers with JetStream from nats-server's module, for the tests
// of package cluster and of cluster mode end to end: inside the test process, alone or as a three-node
// cluster; or as a three-node cluster of child processes of the test binary (process.go), whose nodes
// can be SIGKILLed; and a TCP proxy that can cut a client off from its server. It is for tests only.
package clustertest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// Server starts a JetStream server on a random loopback port, its store in a temporary directory, and
// shuts it down when the test ends.
func Server(t testing.TB) *server.Server {
	t.Helper()
	return start(t, options(t, "dd-test"))
}

// options are a JetStream server's on a random loopback port, its store in a temporary directory.
func options(t testing.TB, name string) *server.Options {
	return &server.Options{
		ServerName: name,
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
	}
}

func start(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server %s: %v", opts.ServerName, err)
	}
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats server %s not ready in 10s", opts.ServerName)
	}
	return s
}

// Cluster starts n JetStream servers routed to each other (cluster "dd-test", servers n1..nN) and waits
// until JetStream has a meta leader. Each shuts down when the test ends; a test may shut one down
// sooner.
func Cluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	ports := FreePorts(t, n)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var servers []*server.Server
	for i := 0; i < n; i++ {
		opts := options(t, fmt.Sprintf("n%d", i+1))
		opts.Cluster = server.ClusterOpts{Name: "dd-test", Host: "127.0.0.1", Port: ports[i]}
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("nats server n%d: %v", i+1, err)
		}
		s.Start()
		t.Cleanup(s.Shutdown)
		servers = append(servers, s)
	}
	for _, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("nats server %s not ready in 10s", s.Name())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, current := false, 0
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				leader = true
			}
			if s.JetStreamIsCurrent() {
				current++
			}
		}
		if leader && current == n {
			return servers
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream cluster of %d servers not formed in 30s (leader %v, %d current)", n, leader, current)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URLs lists servers' client URLs, comma-separated, as cluster.Options.URL takes them.
func URLs(servers ...*server.Server) string {
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.ClientURL())
	}
	return strings.Join(urls, ",")
}

// FreePorts returns n ports on 127.0.0.1 that were free a moment ago.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// Proxy forwards TCP connections to a server until Block, which makes it a black hole: connections
// stay open and bytes are read but no longer forwarded either way, as when a network partition drops
// packets (the client sees no reset, only silence).
type Proxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	blocked bool
	conns   []net.Conn
}

// NewProxy listens on a random loopback port and forwards to target (host:port); it closes when the
// test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target}
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// URL is the proxy's address as a NATS URL.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Block stops forwarding.
func (p *Proxy) Block() {
	p.mu.Lock()
	p.blocked = true
	p.mu.Unlock()
}

// Unblock forwards again (new bytes only: what arrived while blocked is gone).
func (p *Proxy) Unblock() {
	p.mu.Lock()
	p.blocked = false
	p.mu.Unlock()
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
}

func (p *Proxy) isBlocked() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blocked
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *Proxy) pipe(from, to net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 && !p.isBlocked() {
			if _, werr := to.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	from.Close()
	to.Close()
}

// Split takes the shards each process runs ready and says how many each runs, and whether every shard
// of total runs ready in exactly one of them.
func Split(ready [][]int, total int) (counts []int, all bool) {
	seen := map[int]int{}
	for _, r := range ready {
		counts = append(counts, len(r))
		for _, id := range r {
			seen[id]++
		}
	}
	if len(seen) != total {
		return counts, false
	}
	for _, n := range seen {
		if n != 1 {
			return counts, false
		}
	}
	return counts, true
}

// Evenly says whether there are counts and each is each.
func Evenly(counts []int, each int) bool {
	for _, n := range counts {
		if n != each {
			return false
		}
	}
	return len(counts) > 0
}

// CheckOrder checks the sequences of shard's events in the order they arrived at a bot: the first arrival
// of each comes after the first arrivals of those before it (an error on t otherwise). It returns the
// sequences seen and how many arrivals were copies.
func CheckOrder(t testing.TB, shard int, arrivals []int64) (seen map[int64]bool, copies int) {
	t.Helper()
	seen = map[int64]bool{}
	var high int64
	for _, s := range arrivals {
		if seen[s] {
			copies++
			continue
		}
		if s < high {
			t.Errorf("shard %d: event %d arrived first after %d", shard, s, high)
		}
		seen[s] = true
		high = max(high, s)
	}
	return seen, copies
}

// ShutdownLeader shuts down the server of servers that leads str (a replicated stream), mid-firehose in
// the tests that call it, and logs which.
func ShutdownLeader(ctx context.Context, t testing.TB, servers []*server.Server, str jetstream.Stream) {
	t.Helper()
	si, err := str.Info(ctx)
	if err != nil || si.Cluster == nil || si.Cluster.Leader == "" {
		t.Fatalf("event stream cluster info: %+v, %v", si, err)
	}
	for _, s := range servers {
		if s.Name() == si.Cluster.Leader {
			s.Shutdown()
		}
	}
	t.Logf("shut down %s, leader of %s (replicas %d), mid-firehose", si.Cluster.Leader, si.Config.Name, si.Config.Replicas)
}
