// Package clusterproc tests cluster mode (PRODUCT.md §7, issue #12) with real processes: dd gateway
// processes built from this module, sharing shards through a NATS server with JetStream (in the test
// process, a separate process from every dd; or a three-node cluster, each node a process of its own,
// clustertest.ProcessCluster), against the Discord simulator, delivering to a bot endpoint in the test.
// Processes are killed with SIGKILL: nothing of theirs runs after.
package clusterproc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ddhq/dd/cluster/clustertest"
	"github.com/ddhq/dd/internal/natsproc"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/discordsim"
)

var ddBinary string

const (
	token        = "sim-token-cluster-0123456789"
	eventsSecret = "events-secret-0123456789"
)

// TestMain serves as a NATS node of a test's clustertest.ProcessCluster when started as one; otherwise
// it builds dd and runs the tests.
func TestMain(m *testing.M) {
	if code, ok := natsproc.RunChild(); ok {
		os.Exit(code)
	}
	testkit.MainWithDD(m, "dd-cluster-bin-", &ddBinary)
}

// ddProc is one dd gateway process; its log is shown when the test fails.
type ddProc struct {
	*testkit.DD
	name string
	addr string // gateway listener
}

func startDD(t *testing.T, name, addr string, env []string) *ddProc {
	t.Helper()
	var p *ddProc
	t.Cleanup(func() { // registered first, so that it runs after the process is killed
		if p != nil && t.Failed() {
			t.Logf("log of %s:\n%s", name, p.Log())
		}
	})
	dir := t.TempDir()
	env = append([]string{"DD_CLUSTER__INSTANCE=" + name, "DD_GATEWAY__LISTEN=" + addr,
		"DD_STORE__PATH=" + filepath.Join(dir, "data")}, env...)
	p = &ddProc{DD: testkit.StartDD(t, ddBinary, dir, env, "--role=gateway"), name: name, addr: addr}
	return p
}

// gwStatus is what the test reads of GET /status.
type gwStatus struct {
	Instance  string `json:"instance"`
	Processes []struct {
		Instance string `json:"instance"`
		Shards   []int  `json:"shards"`
	} `json:"processes"`
	Owners []string `json:"owners"`
	Shards []struct {
		ID    int    `json:"id"`
		State string `json:"state"`
	} `json:"shards"`
}

var client = &http.Client{Timeout: 2 * time.Second}

