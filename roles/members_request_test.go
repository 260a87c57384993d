package roles

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddhq/dd/cache"
	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/internal/members"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/discordsim"
)

// startDDMembers is startDD with Discord's 30 s member-request window scaled to window.
func startDDMembers(t *testing.T, window time.Duration, env ...string) *runningDD {
	t.Helper()
	return startDDWith(t, config.RoleAll, Options{MemberRequestWindow: window}, env...)
}

// membersSim: guilds of `members` members each (the bot included), the last of `last`, and a member
// request window of `window`.
func membersSim(t *testing.T, guilds, members, last int, window time.Duration) *discordsim.Server {
	t.Helper()
	sim := startSim(t, discordsim.Config{Guilds: guilds, MembersPerGuild: members - 1, MaxConcurrency: 16,
		Tokens: []string{"tok-gw-1-0123456789"}, PrivilegedIntents: discordsim.IntentGuildMembers, MemberRequestWindow: window})
	if last > 0 {
		sim.SetGuildMembers(sim.Guilds()[guilds-1].ID, last-1)
	}
	return sim
}

// membersEnv: dd --role=all with the GuildMembers intent (and not GuildPresences: GUILD_CREATE then lists
// only the bot, so every guild needs its members asked for).
func membersEnv(sim *discordsim.Server, bot interface{ URL() string }, storePath string, extra ...string) []string {
	return append([]string{"DD_DISCORD__TOKEN=tok-gw-1-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(),
		"DD_STORE__PATH=" + storePath, "DD_EVENTS__URLS=" + bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789",
		"DD_GATEWAY__SECRET=gw-secret-0123456789", "DD_REST__SECRET=rest-secret-0123456789", "DD_CACHE__SECRET=cache-secret-0123456789",
		"DD_GATEWAY__TOTAL_SHARDS=2", "DD_GATEWAY__INTENTS=Guilds,GuildMembers", "DD_CACHE__REQUEST_MEMBERS=all"}, extra...)
}

// membersComplete reads X-DD-Members-Complete; "" when the guild is not served.
func membersComplete(t *testing.T, base string, g uint64) string {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/guilds/%d/members", base, g), nil)
	req.Header.Set("Authorization", "cache-secret-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.Header.Get("X-DD-Members-Complete")
}

// chunkLog keeps the GUILD_MEMBERS_CHUNKs and RATE_LIMITEDs that reach the bot.
type chunkLog struct {
	mu          sync.Mutex
	chunks      map[uint64]map[string]map[int]bool // guild -> nonce -> chunk indices
	counts      map[string]int                     // nonce -> chunk_count
	rateLimited []string                           // nonces
}

func newChunkLog() *chunkLog {
	return &chunkLog{chunks: map[uint64]map[string]map[int]bool{}, counts: map[string]int{}}
}

func (l *chunkLog) onEvent(_ int, payload json.RawMessage) {
	var p struct {
		T string `json:"t"`
		D struct {
			GuildID    string `json:"guild_id"`
			Nonce      string `json:"nonce"`
			ChunkIndex int    `json:"chunk_index"`
			ChunkCount int    `json:"chunk_count"`
			Meta       struct {
				Nonce string `json:"nonce"`
			} `json:"meta"`
		} `json:"d"`
	}
	if json.Unmarshal(payload, &p) != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch p.T {
	case "GUILD_MEMBERS_CHUNK":
		g, _ := strconv.ParseUint(p.D.GuildID, 10, 64)
		if l.chunks[g] == nil {
			l.chunks[g] = map[string]map[int]bool{}
		}
		if l.chunks[g][p.D.Nonce] == nil {
			l.chunks[g][p.D.Nonce] = map[int]bool{}
		}
		l.chunks[g][p.D.Nonce][p.D.ChunkIndex] = true
		l.counts[p.D.Nonce] = p.D.ChunkCount
	case "RATE_LIMITED":
		l.rateLimited = append(l.rateLimited, p.D.Meta.Nonce)
	}
}

// ddNonces lists the nonces of dd's requests whose chunks the bot got for a guild, and how many of them
// it got whole.
func (l *chunkLog) ddNonces(g uint64) (nonces []string, whole int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for n, idx := range l.chunks[g] {
		if strings.HasPrefix(n, members.NoncePrefix) {
			nonces = append(nonces, n)
			if len(idx) == l.counts[n] {
				whole++
			}
		}
	}
	return nonces, whole
}

func metricValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return 0
}

