package roles

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/botsim"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/internal/rawjson"
	"github.com/ddhq/dd/sim/discordsim"
	"github.com/ddhq/dd/store"
)

func openTestStore(t *testing.T) *store.Store {
	st, err := store.Open(store.Options{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// nonceLog records, per channel, the firehose keys (MESSAGE_CREATE nonces) the bot received, in order.
type nonceLog struct {
	mu     sync.Mutex
	count  map[string]int
	byChan map[string][]int
}

func (l *nonceLog) onEvent(shard int, payload json.RawMessage) {
	t, _ := rawjson.String(rawjson.Field(payload, "t"))
	if t != "MESSAGE_CREATE" {
		return
	}
	d := rawjson.Field(payload, "d")
	nonce, _ := rawjson.String(rawjson.Field(d, "nonce"))
	ch, _ := rawjson.String(rawjson.Field(d, "channel_id"))
	var n int
	fmt.Sscanf(nonce, "evt-%d", &n)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count[nonce]++
	l.byChan[ch] = append(l.byChan[ch], n)
}

type reshardEnv struct {
	oldSessions []string
	bot         *botsim.Receiver
	sim         *discordsim.Server
	dd          *runningDD
	base        string
	nonce       *nonceLog
	env         []string
}

const testIdentifyWindow = 150 * time.Millisecond

func startReshardEnv(t *testing.T, simCfg discordsim.Config, extraEnv ...string) *reshardEnv {
	t.Helper()
	simCfg.Tokens, simCfg.IdentifyWindow = []string{"tok-reshard-0123456789"}, testIdentifyWindow
	if simCfg.MaxConcurrency == 0 {
		simCfg.MaxConcurrency = 2
	}
	sim := startSim(t, simCfg)
	bot := newBot(t)
	nl := &nonceLog{count: map[string]int{}, byChan: map[string][]int{}}
	bot.OnEvent = nl.onEvent
	env := []string{"DD_DISCORD__TOKEN=tok-reshard-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(),
		"DD_STORE__PATH=" + filepath.Join(t.TempDir(), "data"), "DD_EVENTS__URLS=" + bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789",
		"DD_GATEWAY__SECRET=gw-secret-0123456789", "DD_GATEWAY__TOTAL_SHARDS=2", "DD_GATEWAY__RESHARD_IDENTIFY_RESERVE=0"}
	env = append(env, extraEnv...)
	dd := startDDWindow(t, config.RoleGateway, testIdentifyWindow, env...)
	e := &reshardEnv{bot: bot, sim: sim, dd: dd, base: "http://" + dd.addrs[config.RoleGateway], nonce: nl, env: env}
	testkit.Eventually(t, 10*time.Second, "2 shards ready", func() bool { return strings.Count(e.status(t), `"state":"ready"`) == 2 })
	e.oldSessions = sessionIDs(sim)
	return e
}

func (e *reshardEnv) call(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	return call(t, method, e.base+path, "gw-secret-0123456789", body)
}

func (e *reshardEnv) status(t *testing.T) string {
	_, body := e.call(t, "GET", "/status", "")
	return body
}

// reshardUnderFirehose starts a firehose of total MESSAGE_CREATEs at rate, asks for a reshard to 4
// shards lead later, and returns once it switched and the firehose ended.
func (e *reshardEnv) reshardUnderFirehose(t *testing.T, rate float64, total int64, lead time.Duration) {
	t.Helper()
	done := make(chan struct{})
	e.sim.StartFirehose(discordsim.FirehoseOptions{Rate: rate, Total: total, MessageCreate: 1, Done: done})
	time.Sleep(lead)
	if code, body := e.call(t, "POST", "/reshard", `{"total_shards": 4}`); code != http.StatusAccepted {
		t.Fatalf("POST /reshard: %d %s", code, body)
	}
	testkit.Eventually(t, 20*time.Second, "the switch", func() bool { return strings.Contains(e.status(t), `"result":"switched"`) })
	<-done
}

// checkExactlyOnce verifies that each of the firehose's n MESSAGE_CREATEs reached the bot once, and that
// each channel's messages arrived in the order they were created.
func (e *reshardEnv) checkExactlyOnce(t *testing.T, n int) {
	t.Helper()
	// Generous: after the bot comes back, delivery may still be in its backoff (up to 10 s) and later
	// events wait behind the barrier; under -race on a loaded machine that takes a while. A loss shows as
	// a shortfall that never closes, with the queue empty.
	deadline := time.Now().Add(60 * time.Second)
	for {
		e.nonce.mu.Lock()
		got := len(e.nonce.count)
		e.nonce.mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			status := e.status(t) // before explaining: the explanation takes time
			e.explainMissing(t, n)
			t.Fatalf("%d of %d firehose messages reached the bot; status: %s", got, n, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // any duplicate would arrive by now
	e.nonce.mu.Lock()
	defer e.nonce.mu.Unlock()
	dups := 0
	for _, c := range e.nonce.count {
		if c > 1 {
			dups++
		}
	}
	if len(e.nonce.count) != n || dups != 0 {
		t.Errorf("bot got %d distinct messages (want %d), %d of them more than once", len(e.nonce.count), n, dups)
	}
	for ch, seq := range e.nonce.byChan {
		for i := 1; i < len(seq); i++ {
			if seq[i] < seq[i-1] {
				t.Errorf("channel %s: message %d arrived after %d", ch, seq[i], seq[i-1])
				break
			}
		}
	}
}

// A reshard under a firehose: the new set identifies in the background, the switch loses no event and
// delivers none twice, the old sessions end, and a restart runs the new count without identifying.
func TestReshardUnderFirehoseLosesAndRepeatsNothing(t *testing.T) {
	e := startReshardEnv(t, discordsim.Config{Guilds: 40})
	const total = 6000
	done := make(chan struct{})
	e.sim.StartFirehose(discordsim.FirehoseOptions{Rate: 3000, Total: total, MessageCreate: 1, Done: done})
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if code, body := e.call(t, "POST", "/reshard", `{"total_shards": 4}`); code != http.StatusAccepted {
		t.Fatalf("POST /reshard: %d %s", code, body)
	}
	if code, _ := e.call(t, "POST", "/reshard", `{"total_shards": 4}`); code != http.StatusConflict {
		t.Errorf("a second reshard while one runs: %d, want 409", code)
	}
	// While it runs, /status shows both sets and the progress.
	testkit.Eventually(t, 10*time.Second, "/status to show the reshard in progress", func() bool {
		during := e.status(t)
		if strings.Contains(during, `"result":"switched"`) {
			t.Fatalf("switched before /status showed both sets")
		}
		return strings.Contains(during, `"in_progress":true`) && strings.Contains(during, `"next_total_shards":4`) &&
			strings.Contains(during, `"total_shards":2`)
	})
	testkit.Eventually(t, 20*time.Second, "the switch", func() bool { return strings.Contains(e.status(t), `"result":"switched"`) })
	took := time.Since(start)
	if code, metrics := e.call(t, "GET", "/metrics", ""); code != 200 || !strings.Contains(metrics, `dd_gateway_reshards_total{result="switched"} 1`) ||
		!strings.Contains(metrics, "dd_gateway_reshard_seconds_count 1") {
		t.Errorf("reshard metrics missing from /metrics")
	}
	<-done
	e.checkExactlyOnce(t, total)

	st := e.sim.GatewayStats()
	if st.IdentifyViolations != 0 || len(st.Identifies) != 6 {
		t.Errorf("identifies %d (want 2 + 4), violations %d", len(st.Identifies), st.IdentifyViolations)
	}
	if st.CloseCodesReceived[1000] != 2 {
		t.Errorf("old sessions ended with 1000: %d, want 2 (%v)", st.CloseCodesReceived[1000], st.CloseCodesReceived)
	}
	status := e.status(t)
	if !strings.Contains(status, `"total_shards":4`) || strings.Count(status, `"state":"ready"`) != 4 {
		t.Errorf("after the switch /status = %s", status)
	}
	// 4 shards over max_concurrency 2: two identify windows at the least.
	minimum := 2 * testIdentifyWindow
	t.Logf("switch after %s; identify-limit minimum %s (ratio %.2f)", took, minimum, float64(took)/float64(minimum))

	// A restart keeps the new count and resumes its sessions.
	if err := e.dd.stop(t); err != nil {
		t.Fatal(err)
	}
	startDDWindow(t, config.RoleGateway, testIdentifyWindow, e.env...)
	testkit.Eventually(t, 10*time.Second, "4 sessions connected after restart", func() bool { return connected(e.sim, 4) == 4 })
	if n := len(e.sim.GatewayStats().Identifies); n != 6 {
		t.Errorf("identifies after restart = %d, want still 6", n)
	}
}

// A new shard that Discord refuses mid-reshard rolls the reshard back; the old set never stopped, and
// nothing is lost or repeated.
func TestReshardRollsBackWhenANewShardIsRefused(t *testing.T) {
	e := startReshardEnv(t, discordsim.Config{Guilds: 20})
	const total = 3000
	done := make(chan struct{})
	e.sim.StartFirehose(discordsim.FirehoseOptions{Rate: 3000, Total: total, MessageCreate: 1, Done: done})
	stopRefusing := make(chan struct{})
	go func() { // Discord refuses the new set: 4004 on the first new session
		for {
			select {
			case <-stopRefusing:
				return
			case <-time.After(5 * time.Millisecond):
			}
			for _, s := range e.sim.Sessions() {
				if s.NumShards == 4 && s.Connected {
					e.sim.CloseSession(s.ID, 4004)
					return
				}
			}
		}
	}()
	defer close(stopRefusing)
	if code, body := e.call(t, "POST", "/reshard", `{"total_shards": 4}`); code != http.StatusAccepted {
		t.Fatalf("POST /reshard: %d %s", code, body)
	}
	testkit.Eventually(t, 20*time.Second, "the rollback", func() bool { return strings.Contains(e.status(t), `"result":"rolled back`) })
	<-done
	e.checkExactlyOnce(t, total)
	status := e.status(t)
	if !strings.Contains(status, `"total_shards":2`) || strings.Count(status, `"state":"ready"`) != 2 {
		t.Errorf("after the rollback /status = %s", status)
	}
	if r := e.sim.GatewayStats().Resumes; len(r) != 0 {
		t.Errorf("the old shards were disturbed: %d resumes", len(r))
	}
}

func TestReshardRefusesWhatWouldHurt(t *testing.T) {
	e := startReshardEnv(t, discordsim.Config{Guilds: 10, SessionStartTotal: 4})
	for _, c := range []struct {
		body string
		code int
		says string
	}{
		{`{"total_shards": 2}`, http.StatusUnprocessableEntity, "already at 2"},
		{`{"total_shards": 0}`, http.StatusBadRequest, "at least 1"},
		{`{"total_shards": 4}`, http.StatusUnprocessableEntity, "identify budget"}, // 2 left, 4 needed
		{`{"total": 4`, http.StatusBadRequest, "body"},
	} {
		code, body := e.call(t, "POST", "/reshard", c.body)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("POST /reshard %s: %d %s; want %d saying %q", c.body, code, body, c.code, c.says)
		}
	}
	if n := len(e.sim.GatewayStats().Identifies); n != 2 {
		t.Errorf("identifies %d: a refused reshard must spend none", n)
	}
}

// With reshard on, dd reshards by itself once the guilds fill reshard_percentage of the shards.
func TestAutomaticReshardWhenGuildsFillTheShards(t *testing.T) {
	sim := startSim(t, discordsim.Config{Tokens: []string{"tok-auto-0123456789"}, Guilds: 2100, MembersPerGuild: 1, ChannelsPerGuild: 1,
		MaxConcurrency: 2, IdentifyWindow: testIdentifyWindow, GuildsPerRecommendedShard: 1000})
	bot := newBot(t)
	startDDWindow(t, config.RoleGateway, testIdentifyWindow, "DD_DISCORD__TOKEN=tok-auto-0123456789", "DD_DISCORD__API_URL="+sim.APIURL(),
		"DD_STORE__PATH="+filepath.Join(t.TempDir(), "data"), "DD_EVENTS__URLS="+bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789",
		"DD_GATEWAY__TOTAL_SHARDS=1", "DD_GATEWAY__RESHARD_CHECK_INTERVAL=200ms", "DD_GATEWAY__RESHARD_IDENTIFY_RESERVE=0")
	// 2100 guilds on 1 shard is 84 % of 2500: due; Discord recommends ceil(2100/1000) = 3, rounded up to a
	// multiple of max_concurrency 2: 4.
	testkit.Eventually(t, 30*time.Second, "4 shards of the automatic reshard", func() bool { return connected(sim, 4) == 4 })
	testkit.Eventually(t, 10*time.Second, "the old session to end", func() bool {
		for _, s := range sim.Sessions() {
			if s.NumShards == 1 {
				return false
			}
		}
		return true
	})
	_ = discord.OpHello
}

// With the bot down across the switch, the old shards' backlog must still reach it before any later
// event of the same guilds from the new shards.
func TestReshardWhileTheBotIsDownKeepsEachGuildInOrder(t *testing.T) {
	e := startReshardEnv(t, discordsim.Config{Guilds: 40})
	e.bot.SetDown(true)
	const total = 4000
	e.reshardUnderFirehose(t, 4000, total, 200*time.Millisecond)
	e.bot.SetDown(false)
	e.checkExactlyOnce(t, total)
}

// explainMissing logs the firehose messages the bot lacks (gaps among the nonces it got) and where
// the simulator sent each.
func (e *reshardEnv) explainMissing(t *testing.T, n int) {
	where := map[string][]string{}
	firehose := map[string]bool{} // what the old sessions got after their READY and GUILD_CREATEs
	for _, id := range e.oldSessions {
		for i, k := range e.sim.EventKeysSent(id) {
			if i >= 25 {
				firehose[k] = true
			}
		}
	}
	for _, id := range append(append([]string(nil), e.oldSessions...), sessionIDs(e.sim)...) {
		for i, k := range e.sim.EventKeysSent(id) {
			where[k] = append(where[k], fmt.Sprintf("%s seq %d", id[:6], i+1))
		}
	}
	e.nonce.mu.Lock()
	defer e.nonce.mu.Unlock()
	lo, hi := 1<<30, 0
	for k := range e.nonce.count {
		var num int
		fmt.Sscanf(k, "evt-%d", &num)
		lo, hi = min(lo, num), max(hi, num)
	}
	shown := 0
	for num := lo; num <= hi && shown < 15; num++ {
		k := fmt.Sprintf("evt-%d", num)
		if _, ok := e.nonce.count[k]; !ok && firehose[k] {
			t.Logf("missing %s: sent to %v", k, where[k])
			shown++
		}
	}
	t.Logf("old sessions %v", e.oldSessions)
}

func sessionIDs(sim *discordsim.Server) []string {
	var ids []string
	for _, s := range sim.Sessions() {
		ids = append(ids, s.ID)
	}
	return ids
}

// slowCache is a cache role's POST /events as the gateway's cache feed sees it: it records, per channel,
// the firehose messages in the order they arrive, and takes old shard 1's events slowly while slow is set,
// so that shard 1 still has a backlog in the queue when the reshard switches.
type slowCache struct {
	*httptest.Server
	slow  atomic.Bool
	nonce *nonceLog
}

func newSlowCache(t *testing.T) *slowCache {
	c := &slowCache{nonce: &nonceLog{count: map[string]int{}, byChan: map[string][]int{}}}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var envs []struct {
			ShardID int             `json:"shardId"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.NewDecoder(r.Body).Decode(&envs); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if len(envs) > 0 && envs[0].ShardID == 1 && c.slow.Load() {
			time.Sleep(20 * time.Millisecond)
		}
		for _, e := range envs {
			c.nonce.onEvent(e.ShardID, e.Payload)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(c.Close)
	return c
}

// The cache, like the bot, never gets a guild's later event before an earlier one across a reshard's
// switch: the feed to a separate cache role (cache.url) reads the queue behind the same fence as the
// bot's delivery. Shard 1 of the old set is slow at the cache, so its guilds' events are still queued
// when the new shards 1 and 3 take those guilds over.
func TestReshardKeepsEachGuildInOrderAtTheCache(t *testing.T) {
	cache := newSlowCache(t)
	cache.slow.Store(true)
	e := startReshardEnv(t, discordsim.Config{Guilds: 40}, "DD_CACHE__URL="+cache.URL, "DD_CACHE__BATCH_MAX=10")
	const total = 6000
	e.reshardUnderFirehose(t, 3000, total, 300*time.Millisecond)
	cache.slow.Store(false)
	t.Run("bot", func(t *testing.T) { e.checkExactlyOnce(t, total) })
	t.Run("cache", func(t *testing.T) {
		(&reshardEnv{sim: e.sim, nonce: cache.nonce, oldSessions: e.oldSessions, base: e.base}).checkExactlyOnce(t, total)
	})
}