func status(addr string) (gwStatus, error) {
	var st gwStatus
	resp, err := client.Get("http://" + addr + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status %d", resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func readyz(addr string) int {
	resp, err := client.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// readySplit reads each process's ready shards: the count each runs ready, and whether every shard of
// total runs ready in exactly one of them.
func readySplit(ps []*ddProc, total int) (counts []int, all bool) {
	var ready [][]int
	for _, p := range ps {
		st, err := status(p.addr)
		if err != nil {
			return nil, false
		}
		var r []int
		for _, s := range st.Shards {
			if s.State == "ready" {
				r = append(r, s.ID)
			}
		}
		ready = append(ready, r)
	}
	return clustertest.Split(ready, total)
}

// startSim starts the simulator for token, closed with the test.
func startSim(t *testing.T, guilds, maxConcurrency int) *discordsim.Server {
	t.Helper()
	sim := discordsim.New(discordsim.Config{Guilds: guilds, MaxConcurrency: maxConcurrency, Tokens: []string{token}})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

// gatewayEnv is the environment of the gateway processes of a test counting every event: total shards
// on sim with the intents of guilds and messages, no event deduplicated or dropped, delivered to botURL;
// then extra.
func gatewayEnv(sim *discordsim.Server, total int, botURL string, extra ...string) []string {
	return append([]string{
		"DD_DISCORD__TOKEN=" + token, "DD_DISCORD__API_URL=" + sim.APIURL(),
		"DD_GATEWAY__TOTAL_SHARDS=" + strconv.Itoa(total), "DD_GATEWAY__INTENTS=" + strconv.Itoa(1|512|1024|2048),
		"DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false", "DD_GATEWAY__DROP_KNOWN_GUILD_CREATES=false",
		"DD_EVENTS__URLS=" + botURL, "DD_EVENTS__SECRET=" + eventsSecret,
	}, extra...)
}

// waitSplit waits until every shard of total runs ready exactly once across ps, each process running
// each of them (0: however split), and fails the test if a process exits meanwhile.
func waitSplit(t *testing.T, d time.Duration, what string, ps []*ddProc, total, each int) time.Duration {
	t.Helper()
	return testkit.Eventually(t, d, what, func() bool {
		for _, p := range ps {
			if p.Exited() {
				_ = p.Cmd.Wait()
				t.Fatalf("%s exited (%v)", p.name, p.Cmd.ProcessState)
			}
		}
		c, all := readySplit(ps, total)
		return all && (each == 0 || clustertest.Evenly(c, each))
	})
}

// bot records every delivered event with the X-DD-Event-Id it came under (events.batch_max 1: one
// event per POST).
type bot struct {
	mu       sync.Mutex
	arrivals map[int][]int64            // shard -> sequences in arrival order
	ids      map[string]map[string]bool // "<shard>/<seq>" -> ids
	problems []string
	count    int
}

func newBot(t *testing.T) (*bot, string) { return newBotBatch(t, false) }

// newBotBatch is newBot for events.batch_max > 1: each POST is an array, its ids in X-DD-Event-Ids.
func newBotBatch(t *testing.T, batch bool) (*bot, string) {
	b := &bot{arrivals: map[int][]int64{}, ids: map[string]map[string]bool{}}
	type envelope struct {
		ShardID *int `json:"shardId"`
		Payload struct {
			Op int   `json:"op"`
			S  int64 `json:"s"`
		} `json:"payload"`
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var envs []envelope
		var err error
		ids := []string{r.Header.Get("X-DD-Event-Id")}
		if batch {
			err = json.Unmarshal(body, &envs)
			ids = strings.Split(r.Header.Get("X-DD-Event-Ids"), ",")
		} else {
			var one envelope
			err = json.Unmarshal(body, &one)
			envs = append(envs, one)
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		bad := err != nil || len(envs) == 0 || len(ids) != len(envs) || r.Header.Get("Authorization") != eventsSecret
		for i := 0; !bad && i < len(envs); i++ {
			e := envs[i]
			bad = e.ShardID == nil || e.Payload.Op != 0 || e.Payload.S == 0 || ids[i] == ""
		}
		if bad {
			if len(b.problems) < 10 {
				b.problems = append(b.problems, fmt.Sprintf("bad delivery (ids %q, auth %q): %.200s", ids, r.Header.Get("Authorization"), body))
			}
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for i, e := range envs {
			b.count++
			b.arrivals[*e.ShardID] = append(b.arrivals[*e.ShardID], e.Payload.S)
			k := fmt.Sprintf("%d/%d", *e.ShardID, e.Payload.S)
			if b.ids[k] == nil {
				b.ids[k] = map[string]bool{}
			}
			b.ids[k][ids[i]] = true
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return b, srv.URL
}

func (b *bot) total() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count
}

// delivered says whether every sequence the simulator gave each session arrived.
func (b *bot) delivered(sessions []discordsim.SessionInfo) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range sessions {
		if int64(len(b.ids)) == 0 && s.Seq > 0 {
			return false
		}
		for seq := int64(1); seq <= s.Seq; seq++ {
			if b.ids[fmt.Sprintf("%d/%d", s.Shard, seq)] == nil {
				return false
			}
		}
	}
	return true
}

// check reports lost events, first arrivals out of order, and events delivered under any id but
// "<session>-<seq>"; it returns the deliveries that were copies.
func (b *bot) check(t *testing.T, sessions []discordsim.SessionInfo) (events, copies int) {
	return b.checkIDs(t, sessions, true)
}

// checkIDs is check; with streamIDs false any one id per event will do (one machine's queue ids).
func (b *bot) checkIDs(t *testing.T, sessions []discordsim.SessionInfo, streamIDs bool) (events, copies int) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Error(p)
	}
	bySession := map[int]string{}
	for _, s := range sessions {
		if prev, ok := bySession[s.Shard]; ok && prev != s.ID {
			t.Errorf("shard %d has two sessions (%s, %s): an identify the test does not expect", s.Shard, prev, s.ID)
		}
		bySession[s.Shard] = s.ID
		lost := 0
		for seq := int64(1); seq <= s.Seq; seq++ {
			ids := b.ids[fmt.Sprintf("%d/%d", s.Shard, seq)]
			if ids == nil {
				lost++
				continue
			}
			events++
			if want := s.ID + "-" + strconv.FormatInt(seq, 10); len(ids) != 1 || (streamIDs && !ids[want]) {
				t.Errorf("shard %d event %d came under ids %v; want only %s", s.Shard, seq, ids, want)
			}
		}
		if lost > 0 {
			t.Errorf("shard %d: %d of %d events never delivered", s.Shard, lost, s.Seq)
		}
	}
	for sh, seqs := range b.arrivals {
		_, n := clustertest.CheckOrder(t, sh, seqs)
		copies += n
	}
	return events, copies
}

// TestGatewayProcessesSurviveAKill is issue #12's figure with real processes: three `dd --role=gateway`
// of one deployment share 12 shards (4/4/4) under a firehose; one is SIGKILLed. Its shards must be READY
// again on the other two within 2 x lease_ttl, with no identify; every event the simulator dispatched
// reaches the bot, in order per shard, copies only under the same X-DD-Event-Id. The killed process
// comes back under its name: the shards rebalance to 4/4/4 by handover, again with no identify.
//
// Proportions: lease_ttl 3 s against Discord's 5 s identify window (dd's own, the simulator's too) and
// 41.25 s heartbeat; max_concurrency 16, so that the 12 first identifies need not wait for the window.
func TestGatewayProcessesSurviveAKill(t *testing.T) {
	if testing.Short() {
		t.Skip("three dd processes, a kill and a restart: about 40 s")
	}
	const (
		total = 12
		ttl   = 3 * time.Second
	)
	nats := clustertest.Server(t)
	sim := startSim(t, 48, 16)
	b, botURL := newBot(t)
	env := gatewayEnv(sim, total, botURL,
		"DD_CLUSTER__NATS_URL="+nats.ClientURL(), "DD_CLUSTER__LEASE_TTL="+ttl.String())
	ports := clustertest.FreePorts(t, 3)
	names := []string{"gw-a", "gw-b", "gw-c"}
	var ps []*ddProc
	for i, name := range names {
		ps = append(ps, startDD(t, name, fmt.Sprintf("127.0.0.1:%d", ports[i]), env))
	}
	took := waitSplit(t, 60*time.Second, "12 shards ready, 4/4/4", ps, total, 4)
	ids0 := len(sim.GatewayStats().Identifies)
	t.Logf("three processes: 12 shards ready 4/4/4 %s after the start, %d identifies", took.Round(time.Millisecond), ids0)
	for _, p := range ps {
		if code := readyz(p.addr); code != http.StatusOK {
			t.Errorf("%s: /readyz %d with its shards ready", p.name, code)
		}
	}
	st, err := status(ps[1].addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Processes) != 3 || len(st.Owners) != total {
		t.Errorf("/status of %s shows processes %+v, owners %v; want 3 processes and the owner of each of 12 shards", ps[1].name, st.Processes, st.Owners)
	}

	stopFirehose := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 600})
	defer stopFirehose()
	time.Sleep(2 * time.Second)

	victim := ps[0]
	vst, err := status(victim.addr)
	if err != nil {
		t.Fatal(err)
	}
	resumes0 := len(sim.GatewayStats().Resumes)
	victim.Kill()
	t.Logf("SIGKILLed %s, which ran %d shards", victim.name, len(vst.Shards))
	rest := ps[1:]
	took = testkit.Eventually(t, 6*ttl, "the killed process's shards ready on the other two", func() bool {
		_, all := readySplit(rest, total)
		return all
	})
	counts, _ := readySplit(rest, total)
	t.Logf("its shards READY again on the other two %s after the kill (lease_ttl %s, 2 x lease_ttl %s), split %v",
		took.Round(time.Millisecond), ttl, 2*ttl, counts)
	if took > 2*ttl {
		t.Errorf("takeover took %s; want within 2 x lease_ttl = %s", took, 2*ttl)
	}
	if n := len(sim.GatewayStats().Identifies); n != ids0 {
		t.Errorf("%d identifies during the takeover; want 0", n-ids0)
	}
	if r := len(sim.GatewayStats().Resumes) - resumes0; r < len(vst.Shards) {
		t.Errorf("%d resumes for the %d shards taken over", r, len(vst.Shards))
	}

	time.Sleep(time.Second)
	ps[0] = startDD(t, victim.name, victim.addr, env)
	took = testkit.Eventually(t, 12*ttl, "shards rebalanced 4/4/4", func() bool {
		c, all := readySplit(ps, total)
		return all && clustertest.Evenly(c, 4)
	})
	t.Logf("%s restarted: shards rebalanced 4/4/4 %s after its start", victim.name, took.Round(time.Millisecond))
	if n := len(sim.GatewayStats().Identifies); n != ids0 {
		t.Errorf("%d identifies during the rebalance; want 0 (handovers resume)", n-ids0)
	}
	// A rolling restart's stop: SIGTERM hands the shards over (closed resumably, sessions written, leases
	// released), so the others take them at once rather than after a lease_ttl.
	time.Sleep(time.Second)
	leaving := ps[1]
	termAt := time.Now()
	_ = leaving.Cmd.Process.Signal(syscall.SIGTERM)
	stayed := []*ddProc{ps[0], ps[2]}
	took = testkit.Eventually(t, 6*ttl, "a stopped process's shards ready on the other two", func() bool {
		_, all := readySplit(stayed, total)
		return all
	})
	<-leaving.Done
	_ = leaving.Cmd.Wait()
	t.Logf("%s stopped with SIGTERM (exit %d): its shards READY on the other two %s later, %s after the signal it had exited",
		leaving.name, leaving.Cmd.ProcessState.ExitCode(), took.Round(time.Millisecond), time.Since(termAt).Round(time.Millisecond))
	if code := leaving.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s exited %d after SIGTERM; want 0", leaving.name, code)
	}
	if took > ttl {
		t.Errorf("handover on SIGTERM took %s; want under lease_ttl %s (the leases are released, not left to expire)", took, ttl)
	}
	if n := len(sim.GatewayStats().Identifies); n != ids0 {
		t.Errorf("%d identifies after a SIGTERM; want 0", n-ids0)
	}
	time.Sleep(time.Second)
	stopFirehose()

	sessions := sim.Sessions()
	drained := testkit.Eventually(t, 60*time.Second, "every event the simulator dispatched delivered to the bot", func() bool { return b.delivered(sessions) })
	events, copies := b.check(t, sessions)
	sort.Slice(sessions, func(i, j int) bool { return sessions[i].Shard < sessions[j].Shard })
	t.Logf("bot: %d events of %d sessions delivered (drained %s after the firehose stopped), every one under its own X-DD-Event-Id; %d copies (redeliveries under the same id)",
		events, len(sessions), drained.Round(time.Millisecond), copies)
	if n := len(sim.GatewayStats().Identifies); n != total {
		t.Logf("identifies in all: %d for %d shards (the start: processes that join while others already hold shards hand them over)", n, total)
	}
}

