package roles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/gateway"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/botsim"
	"github.com/ddhq/dd/sim/discordsim"
)

type runningDD struct {
	cancel context.CancelFunc
	done   chan error
	addrs  map[config.Role]string
}

// startDD runs roles.Run in-process with a config loaded the real way (environment).
func startDD(t *testing.T, role config.Role, env ...string) *runningDD {
	t.Helper()
	return startDDWindow(t, role, 0, env...)
}

// startDDWindow is startDD with a shorter identify window, for a simulator configured with one.
func startDDWindow(t *testing.T, role config.Role, identifyWindow time.Duration, env ...string) *runningDD {
	t.Helper()
	return startDDWith(t, role, Options{IdentifyWindow: identifyWindow}, env...)
}

// startDDWith runs roles.Run in-process with o (its Config, Role and Ready filled here, its Logger the
// test's when unset) and a config loaded from env with every listener on port 0.
func startDDWith(t *testing.T, role config.Role, o Options, env ...string) *runningDD {
	t.Helper()
	env = append([]string{"DD_REST__LISTEN=127.0.0.1:0", "DD_GATEWAY__LISTEN=127.0.0.1:0", "DD_CACHE__LISTEN=127.0.0.1:0",
		"DD_SHUTDOWN_TIMEOUT=10s"}, env...)
	cfg, err := config.Load(config.Source{Environ: env, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningDD{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan map[config.Role]string, 1)
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)) // dd's log shows only when the test fails
	}
	o.Config, o.Role, o.Version, o.Ready = cfg, role, "test", func(a map[config.Role]string) { ready <- a }
	go func() { r.done <- Run(ctx, o) }()
	select {
	case r.addrs = <-ready:
	case err := <-r.done:
		t.Fatalf("dd stopped at start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("dd did not start")
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *runningDD) stop(t *testing.T) error {
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("dd did not stop")
		return nil
	}
}

func newBot(t *testing.T) *botsim.Receiver {
	b := botsim.New("bot-secret-0123456789")
	t.Cleanup(b.Close)
	return b
}

// startSim runs a Discord simulator with cfg until the test ends.
func startSim(tb testing.TB, cfg discordsim.Config) *discordsim.Server {
	tb.Helper()
	sim := discordsim.New(cfg)
	if err := sim.Start("127.0.0.1:0"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sim.Close() })
	return sim
}

// connected counts the simulator's connected sessions of a numShards shard set.
func connected(sim *discordsim.Server, numShards int) int {
	n := 0
	for _, s := range sim.Sessions() {
		if s.Connected && s.NumShards == numShards {
			n++
		}
	}
	return n
}

func gatewaySim(t *testing.T, guilds int) *discordsim.Server {
	t.Helper()
	return startSim(t, discordsim.Config{Guilds: guilds, MaxConcurrency: 16, Tokens: []string{"tok-gw-1-0123456789"}})
}

func gatewayEnv(t *testing.T, sim *discordsim.Server, bot *botsim.Receiver, extra ...string) []string {
	return append([]string{"DD_DISCORD__TOKEN=tok-gw-1-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(),
		"DD_STORE__PATH=" + filepath.Join(t.TempDir(), "data"), "DD_EVENTS__URLS=" + bot.URL(),
		"DD_EVENTS__SECRET=bot-secret-0123456789", "DD_GATEWAY__SECRET=gw-secret-0123456789", "DD_GATEWAY__TOTAL_SHARDS=2",
		"DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false"}, extra...)
}

// lastSeqs returns each shard's session sequence at the simulator.
func lastSeqs(sim *discordsim.Server) map[int]int64 {
	out := map[int]int64{}
	for _, s := range sim.Sessions() {
		out[s.Shard] = s.Seq
	}
	return out
}

func waitAllDelivered(t *testing.T, sim *discordsim.Server, bot *botsim.Receiver, shards int) {
	t.Helper()
	testkit.Eventually(t, 20*time.Second, "every event at the bot", func() bool {
		seqs := lastSeqs(sim)
		if len(seqs) != shards {
			return false
		}
		for shard, last := range seqs {
			if all, _ := bot.Complete(shard, last); !all {
				return false
			}
		}
		return true
	})
	for shard, last := range lastSeqs(sim) {
		if _, ordered := bot.Complete(shard, last); !ordered {
			t.Errorf("shard %d: events arrived out of order", shard)
		}
	}
}