// TestDDRequestsEveryMissingMemberAndResumesAfterARestart: with cache.request_members = "all", 20
// guilds of 1,000 members and one of 20,000 (whose GUILD_CREATEs list only the bot) end up whole in the
// cache, each marked complete; dd's pace (3 requests per shard per 2 s: Discord's 60 s scaled as the 30 s
// window is scaled to 1 s) is kept; dd restarted mid-way resumes its sessions and asks only for the
// guilds not complete yet; its chunks reach the bot too; no 4008, no identify spent on the restart.
func TestDDRequestsEveryMissingMemberAndResumesAfterARestart(t *testing.T) {
	const (
		window   = time.Second
		guilds   = 21
		members  = 1000
		big      = 20000
		perShard = 3
	)
	sim := membersSim(t, guilds, members, big, window)
	log := newChunkLog()
	bot := newBot(t)
	bot.OnEvent = log.onEvent
	env := membersEnv(sim, bot, filepath.Join(t.TempDir(), "data"), "DD_CACHE__REQUEST_MEMBERS_PER_MINUTE="+strconv.Itoa(perShard))
	start := time.Now()
	dd := startDDMembers(t, window, env...)
	base := "http://" + dd.addrs[config.RoleCache]

	gs := sim.Guilds()
	completeNow := func() map[uint64]bool {
		out := map[uint64]bool{}
		for _, g := range gs {
			if membersComplete(t, base, g.ID) == "true" {
				out[g.ID] = true
			}
		}
		return out
	}
	var before map[uint64]bool
	testkit.Eventually(t, 60*time.Second, "a few guilds complete", func() bool {
		before = completeNow()
		return len(before) >= 4
	})
	if len(before) == guilds {
		t.Fatalf("every guild complete before the restart: the pace of %d per shard per 2 s was not kept", perShard)
	}
	for _, g := range gs {
		if membersComplete(t, base, g.ID) != "true" && before[g.ID] {
			t.Fatalf("guild %d complete, then not", g.ID)
		}
	}
	// What the restarted process has left to ask for, sampled just before the stop (a guild whose request
	// was already out may still complete before the stop, so this may count one turn too many).
	atStop := completeNow()
	if err := dd.stop(t); err != nil {
		t.Fatal(err)
	}
	identifies := len(sim.GatewayStats().Identifies)

	restart := time.Now()
	dd = startDDMembers(t, window, env...)
	base = "http://" + dd.addrs[config.RoleCache]
	testkit.Eventually(t, 90*time.Second, "every guild's members complete", func() bool { return len(completeNow()) == guilds })
	took, afterRestart := time.Since(start), time.Since(restart)

	c := cacheClient{t: t, base: base, secret: "cache-secret-0123456789"}
	want := cache.Stats{Guilds: guilds, Members: int64((guilds-1)*members + big), Users: int64((guilds-1)*(members-1) + big - 1 + 1)}
	if s := c.stats(); s.Guilds != want.Guilds || s.Members != want.Members || s.Users != want.Users {
		t.Fatalf("cache stats %+v; want %d guilds, %d members, %d users", s, want.Guilds, want.Members, want.Users)
	}
	for _, g := range gs {
		n, after := 0, "0"
		for {
			page := c.list(fmt.Sprintf("/guilds/%d/members?limit=1000&after=%s", g.ID, after))
			if len(page) == 0 {
				break
			}
			n += len(page)
			after = page[len(page)-1].(map[string]any)["user"].(map[string]any)["id"].(string)
		}
		if want := members; g.ID == gs[guilds-1].ID && n != big || g.ID != gs[guilds-1].ID && n != want {
			t.Fatalf("guild %d: %d members served", g.ID, n)
		}
	}

	// The restart resumed (no identify) and did not ask again for a guild complete before it.
	st := sim.GatewayStats()
	if len(st.Identifies) != identifies || identifies != 2 {
		t.Errorf("identifies: %d before the restart, %d after; want 2 and 2 (the restart resumes)", identifies, len(st.Identifies))
	}
	testkit.Eventually(t, 30*time.Second, "every guild's chunks at the bot", func() bool {
		for _, g := range gs {
			if _, whole := log.ddNonces(g.ID); whole < 1 {
				return false
			}
		}
		return true
	})
	for id := range before {
		if nonces, _ := log.ddNonces(id); len(nonces) != 1 {
			t.Errorf("guild %d, complete before the restart, got chunks of dd's requests %v; want one request", id, nonces)
		}
	}
	if st.CloseCodesSent[4008] != 0 || st.RateLimitCloses != 0 {
		t.Errorf("the simulator closed with 4008 (%d, %d): dd sent too fast", st.CloseCodesSent[4008], st.RateLimitCloses)
	}
	if st.MemberRequestsIgnored != 0 {
		t.Errorf("%d requests ignored by the simulator", st.MemberRequestsIgnored)
	}
	// The pace is per connection (Discord counts a connection's sends), so a restart starts it afresh: the
	// minimum is that of what was left at the restart, the busiest shard's guilds, perShard per 2 s, less
	// the one turn that may have completed between the sample and the stop.
	per := map[int]int{}
	for _, g := range gs {
		if !atStop[g.ID] {
			per[discordsim.ShardFor(g.ID, 2)]++
		}
	}
	busiest := max(per[0], per[1])
	minimum := time.Duration(max(0, (busiest+perShard-1)/perShard-2)) * 2 * window
	if afterRestart < minimum {
		t.Errorf("every member cached %v after the restart, under the %v the pace allows for the %d guilds left on the busiest shard: the pace was not kept",
			afterRestart, minimum, busiest)
	}
	t.Logf("every member cached %v after start, %v after the restart (the scaled pace's minimum for what was left %v); requests %d, rate limited %d, chunks %d",
		took.Round(time.Millisecond), afterRestart.Round(time.Millisecond), minimum, st.MemberRequests, st.MemberRateLimited, st.MemberChunks)
}