// TestGatewayWithNATSUnreachable cuts a gateway process off from NATS (a partition: the proxy between
// them goes silent, no reset) for 30 s (the figure) under a firehose. /readyz answers 503 within a lease_ttl or so
// and meanwhile; the shards stop reading (their leases ended) rather than lose events; when NATS is
// reachable again the process takes its shards back and resumes them: no identify, every event
// delivered, in order, under its own id.
func TestGatewayWithNATSUnreachable(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30 s partition: about 55 s")
	}
	const (
		total = 4
		ttl   = 3 * time.Second
		cut   = 30 * time.Second
	)
	nats := clustertest.Server(t)
	proxy := clustertest.NewProxy(t, strings.TrimPrefix(nats.ClientURL(), "nats://"))
	sim := startSim(t, 16, 16)
	b, botURL := newBot(t)
	env := gatewayEnv(sim, total, botURL,
		"DD_CLUSTER__NATS_URL="+proxy.URL(), "DD_CLUSTER__LEASE_TTL="+ttl.String())
	port := clustertest.FreePorts(t, 1)[0]
	p := startDD(t, "gw-a", fmt.Sprintf("127.0.0.1:%d", port), env)
	ps := []*ddProc{p}
	testkit.Eventually(t, 60*time.Second, "4 shards ready", func() bool {
		if p.Exited() {
			t.Fatalf("%s exited", p.name)
		}
		_, all := readySplit(ps, total)
		return all
	})
	ids0 := len(sim.GatewayStats().Identifies)
	stopFirehose := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 400})
	defer stopFirehose()
	time.Sleep(2 * time.Second)

	cutAt := time.Now()
	proxy.Block()
	testkit.Eventually(t, 3*ttl, "/readyz 503 while NATS is unreachable", func() bool { return readyz(p.addr) == http.StatusServiceUnavailable })
	notReady := time.Since(cutAt)
	testkit.Eventually(t, 3*ttl, "every shard's Discord connection closed", func() bool {
		for _, s := range sim.Sessions() {
			if s.Connected {
				return false
			}
		}
		return true
	})
	stopped := time.Since(cutAt)
	t.Logf("NATS cut off: /readyz 503 %s later, every shard stopped reading %s later (lease_ttl %s)", notReady.Round(time.Millisecond),
		stopped.Round(time.Millisecond), ttl)
	var ok200 int
	for time.Since(cutAt) < cut {
		if readyz(p.addr) == http.StatusOK {
			ok200++
		}
		time.Sleep(250 * time.Millisecond)
	}
	if ok200 > 0 {
		t.Errorf("/readyz answered 200 %d times while NATS was unreachable", ok200)
	}
	var behind int64
	for _, s := range sim.Sessions() {
		behind += s.Seq - s.SentSeq
	}
	proxy.Unblock()
	back := time.Now()
	took := testkit.Eventually(t, 60*time.Second, "4 shards ready again and /readyz 200", func() bool {
		_, all := readySplit(ps, total)
		return all && readyz(p.addr) == http.StatusOK
	})
	t.Logf("NATS reachable again after %s (%d events waited at the simulator): shards ready and /readyz 200 %s later",
		back.Sub(cutAt).Round(time.Millisecond), behind, took.Round(time.Millisecond))
	time.Sleep(time.Second)
	stopFirehose()
	sessions := sim.Sessions()
	testkit.Eventually(t, 60*time.Second, "every event delivered", func() bool { return b.delivered(sessions) })
	events, copies := b.check(t, sessions)
	t.Logf("bot: %d events of %d sessions, every one under its own id, in order; %d copies", events, len(sessions), copies)
	if n := len(sim.GatewayStats().Identifies); n != ids0 {
		t.Errorf("%d identifies across the partition; want 0", n-ids0)
	}
}