func TestGatewayDeliversEveryEventInOrder(t *testing.T) {
	sim := gatewaySim(t, 20)
	bot := newBot(t)
	startDD(t, config.RoleGateway, gatewayEnv(t, sim, bot)...)
	done := make(chan struct{})
	sim.StartFirehose(discordsim.FirehoseOptions{Rate: 4000, Total: 3000, Done: done})
	<-done
	waitAllDelivered(t, sim, bot, 2)
	st := bot.Stats()
	if st.BadAuth != 0 || len(st.Invalid) != 0 {
		t.Errorf("%d deliveries without the events secret, invalid: %v", st.BadAuth, st.Invalid)
	}
	if st.Types["READY"] != 2 || st.Types["GUILD_CREATE"] != 20 || st.Types["MESSAGE_CREATE"] == 0 {
		t.Errorf("event types at the bot: %v", st.Types)
	}
	if v := sim.GatewayStats().IdentifyViolations; v != 0 {
		t.Errorf("identify violations: %d", v)
	}
}

func TestBotDownForAWhileLosesNothing(t *testing.T) {
	sim := gatewaySim(t, 10)
	bot := newBot(t)
	bot.SetDown(true)
	startDD(t, config.RoleGateway, gatewayEnv(t, sim, bot)...)
	done := make(chan struct{})
	sim.StartFirehose(discordsim.FirehoseOptions{Rate: 3000, Total: 1500, Done: done})
	<-done
	time.Sleep(300 * time.Millisecond) // deliveries fail and back off meanwhile
	bot.SetDown(false)
	waitAllDelivered(t, sim, bot, 2)
}

