package roles

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/gateway"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/discordsim"
)

// Two gateway processes with half of the shards each, and one rest role: through the rest role's shared
// identify queue they identify no faster than one process would, and every event reaches the bot. With
// Discord's proportions (heartbeat = 8.25 identify windows) 18 shards in one bucket make the last ones
// wait over two heartbeat intervals for their turn: each must still open one connection only.
func TestSplitGatewaysShareTheIdentifyLimit(t *testing.T) {
	const window, shards = 300 * time.Millisecond, 18
	sim := startSim(t, discordsim.Config{Guilds: 2 * shards, MaxConcurrency: 1, IdentifyWindow: window,
		HeartbeatInterval: window * 33 / 4, Tokens: []string{"tok-split-0123456789"}})
	bot := newBot(t)
	common := []string{"DD_DISCORD__TOKEN=tok-split-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(), "DD_REST__SECRET=rest-secret-0123456789"}
	rest := startDDWindow(t, config.RoleRest, window, append(common, "DD_STORE__PATH="+filepath.Join(t.TempDir(), "r"))...)
	restURL := "http://" + rest.addrs[config.RoleRest]
	for cluster := range 2 {
		startDDWindow(t, config.RoleGateway, window, append(common,
			"DD_REST__URL="+restURL, "DD_STORE__PATH="+filepath.Join(t.TempDir(), "g"),
			fmt.Sprintf("DD_GATEWAY__TOTAL_SHARDS=%d", shards), "DD_GATEWAY__CLUSTERS=2", "DD_GATEWAY__CLUSTER_ID="+string(rune('0'+cluster)),
			"DD_EVENTS__URLS="+bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789", "DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false")...)
	}
	testkit.Eventually(t, 30*time.Second, "every shard connected", func() bool {
		n := 0
		for _, s := range sim.Sessions() {
			if s.Connected {
				n++
			}
		}
		return n == shards
	})
	st := sim.GatewayStats()
	if st.IdentifyViolations != 0 || len(st.Identifies) != shards || st.Connections != shards {
		t.Fatalf("identify violations %d, identifies %d, connections %d (want 0, %d, %d)", st.IdentifyViolations,
			len(st.Identifies), st.Connections, shards, shards)
	}
	var at []time.Time
	identified := map[int]bool{}
	for _, id := range st.Identifies {
		at = append(at, id.At)
		identified[id.Shard] = true
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < window {
			t.Errorf("identifies %d and %d %s apart, under the %s window", i-1, i, gap, window)
		}
	}
	if len(identified) != shards {
		t.Errorf("shards identified: %v", identified)
	}
	done := make(chan struct{})
	sim.StartFirehose(discordsim.FirehoseOptions{Rate: 2000, Total: 1000, Done: done})
	<-done
	waitAllDelivered(t, sim, bot, shards)
}

// A split deployment reshards together: POST /reshard on one gateway process raises the rest role's
// target, every process follows with its own shards, and the bot gets every event once, in order per
// channel, with no identify violation.
func TestSplitGatewaysReshardTogether(t *testing.T) {
	coordinatorPoll = 100 * time.Millisecond
	defer func() { coordinatorPoll = 2 * time.Second }()
	sim := startSim(t, discordsim.Config{Guilds: 40, MaxConcurrency: 2, IdentifyWindow: testIdentifyWindow, Tokens: []string{"tok-split-0123456789"}})
	bot := newBot(t)
	nl := &nonceLog{count: map[string]int{}, byChan: map[string][]int{}}
	bot.OnEvent = nl.onEvent
	common := []string{"DD_DISCORD__TOKEN=tok-split-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(), "DD_REST__SECRET=rest-secret-0123456789"}
	rest := startDDWindow(t, config.RoleRest, testIdentifyWindow, append(common, "DD_STORE__PATH="+filepath.Join(t.TempDir(), "r"))...)
	restURL := "http://" + rest.addrs[config.RoleRest]
	var gws []*reshardEnv
	for cluster := range 2 {
		dd := startDDWindow(t, config.RoleGateway, testIdentifyWindow, append(common,
			"DD_REST__URL="+restURL, "DD_STORE__PATH="+filepath.Join(t.TempDir(), "g"), "DD_GATEWAY__SECRET=gw-secret-0123456789",
			"DD_GATEWAY__TOTAL_SHARDS=2", "DD_GATEWAY__CLUSTERS=2", "DD_GATEWAY__CLUSTER_ID="+string(rune('0'+cluster)),
			"DD_GATEWAY__RESHARD_IDENTIFY_RESERVE=0", "DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false",
			"DD_EVENTS__URLS="+bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789")...)
		gws = append(gws, &reshardEnv{sim: sim, dd: dd, bot: bot, nonce: nl, base: "http://" + dd.addrs[config.RoleGateway]})
	}
	testkit.Eventually(t, 10*time.Second, "2 shards connected", func() bool { return len(sessionIDs(sim)) == 2 })
	gws[0].oldSessions = sessionIDs(sim)
	const total = 6000
	done := make(chan struct{})
	sim.StartFirehose(discordsim.FirehoseOptions{Rate: 3000, Total: total, MessageCreate: 1, Done: done})
	time.Sleep(300 * time.Millisecond)
	if code, body := gws[0].call(t, "POST", "/reshard", `{"total_shards": 3}`); code != http.StatusAccepted || !strings.Contains(body, `"to":4`) {
		t.Fatalf("POST /reshard of 3 on a split deployment: %d %s; want 202 rounded up to 4, a multiple of 2", code, body)
	}
	for i, g := range gws {
		testkit.Eventually(t, 20*time.Second, fmt.Sprintf("process %d to switch", i), func() bool { return strings.Contains(g.status(t), `"result":"switched"`) })
	}
	<-done
	gws[0].checkExactlyOnce(t, total)
	if st := sim.GatewayStats(); st.IdentifyViolations != 0 || len(st.Identifies) != 6 {
		t.Errorf("identifies %d (want 2 + 4), violations %d", len(st.Identifies), st.IdentifyViolations)
	}
	for i, want := range []string{`"id":0`, `"id":1`} {
		s := gws[i].status(t)
		if !strings.Contains(s, `"total_shards":4`) || !strings.Contains(s, want) {
			t.Errorf("process %d after the reshard: %s", i, s)
		}
	}

	// The rest role keeps the target in memory only: restarted, it learns it back from the processes.
	if err := rest.stop(t); err != nil {
		t.Fatal(err)
	}
	startDDWindow(t, config.RoleRest, testIdentifyWindow, append(common, "DD_STORE__PATH="+filepath.Join(t.TempDir(), "r2"),
		"DD_REST__LISTEN="+rest.addrs[config.RoleRest])...)
	testkit.Eventually(t, 5*time.Second, "the restarted rest role to learn the target", func() bool {
		req, _ := http.NewRequest("GET", restURL+gateway.CoordinatorPath, nil)
		req.Header.Set("Authorization", "rest-secret-0123456789")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `"total_shards":4`)
	})
}

// Each process of a split deployment sees only its own shards' guilds; the periodic check scales them to
// the deployment, so the guilds filling the shards reshard the whole deployment, every process following.
func TestSplitGatewaysReshardAutomatically(t *testing.T) {
	coordinatorPoll = 100 * time.Millisecond
	defer func() { coordinatorPoll = 2 * time.Second }()
	sim := startSim(t, discordsim.Config{Tokens: []string{"tok-split-auto-0123456789"}, Guilds: 4200, MembersPerGuild: 1,
		ChannelsPerGuild: 1, MaxConcurrency: 2, IdentifyWindow: testIdentifyWindow, GuildsPerRecommendedShard: 1000})
	bot := newBot(t)
	common := []string{"DD_DISCORD__TOKEN=tok-split-auto-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(), "DD_REST__SECRET=rest-secret-0123456789"}
	rest := startDDWindow(t, config.RoleRest, testIdentifyWindow, append(common, "DD_STORE__PATH="+filepath.Join(t.TempDir(), "r"))...)
	for cluster := range 2 {
		startDDWindow(t, config.RoleGateway, testIdentifyWindow, append(common,
			"DD_REST__URL=http://"+rest.addrs[config.RoleRest], "DD_STORE__PATH="+filepath.Join(t.TempDir(), "g"),
			"DD_GATEWAY__SECRET=gw-secret-0123456789", "DD_GATEWAY__TOTAL_SHARDS=2", "DD_GATEWAY__CLUSTERS=2",
			"DD_GATEWAY__CLUSTER_ID="+string(rune('0'+cluster)), "DD_GATEWAY__RESHARD_CHECK_INTERVAL=200ms",
			"DD_GATEWAY__RESHARD_IDENTIFY_RESERVE=0", "DD_EVENTS__URLS="+bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789")...)
	}
	// 4,200 guilds on 2 shards is 84 % of their 5,000: due, though each process holds only 2,100 (42 %).
	// Discord recommends ceil(4200/1000) = 5, rounded up to a multiple of the current 2: 6.
	testkit.Eventually(t, 30*time.Second, "6 shards of the automatic reshard", func() bool { return connected(sim, 6) == 6 })
	if v := sim.GatewayStats().IdentifyViolations; v != 0 {
		t.Fatalf("%d identify violations", v)
	}
}