// TestGatewayThroughTheLossOfANATSNode runs two dd gateway processes on a three-node JetStream cluster
// (stream, consumers and buckets with 3 replicas; each node a process of its own, built from this
// module: clustertest.ProcessCluster) under a firehose, and SIGKILLs the node that leads the event
// stream. Publishes in flight fail and the shards resume, delivery's consumers get new leaders: every
// event reaches the bot, in order per shard, under its own id, and no identify is spent.
func TestGatewayThroughTheLossOfANATSNode(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node NATS cluster and two dd processes: about 40 s")
	}
	const total = 8
	nodes := clustertest.ProcessCluster(t, 3)
	sim := startSim(t, 32, 16)
	b, botURL := newBot(t)
	env := gatewayEnv(sim, total, botURL,
		"DD_CLUSTER__NATS_URL="+clustertest.NodeURLs(nodes...), "DD_CLUSTER__REPLICAS=3", "DD_CLUSTER__LEASE_TTL=5s")
	ports := clustertest.FreePorts(t, 2)
	ps := []*ddProc{startDD(t, "gw-a", fmt.Sprintf("127.0.0.1:%d", ports[0]), env), startDD(t, "gw-b", fmt.Sprintf("127.0.0.1:%d", ports[1]), env)}
	took := waitSplit(t, 60*time.Second, "8 shards ready, 4/4", ps, total, 4)
	ids0 := len(sim.GatewayStats().Identifies)
	t.Logf("two processes on three NATS nodes: 8 shards ready 4/4 in %s, %d identifies", took.Round(time.Millisecond), ids0)

	stopFirehose := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 600})
	defer stopFirehose()
	time.Sleep(2 * time.Second)
	nc, err := natsgo.Connect(clustertest.NodeURLs(nodes...))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	str, err := js.Stream(ctx, "DD_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	si, err := str.Info(ctx)
	if err != nil || si.Cluster == nil || si.Cluster.Leader == "" {
		t.Fatalf("event stream cluster info: %+v, %v", si, err)
	}
	killed := false
	for _, n := range nodes {
		if n.Name() == si.Cluster.Leader {
			n.Kill()
			killed = true
		}
	}
	if !killed {
		t.Fatalf("event stream leader %q is none of the nodes", si.Cluster.Leader)
	}
	t.Logf("SIGKILLed nats node %s, leader of %s (replicas %d), mid-firehose", si.Cluster.Leader, si.Config.Name, si.Config.Replicas)
	time.Sleep(8 * time.Second)
	stopFirehose()
	testkit.Eventually(t, 60*time.Second, "8 shards ready", func() bool {
		_, all := readySplit(ps, total)
		return all
	})
	sessions := sim.Sessions()
	drained := testkit.Eventually(t, 90*time.Second, "every event delivered", func() bool { return b.delivered(sessions) })
	events, copies := b.check(t, sessions)
	t.Logf("bot: %d events of %d sessions delivered (%s after the firehose stopped), in order, each under its own id; %d copies",
		events, len(sessions), drained.Round(time.Millisecond), copies)
	if n := len(sim.GatewayStats().Identifies); n != ids0 {
		t.Errorf("%d identifies after the node loss; want 0", n-ids0)
	}
}

