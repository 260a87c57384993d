package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/discordsim"
	"github.com/ddhq/dd/store"
)

// memSink records events per shard and checks, as they arrive, that every session's sequence is
// contiguous: a gap is a lost event.
type memSink struct {
	mu       sync.Mutex
	events   map[int][]Event
	lastSeq  map[int]int64
	sessions map[int]Session
	gaps     []string
	failAt   atomic.Int64 // fail the batch containing this seq once (0: never)
	store    *SessionStore
}

func newMemSink() *memSink {
	return &memSink{events: map[int][]Event{}, lastSeq: map[int]int64{}, sessions: map[int]Session{}}
}

func (m *memSink) Dispatch(ctx context.Context, evs []Event, sess Session) error {
	if f := m.failAt.Load(); f != 0 && evs[0].Seq <= f && f <= evs[len(evs)-1].Seq {
		m.failAt.Store(0)
		return errors.New("disk full (simulated)")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	id := sess.ShardID
	for _, e := range evs {
		if e.Dropped {
			m.lastSeq[id] = e.Seq
			continue
		}
		last := m.lastSeq[id]
		switch {
		case e.Type == "READY" && e.Seq <= 1: // a new session (numbered from 0 or 1)
		case e.Seq <= last:
			continue // a replayed duplicate: allowed, dropped here
		case e.Seq != last+1:
			m.gaps = append(m.gaps, fmt.Sprintf("shard %d: seq %d after %d", id, e.Seq, last))
		}
		m.lastSeq[id] = e.Seq
		m.events[id] = append(m.events[id], e)
	}
	m.sessions[id] = sess
	if m.store != nil {
		return m.store.Save(sess)
	}
	return nil
}

func (m *memSink) count(shard int, typ string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, e := range m.events[shard] {
		if typ == "" || e.Type == typ {
			n++
		}
	}
	return n
}

func (m *memSink) last(shard int) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastSeq[shard]
}

func (m *memSink) checkNoGaps(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.gaps) > 0 {
		t.Fatalf("events lost: %v", m.gaps)
	}
}

