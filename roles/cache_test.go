package roles

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ddhq/dd/cache"
	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/discordsim"
)

// cacheSim is a simulator whose app may use the members and presences intents, so that GUILD_CREATE
// carries members.
func cacheSim(t *testing.T, guilds, members int) *discordsim.Server {
	t.Helper()
	return startSim(t, discordsim.Config{Guilds: guilds, MembersPerGuild: members, MaxConcurrency: 16,
		Tokens: []string{"tok-gw-1-0123456789"}, PrivilegedIntents: discordsim.IntentGuildMembers | discordsim.IntentGuildPresences})
}

// cacheClient calls a cache role's API.
type cacheClient struct {
	t      *testing.T
	base   string
	secret string
}

func (c cacheClient) do(method, path, secret, body string) (int, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if secret != "" {
		req.Header.Set("Authorization", secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// get returns the status and the decoded JSON body.
func (c cacheClient) get(path string) (int, any) {
	c.t.Helper()
	code, b := c.do("GET", path, c.secret, "")
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		c.t.Fatalf("GET %s: %d, body is not JSON: %q", path, code, b)
	}
	return code, v
}

func (c cacheClient) object(path string) map[string]any {
	c.t.Helper()
	code, v := c.get(path)
	m, _ := v.(map[string]any)
	if code != 200 || m == nil {
		c.t.Fatalf("GET %s = %d %v, want 200 and an object", path, code, v)
	}
	return m
}

func (c cacheClient) list(path string) []any {
	c.t.Helper()
	code, v := c.get(path)
	l, ok := v.([]any)
	if code != 200 || !ok {
		c.t.Fatalf("GET %s = %d %v, want 200 and an array", path, code, v)
	}
	return l
}

func (c cacheClient) status(path string) int {
	c.t.Helper()
	code, _ := c.do("GET", path, c.secret, "")
	return code
}

// loaded reports whether the cache holds n guilds, each from its GUILD_CREATE (not READY's stub).
func (c cacheClient) loaded(n int) bool {
	s := c.stats()
	return s.Guilds == int64(n) && s.UnavailableGuilds == 0
}

func (c cacheClient) stats() cache.Stats {
	c.t.Helper()
	code, b := c.do("GET", "/stats", c.secret, "")
	var s cache.Stats
	if err := json.Unmarshal(b, &s); code != 200 || err != nil {
		c.t.Fatalf("GET /stats = %d %s", code, b)
	}
	return s
}

func cacheEnv(t *testing.T, sim *discordsim.Server, storePath string, extra ...string) []string {
	bot := newBot(t)
	return append([]string{"DD_DISCORD__TOKEN=tok-gw-1-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(),
		"DD_STORE__PATH=" + storePath, "DD_EVENTS__URLS=" + bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789",
		"DD_GATEWAY__SECRET=gw-secret-0123456789", "DD_REST__SECRET=rest-secret-0123456789", "DD_CACHE__SECRET=cache-secret-0123456789",
		"DD_GATEWAY__TOTAL_SHARDS=2", "DD_GATEWAY__INTENTS=Guilds,GuildMembers,GuildPresences,GuildMessages"}, extra...)
}

func TestAllInOneServesWhatTheGatewaySaw(t *testing.T) {
	sim := cacheSim(t, 6, 20)
	dd := startDD(t, config.RoleAll, cacheEnv(t, sim, filepath.Join(t.TempDir(), "data"))...)
	c := cacheClient{t: t, base: "http://" + dd.addrs[config.RoleCache], secret: "cache-secret-0123456789"}
	guilds := sim.Guilds()
	testkit.Eventually(t, 20*time.Second, "every guild in the cache", func() bool { return c.loaded(len(guilds)) })

	g := guilds[0]
	gj := c.object(fmt.Sprintf("/guilds/%d", g.ID))
	if gj["id"] != discordsim.FormatID(g.ID) || gj["name"] != g.Name || len(gj["roles"].([]any)) != len(g.RoleIDs) {
		t.Errorf("GET /guilds/{id} = %v", gj)
	}
	chans := c.list(fmt.Sprintf("/guilds/%d/channels", g.ID))
	if len(chans) != len(g.Channels) || chans[0].(map[string]any)["guild_id"] != discordsim.FormatID(g.ID) {
		t.Errorf("GET /guilds/{id}/channels = %v", chans)
	}
	if roles := c.list(fmt.Sprintf("/guilds/%d/roles", g.ID)); len(roles) != len(g.RoleIDs) {
		t.Errorf("GET /guilds/{id}/roles = %v", roles)
	}
	// GUILD_CREATE carries the members (the bot and, with presences, the simulated ones).
	members := c.list(fmt.Sprintf("/guilds/%d/members?limit=1000", g.ID))
	if len(members) != 21 {
		t.Errorf("GET /guilds/{id}/members?limit=1000: %d members, want 21", len(members))
	}
	if one := c.list(fmt.Sprintf("/guilds/%d/members", g.ID)); len(one) != 1 {
		t.Errorf("GET /guilds/{id}/members without limit: %d members, want Discord's default of 1", len(one))
	}
	uid := discordsim.MemberUserID(g.ID, 3)
	m := c.object(fmt.Sprintf("/guilds/%d/members/%d", g.ID, uid))
	if u := m["user"].(map[string]any); u["id"] != discordsim.FormatID(uid) || m["joined_at"] == nil {
		t.Errorf("GET /guilds/{id}/members/{user_id} = %v", m)
	}
	c.object(fmt.Sprintf("/users/%d", uid))
	c.object(fmt.Sprintf("/channels/%d", g.Channels[0]))

	// Events after the start reach the cache too.
	done := make(chan struct{})
	sim.StartFirehose(discordsim.FirehoseOptions{Rate: 2000, Total: 200, MemberAdd: 1, Done: done})
	<-done
	testkit.Eventually(t, 10*time.Second, "the firehose's members", func() bool { return c.stats().Members == int64(6*21+200) })

	removed, down := guilds[1], guilds[2]
	downMembers := len(c.list(fmt.Sprintf("/guilds/%d/members?limit=1000", down.ID)))
	sim.RemoveGuild(removed.ID)
	sim.SetGuildOutage(down.ID, true)
	testkit.Eventually(t, 10*time.Second, "the guild removal", func() bool { return c.status(fmt.Sprintf("/guilds/%d", removed.ID)) == 404 })
	if code := c.status(fmt.Sprintf("/guilds/%d/members/%d", removed.ID, discordsim.MemberUserID(removed.ID, 0))); code != 404 {
		t.Errorf("a removed guild's member: %d, want 404", code)
	}
	if code := c.status(fmt.Sprintf("/channels/%d", removed.Channels[0])); code != 404 {
		t.Errorf("a removed guild's channel: %d, want 404", code)
	}
	testkit.Eventually(t, 10*time.Second, "the outage", func() bool {
		return c.object(fmt.Sprintf("/guilds/%d", down.ID))["unavailable"] == true
	})
	if n := len(c.list(fmt.Sprintf("/guilds/%d/members?limit=1000", down.ID))); n != downMembers {
		t.Errorf("members of a guild in an outage: %d, want the %d kept", n, downMembers)
	}
	// The outage ends: the gateway drops the GUILD_CREATE of a guild it knew (drop_known_guild_creates),
	// and the guild's next event tells the cache it is back.
	sim.SetGuildOutage(down.ID, false)
	done = make(chan struct{})
	sim.StartFirehose(discordsim.FirehoseOptions{Rate: 1000, Total: 1, MemberAdd: 1, Guilds: []uint64{down.ID}, Done: done})
	<-done
	testkit.Eventually(t, 10*time.Second, "the end of the outage", func() bool {
		return c.object(fmt.Sprintf("/guilds/%d", down.ID))["unavailable"] == nil
	})
}

func TestCacheAppliesTheRenamedLoadingBurst(t *testing.T) {
	sim := cacheSim(t, 3, 2)
	dd := startDD(t, config.RoleAll, cacheEnv(t, sim, filepath.Join(t.TempDir(), "data"), "DD_GATEWAY__LOADING_GUILD_EVENT=GUILD_LOADED_DD")...)
	c := cacheClient{t: t, base: "http://" + dd.addrs[config.RoleCache], secret: "cache-secret-0123456789"}
	testkit.Eventually(t, 20*time.Second, "guilds from GUILD_LOADED_DD", func() bool { return c.loaded(3) })
}

func TestCacheAPIAuthAndErrors(t *testing.T) {
	dd := startDD(t, config.RoleCache, "DD_STORE__PATH="+filepath.Join(t.TempDir(), "data"), "DD_CACHE__SECRET=cache-secret-0123456789")
	c := cacheClient{t: t, base: "http://" + dd.addrs[config.RoleCache], secret: "cache-secret-0123456789"}
	for _, path := range []string{"/guilds/1", "/stats", "/users/1"} {
		if code, _ := c.do("GET", path, "", ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without the secret: %d, want 401", path, code)
		}
		if code, _ := c.do("GET", path, "wrong", ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong secret: %d, want 401", path, code)
		}
	}
	if code, _ := c.do("POST", "/events", "", `{"shardId":0,"payload":{}}`); code != http.StatusUnauthorized {
		t.Errorf("POST /events without the secret: %d, want 401", code)
	}
	for _, path := range []string{"/guilds/1", "/guilds/1/members", "/guilds/1/members/2", "/guilds/1/channels",
		"/guilds/1/roles", "/channels/1", "/users/1", "/channels/1/messages/2", "/nope"} {
		code, v := c.get(path)
		body, _ := v.(map[string]any)
		if code != 404 || body["code"] != 0.0 || body["message"] == "" {
			t.Errorf("GET %s = %d %v, want 404 with {code, message}", path, code, v)
		}
	}
	for _, path := range []string{"/guilds/x", "/guilds/1/members/-1", "/guilds/1/members?limit=1001",
		"/guilds/1/members?limit=0", "/guilds/1/members?after=abc"} {
		if code := c.status(path); code != 400 {
			t.Errorf("GET %s = %d, want 400", path, code)
		}
	}
	for _, body := range []string{`nope`, `{"payload":{"op":0}}`, `[{"shardId":0}]`} {
		if code, b := c.do("POST", "/events", "cache-secret-0123456789", body); code != 400 {
			t.Errorf("POST /events %s = %d %s, want 400", body, code, b)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _ := c.do("GET", path, "", ""); code != 200 {
			t.Errorf("GET %s without auth = %d, want 200", path, code)
		}
	}
	_, metrics := c.do("GET", "/metrics", "", "")
	if !strings.Contains(string(metrics), "dd_cache_objects") {
		t.Errorf("/metrics lacks the cache's metrics")
	}
}

func TestSplitCacheIsFedByTheGatewayOverHTTP(t *testing.T) {
	sim := cacheSim(t, 4, 10)
	cacheDD := startDD(t, config.RoleCache, "DD_STORE__PATH="+filepath.Join(t.TempDir(), "cache"), "DD_CACHE__SECRET=cache-secret-0123456789")
	cacheURL := "http://" + cacheDD.addrs[config.RoleCache]
	startDD(t, config.RoleGateway, cacheEnv(t, sim, filepath.Join(t.TempDir(), "gateway"), "DD_CACHE__URL="+cacheURL)...)
	c := cacheClient{t: t, base: cacheURL, secret: "cache-secret-0123456789"}
	testkit.Eventually(t, 20*time.Second, "every guild in the separate cache", func() bool { return c.loaded(4) })
	g := sim.Guilds()[0]
	testkit.Eventually(t, 10*time.Second, "the members", func() bool { return c.stats().Members == 4*11 })
	c.object(fmt.Sprintf("/guilds/%d/members/%d", g.ID, discordsim.MemberUserID(g.ID, 9)))

	// The gateway's feed is one client of POST /events; anything that speaks the envelope is another.
	ev := fmt.Sprintf(`[{"shardId":0,"payload":{"op":0,"t":"GUILD_ROLE_CREATE","s":1,"d":{"guild_id":"%d","role":{"id":"42","name":"posted"}}}}]`, g.ID)
	if code, b := c.do("POST", "/events", "cache-secret-0123456789", ev); code != http.StatusNoContent {
		t.Fatalf("POST /events = %d %s", code, b)
	}
	if roles := c.list(fmt.Sprintf("/guilds/%d/roles", g.ID)); len(roles) != len(g.RoleIDs)+1 {
		t.Errorf("a role posted to /events is not served: %v", roles)
	}
	one := fmt.Sprintf(`{"shardId":0,"payload":{"op":0,"t":"GUILD_ROLE_DELETE","s":2,"d":{"guild_id":"%d","role_id":"42"}}}`, g.ID)
	if code, b := c.do("POST", "/events", "cache-secret-0123456789", one); code != http.StatusNoContent {
		t.Fatalf("POST /events with one envelope = %d %s", code, b)
	}
	if roles := c.list(fmt.Sprintf("/guilds/%d/roles", g.ID)); len(roles) != len(g.RoleIDs) {
		t.Errorf("a role deleted through /events is still served: %v", roles)
	}
}

func TestCacheRestartAnswersAtOnceAndCatchesUp(t *testing.T) {
	sim := cacheSim(t, 4, 5)
	env := cacheEnv(t, sim, filepath.Join(t.TempDir(), "data"))
	dd := startDD(t, config.RoleAll, env...)
	c := cacheClient{t: t, base: "http://" + dd.addrs[config.RoleCache], secret: "cache-secret-0123456789"}
	testkit.Eventually(t, 20*time.Second, "every guild in the cache", func() bool { return c.loaded(4) })
	before := c.stats()
	if err := dd.stop(t); err != nil {
		t.Fatal(err)
	}

	// While dd is down: a guild joins, another goes (the sessions stay resumable and replay these).
	added := sim.AddGuilds(1)[0]
	gone := sim.Guilds()[0]
	sim.RemoveGuild(gone.ID)

	dd = startDD(t, config.RoleAll, env...)
	c.base = "http://" + dd.addrs[config.RoleCache]
	// The first read after the restart is answered from disk, before the gateway has resumed.
	if got := c.stats(); got.Guilds < before.Guilds-1 || got.Members < before.Members-6 {
		t.Errorf("stats right after the restart = %+v, want what was there before (%+v)", got, before)
	}
	c.object(fmt.Sprintf("/guilds/%d", sim.Guilds()[1].ID))
	testkit.Eventually(t, 20*time.Second, "the events missed while down", func() bool {
		return c.status(fmt.Sprintf("/guilds/%d", added.ID)) == 200 && c.status(fmt.Sprintf("/guilds/%d", gone.ID)) == 404
	})
	if n := len(c.list(fmt.Sprintf("/guilds/%d/members?limit=100", added.ID))); n != 6 {
		t.Errorf("members of the guild that joined while dd was down: %d, want 6", n)
	}
	if s := c.stats(); s.Guilds != 4 || s.Members != 4*6 {
		t.Errorf("stats after catching up = %+v, want 4 guilds, 24 members", s)
	}
}

func TestCacheFieldDefaultsAgreeWithConfig(t *testing.T) {
	cfg, err := config.Load(config.Source{Environ: []string{}, Role: config.RoleCache})
	if err != nil {
		t.Fatal(err)
	}
	k, d := cfg.Cache, cache.DefaultFields()
	got := cache.Fields{Guild: k.GuildFields, Channel: k.ChannelFields, Role: k.RoleFields, Member: k.MemberFields,
		User: k.UserFields, Emoji: k.EmojiFields, Sticker: k.StickerFields, VoiceState: k.VoiceStateFields,
		Presence: k.PresenceFields, Message: k.MessageFields}
	if !reflect.DeepEqual(got, d) {
		t.Fatalf("config's cache field defaults differ from cache.DefaultFields:\nconfig %+v\ncache  %+v", got, d)
	}
}