// TestDeliveryRate measures events per second from the simulator's firehose to the bot through one dd
// gateway process, in cluster mode (the NATS stream, a consumer per shard) and, for comparison, on one
// machine (the Badger queue), one event per POST and batches of 100. It asserts only that every event
// arrives; the rates are figures (run it without -race: the bot endpoint runs in the test process).
func TestDeliveryRate(t *testing.T) {
	if testing.Short() {
		t.Skip("four runs of 20,000 events")
	}
	const total, events = 4, 20000
	for _, mode := range []string{"cluster", "one machine"} {
		for _, batch := range []int{1, 100} {
			t.Run(fmt.Sprintf("%s/batch_max=%d", mode, batch), func(t *testing.T) {
				sim := startSim(t, 64, 16)
				b, botURL := newBotBatch(t, batch > 1)
				env := gatewayEnv(sim, total, botURL,
					"DD_EVENTS__BATCH_MAX="+strconv.Itoa(batch))
				if mode == "cluster" {
					env = append(env, "DD_CLUSTER__NATS_URL="+clustertest.Server(t).ClientURL(), "DD_CLUSTER__LEASE_TTL=3s")
				}
				p := startDD(t, "gw-a", fmt.Sprintf("127.0.0.1:%d", clustertest.FreePorts(t, 1)[0]), env)
				testkit.Eventually(t, 60*time.Second, "every shard connected and its first events delivered", func() bool {
					if p.Exited() {
						t.Fatalf("dd exited")
					}
					n := 0
					for _, s := range sim.Sessions() {
						if s.Connected {
							n++
						}
					}
					return n == total && b.delivered(sim.Sessions())
				})
				before := b.total()
				done := make(chan struct{})
				start := time.Now()
				sim.StartFirehose(discordsim.FirehoseOptions{MaxSpeed: true, Total: events, Done: done})
				<-done
				generated := time.Since(start)
				sessions := sim.Sessions()
				testkit.Eventually(t, 2*time.Minute, "every event delivered", func() bool { return b.delivered(sessions) })
				took := time.Since(start)
				_, copies := b.checkIDs(t, sessions, mode == "cluster")
				note := ""
				if raceEnabled {
					note = " (under -race: the simulator and the bot in this process are slowed; not a figure)"
				}
				t.Logf("%s, batch_max %d: %d events at the bot in %s: %.0f events/s%s (the simulator generated them in %s); %d copies",
					mode, batch, b.total()-before, took.Round(time.Millisecond), float64(b.total()-before)/took.Seconds(), note, generated.Round(time.Millisecond), copies)
			})
		}
	}
}

