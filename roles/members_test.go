package roles

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/discordsim"
)

// TestBotRequestsMembersThroughDDAndGetsEveryChunk: a bot asks dd's gateway API for every member of a
// guild (op 8, Request Guild Members); Discord's GUILD_MEMBERS_CHUNKs reach the bot like any event, every
// member once, and a second request within Discord's 30 s window comes back as a RATE_LIMITED event.
func TestBotRequestsMembersThroughDDAndGetsEveryChunk(t *testing.T) {
	const members = 2499 // and the bot: 2,500, three chunks
	sim := startSim(t, discordsim.Config{Guilds: 4, MembersPerGuild: members, MaxConcurrency: 16,
		Tokens: []string{"tok-gw-1-0123456789"}, PrivilegedIntents: discordsim.IntentGuildMembers})

	type delivered struct {
		shard int
		t     string
		d     json.RawMessage
	}
	var mu sync.Mutex
	var got []delivered
	bot := newBot(t)
	bot.OnEvent = func(shard int, payload json.RawMessage) {
		var p struct {
			T string          `json:"t"`
			D json.RawMessage `json:"d"`
		}
		if json.Unmarshal(payload, &p) == nil && (p.T == "GUILD_MEMBERS_CHUNK" || p.T == "RATE_LIMITED") {
			mu.Lock()
			got = append(got, delivered{shard, p.T, p.D})
			mu.Unlock()
		}
	}
	received := func(name string) []delivered {
		mu.Lock()
		defer mu.Unlock()
		var out []delivered
		for _, e := range got {
			if e.t == name {
				out = append(out, e)
			}
		}
		return out
	}
	dd := startDD(t, config.RoleGateway, gatewayEnv(t, sim, bot, "DD_GATEWAY__INTENTS=Guilds,GuildMembers")...)
	base := "http://" + dd.addrs[config.RoleGateway]
	call := func(method, path, body string) (int, string) {
		t.Helper()
		return call(t, method, base+path, "gw-secret-0123456789", body)
	}
	send := func(shard int, body string) {
		t.Helper()
		if code, resp := call("POST", fmt.Sprintf("/shards/%d/send", shard), body); code != http.StatusNoContent {
			t.Fatalf("POST /shards/%d/send %s: %d %s, want 204", shard, body, code, resp)
		}
	}
	testkit.Eventually(t, 20*time.Second, "both shards ready", func() bool {
		_, body := call("GET", "/status", "")
		return strings.Count(body, `"state":"ready"`) == 2
	})

	g := sim.Guilds()[1]
	shard := discordsim.ShardFor(g.ID, 2)
	ask := fmt.Sprintf(`{"op":8,"d":{"guild_id":"%d","query":"","limit":0,"nonce":"%%s"}}`, g.ID)
	send(shard, fmt.Sprintf(ask, "n1"))
	testkit.Eventually(t, 20*time.Second, "three GUILD_MEMBERS_CHUNKs at the bot", func() bool { return len(received("GUILD_MEMBERS_CHUNK")) >= 3 })

	seen := map[string]int{}
	indices := map[int]bool{}
	for _, e := range received("GUILD_MEMBERS_CHUNK") {
		var ch struct {
			GuildID    string `json:"guild_id"`
			ChunkIndex int    `json:"chunk_index"`
			ChunkCount int    `json:"chunk_count"`
			Nonce      string `json:"nonce"`
			Members    []struct {
				User struct {
					ID string `json:"id"`
				} `json:"user"`
			} `json:"members"`
		}
		if err := json.Unmarshal(e.d, &ch); err != nil {
			t.Fatalf("GUILD_MEMBERS_CHUNK as the bot got it: %v", err)
		}
		if e.shard != shard || ch.GuildID != discordsim.FormatID(g.ID) || ch.ChunkCount != 3 || ch.Nonce != "n1" || indices[ch.ChunkIndex] {
			t.Fatalf("chunk on shard %d: guild %s, index %d of %d, nonce %q; want shard %d, guild %d, a new index of 3, nonce n1",
				e.shard, ch.GuildID, ch.ChunkIndex, ch.ChunkCount, ch.Nonce, shard, g.ID)
		}
		indices[ch.ChunkIndex] = true
		for _, m := range ch.Members {
			seen[m.User.ID]++
		}
	}
	want := []string{discordsim.FormatID(discordsim.BotUserID(0))}
	for i := range members {
		want = append(want, discordsim.FormatID(discordsim.MemberUserID(g.ID, i)))
	}
	for _, id := range want {
		if seen[id] != 1 {
			t.Fatalf("member %s reached the bot %d times, want once", id, seen[id])
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("%d distinct members reached the bot, want %d", len(seen), len(want))
	}

	// Within Discord's 30 s: the answer is a RATE_LIMITED dispatch, delivered like any event.
	send(shard, fmt.Sprintf(ask, "n2"))
	testkit.Eventually(t, 10*time.Second, "RATE_LIMITED at the bot", func() bool { return len(received("RATE_LIMITED")) == 1 })
	rl := received("RATE_LIMITED")[0]
	var d struct {
		Opcode     int     `json:"opcode"`
		RetryAfter float64 `json:"retry_after"`
		Meta       struct {
			GuildID string `json:"guild_id"`
			Nonce   string `json:"nonce"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(rl.d, &d); err != nil || rl.shard != shard || d.Opcode != 8 || d.Meta.GuildID != discordsim.FormatID(g.ID) ||
		d.Meta.Nonce != "n2" || d.RetryAfter <= 0 || d.RetryAfter > 30 {
		t.Fatalf("RATE_LIMITED on shard %d: %s; want shard %d, opcode 8, meta {guild_id %d, nonce n2}, 0 < retry_after <= 30",
			rl.shard, rl.d, shard, g.ID)
	}
	if n := len(received("GUILD_MEMBERS_CHUNK")); n != 3 {
		t.Fatalf("%d chunks at the bot, want only the first request's 3", n)
	}
	st := sim.GatewayStats()
	if st.MemberRequests != 2 || st.MemberChunks != 3 || st.MemberRateLimited != 1 || st.CloseCodesSent[4008] != 0 {
		t.Fatalf("simulator: %d requests, %d chunks, %d rate limited, closes %v; want 2, 3, 1, no 4008",
			st.MemberRequests, st.MemberChunks, st.MemberRateLimited, st.CloseCodesSent)
	}
}