func startSim(t *testing.T, cfg discordsim.Config) *discordsim.Server {
	t.Helper()
	if cfg.IdentifyWindow == 0 {
		cfg.IdentifyWindow = 100 * time.Millisecond
	}
	sim := discordsim.New(cfg)
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

type harness struct {
	sim    *discordsim.Server
	sink   *memSink
	mgr    *Manager
	cancel context.CancelFunc
	done   chan error
}

func startShards(t *testing.T, sim *discordsim.Server, total int, ids []int, mod func(*ManagerConfig)) *harness {
	t.Helper()
	cfg := sim.Config()
	sink := newMemSink()
	mc := ManagerConfig{
		TotalShards: total, ShardIDs: ids,
		Template: Config{
			Token: cfg.Tokens[0], Intents: discord.IntentGuilds | discord.IntentGuildMessages, GatewayURL: sim.GatewayURL(),
			Identify: identify.NewLocal(identify.SessionStartLimit{Total: 1000, Remaining: 1000, ResetAfter: time.Hour,
				MaxConcurrency: cfg.MaxConcurrency}, cfg.IdentifyWindow, 20*time.Millisecond, nil),
			Sink: sink, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		},
	}
	if mod != nil {
		mod(&mc)
	}
	if s, ok := mc.Template.Sink.(*memSink); ok {
		sink = s
	}
	m, err := NewManager(mc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{sim: sim, sink: sink, mgr: m, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- m.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

func (h *harness) stop(t *testing.T) error {
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("manager did not stop")
		return nil
	}
}

// typingIntents adds what TYPING_START needs: the simulator, like Discord, sends events only to sessions
// whose intents ask for them.
func typingIntents(c *ManagerConfig) { c.Template.Intents |= discord.IntentGuildMessageTyping }

func typing(g discordsim.Guild, i int) map[string]any {
	return map[string]any{"channel_id": fmt.Sprint(g.Channels[0]), "guild_id": fmt.Sprint(g.ID), "user_id": "5", "timestamp": i}
}

func guildsOn(sim *discordsim.Server, shard, num int) int {
	n := 0
	for _, g := range sim.Guilds() {
		if discordsim.ShardFor(g.ID, num) == shard && !g.Unavailable {
			n++
		}
	}
	return n
}

func TestShardsGetReadyAndTheirGuildsWithEachCompression(t *testing.T) {
	for _, compress := range []string{CompressZstd, CompressZlib, CompressNone} {
		t.Run(compress, func(t *testing.T) {
			sim := startSim(t, discordsim.Config{Guilds: 30})
			h := startShards(t, sim, 3, []int{0, 1, 2}, func(c *ManagerConfig) { c.Template.Compress = compress })
			for id := 0; id < 3; id++ {
				want := guildsOn(sim, id, 3)
				testkit.Eventually(t, 5*time.Second, fmt.Sprintf("shard %d's %d guilds", id, want), func() bool {
					return h.sink.count(id, "GUILD_CREATE") == want && h.sink.count(id, "READY") == 1
				})
				if st := h.mgr.Shard(id).State(); st != StateReady {
					t.Errorf("shard %d state %s, want ready", id, st)
				}
			}
			// Many events, large and small, through one compression context.
			g := sim.Guilds()[0]
			shard := discordsim.ShardFor(g.ID, 3)
			before := h.sink.count(shard, "")
			for i := 0; i < 300; i++ {
				sim.Dispatch(g.ID, "MESSAGE_CREATE", map[string]any{"id": fmt.Sprint(1000 + i), "channel_id": fmt.Sprint(g.Channels[0]),
					"guild_id": fmt.Sprint(g.ID), "content": fmt.Sprintf("message %d %0*d", i, i*10, 0),
					"author": map[string]any{"id": "1", "username": "u"}})
			}
			// A payload past the decoder's reset size, then more: the stream must carry on.
			huge := strings.Repeat("large payload ", 20000)
			sim.Dispatch(g.ID, "MESSAGE_CREATE", map[string]any{"id": "99999", "channel_id": fmt.Sprint(g.Channels[0]),
				"guild_id": fmt.Sprint(g.ID), "nonce": huge, "author": map[string]any{"id": "1", "username": "u"}})
			for i := 0; i < 20; i++ {
				sim.Dispatch(g.ID, "MESSAGE_CREATE", map[string]any{"id": fmt.Sprint(5000 + i), "channel_id": fmt.Sprint(g.Channels[0]),
					"guild_id": fmt.Sprint(g.ID), "content": "after", "author": map[string]any{"id": "1", "username": "u"}})
			}
			testkit.Eventually(t, 5*time.Second, "321 messages", func() bool { return h.sink.count(shard, "") == before+321 })
			h.sink.mu.Lock()
			if got := len(h.sink.events[shard][before+300].Raw); got < len(huge) {
				t.Errorf("the large payload arrived with %d bytes", got)
			}
			h.sink.mu.Unlock()
			h.sink.checkNoGaps(t)
			if v := sim.GatewayStats().IdentifyViolations; v != 0 {
				t.Fatalf("identify violations: %d", v)
			}
		})
	}
}

// Connections dropped under a firehose are resumed on resume_gateway_url and lose nothing.
func TestDroppedConnectionsResumeAndLoseNothing(t *testing.T) {
	sim := startSim(t, discordsim.Config{Guilds: 8})
	h := startShards(t, sim, 2, []int{0, 1}, nil)
	testkit.Eventually(t, 5*time.Second, "both shards ready", func() bool {
		return h.mgr.Shard(0).State() == StateReady && h.mgr.Shard(1).State() == StateReady
	})
	stop := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 3000})
	for i := 0; i < 4; i++ {
		time.Sleep(150 * time.Millisecond)
		if n := sim.DropShard(i%2, 2); n != 1 {
			t.Fatalf("drop %d touched %d sessions", i, n)
		}
	}
	time.Sleep(150 * time.Millisecond)
	stop()
	for id := 0; id < 2; id++ {
		sess := sim.ShardSessionIDs(id, 2)
		if len(sess) != 1 {
			t.Fatalf("shard %d has %d sessions", id, len(sess))
		}
		testkit.Eventually(t, 5*time.Second, "every event of shard "+fmt.Sprint(id), func() bool {
			for _, info := range sim.Sessions() {
				if info.ID == sess[0] {
					return info.Connected && h.sink.last(id) == info.Seq
				}
			}
			return false
		})
	}
	h.sink.checkNoGaps(t)
	st := sim.GatewayStats()
	if len(st.Identifies) != 2 {
		t.Errorf("identifies = %d, want 2 (resumes must not identify)", len(st.Identifies))
	}
	ok := 0
	for _, r := range st.Resumes {
		if r.OK && r.Replayed >= 0 {
			ok++
		}
	}
	if ok != 4 {
		t.Errorf("successful resumes = %d, want 4: %+v", ok, st.Resumes)
	}
}

func TestReconnectAndInvalidSessionAreHandledAsDiscordSays(t *testing.T) {
	sim := startSim(t, discordsim.Config{Guilds: 4})
	h := startShards(t, sim, 1, []int{0}, typingIntents)
	ready := func() bool { return h.mgr.Shard(0).State() == StateReady }
	testkit.Eventually(t, 5*time.Second, "ready", ready)
	id := sim.ShardSessionIDs(0, 1)[0]
	dispatchN := func(n int) {
		g := sim.Guilds()[0]
		for i := 0; i < n; i++ {
			sim.Dispatch(g.ID, "TYPING_START", typing(g, 1))
		}
	}

	// op 7: resume.
	sim.ReconnectSession(id)
	dispatchN(20)
	testkit.Eventually(t, 5*time.Second, "resume after op 7", func() bool { return len(sim.GatewayStats().Resumes) == 1 && ready() })
	// op 9 d:true: resume.
	sim.InvalidateSession(id, true)
	dispatchN(20)
	testkit.Eventually(t, 5*time.Second, "resume after op 9 true", func() bool { return len(sim.GatewayStats().Resumes) == 2 && ready() })
	// op 9 d:false: a new session.
	sim.InvalidateSession(id, false)
	testkit.Eventually(t, 10*time.Second, "identify after op 9 false", func() bool {
		ids := sim.ShardSessionIDs(0, 1)
		return len(ids) == 1 && ids[0] != id && ready()
	})
	if n := len(sim.GatewayStats().Identifies); n != 2 {
		t.Errorf("identifies = %d, want 2", n)
	}
	h.sink.checkNoGaps(t)
	if got := h.sink.count(0, "TYPING_START"); got != 40 {
		t.Errorf("typing events = %d, want 40", got)
	}
}

func TestZombieConnectionIsDroppedAndResumed(t *testing.T) {
	sim := startSim(t, discordsim.Config{Guilds: 2, HeartbeatInterval: 150 * time.Millisecond})
	h := startShards(t, sim, 1, []int{0}, nil)
	testkit.Eventually(t, 5*time.Second, "ready", func() bool { return h.mgr.Shard(0).State() == StateReady })
	testkit.Eventually(t, 5*time.Second, "a heartbeat round trip", func() bool { return h.mgr.Shard(0).RTT() > 0 })
	id := sim.ShardSessionIDs(0, 1)[0]
	sim.SetHeartbeatAck(id, false)
	testkit.Eventually(t, 5*time.Second, "resume after zombie", func() bool {
		for _, r := range sim.GatewayStats().Resumes {
			if r.OK && r.SessionID == id {
				return true
			}
		}
		return false
	})
	if st := sim.GatewayStats(); st.HeartbeatTimeouts != 0 || len(st.Identifies) != 1 {
		t.Errorf("heartbeat timeouts %d (dd should notice first), identifies %d (want 1)", st.HeartbeatTimeouts, len(st.Identifies))
	}
}

func TestFatalCloseCodesStopTheShardWithAHint(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*ManagerConfig)
		code int
	}{
		{"bad token", func(c *ManagerConfig) { c.Template.Token = "wrong" }, 4004},
		{"disallowed intents", func(c *ManagerConfig) { c.Template.Intents |= discord.IntentMessageContent }, 4014},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sim := startSim(t, discordsim.Config{Guilds: 2})
			h := startShards(t, sim, 1, []int{0}, c.mod)
			var err error
			select {
			case err = <-h.done:
				h.done <- err
			case <-time.After(5 * time.Second):
				t.Fatal("manager kept running after a fatal close")
			}
			var fe *FatalError
			if !errors.As(err, &fe) || fe.Code != c.code || fe.Hint == "" {
				t.Fatalf("want FatalError %d with a hint, got %v", c.code, err)
			}
			if n := len(sim.GatewayStats().Identifies); n != 1 {
				t.Errorf("identified %d times; a fatal code must not be retried", n)
			}
		})
	}
}