func TestGatewayAPI(t *testing.T) {
	sim := gatewaySim(t, 10)
	bot := newBot(t)
	dd := startDD(t, config.RoleGateway, gatewayEnv(t, sim, bot)...)
	base := "http://" + dd.addrs[config.RoleGateway]
	call := func(method, path, secret, body string) (int, string) { return call(t, method, base+path, secret, body) }
	// A shard is ready on READY, and resumable once the sink has stored its session with READY: a moment
	// later, under load.
	testkit.Eventually(t, 10*time.Second, "both shards ready with their sessions stored", func() bool {
		_, body := call("GET", "/status", "gw-secret-0123456789", "")
		return strings.Count(body, `"state":"ready"`) == 2 && strings.Count(body, `"resumable":true`) == 2
	})
	if code, _ := call("GET", "/status", "", ""); code != http.StatusUnauthorized {
		t.Errorf("/status without secret: %d", code)
	}
	if code, _ := call("GET", "/status", "wrong", ""); code != http.StatusUnauthorized {
		t.Errorf("/status with a wrong secret: %d", code)
	}
	// The process's profiles, behind the same secret: a heap profile after a collection.
	if code, _ := call("GET", "/debug/pprof/heap?gc=1", "", ""); code != http.StatusUnauthorized {
		t.Errorf("/debug/pprof/heap without secret: %d", code)
	}
	if code, prof := call("GET", "/debug/pprof/heap?gc=1&debug=1", "gw-secret-0123456789", ""); code != http.StatusOK ||
		!strings.Contains(prof, "heap profile:") {
		t.Errorf("/debug/pprof/heap: %d %.100s", code, prof)
	}
	_, body := call("GET", "/status", "gw-secret-0123456789", "")
	var st struct {
		TotalShards int                   `json:"total_shards"`
		Shards      []gateway.ShardStatus `json:"shards"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.TotalShards != 2 || len(st.Shards) != 2 {
		t.Fatalf("/status = %s (%v)", body, err)
	}
	if st.Shards[0].Guilds+st.Shards[1].Guilds != 10 || !st.Shards[0].Resumable {
		t.Errorf("/status shards: %+v", st.Shards)
	}
	// The summary alone, for probes of processes with many shards.
	_, body = call("GET", "/status?shards=false", "gw-secret-0123456789", "")
	var sum struct {
		Summary gateway.StatusSummary `json:"summary"`
		Shards  json.RawMessage       `json:"shards"`
	}
	if err := json.Unmarshal([]byte(body), &sum); err != nil || sum.Shards != nil || sum.Summary.Shards != 2 ||
		sum.Summary.States["ready"] != 2 || sum.Summary.Guilds != 10 {
		t.Errorf("/status?shards=false = %s (%v)", body, err)
	}

	g := sim.Guilds()[3]
	code, body := call("POST", "/", "gw-secret-0123456789", fmt.Sprintf(`{"type":"ShardInfoFromGuild","guildId":"%d"}`, g.ID))
	if code != 200 || !strings.Contains(body, fmt.Sprintf(`"shardId":%d`, discordsim.ShardFor(g.ID, 2))) {
		t.Errorf("ShardInfoFromGuild: %d %s", code, body)
	}
	presence := `{"status":"idle","afk":false,"since":null,"activities":[]}`
	if code, body := call("POST", "/", "gw-secret-0123456789", `{"type":"ShardPayload","shardId":1,"payload":{"op":3,"d":`+presence+`}}`); code != 204 {
		t.Errorf("ShardPayload: %d %s", code, body)
	}
	if code, body := call("POST", "/", "gw-secret-0123456789", `{"type":"EditShardsPresence","payload":`+presence+`}`); code != 204 {
		t.Errorf("EditShardsPresence: %d %s", code, body)
	}
	if code, _ := call("POST", "/shards/0/send", "gw-secret-0123456789", `{"op":3,"d":`+presence+`}`); code != 204 {
		t.Errorf("/shards/0/send: %d", code)
	}
	big := fmt.Sprintf(`{"op":3,"d":{"status":"idle","afk":false,"since":null,"activities":[{"name":"%s","type":0}]}}`, strings.Repeat("x", 5000))
	if code, _ := call("POST", "/shards/0/send", "gw-secret-0123456789", big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized command: %d, want 413", code)
	}
	for _, bad := range []struct{ path, body string }{
		{"/shards/7/send", `{"op":3,"d":{}}`},
		{"/shards/0/send", `{"op":2,"d":{}}`},
		{"/shards/x/send", `{}`},
		{"/", `{"type":"Nope"}`},
		{"/", `not json`},
	} {
		if code, _ := call("POST", bad.path, "gw-secret-0123456789", bad.body); code < 400 || code >= 500 {
			t.Errorf("POST %s %s: %d, want a 4xx", bad.path, bad.body, code)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if st := sim.GatewayStats(); st.RateLimitCloses != 0 || st.DecodeErrorCloses != 0 {
		t.Errorf("commands earned closes: 4008 %d, 4002 %d", st.RateLimitCloses, st.DecodeErrorCloses)
	}
}

func TestBadTokenIsFatalWithAHint(t *testing.T) {
	sim := gatewaySim(t, 2)
	bot := newBot(t)
	env := gatewayEnv(t, sim, bot, "DD_DISCORD__TOKEN=not-the-token-0123456789")
	dd := startDD(t, config.RoleGateway, env...)
	var err error
	select {
	case err = <-dd.done:
		dd.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("dd kept running with a refused token")
	}
	var fe *FatalError
	if !errors.As(err, &fe) || !strings.Contains(fe.Hint, "discord.token") {
		t.Fatalf("want a FatalError pointing at discord.token, got %v", err)
	}
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

func nopLogger() *zap.Logger { return zap.NewNop() }

// Every connection end is counted by its close code, so that a server that keeps refusing shows.
func TestConnectionClosesAreCountedByCode(t *testing.T) {
	sim := gatewaySim(t, 4)
	bot := newBot(t)
	dd := startDD(t, config.RoleGateway, gatewayEnv(t, sim, bot)...)
	testkit.Eventually(t, 15*time.Second, "2 sessions", func() bool { return len(sim.Sessions()) == 2 })
	for _, s := range sim.Sessions() {
		sim.CloseSession(s.ID, 4000)
	}
	testkit.Eventually(t, 10*time.Second, `dd_gateway_connection_closes_total{code="4000"} 2`, func() bool {
		resp, err := http.Get("http://" + dd.addrs[config.RoleGateway] + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `dd_gateway_connection_closes_total{code="4000"} 2`)
	})
}