// TestStartupPacesIdentifiesAcrossProcesses starts three dd gateway processes together on 32 shards with
// max_concurrency 4 (Discord's 5 s window, the simulator enforcing it): the identify queue in the KV
// paces all three as one. No two identifies of one bucket within 5 s (the simulator would answer one
// with op 9), one identify per shard, and the span from the first to the last identify over its minimum
// ((32/4 - 1) x 5 s = 35 s) at most 1.05.
func TestStartupPacesIdentifiesAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("eight identify windows of 5 s: about 50 s")
	}
	const (
		total   = 32
		conc    = 4
		window  = 5 * time.Second
		minimum = (total/conc - 1) * window
	)
	nats := clustertest.Server(t)
	sim := startSim(t, 64, conc)
	_, botURL := newBot(t)
	env := []string{
		"DD_DISCORD__TOKEN=" + token, "DD_DISCORD__API_URL=" + sim.APIURL(), "DD_GATEWAY__TOTAL_SHARDS=" + strconv.Itoa(total),
		"DD_EVENTS__URLS=" + botURL, "DD_EVENTS__SECRET=" + eventsSecret,
		"DD_CLUSTER__NATS_URL=" + nats.ClientURL(), "DD_CLUSTER__LEASE_TTL=10s",
	}
	ports := clustertest.FreePorts(t, 3)
	var ps []*ddProc
	for i, name := range []string{"gw-a", "gw-b", "gw-c"} {
		ps = append(ps, startDD(t, name, fmt.Sprintf("127.0.0.1:%d", ports[i]), env))
	}
	took := waitSplit(t, minimum+60*time.Second, "32 shards ready", ps, total, 0)
	st := sim.GatewayStats()
	counts, _ := readySplit(ps, total)
	var first, last time.Time
	perShard := map[int]int{}
	byBucket := map[int][]time.Time{}
	for _, id := range st.Identifies {
		if id.Outcome != discordsim.IdentifyAccepted {
			t.Errorf("identify of shard %d: %s %s", id.Shard, id.Outcome, id.Reason)
		}
		perShard[id.Shard]++
		byBucket[id.Shard%conc] = append(byBucket[id.Shard%conc], id.At)
		if first.IsZero() || id.At.Before(first) {
			first = id.At
		}
		if id.At.After(last) {
			last = id.At
		}
	}
	for b, ats := range byBucket {
		sort.Slice(ats, func(i, j int) bool { return ats[i].Before(ats[j]) })
		for i := 1; i < len(ats); i++ {
			if gap := ats[i].Sub(ats[i-1]); gap < window {
				t.Errorf("bucket %d: two identifies %s apart, under Discord's %s", b, gap.Round(time.Millisecond), window)
			}
		}
	}
	span := last.Sub(first)
	t.Logf("three processes, 32 shards, max_concurrency 4: all ready %s after the start, split %v; %d identifies (%d shards identified), span %s, minimum %s, ratio %.3f; identify violations %d",
		took.Round(time.Millisecond), counts, len(st.Identifies), len(perShard), span.Round(time.Millisecond), minimum, span.Seconds()/minimum.Seconds(), st.IdentifyViolations)
	if st.IdentifyViolations != 0 {
		t.Errorf("%d identifies answered with op 9 (too early for their bucket)", st.IdentifyViolations)
	}
	if len(st.Identifies) != total || len(perShard) != total {
		t.Errorf("%d identifies for %d shards (%d shards identified); want one each", len(st.Identifies), total, len(perShard))
	}
	if r := span.Seconds() / minimum.Seconds(); r > 1.05 {
		t.Errorf("identify span %s is %.3f x the minimum %s; want at most 1.05", span, r, minimum)
	}
}
