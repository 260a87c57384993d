package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ddhq/dd/cluster/clustertest"
	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/sim/discordsim"
)

// The simulator's timings, scaled together: Discord's 5 s identify window and 41.25 s heartbeat become
// 200 ms and 1.65 s (heartbeat = 8.25 x window).
const (
	simWindow    = 200 * time.Millisecond
	simHeartbeat = simWindow * 33 / 4
)

func startGatewaySim(t *testing.T, guilds int) *discordsim.Server {
	t.Helper()
	sim := discordsim.New(discordsim.Config{Guilds: guilds, IdentifyWindow: simWindow, HeartbeatInterval: simHeartbeat})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

// gatewayProcess is one dd gateway process of cluster mode, as the wiring will build it: a Conn, the
// shared identify limiter, the event sink, a ShardOwner and a ShardRunner.
type gatewayProcess struct {
	name   string
	conn   *Conn
	sink   *EventSink
	owner  *ShardOwner
	runner *ShardRunner
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

type gatewayOpts struct {
	url      string
	replicas int
	total    int
	ttl      time.Duration
}

func startGatewayProcess(t *testing.T, sim *discordsim.Server, name string, o gatewayOpts) *gatewayProcess {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).With(zap.String("process", name))
	ctx := ctxFor(t, 30*time.Second)
	c, err := Connect(ctx, Options{URL: o.url, Instance: name, Replicas: o.replicas, Timeout: 5 * time.Second, Log: log})
	if err != nil {
		t.Fatalf("connect %s: %v", name, err)
	}
	t.Cleanup(c.Close)
	simCfg := sim.Config()
	limiter, err := NewIdentifyLimiter(ctx, c, IdentifyConfig{
		Limit:  identify.SessionStartLimit{Total: 1000, Remaining: 1000, ResetAfter: time.Hour, MaxConcurrency: simCfg.MaxConcurrency},
		Window: simCfg.IdentifyWindow, TurnTTL: 5 * time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := NewEventSink(ctx, c, EventSinkConfig{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	runner, err := NewShardRunner(RunnerConfig{
		Template: shard.Config{Token: simCfg.Tokens[0], GatewayURL: sim.GatewayURL(),
			Intents:  discord.IntentGuilds | discord.IntentGuildMessages | discord.IntentGuildMessageTyping | discord.IntentGuildMessageReactions,
			Identify: limiter, ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second},
		TotalShards: o.total, Sink: sink, Logger: log,
		OnFatal: func(id int, err error) { t.Errorf("%s: shard %d refused for good: %v", name, id, err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	owner, err := NewShardOwner(c, OwnerConfig{TotalShards: o.total, TTL: o.ttl, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	p := &gatewayProcess{name: name, conn: c, sink: sink, owner: owner, runner: runner, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- owner.Run(rctx, runner) }()
	t.Cleanup(p.stop)
	return p
}

// stop shuts the process down cleanly: shards handed over, leases released.
func (p *gatewayProcess) stop() {
	p.once.Do(func() {
		p.cancel()
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
		}
	})
}

// kill ends the process as SIGKILL would: its NATS connection closes without releasing anything, and
// its Discord connections drop without a close frame.
func (p *gatewayProcess) kill(sim *discordsim.Server, total int) {
	p.conn.Close()
	p.runner.mu.Lock()
	for id, rs := range p.runner.running {
		sim.DropShard(id, total)
		rs.cancel()
	}
	p.runner.mu.Unlock()
	p.stop()
}

// ready lists the shards this process runs that are READY (or RESUMED).
func (p *gatewayProcess) ready() []int {
	var ids []int
	for _, id := range p.runner.Running() {
		if sh := p.runner.Shard(id); sh != nil && sh.State() == shard.StateReady {
			ids = append(ids, id)
		}
	}
	return ids
}

// split reports how many ready shards each process runs, and whether every shard of total runs ready
// exactly once.
func split(ps []*gatewayProcess, total int) ([]int, bool) {
	var ready [][]int
	for _, p := range ps {
		ready = append(ready, p.ready())
	}
	return clustertest.Split(ready, total)
}

// settled waits until every session the simulator holds has its last sequence in the KV: every event it
// dispatched has been published by then.
func settled(t *testing.T, sim *discordsim.Server, store *SessionStore, total int, within time.Duration) {
	t.Helper()
	testkit.Eventually(t, within, "every shard's session in the KV at the simulator's last sequence", func() bool {
		for _, info := range sim.Sessions() {
			s, _, err := store.Load(context.Background(), info.Shard, total)
			if err != nil || s.ID != info.ID || s.Seq != info.Seq {
				return false
			}
		}
		return true
	})
}

// streamCheck reads the whole event stream and checks it against the simulator's sessions: every
// sequence 1..last of every session exactly once (a duplicate would have been dropped by Nats-Msg-Id),
// in order per session, each message carrying its shard and event name and the delivery envelope.
type streamReport struct {
	messages, sessions int
	outOfOrder         int
}

func checkStream(t *testing.T, c *Conn, sim *discordsim.Server, total int) streamReport {
	t.Helper()
	ctx := ctxFor(t, 60*time.Second)
	// Right after a NATS node's loss the JetStream API may answer "no responders" for a moment (its
	// meta leader elected anew, the client moving to another server): asked again until it answers.
	var str jetstream.Stream
	var info *jetstream.StreamInfo
	var err error
	var cons jetstream.Consumer
	testkit.Eventually(t, 30*time.Second, "the event stream's info and a consumer of it", func() bool {
		if str, err = c.JetStream().Stream(ctx, StreamName(c.Name())); err == nil {
			if info, err = str.Info(ctx); err == nil {
				cons, err = str.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
			}
		}
		return err == nil
	})
	want := map[string]shard.Session{}
	for _, s := range sim.Sessions() {
		want[s.ID] = shard.Session{ShardID: s.Shard, NumShards: s.NumShards, ID: s.ID, Seq: s.Seq}
	}
	got := map[string][]int64{}
	var problems []string
	n := uint64(0)
	for n < info.State.Msgs {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if errors.Is(err, nats.ErrNoResponders) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond) // the same moment as above
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			n++
			id := m.Headers().Get("Nats-Msg-Id")
			i := strings.LastIndexByte(id, '-')
			seq, err := strconv.ParseInt(id[i+1:], 10, 64)
			if i < 0 || err != nil {
				problems = append(problems, "bad id "+id)
				continue
			}
			sess := id[:i]
			got[sess] = append(got[sess], seq)
			if len(problems) < 10 {
				ws, ok := want[sess]
				var env struct {
					ShardID int `json:"shardId"`
					Payload struct {
						T string `json:"t"`
						S int64  `json:"s"`
					} `json:"payload"`
				}
				switch {
				case !ok:
					problems = append(problems, "event of an unknown session "+id)
				case json.Unmarshal(m.Data(), &env) != nil || env.ShardID != ws.ShardID || env.Payload.S != seq:
					problems = append(problems, fmt.Sprintf("%s: envelope %.100s", id, m.Data()))
				case m.Headers().Get(HeaderShard) != strconv.Itoa(ws.ShardID) || m.Headers().Get(HeaderEvent) != env.Payload.T ||
					m.Subject() != EventSubject(c.Name(), ws.ShardID, env.Payload.T):
					problems = append(problems, fmt.Sprintf("%s: subject %s, headers %v", id, m.Subject(), m.Headers()))
				}
			}
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	if len(problems) > 0 {
		t.Errorf("malformed messages: %v", problems)
	}
	r := streamReport{messages: int(n), sessions: len(got)}
	var lost []string
	for id, ws := range want {
		seqs := got[id]
		seen := map[int64]int{}
		for i, s := range seqs {
			seen[s]++
			if i > 0 && s < seqs[i-1] {
				r.outOfOrder++
			}
		}
		var missing []int64
		for s := int64(1); s <= ws.Seq; s++ {
			if seen[s] == 0 {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			lost = append(lost, fmt.Sprintf("shard %d: %d of %d missing (first %d)", ws.ShardID, len(missing), ws.Seq, missing[0]))
		}
		for s, k := range seen {
			if k > 1 {
				t.Errorf("shard %d: sequence %d stored %d times: a duplicate got past Nats-Msg-Id", ws.ShardID, s, k)
			}
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 {
		t.Errorf("events lost (dispatched by the simulator, absent from the stream): %v", lost)
	}
	var dispatched int64
	for _, ws := range want {
		dispatched += ws.Seq
	}
	if int64(n) != dispatched {
		t.Errorf("stream holds %d messages, the simulator dispatched %d distinct events", n, dispatched)
	}
	return r
}

func clustertestServer(t *testing.T) string { return clustertest.Server(t).ClientURL() }

func identifies(sim *discordsim.Server) int { return len(sim.GatewayStats().Identifies) }

// TestGatewayProcessesShareShardsAndSurviveAKill runs three gateway processes on one NATS server
// sharing 12 shards under a firehose. They split 4/4/4; one is killed (NATS connection closed without
// releasing, Discord connections dropped): within 2 x lease_ttl its shards are READY again on the other
// two, RESUMED, no identify spent; a new process joins and the shards rebalance to 4/4/4 by handover,
// still without an identify. At the end every event the simulator dispatched is in the stream once.
func TestGatewayProcessesShareShardsAndSurviveAKill(t *testing.T) {
	srv := clustertestServer(t)
	sim := startGatewaySim(t, 48)
	const total = 12
	const ttl = 3 * time.Second
	o := gatewayOpts{url: srv, replicas: 1, total: total, ttl: ttl}

	var ps []*gatewayProcess
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, name := range []string{"gw-a", "gw-b", "gw-c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := startGatewayProcess(t, sim, name, o)
			mu.Lock()
			ps = append(ps, p)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(ps, func(i, j int) bool { return ps[i].name < ps[j].name })
	took := testkit.Eventually(t, 30*time.Second, "12 shards ready, 4/4/4", func() bool {
		c, all := split(ps, total)
		return all && clustertest.Evenly(c, 4)
	})
	ids0 := identifies(sim)
	t.Logf("three processes: 12 shards ready, split 4/4/4, in %s with %d identifies", took.Round(time.Millisecond), ids0)
	if ids0 != total {
		t.Errorf("%d identifies for %d shards; want one each", ids0, total)
	}

	stopFirehose := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 600})
	defer stopFirehose()
	time.Sleep(2 * time.Second)

	victim, rest := ps[0], ps[1:]
	lost := victim.runner.Running()
	resumes0 := len(sim.GatewayStats().Resumes)
	killedAt := time.Now()
	victim.kill(sim, total)
	t.Logf("killed %s holding shards %v", victim.name, lost)
	took = testkit.Eventually(t, 4*ttl, "the dead process's shards ready on the others", func() bool {
		_, all := split(rest, total)
		return all
	})
	counts, _ := split(rest, total)
	t.Logf("its shards READY again on the others %s after the kill (lease_ttl %s; 2 x lease_ttl = %s), split %v",
		time.Since(killedAt).Round(time.Millisecond), ttl, 2*ttl, counts)
	if took > 2*ttl {
		t.Errorf("takeover took %s; want within 2 x lease_ttl = %s", took, 2*ttl)
	}
	if n := identifies(sim); n != ids0 {
		t.Errorf("%d identifies during the takeover; want 0", n-ids0)
	}
	if r := len(sim.GatewayStats().Resumes) - resumes0; r < len(lost) {
		t.Errorf("%d resumes for %d shards taken over", r, len(lost))
	}

	time.Sleep(time.Second)
	joinedAt := time.Now()
	ps = append(rest, startGatewayProcess(t, sim, "gw-d", o))
	took = testkit.Eventually(t, 8*ttl, "shards rebalanced 4/4/4", func() bool {
		c, all := split(ps, total)
		return all && clustertest.Evenly(c, 4)
	})
	t.Logf("a new process joined: rebalanced to 4/4/4 %s after it started", time.Since(joinedAt).Round(time.Millisecond))
	if n := identifies(sim); n != ids0 {
		t.Errorf("%d identifies during the rebalance; want 0 (handovers resume)", n-ids0)
	}
	time.Sleep(time.Second)
	stopFirehose()

	settled(t, sim, ps[0].sink.Sessions(), total, 15*time.Second)
	r := checkStream(t, ps[0].conn, sim, total)
	var dups int64
	for _, p := range ps {
		dups += p.sink.Duplicates()
	}
	t.Logf("stream: %d events of %d sessions, every sequence once, %d out of order; replayed copies dropped by Nats-Msg-Id: %d (seen by the surviving processes)",
		r.messages, r.sessions, r.outOfOrder, dups)
	if r.outOfOrder > 0 {
		t.Errorf("%d events out of order in the stream", r.outOfOrder)
	}
	if st := sim.GatewayStats(); st.Identifies != nil && len(st.Identifies) != total {
		t.Errorf("%d identifies in all; want %d", len(st.Identifies), total)
	}
}

// TestEventSinkDropsReplays publishes a batch, then a replay that overlaps it from the same process (a
// resume) and from another (a takeover): the stream keeps each event once, in order, and counts the
// copies it dropped. The session in the KV follows the stream, and a stale writer's session write is
// refused while the shard's holder writes over it.
func TestEventSinkDropsReplays(t *testing.T) {
	url := clustertestServer(t)
	ctx := ctxFor(t, 30*time.Second)
	ca, cb := connect(t, url, "a", 1), connect(t, url, "b", 1)
	sa, err := NewEventSink(ctx, ca, EventSinkConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := NewEventSink(ctx, cb, EventSinkConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch := func(from, to int64) []shard.Event {
		var evs []shard.Event
		for s := from; s <= to; s++ {
			evs = append(evs, shard.Event{Seq: s, Type: "MESSAGE_CREATE", Raw: json.RawMessage(fmt.Sprintf(`{"op":0,"t":"MESSAGE_CREATE","s":%d,"d":{}}`, s)),
				Dropped: s == 7})
		}
		return evs
	}
	sess := func(seq int64) shard.Session {
		return shard.Session{ShardID: 3, NumShards: 4, ID: "s1", ResumeURL: "wss://resume", Seq: seq}
	}
	if err := sa.Dispatch(ctx, batch(1, 10), sess(10)); err != nil {
		t.Fatal(err)
	}
	if err := sa.Dispatch(ctx, batch(6, 12), sess(12)); err != nil { // a resume from 5 replays 6..
		t.Fatal(err)
	}
	if _, _, err := sb.Sessions().Load(ctx, 3, 4); err != nil { // b takes the shard over
		t.Fatal(err)
	}
	if err := sb.Dispatch(ctx, batch(9, 15), sess(15)); err != nil {
		t.Fatal(err)
	}
	info, err := ca.JetStream().Stream(ctx, StreamName("dd"))
	if err != nil {
		t.Fatal(err)
	}
	si, _ := info.Info(ctx)
	if si.State.Msgs != 14 { // 1..15 but the dropped 7
		t.Errorf("stream holds %d events; want 14 (1..15 without the dropped 7)", si.State.Msgs)
	}
	if d := sa.Duplicates() + sb.Duplicates(); d != 4+4 {
		t.Errorf("%d copies dropped; want 8 (6, 8-10 replayed by a, 9-12 by b; the dropped 7 is never sent)", d)
	}
	// a's write, delivered late, after b wrote: refused (a no longer holds the shard).
	if err := sa.Sessions().Save(ctx, sess(11)); !errors.Is(err, ErrSessionMoved) {
		t.Errorf("a stale writer's session write: %v; want ErrSessionMoved", err)
	}
	if si.Config.Duplicates != 2*time.Minute {
		t.Errorf("duplicate window %s; want 2m", si.Config.Duplicates)
	}
	m, err := info.GetLastMsgForSubject(ctx, "dd.events.3.MESSAGE_CREATE")
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Nats-Msg-Id") != "s1-15" || string(m.Data) != `{"shardId":3,"payload":{"op":0,"t":"MESSAGE_CREATE","s":15,"d":{}}}` {
		t.Errorf("last message: id %q, body %s", m.Header.Get("Nats-Msg-Id"), m.Data)
	}
	got, ok, err := NewSessionStore(ca).Load(ctx, 3, 4)
	if err != nil || !ok || got != sess(15) {
		t.Errorf("session in the KV: %+v %v %v; want seq 15", got, ok, err)
	}
	// The holder's write goes over a stale one.
	stale := sess(11)
	ca2 := NewSessionStore(connect(t, url, "a2", 1))
	if _, _, err := ca2.Load(ctx, 3, 4); err != nil {
		t.Fatal(err)
	}
	if err := ca2.Save(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if err := sb.Sessions().save(ctx, sess(16), func() bool { return true }); err != nil {
		t.Errorf("the holder's write after a stale one: %v", err)
	}
	if got, _, _ := sa.Sessions().Load(ctx, 3, 4); got.Seq != 16 {
		t.Errorf("session seq %d; want 16", got.Seq)
	}
}

// TestGatewaySurvivesLossOfANATSNode runs two gateway processes on a three-node JetStream cluster
// (stream and buckets with 3 replicas) under a firehose and shuts down the server leading the event
// stream: publishes in flight fail and the shards resume, leases may change hands, and at the end no
// event is lost and none stored twice, and no identify was spent after the first ones.
func TestGatewaySurvivesLossOfANATSNode(t *testing.T) {
	servers := clustertest.Cluster(t, 3)
	urls := clustertest.URLs(servers...)
	sim := startGatewaySim(t, 32)
	const total = 8
	o := gatewayOpts{url: urls, replicas: 3, total: total, ttl: 5 * time.Second}
	ps := []*gatewayProcess{startGatewayProcess(t, sim, "gw-a", o), startGatewayProcess(t, sim, "gw-b", o)}
	took := testkit.Eventually(t, 30*time.Second, "8 shards ready, 4/4", func() bool {
		c, all := split(ps, total)
		return all && clustertest.Evenly(c, 4)
	})
	ids0 := identifies(sim)
	t.Logf("two processes on three NATS nodes: 8 shards ready in %s, %d identifies", took.Round(time.Millisecond), ids0)

	stopFirehose := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 600})
	defer stopFirehose()
	time.Sleep(2 * time.Second)
	ctx := ctxFor(t, 60*time.Second)
	str, err := ps[0].conn.JetStream().Stream(ctx, StreamName("dd"))
	if err != nil {
		t.Fatal(err)
	}
	resumes0 := len(sim.GatewayStats().Resumes)
	clustertest.ShutdownLeader(ctx, t, servers, str)
	time.Sleep(8 * time.Second)
	stopFirehose()
	took = testkit.Eventually(t, 30*time.Second, "8 shards ready again", func() bool {
		_, all := split(ps, total)
		return all
	})
	counts, _ := split(ps, total)
	settled(t, sim, ps[0].sink.Sessions(), total, 30*time.Second)
	r := checkStream(t, ps[0].conn, sim, total)
	t.Logf("after the node loss: split %v, %d resumes; stream: %d events of %d sessions, every sequence once (%d out of order); copies dropped by Nats-Msg-Id: %d",
		counts, len(sim.GatewayStats().Resumes)-resumes0, r.messages, r.sessions, r.outOfOrder, ps[0].sink.Duplicates()+ps[1].sink.Duplicates())
	if n := identifies(sim); n != ids0 {
		t.Errorf("%d identifies after the node loss; want 0", n-ids0)
	}
}

// TestGatewayStopsReadingWhileNATSIsUnreachable cuts a gateway process off from NATS (a partition:
// silence, no reset) under a firehose. Its batches are not acknowledged, so it stops reading; its leases
// end and it stops its shards (closed resumably). When NATS is reachable again it takes them back and
// resumes them: no event lost, no identify spent.
func TestGatewayStopsReadingWhileNATSIsUnreachable(t *testing.T) {
	srv := clustertest.Server(t)
	proxy := clustertest.NewProxy(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	sim := startGatewaySim(t, 16)
	const total = 4
	const ttl = 3 * time.Second
	p := startGatewayProcess(t, sim, "gw-a", gatewayOpts{url: proxy.URL(), replicas: 1, total: total, ttl: ttl})
	checker := connect(t, srv.ClientURL(), "checker", 1)
	testkit.Eventually(t, 30*time.Second, "4 shards ready", func() bool { return len(p.ready()) == total })
	ids0 := identifies(sim)

	stopFirehose := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 400})
	defer stopFirehose()
	time.Sleep(2 * time.Second)
	ctx := ctxFor(t, 90*time.Second)
	str, err := checker.JetStream().Stream(ctx, StreamName("dd"))
	if err != nil {
		t.Fatal(err)
	}
	blockedAt := time.Now()
	proxy.Block()
	disconnected := testkit.Eventually(t, 2*ttl, "every shard disconnected from the simulator", func() bool {
		for _, s := range sim.Sessions() {
			if s.Connected {
				return false
			}
		}
		return true
	})
	took := testkit.Eventually(t, 2*ttl+5*time.Second, "every shard stopped", func() bool { return len(p.runner.Running()) == 0 })
	si, _ := str.Info(ctx)
	before := si.State.Msgs
	t.Logf("cut off from NATS: every shard's Discord connection closed %s later, shards stopped (their last batch given up) %s later (lease_ttl %s, ack timeout 5s); stream at %d events",
		disconnected.Round(time.Millisecond), (disconnected + took).Round(time.Millisecond), ttl, before)
	time.Sleep(3 * time.Second)
	si, _ = str.Info(ctx)
	if si.State.Msgs != before {
		t.Errorf("the stream grew from %d to %d while the only gateway was cut off", before, si.State.Msgs)
	}
	var behind int64
	for _, s := range sim.Sessions() {
		behind += s.Seq - s.SentSeq
	}
	t.Logf("%s after the cut: events waiting at the simulator for the resume: %d", time.Since(blockedAt).Round(time.Millisecond), behind)

	unblockedAt := time.Now()
	proxy.Unblock()
	testkit.Eventually(t, 40*time.Second, "4 shards ready again", func() bool { return len(p.ready()) == total })
	t.Logf("NATS reachable again: 4 shards ready %s later", time.Since(unblockedAt).Round(time.Millisecond))
	time.Sleep(time.Second)
	stopFirehose()
	settled(t, sim, NewSessionStore(checker), total, 20*time.Second)
	r := checkStream(t, checker, sim, total)
	t.Logf("stream: %d events of %d sessions, every sequence once, %d out of order", r.messages, r.sessions, r.outOfOrder)
	if n := identifies(sim); n != ids0 {
		t.Errorf("%d identifies across the partition; want 0", n-ids0)
	}
	if r.outOfOrder > 0 {
		t.Errorf("%d events out of order in the stream", r.outOfOrder)
	}
}

// fakeHost records what an owner asks of it.
type fakeHost struct {
	mu      sync.Mutex
	running map[int]bool
	log     []string
}

func (h *fakeHost) StartShard(id int, lease *Lease) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.running[id] {
		return fmt.Errorf("shard %d started twice", id)
	}
	h.running[id] = true
	h.log = append(h.log, fmt.Sprintf("start %d", id))
	go func() {
		<-lease.Done()
		h.mu.Lock()
		if h.running[id] && !errors.Is(lease.Err(), ErrLeaseReleased) {
			h.running[id] = false
			h.log = append(h.log, fmt.Sprintf("lost %d", id))
		}
		h.mu.Unlock()
	}()
	return nil
}

func (h *fakeHost) StopShard(id int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running[id] = false
	h.log = append(h.log, fmt.Sprintf("stop %d", id))
}

func (h *fakeHost) ids() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []int
	for id, on := range h.running {
		if on {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	return ids
}

// TestShardOwnerFixedSets gives two processes fixed shard sets (first_shard/last_shard) that overlap on
// shard 1: each holds what it can of its set, the overlap goes to one of them, and when that one leaves
// (handing its shards over: stopped, then released) the other takes shard 1 at once, not after a TTL.
func TestShardOwnerFixedSets(t *testing.T) {
	url := clustertestServer(t)
	const ttl = 2 * time.Second
	ca, cb := connect(t, url, "a", 1), connect(t, url, "b", 1)
	oa, err := NewShardOwner(ca, OwnerConfig{TotalShards: 4, ShardIDs: []int{0, 1}, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	ob, err := NewShardOwner(cb, OwnerConfig{TotalShards: 4, ShardIDs: []int{1, 2}, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	ha, hb := &fakeHost{running: map[int]bool{}}, &fakeHost{running: map[int]bool{}}
	actx, acancel := context.WithCancel(context.Background())
	aDone := make(chan error, 1)
	go func() { aDone <- oa.Run(actx, ha) }()
	testkit.Eventually(t, 5*time.Second, "a holds 0 and 1", func() bool { return fmt.Sprint(ha.ids()) == "[0 1]" })
	bctx, bcancel := context.WithCancel(context.Background())
	defer bcancel()
	go func() { _ = ob.Run(bctx, hb) }()
	testkit.Eventually(t, 5*time.Second, "b holds 2", func() bool { return fmt.Sprint(hb.ids()) == "[2]" })
	time.Sleep(ttl)
	if got := fmt.Sprint(hb.ids()); got != "[2]" {
		t.Errorf("b runs %s while a holds shard 1; want [2]", got)
	}
	if got := fmt.Sprint(oa.Owners()); got != "map[0:a 1:a 2:b 3:]" {
		t.Errorf("a sees owners %s", got)
	}
	acancel()
	<-aDone
	took := testkit.Eventually(t, ttl, "b takes shard 1 once a leaves", func() bool { return fmt.Sprint(hb.ids()) == "[1 2]" })
	t.Logf("a left (%v); b took shard 1 %s later (lease_ttl %s)", ha.log, took.Round(time.Millisecond), ttl)
	if fmt.Sprint(ha.log) != "[start 0 start 1 stop 0 stop 1]" && fmt.Sprint(ha.log) != "[start 0 start 1 stop 1 stop 0]" {
		t.Errorf("a's host was asked %v", ha.log)
	}
}