// TestDDWaitsOutRateLimitedAndRetriesJustPastTheWindow: the bot asks for every member of a guild
// itself, and the guild's GUILD_CREATE (an outage's end) makes dd ask again within Discord's window:
// Discord answers RATE_LIMITED, which reaches the bot; dd waits retry_after and asks again just past the
// window's end (once: a retry before it would be refused again), and the guild is complete again.
func TestDDWaitsOutRateLimitedAndRetriesJustPastTheWindow(t *testing.T) {
	const window = 2 * time.Second // long enough that the steps below fit in it on a loaded machine
	sim := membersSim(t, 2, 1500, 0, window)
	log := newChunkLog()
	bot := newBot(t)
	bot.OnEvent = log.onEvent
	dd := startDDMembers(t, window, membersEnv(sim, bot, filepath.Join(t.TempDir(), "data"), "DD_GATEWAY__TOTAL_SHARDS=1")...)
	base := "http://" + dd.addrs[config.RoleCache]
	g := sim.Guilds()[0]
	testkit.Eventually(t, 30*time.Second, "both guilds complete", func() bool {
		return membersComplete(t, base, g.ID) == "true" && membersComplete(t, base, sim.Guilds()[1].ID) == "true"
	})
	time.Sleep(window + 100*time.Millisecond) // dd's own window for the guild is over

	code, body := call(t, "POST", "http://"+dd.addrs[config.RoleGateway]+"/shards/0/send", "gw-secret-0123456789",
		fmt.Sprintf(`{"op":8,"d":{"guild_id":"%d","query":"","limit":0,"nonce":"bot-1"}}`, g.ID))
	botAsked := time.Now()
	if code != http.StatusNoContent {
		t.Fatalf("the bot's op 8: %d %s", code, body)
	}
	sim.SetGuildOutage(g.ID, true)
	sim.SetGuildOutage(g.ID, false) // GUILD_CREATE: dd asks again at once, within the bot's window
	testkit.Eventually(t, 5*time.Second, "the guild's list incomplete after its GUILD_CREATE", func() bool { return membersComplete(t, base, g.ID) == "false" })
	testkit.Eventually(t, 5*time.Second, "dd's request refused", func() bool { return sim.GatewayStats().MemberRateLimited >= 1 })
	var done time.Time
	testkit.Eventually(t, 10*time.Second, "the guild complete again", func() bool {
		if membersComplete(t, base, g.ID) == "true" {
			done = time.Now()
			return true
		}
		return false
	})
	st := sim.GatewayStats()
	if st.MemberRateLimited != 1 {
		t.Errorf("%d requests answered RATE_LIMITED; want 1 (dd's retry came before the window's end)", st.MemberRateLimited)
	}
	// Not before the window; and well before the 30 s after which an unanswered request is sent again, so
	// the retry came from retry_after (the upper bound is loose: a loaded machine delays everything).
	if d := done.Sub(botAsked); d < window || d > window+8*time.Second {
		t.Errorf("complete again %v after the bot's request; want past the %v window, from retry_after", d, window)
	}
	if n := metricValue(t, dd.addrs[config.RoleGateway], "dd_gateway_member_requests_rate_limited_total"); n != 1 {
		t.Errorf("dd_gateway_member_requests_rate_limited_total = %v, want 1", n)
	}
	testkit.Eventually(t, 10*time.Second, "RATE_LIMITED at the bot", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		return len(log.rateLimited) == 1 && strings.HasPrefix(log.rateLimited[0], members.NoncePrefix)
	})
	if st.CloseCodesSent[4008] != 0 {
		t.Errorf("4008 sent %d times", st.CloseCodesSent[4008])
	}
}

// TestRequestMembersNeedsTheGuildMembersIntent: Discord never answers a request for every member
// without the intent, so the config is refused, naming both keys.
func TestRequestMembersNeedsTheGuildMembersIntent(t *testing.T) {
	env := []string{"DD_DISCORD__TOKEN=tok-gw-1-0123456789", "DD_EVENTS__URLS=http://127.0.0.1:1/", "DD_CACHE__REQUEST_MEMBERS=all",
		"DD_GATEWAY__INTENTS=Guilds,GuildMessages"}
	_, err := config.Load(config.Source{Environ: env, Role: config.RoleAll})
	if err == nil || !strings.Contains(err.Error(), "cache.request_members") || !strings.Contains(err.Error(), "GuildMembers") {
		t.Fatalf("config error %v; want one naming cache.request_members and the GuildMembers intent", err)
	}
	env[len(env)-1] = "DD_GATEWAY__INTENTS=Guilds,GuildMembers"
	if _, err := config.Load(config.Source{Environ: env, Role: config.RoleAll}); err != nil {
		t.Fatalf("with GuildMembers: %v", err)
	}
	if members.NoncePrefix != cache.MemberNoncePrefix {
		t.Fatalf("the gateway's nonce prefix %q is not the one the cache counts (%q)", members.NoncePrefix, cache.MemberNoncePrefix)
	}
}