func TestIdentifiesArePacedPerConcurrencyBucket(t *testing.T) {
	const window = 250 * time.Millisecond
	sim := startSim(t, discordsim.Config{Guilds: 16, MaxConcurrency: 2, IdentifyWindow: window})
	start := time.Now()
	h := startShards(t, sim, 6, []int{0, 1, 2, 3, 4, 5}, nil)
	testkit.Eventually(t, 10*time.Second, "six shards ready", func() bool {
		for _, s := range h.mgr.Shards() {
			if s.State() != StateReady {
				return false
			}
		}
		return true
	})
	elapsed := time.Since(start)
	st := sim.GatewayStats()
	if st.IdentifyViolations != 0 || len(st.Identifies) != 6 {
		t.Fatalf("violations %d, identifies %d (want 0 and 6): %+v", st.IdentifyViolations, len(st.Identifies), st.Identifies)
	}
	// 6 shards in 2 buckets: 3 rounds, the last starting 2 windows after the first.
	if elapsed < 2*window {
		t.Errorf("6 shards ready in %s: faster than the identify limit allows", elapsed)
	}
	if elapsed > 3*window+time.Second {
		t.Errorf("6 shards took %s: far slower than 3 identify windows", elapsed)
	}
}

// A clean stop closes resumably; a new manager on the same store resumes without identifying.
func TestRestartResumesStoredSessions(t *testing.T) {
	sim := startSim(t, discordsim.Config{Guilds: 6})
	st, err := store.Open(store.Options{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sessions := NewSessionStore(st)
	sink := newMemSink()
	sink.store = sessions
	withStore := func(c *ManagerConfig) { c.Template.Sink = sink; c.Sessions = sessions; typingIntents(c) }
	h := startShards(t, sim, 2, []int{0, 1}, withStore)
	testkit.Eventually(t, 5*time.Second, "ready", func() bool { return h.mgr.Shard(1).State() == StateReady && h.mgr.Shard(0).State() == StateReady })
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Second, "two resumable client closes (4000) at the simulator", func() bool {
		return sim.GatewayStats().CloseCodesReceived[discord.ResumableCloseCode] == 2
	})
	g := sim.Guilds()[0]
	sim.Dispatch(g.ID, "TYPING_START", typing(g, 1))

	h2 := startShards(t, sim, 2, []int{0, 1}, withStore)
	testkit.Eventually(t, 5*time.Second, "resumed", func() bool { return h2.mgr.Shard(1).State() == StateReady && h2.mgr.Shard(0).State() == StateReady })
	stats := sim.GatewayStats()
	if len(stats.Identifies) != 2 || len(stats.Resumes) != 2 {
		t.Fatalf("after restart: %d identifies (want 2 in all), %d resumes (want 2)", len(stats.Identifies), len(stats.Resumes))
	}
	testkit.Eventually(t, 5*time.Second, "the event sent while down", func() bool {
		return sink.count(discordsim.ShardFor(g.ID, 2), "TYPING_START") == 1
	})
	sink.checkNoGaps(t)
}

// When events cannot be persisted, the shard resumes from the last durable sequence: Discord replays.
func TestSinkFailureResumesFromLastDurableSequence(t *testing.T) {
	sim := startSim(t, discordsim.Config{Guilds: 2})
	h := startShards(t, sim, 1, []int{0}, typingIntents)
	testkit.Eventually(t, 5*time.Second, "ready", func() bool { return h.mgr.Shard(0).State() == StateReady })
	h.sink.failAt.Store(h.sink.last(0) + 5)
	g := sim.Guilds()[0]
	for i := 0; i < 50; i++ {
		sim.Dispatch(g.ID, "TYPING_START", typing(g, i))
	}
	testkit.Eventually(t, 5*time.Second, "all 50 events after the failure", func() bool { return h.sink.count(0, "TYPING_START") == 50 })
	h.sink.checkNoGaps(t)
	if r := sim.GatewayStats().Resumes; len(r) != 1 || !r[0].OK {
		t.Fatalf("want one successful resume after the failed persist, got %+v", r)
	}
}

func TestCommandsKeepTheSendLimitAndSizeLimit(t *testing.T) {
	sim := startSim(t, discordsim.Config{Guilds: 2, SendLimit: 20, SendWindow: time.Second})
	h := startShards(t, sim, 1, []int{0}, func(c *ManagerConfig) {
		c.Template.SendLimit, c.Template.SendWindow, c.Template.SendReserve = 20, time.Second, 3
	})
	testkit.Eventually(t, 5*time.Second, "ready", func() bool { return h.mgr.Shard(0).State() == StateReady })
	sh := h.mgr.Shard(0)
	big := json.RawMessage(fmt.Sprintf(`{"op":3,"d":{"status":"online","afk":false,"since":null,"activities":[{"name":"%0*d","type":0}]}}`, 4100, 0))
	if err := sh.SendRaw(context.Background(), big); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("oversized command: %v, want ErrPayloadTooLarge", err)
	}
	start := time.Now()
	for i := 0; i < 40; i++ {
		if err := sh.Send(context.Background(), discord.OpPresenceUpdate, map[string]any{"status": "online", "afk": false, "since": nil, "activities": []any{}}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if time.Since(start) < time.Second {
		t.Errorf("40 commands at 17 per second went out in %s", time.Since(start))
	}
	time.Sleep(200 * time.Millisecond)
	st := sim.GatewayStats()
	if st.RateLimitCloses != 0 || st.DecodeErrorCloses != 0 || len(st.Resumes) != 0 {
		t.Fatalf("4008 closes %d, 4002 closes %d, resumes %d: want none", st.RateLimitCloses, st.DecodeErrorCloses, len(st.Resumes))
	}
}

// identifySpan is the time from the first to the last accepted IDENTIFY.
func identifySpan(st discordsim.GatewayStats) time.Duration {
	var first, last time.Time
	for _, r := range st.Identifies {
		if r.Outcome != discordsim.IdentifyAccepted {
			continue
		}
		if first.IsZero() || r.At.Before(first) {
			first = r.At
		}
		if r.At.After(last) {
			last = r.At
		}
	}
	return last.Sub(first)
}

// On Discord a shard may wait minutes for its identify turn (1,000 shards, max_concurrency 16: 63 rounds
// of 5 s) and lives through several 41.25 s heartbeat intervals meanwhile. Scaled down with Discord's
// proportions kept (heartbeat = 8.25 identify windows), 40 shards in 2 buckets make 20 rounds, so the last
// shards wait more than two heartbeat intervals (a connection that went unread that long is a zombie). Each shard must open one connection, spend one identify,
// and the identifies must follow each other as closely as the window allows.
func TestShardsWaitingLongerThanAHeartbeatForTheirTurnStartOnTime(t *testing.T) {
	const (
		window = 300 * time.Millisecond
		shards = 40
		conc   = 2
	)
	heartbeat := window * 33 / 4 // Discord: 41.25 s / 5 s
	sim := startSim(t, discordsim.Config{Guilds: 2 * shards, MaxConcurrency: conc, IdentifyWindow: window, HeartbeatInterval: heartbeat})
	ids := make([]int, shards)
	for i := range ids {
		ids[i] = i
	}
	h := startShards(t, sim, shards, ids, nil)
	testkit.Eventually(t, 30*time.Second, "every shard ready", func() bool { return h.mgr.Ready() })
	testkit.Eventually(t, 10*time.Second, "every guild", func() bool {
		n := 0
		for id := range shards {
			n += h.sink.count(id, "GUILD_CREATE")
		}
		return n == 2*shards
	})
	st := sim.GatewayStats()
	if st.IdentifyViolations != 0 || len(st.Identifies) != shards {
		t.Fatalf("identifies %d, violations %d; want %d and 0: %+v", len(st.Identifies), st.IdentifyViolations, shards, st.Identifies)
	}
	if st.Connections != shards || st.HeartbeatTimeouts != 0 {
		t.Fatalf("%d connections and %d heartbeat timeouts for %d shards; want one connection a shard", st.Connections, st.HeartbeatTimeouts, shards)
	}
	minimum := (shards/conc - 1) * window
	span := identifySpan(st)
	t.Logf("identify span %s, minimum %s: ratio %.3f", span, minimum, float64(span)/float64(minimum))
	if float64(span)/float64(minimum) > 1.05 {
		t.Fatalf("the identifies took %s from first to last, %.3f of the %s minimum (want <= 1.05)", span,
			float64(span)/float64(minimum), minimum)
	}
}

// Spacebar closes a websocket without a User-Agent (4002); dd sends the one it sends on REST calls.
func TestGatewayConnectionCarriesTheUserAgent(t *testing.T) {
	sim := startSim(t, discordsim.Config{Guilds: 2, RequireUserAgent: true})
	h := startShards(t, sim, 1, []int{0}, nil)
	testkit.Eventually(t, 5*time.Second, "the shard ready", func() bool { return h.mgr.Ready() })
	if st := sim.GatewayStats(); st.Connections != 1 || st.CloseCodesSent[4002] != 0 {
		t.Fatalf("%d connections, %d closes with 4002; want 1 and 0", st.Connections, st.CloseCodesSent[4002])
	}
}

// A server that numbers dispatches from 0 (Spacebar: READY has s: 0) still gets READY through to the bot
// and the shard to ready; a sequence that does not advance never moves the stored one backwards, and a
// drop resumes from the highest one.
func TestDispatchesNumberedFromZeroAreDeliveredAndResumed(t *testing.T) {
	sim := startSim(t, discordsim.Config{Guilds: 3, SequenceFromZero: true})
	h := startShards(t, sim, 1, []int{0}, typingIntents)
	testkit.Eventually(t, 5*time.Second, "the shard ready", func() bool { return h.mgr.Ready() })
	testkit.Eventually(t, 5*time.Second, "READY and 3 GUILD_CREATEs", func() bool {
		return h.sink.count(0, "READY") == 1 && h.sink.count(0, "GUILD_CREATE") == 3
	})
	h.sink.mu.Lock()
	first := h.sink.events[0][0]
	h.sink.mu.Unlock()
	if first.Type != "READY" || first.Seq != 0 {
		t.Fatalf("first event %s with seq %d; the server sent READY with 0", first.Type, first.Seq)
	}
	testkit.Eventually(t, 5*time.Second, "the session stored at seq 3", func() bool { return h.mgr.Shard(0).Session().Seq == 3 })
	g := sim.Guilds()[0]
	sim.DropShard(0, 1)
	for i := range 5 {
		sim.Dispatch(g.ID, "TYPING_START", typing(g, i))
	}
	testkit.Eventually(t, 5*time.Second, "the 5 events after the drop", func() bool { return h.sink.count(0, "TYPING_START") == 5 })
	h.sink.checkNoGaps(t)
	if st := sim.GatewayStats(); len(st.Identifies) != 1 || len(st.Resumes) == 0 {
		t.Fatalf("%d identifies, %d resumes; want 1 and a resume", len(st.Identifies), len(st.Resumes))
	}
}

// A server that keeps closing with the same code earns a warning at the fifth close in a row and each
// time the streak doubles; a healthy connection or another code starts the count again.
func TestRepeatedRefusalsAreLoggedAsSuch(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	log := zap.New(core)
	var c closeStreak
	refused := connEnd{code: 4002, err: errors.New("gateway closed with 4002")}
	warnings := func() (n []int) {
		for _, e := range logs.TakeAll() {
			n = append(n, int(e.ContextMap()["times_in_a_row"].(int64)))
		}
		return n
	}
	for range 4 {
		c.note(log, refused)
	}
	if w := warnings(); len(w) != 0 {
		t.Fatalf("warned after 4 closes: %v", w)
	}
	for range 16 {
		c.note(log, refused)
	}
	if w := fmt.Sprint(warnings()); w != "[5 10 20]" {
		t.Fatalf("warnings at %s closes in a row; want [5 10 20]", w)
	}
	c.note(log, connEnd{healthy: true})
	c.note(log, connEnd{code: 4000})
	for range 4 {
		c.note(log, refused)
	}
	if w := warnings(); len(w) != 0 {
		t.Fatalf("a healthy connection and another code did not start the count again: %v", w)
	}
}

// parseHeader finds op, s and t wherever they are, and stops scanning once it has them.
func TestParseHeaderFindsTheFieldsInAnyOrder(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want header
	}{
		{`{"t":"MESSAGE_CREATE","s":7,"op":0,"d":{"x":"}"}}`, header{op: 0, seq: 7, name: "MESSAGE_CREATE"}},
		{`{"d":{"a":[1,"]"]},"op":0,"s":8,"t":"TYPING_START"}`, header{op: 0, seq: 8, name: "TYPING_START"}},
		{`{"op":11,"d":null}`, header{op: 11}},
		{`{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250}}`, header{op: 10}},
		// What follows the three fields is not scanned: a broken d after them is the object reader's
		// business (it framed the object), not the header's.
		{`{"t":"X","s":1,"op":0,"d":{"a"}}`, header{op: 0, seq: 1, name: "X"}},
	} {
		got, err := parseHeader([]byte(tc.raw))
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.raw, got, err, tc.want)
		}
		if whole, err := parseHeaderWhole([]byte(tc.raw)); err == nil && whole != got {
			t.Errorf("%s: %+v, the whole scan %+v", tc.raw, got, whole)
		}
	}
	if _, err := parseHeader([]byte(`{"d":{},"s":1}`)); err == nil {
		t.Error("a payload without op accepted")
	}
}

// A message shorter than the peek reader's array, arriving on its own, is read from the socket once
// (it was three reads or more: header, extended length, payload); a longer one twice. Payloads come out
// whole and in order either way.
func TestSmallMessagesTakeOneSocketRead(t *testing.T) {
	for _, tc := range []struct {
		size    int
		maxRead float64 // socket reads per message, at most
	}{{100, 1}, {220, 1}, {900, 2}} {
		frames, payloads := gatewayFrames(t, 50, tc.size)
		direct := &frameSource{frames: frames}
		readPayloads(t, direct, false, payloads)
		peeked := &frameSource{frames: frames}
		readPayloads(t, peeked, true, payloads)
		if got := float64(peeked.reads) / 50; got > tc.maxRead {
			t.Errorf("size %d: %.2f socket reads per message through the peek reader, want at most %v (straight: %.2f)",
				tc.size, got, tc.maxRead, float64(direct.reads)/50)
		}
	}
}
