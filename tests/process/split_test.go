package process

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/botsim"
	"github.com/ddhq/dd/sim/discordsim"
)

// freeAddr returns a loopback address nothing listens on: a split role must keep its address across its
// own restarts, because the others reach it by URL.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// splitCall sends a request with a secret and returns the status and body.
func splitCall(t *testing.T, method, url, secret string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.Header.Set("Authorization", secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil // a role restarting
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type splitStats struct {
	Guilds            int64 `json:"guilds"`
	UnavailableGuilds int64 `json:"unavailable_guilds"`
	Members           int64 `json:"members"`
}

// TestSplitRolesWorkAndRestartAlone runs the rest, gateway and cache roles as three processes against the
// simulator: events reach the bot and the cache, REST calls go through the rest role, and each role
// restarts on its own (the cache and the gateway killed mid-traffic) without losing an event.
func TestSplitRolesWorkAndRestartAlone(t *testing.T) {
	const guilds, members = 8, 10
	sim := discordsim.New(discordsim.Config{Guilds: guilds, MembersPerGuild: members, MaxConcurrency: 16,
		Tokens: []string{"tok-split-0123456789"}, PrivilegedIntents: discordsim.IntentGuildMembers | discordsim.IntentGuildPresences})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	bot := botsim.New("bot-secret-0123456789")
	defer bot.Close()
	dir := t.TempDir()
	restAddr, cacheAddr := freeAddr(t), freeAddr(t)
	common := []string{"DD_DISCORD__TOKEN=tok-split-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(),
		"DD_REST__SECRET=rest-secret-0123456789", "DD_CACHE__SECRET=cache-secret-0123456789", "DD_GATEWAY__SECRET=gw-secret-0123456789"}
	restEnv := append([]string{"DD_REST__LISTEN=" + restAddr}, common...)
	cacheEnv := append([]string{"DD_CACHE__LISTEN=" + cacheAddr, "DD_STORE__PATH=" + filepath.Join(dir, "cache")}, common...)
	gwEnv := append([]string{"DD_GATEWAY__LISTEN=127.0.0.1:0", "DD_STORE__PATH=" + filepath.Join(dir, "gateway"),
		"DD_REST__URL=http://" + restAddr, "DD_CACHE__URL=http://" + cacheAddr,
		"DD_EVENTS__URLS=" + bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789", "DD_GATEWAY__TOTAL_SHARDS=2",
		"DD_GATEWAY__INTENTS=Guilds,GuildMembers,GuildPresences,GuildMessages", "DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false"}, common...)

	start := func(role string, env []string) *ddProcess {
		p := startDD(t, dir, env, "--role="+role)
		p.waitListening(t, 1)
		return p
	}
	rest := start("rest", restEnv)
	cache := start("cache", cacheEnv)
	gw := start("gateway", gwEnv)

	stats := func() splitStats {
		var s splitStats
		if code, b := splitCall(t, "GET", "http://"+cacheAddr+"/stats", "cache-secret-0123456789"); code == 200 {
			_ = json.Unmarshal(b, &s)
		}
		return s
	}
	wantMembers := int64(guilds * (members + 1)) // the bot is a member too
	testkit.Eventually(t, 30*time.Second, "every guild and member in the cache", func() bool {
		s := stats()
		return s.Guilds == guilds && s.UnavailableGuilds == 0 && s.Members == wantMembers
	})
	g := sim.Guilds()[0]
	if code, b := splitCall(t, "GET", fmt.Sprintf("http://%s/guilds/%d/members/%d", cacheAddr, g.ID, discordsim.MemberUserID(g.ID, 2)), "cache-secret-0123456789"); code != 200 {
		t.Errorf("cache read of a member: %d %s", code, b)
	}
	restOK := func() bool {
		code, _ := splitCall(t, "GET", fmt.Sprintf("http://%s/api/v10/channels/%d", restAddr, g.Channels[0]), "rest-secret-0123456789")
		return code == 200
	}
	if !restOK() {
		t.Errorf("a REST call through the rest role failed")
	}

	// Member joins pour in while the cache, then the gateway, are killed and restarted.
	const joins = 3000
	done := make(chan struct{})
	stop := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 3000, Total: joins, MemberAdd: 1, Done: done})
	defer stop()
	time.Sleep(300 * time.Millisecond)
	_ = cache.Cmd.Process.Signal(syscall.SIGKILL)
	cache.wait(t)
	time.Sleep(200 * time.Millisecond) // the gateway keeps the cache's events in its queue meanwhile
	cache = start("cache", cacheEnv)
	time.Sleep(200 * time.Millisecond)
	_ = gw.Cmd.Process.Signal(syscall.SIGKILL)
	gw.wait(t)
	gw = start("gateway", gwEnv)
	<-done

	testkit.Eventually(t, 30*time.Second, "every join in the cache", func() bool { return stats().Members == wantMembers+joins })
	testkit.Eventually(t, 30*time.Second, "every event at the bot", func() bool {
		for _, s := range sim.Sessions() {
			if all, _ := bot.Complete(s.Shard, s.Seq); !all {
				return false
			}
		}
		return len(sim.Sessions()) == 2
	})

	// The rest role restarts on its own; the others reach it again at the same URL.
	_ = rest.Cmd.Process.Signal(syscall.SIGTERM)
	if code := rest.wait(t); code != 0 {
		t.Errorf("rest role exit %d after SIGTERM; log:\n%s", code, rest.Log())
	}
	if restOK() {
		t.Errorf("REST call answered while the rest role was down")
	}
	rest = start("rest", restEnv)
	if !restOK() {
		t.Errorf("a REST call after the rest role's restart failed")
	}
	if st := sim.GatewayStats(); len(st.Identifies) != 2 {
		t.Errorf("identifies = %d, want the first 2 only (the killed gateway resumed)", len(st.Identifies))
	}
	for _, p := range []*ddProcess{gw, cache, rest} {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		if code := p.wait(t); code != 0 {
			t.Errorf("exit %d after SIGTERM; log:\n%s", code, p.Log())
		}
	}
}
