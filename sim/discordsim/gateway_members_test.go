package discordsim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// chunkD is GUILD_MEMBERS_CHUNK's d as the tests read it; pointers tell an absent key from an empty one.
type chunkD struct {
	GuildID    string        `json:"guild_id"`
	Members    []chunkMember `json:"members"`
	ChunkIndex int           `json:"chunk_index"`
	ChunkCount int           `json:"chunk_count"`
	NotFound   *[]string     `json:"not_found"`
	Presences  *[]struct {
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		GuildID string `json:"guild_id"`
		Status  string `json:"status"`
	} `json:"presences"`
	Nonce *string `json:"nonce"`
}

type chunkMember struct {
	User struct {
		ID       string `json:"id"`
		Username string `json:"username"`
	} `json:"user"`
	JoinedAt string   `json:"joined_at"`
	Roles    []string `json:"roles"`
}

func (ch chunkD) memberIDs() []string {
	ids := make([]string, len(ch.Members))
	for i, m := range ch.Members {
		ids[i] = m.User.ID
	}
	return ids
}

// membersSim runs a simulator whose app has both member intents enabled, with a long heartbeat interval
// (a test that heartbeats would spend its send budget).
func membersSim(t *testing.T, tune func(*Config)) *Server {
	t.Helper()
	return startGateway(t, func(c *Config) {
		c.Guilds, c.MembersPerGuild = 4, 20
		c.HeartbeatInterval = 20 * time.Second
		c.PrivilegedIntents = IntentGuildMembers | IntentGuildPresences
		if tune != nil {
			tune(c)
		}
	})
}

// nextDispatch returns the next dispatch, skipping heartbeat ACKs.
func nextDispatch(t *testing.T, c *testClient, timeout time.Duration) gwPayload {
	t.Helper()
	for {
		p := c.next(timeout)
		if p.Op == 0 {
			return p
		}
		if p.Op != 11 {
			t.Fatalf("got %v, want a dispatch", p)
		}
	}
}

// readChunks reads one request's whole answer: chunk_count chunks, each index once, returned by index.
func readChunks(t *testing.T, c *testClient) []chunkD {
	t.Helper()
	return collectChunks(t, c, func(p gwPayload, got int) chunkD {
		if p.name() != "GUILD_MEMBERS_CHUNK" {
			t.Fatalf("got %v, want GUILD_MEMBERS_CHUNK (%d read so far)", p, got)
		}
		var ch chunkD
		if err := json.Unmarshal(p.D, &ch); err != nil {
			t.Fatalf("GUILD_MEMBERS_CHUNK d is not the documented object: %v", err)
		}
		return ch
	})
}

// collectChunks reads chunks, decoded by decode (which fails the test on what is not a chunk), until
// chunk_count of them came, each index once, and returns them by index.
func collectChunks(t *testing.T, c *testClient, decode func(p gwPayload, got int) chunkD) []chunkD {
	t.Helper()
	var out []chunkD
	got := 0
	for {
		ch := decode(nextDispatch(t, c, 10*time.Second), got)
		if out == nil {
			if ch.ChunkCount < 1 {
				t.Fatalf("chunk_count %d", ch.ChunkCount)
			}
			out = make([]chunkD, ch.ChunkCount)
		}
		if ch.ChunkCount != len(out) || ch.ChunkIndex < 0 || ch.ChunkIndex >= len(out) || out[ch.ChunkIndex].ChunkCount != 0 {
			t.Fatalf("chunk_index %d of chunk_count %d: not a new index below the first chunk's count %d",
				ch.ChunkIndex, ch.ChunkCount, len(out))
		}
		if len(ch.Members) > 1000 {
			t.Fatalf("chunk %d holds %d members, Discord sends at most 1,000", ch.ChunkIndex, len(ch.Members))
		}
		out[ch.ChunkIndex] = ch
		if got++; got == len(out) {
			return out
		}
	}
}

// readChunksFast is readChunks for answers of many members: the client has already checked that each
// payload is JSON, and decoding 34 MB again with encoding/json takes many seconds under the race
// detector, so member IDs are cut out of the bytes (the small tests decode chunks in full) and only the
// fields after the members are decoded.
func readChunksFast(t *testing.T, c *testClient) []chunkD {
	t.Helper()
	return collectChunks(t, c, func(p gwPayload, _ int) chunkD {
		d := []byte(p.D)
		tail := bytes.LastIndex(d, []byte(`],"chunk_index":`))
		if p.name() != "GUILD_MEMBERS_CHUNK" || !bytes.HasPrefix(d, []byte(`{"guild_id":"`)) || tail < 0 {
			t.Fatalf("got %v, want GUILD_MEMBERS_CHUNK with guild_id, members, chunk_index in that order", p)
		}
		var ch chunkD
		if err := json.Unmarshal(append([]byte{'{'}, d[tail+2:]...), &ch); err != nil {
			t.Fatalf("the fields after members: %v", err)
		}
		ch.GuildID = string(d[len(`{"guild_id":"`) : bytes.IndexByte(d[len(`{"guild_id":"`):], '"')+len(`{"guild_id":"`)])
		const user = `{"user":{"id":"`
		for rest := d; ; {
			k := bytes.Index(rest, []byte(user))
			if k < 0 {
				break
			}
			rest = rest[k+len(user):]
			m := chunkMember{JoinedAt: "(not read)", Roles: []string{}}
			m.User.ID = string(rest[:bytes.IndexByte(rest, '"')])
			ch.Members = append(ch.Members, m)
		}
		return ch
	})
}

func requestMembers(c *testClient, d map[string]any) { c.send(8, d) }

// allMemberIDs is every member of a simulated guild of n members besides the bot: the bot first.
func allMemberIDs(g uint64, n int) []string {
	ids := []string{FormatID(BotUserID(0))}
	for i := range n {
		ids = append(ids, FormatID(MemberUserID(g, i)))
	}
	return ids
}

// checkEveryMemberOnce fails unless the chunks hold exactly want, each once.
func checkEveryMemberOnce(t *testing.T, chunks []chunkD, want []string) {
	t.Helper()
	seen := make(map[string]int, len(want))
	n := 0
	for _, ch := range chunks {
		for _, m := range ch.Members {
			seen[m.User.ID]++
			n++
			if m.JoinedAt == "" || m.Roles == nil {
				t.Fatalf("member %s lacks joined_at or roles: not a member object", m.User.ID)
			}
		}
	}
	for _, id := range want {
		if seen[id] != 1 {
			t.Fatalf("member %s came %d times, want once", id, seen[id])
		}
	}
	if n != len(want) {
		t.Fatalf("%d members in the chunks, want %d", n, len(want))
	}
}

func TestEveryMemberComesInChunksOfAtMost1000EachOnce(t *testing.T) {
	s := membersSim(t, func(c *Config) { c.Guilds, c.MembersPerGuild = 1, 2499 })
	g := s.Guilds()[0]
	c, _ := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMembers)
	requestMembers(c, map[string]any{"guild_id": FormatID(g.ID), "query": "", "limit": 0, "nonce": "n1"})
	chunks := readChunks(t, c)
	if len(chunks) != 3 || len(chunks[0].Members) != 1000 || len(chunks[1].Members) != 1000 || len(chunks[2].Members) != 500 {
		t.Fatalf("%d chunks, want 3 of 1000, 1000 and 500 members (2,499 members and the bot)", len(chunks))
	}
	checkEveryMemberOnce(t, chunks, allMemberIDs(g.ID, 2499))
	for _, ch := range chunks {
		if ch.GuildID != FormatID(g.ID) || ch.Nonce == nil || *ch.Nonce != "n1" || ch.Presences != nil || ch.NotFound != nil {
			t.Fatalf("chunk %d: guild_id %s, nonce %v, presences %v, not_found %v; want the guild, nonce n1, neither list",
				ch.ChunkIndex, ch.GuildID, ch.Nonce, ch.Presences, ch.NotFound)
		}
	}
	st := s.GatewayStats()
	if st.MemberRequests != 1 || st.MemberChunks != 3 || st.MemberRateLimited != 0 || st.MemberRequestsIgnored != 0 {
		t.Fatalf("stats: %d requests, %d chunks, %d rate limited, %d ignored; want 1, 3, 0, 0",
			st.MemberRequests, st.MemberChunks, st.MemberRateLimited, st.MemberRequestsIgnored)
	}
}

func TestQueryIsACaseInsensitiveUsernamePrefixCappedAt100(t *testing.T) {
	s := membersSim(t, func(c *Config) { c.Guilds, c.MembersPerGuild = 1, 300 })
	g := s.Guilds()[0]
	// No GUILD_MEMBERS: a query does not ask for every member, so it is answered.
	c, _ := connectShard(t, s, 0, 1, IntentGuilds)
	ask := func(query string, limit int) []string {
		t.Helper()
		requestMembers(c, map[string]any{"guild_id": FormatID(g.ID), "query": query, "limit": limit})
		chunks := readChunks(t, c)
		if len(chunks) != 1 {
			t.Fatalf("query %q: %d chunks, want 1", query, len(chunks))
		}
		return chunks[0].memberIDs()
	}
	if got := ask("USER-", 10); strings.Join(got, ",") != strings.Join(allMemberIDs(g.ID, 10)[1:], ",") {
		t.Errorf(`query "USER-" limit 10: %v, want members 0..9`, got)
	}
	if got := ask("user-", 0); len(got) != 100 {
		t.Errorf(`query "user-" limit 0: %d members, want 100 (a query answers at most 100)`, len(got))
	}
	if got := ask("user-", 250); len(got) != 100 {
		t.Errorf(`query "user-" limit 250: %d members, want 100`, len(got))
	}
	one := FormatID(MemberUserID(g.ID, 7))
	if got := ask("user-"+one, 5); len(got) != 1 || got[0] != one {
		t.Errorf("query for member 7's full username: %v, want [%s]", got, one)
	}
	if got := ask("Sim-Bot", 5); len(got) != 1 || got[0] != FormatID(BotUserID(0)) {
		t.Errorf(`query "Sim-Bot": %v, want the bot`, got)
	}
	if got := ask("nobody", 5); len(got) != 0 {
		t.Errorf(`query "nobody": %v, want one empty chunk`, got)
	}
}

func TestUserIDsAnswerMembersAndListTheRestInNotFound(t *testing.T) {
	s := membersSim(t, func(c *Config) { c.Guilds, c.MembersPerGuild = 1, 50 })
	g := s.Guilds()[0]
	c, _ := connectShard(t, s, 0, 1, IntentGuilds)
	m3, bot, past := FormatID(MemberUserID(g.ID, 3)), FormatID(BotUserID(0)), FormatID(MemberUserID(g.ID, 50))
	requestMembers(c, map[string]any{"guild_id": FormatID(g.ID), "user_ids": []string{m3, "12345", bot, m3, past}})
	chunks := readChunks(t, c)
	if got := strings.Join(chunks[0].memberIDs(), ","); got != m3+","+bot {
		t.Errorf("members %s, want %s,%s (a repeated ID once)", got, m3, bot)
	}
	if nf := chunks[0].NotFound; nf == nil || strings.Join(*nf, ",") != "12345,"+past {
		t.Errorf("not_found %v, want [12345 %s]", nf, past)
	}
	// One snowflake instead of a list, as a number.
	c.sendRaw([]byte(`{"op":8,"d":{"guild_id":"` + FormatID(g.ID) + `","user_ids":` + FormatID(MemberUserID(g.ID, 4)) + `}}`))
	if got := readChunks(t, c)[0]; len(got.Members) != 1 || got.NotFound == nil || len(*got.NotFound) != 0 {
		t.Errorf("user_ids as one number: %v not_found %v, want member 4 and an empty not_found", got.memberIDs(), got.NotFound)
	}
	// Past 100 IDs, the rest are neither answered nor listed.
	var many []string
	for i := range 150 {
		many = append(many, FormatID(MemberUserID(g.ID, i)))
	}
	requestMembers(c, map[string]any{"guild_id": FormatID(g.ID), "user_ids": many})
	ch := readChunks(t, c)[0]
	if len(ch.Members)+len(*ch.NotFound) != 100 || len(ch.Members) != 50 {
		t.Errorf("150 user_ids: %d members and %d not found, want 50 and 50 (the first 100 IDs)", len(ch.Members), len(*ch.NotFound))
	}
}

func TestNonceUpTo32BytesIsEchoedALongerOneIgnored(t *testing.T) {
	s := membersSim(t, nil)
	g := guildIDsOfShard(s, 0, 1)[0]
	c, _ := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMembers)
	n32 := strings.Repeat("é", 16) // 32 bytes
	requestMembers(c, map[string]any{"guild_id": g, "user_ids": []string{FormatID(BotUserID(0))}, "nonce": n32})
	if ch := readChunks(t, c)[0]; ch.Nonce == nil || *ch.Nonce != n32 {
		t.Errorf("nonce of 32 bytes: chunk nonce %v, want it echoed", ch.Nonce)
	}
	requestMembers(c, map[string]any{"guild_id": g, "user_ids": []string{FormatID(BotUserID(0))}, "nonce": n32 + "x"})
	if ch := readChunks(t, c)[0]; ch.Nonce != nil {
		t.Errorf("nonce of 33 bytes: chunk nonce %q, want none", *ch.Nonce)
	}
	requestMembers(c, map[string]any{"guild_id": g, "user_ids": []string{FormatID(BotUserID(0))}, "nonce": 42})
	if ch := readChunks(t, c)[0]; ch.Nonce != nil {
		t.Errorf("nonce that is not a string: chunk nonce %q, want none", *ch.Nonce)
	}
}

func TestPresencesNeedTheGuildPresencesIntent(t *testing.T) {
	s := membersSim(t, func(c *Config) { c.Guilds, c.MembersPerGuild = 1, 150 })
	g := s.Guilds()[0]
	with, _ := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMembers|IntentGuildPresences)
	requestMembers(with, map[string]any{"guild_id": FormatID(g.ID), "query": "", "limit": 0, "presences": true})
	ch := readChunks(t, with)[0]
	if ch.Presences == nil || len(*ch.Presences) != 101 {
		t.Fatalf("presences with GUILD_PRESENCES: %v, want 101 (the bot and the 100 online members)", ch.Presences)
	}
	members := map[string]bool{}
	for _, id := range ch.memberIDs() {
		members[id] = true
	}
	for _, p := range *ch.Presences {
		if !members[p.User.ID] || p.Status != "online" || p.GuildID != FormatID(g.ID) {
			t.Fatalf("presence %+v: not of a returned member of the guild", p)
		}
	}
	time.Sleep(s.cfg.IdentifyWindow)
	without, _ := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMembers)
	requestMembers(without, map[string]any{"guild_id": FormatID(g.ID), "query": "", "limit": 0, "presences": true})
	if ch := readChunks(t, without)[0]; ch.Presences != nil || len(ch.Members) != 151 {
		t.Fatalf("presences without GUILD_PRESENCES: %d members, presences %v; want 151 members and no presences", len(ch.Members), ch.Presences)
	}
}

func TestEveryMemberWithoutTheIntentIsNotAnswered(t *testing.T) {
	s := membersSim(t, nil)
	ids := guildIDsOfShard(s, 0, 2)
	other := guildIDsOfShard(s, 1, 2)
	if len(ids) == 0 || len(other) == 0 {
		t.Fatal("test setup: both shards need a guild")
	}
	c, _ := connectShard(t, s, 0, 2, IntentGuilds)
	requestMembers(c, map[string]any{"guild_id": ids[0], "query": "", "limit": 0, "nonce": "all"})
	requestMembers(c, map[string]any{"guild_id": ids[0], "query": "", "limit": 5, "nonce": "first-5"})
	requestMembers(c, map[string]any{"guild_id": other[0], "user_ids": FormatID(BotUserID(0)), "nonce": "other-shard"})
	requestMembers(c, map[string]any{"guild_id": "1234567", "user_ids": FormatID(BotUserID(0)), "nonce": "unknown"})
	requestMembers(c, map[string]any{"guild_id": ids[0], "user_ids": FormatID(BotUserID(0)), "nonce": "answered"})
	if ch := readChunks(t, c)[0]; ch.Nonce == nil || *ch.Nonce != "answered" {
		t.Fatalf("first answer has nonce %v, want the last request's: the four before it get no answer", ch.Nonce)
	}
	st := s.GatewayStats()
	if st.MemberRequests != 5 || st.MemberRequestsIgnored != 4 || st.CloseCodesSent[4013] != 0 || st.CloseCodesSent[4014] != 0 {
		t.Fatalf("stats: %d requests, %d ignored, closes %v; want 5, 4, no close", st.MemberRequests, st.MemberRequestsIgnored, st.CloseCodesSent)
	}
	requestMembers(c, map[string]any{"guild_id": ids[0], "user_ids": FormatID(BotUserID(0))})
	readChunks(t, c) // still connected
}

func TestEveryMemberIsLimitedToOnePerGuildPerSessionPerWindow(t *testing.T) {
	const window = 700 * time.Millisecond
	s := membersSim(t, func(c *Config) { c.MemberRequestWindow = window })
	ids := guildIDsOfShard(s, 0, 1)
	c, _ := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMembers)
	all := func(g, nonce string) {
		requestMembers(c, map[string]any{"guild_id": g, "query": "", "limit": 0, "nonce": nonce})
	}
	all(ids[0], "first")
	start := time.Now()
	readChunks(t, c)

	all(ids[0], "second")
	p := nextDispatch(t, c, 3*time.Second)
	var rl struct {
		Opcode     int     `json:"opcode"`
		RetryAfter float64 `json:"retry_after"`
		Meta       struct {
			GuildID string  `json:"guild_id"`
			Nonce   *string `json:"nonce"`
		} `json:"meta"`
	}
	if p.name() != "RATE_LIMITED" || json.Unmarshal(p.D, &rl) != nil {
		t.Fatalf("second request for every member within the window: got %v, want RATE_LIMITED", p)
	}
	if left := window - time.Since(start); rl.Opcode != 8 || rl.Meta.GuildID != ids[0] || rl.Meta.Nonce == nil ||
		*rl.Meta.Nonce != "second" || rl.RetryAfter <= 0 || rl.RetryAfter > window.Seconds() || rl.RetryAfter < left.Seconds()-0.001 {
		t.Fatalf("RATE_LIMITED d %s: want opcode 8, meta {guild_id %s, nonce second}, retry_after in [%.3f, %.3f]",
			p.D, ids[0], left.Seconds(), window.Seconds())
	}
	// Other guilds and other kinds of request are not limited.
	all(ids[1], "other guild")
	if ch := readChunks(t, c)[0]; *ch.Nonce != "other guild" {
		t.Fatalf("another guild's members: nonce %v", ch.Nonce)
	}
	requestMembers(c, map[string]any{"guild_id": ids[0], "query": "user", "limit": 10, "nonce": "query"})
	if ch := readChunks(t, c)[0]; *ch.Nonce != "query" {
		t.Fatalf("a query within the window: nonce %v", ch.Nonce)
	}
	// retry_after is enough: asking again once it has passed is answered.
	time.Sleep(time.Duration(rl.RetryAfter * float64(time.Second)))
	all(ids[0], "after")
	if p := nextDispatch(t, c, 3*time.Second); p.name() != "GUILD_MEMBERS_CHUNK" {
		t.Fatalf("after retry_after: got %v, want the chunks", p)
	}
	st := s.GatewayStats()
	if st.MemberRateLimited != 1 || st.MemberRequests != 5 {
		t.Fatalf("stats: %d rate limited of %d requests, want 1 of 5", st.MemberRateLimited, st.MemberRequests)
	}
	// The limit is per session: another session of the same shard may ask at once.
	time.Sleep(s.cfg.IdentifyWindow)
	c2, _ := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMembers)
	requestMembers(c2, map[string]any{"guild_id": ids[0], "query": "", "limit": 0})
	if p := nextDispatch(t, c2, 3*time.Second); p.name() != "GUILD_MEMBERS_CHUNK" {
		t.Fatalf("another session within the window: got %v, want the chunks", p)
	}
}

func TestMemberRequestsCountTowardsTheSendLimit(t *testing.T) {
	s := membersSim(t, func(c *Config) { c.SendLimit, c.SendWindow = 5, time.Minute })
	g := guildIDsOfShard(s, 0, 1)[0]
	c, _ := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMembers) // the IDENTIFY is send 1
	for range 5 {
		requestMembers(c, map[string]any{"guild_id": g, "user_ids": FormatID(BotUserID(0))})
	}
	if code := c.waitClose(3 * time.Second); code != 4008 {
		t.Fatalf("the 5th op 8 (6th send): close %d, want 4008", code)
	}
}

func TestMalformedMemberRequestsCloseWith4002(t *testing.T) {
	s := membersSim(t, nil)
	g := guildIDsOfShard(s, 0, 1)[0]
	for _, d := range []string{
		`{"guild_id":"` + g + `"}`,
		`{"guild_id":"` + g + `","query":""}`,
		`{"query":"","limit":0}`,
		`{"guild_id":"` + g + `","query":5,"limit":0}`,
		`{"guild_id":"` + g + `","query":"","limit":-1}`,
		`{"guild_id":"` + g + `","user_ids":["x"]}`,
		`{"guild_id":"` + g + `","user_ids":[],"presences":"yes"}`,
		`[]`,
	} {
		time.Sleep(s.cfg.IdentifyWindow)
		c, _ := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMembers)
		c.sendRaw([]byte(`{"op":8,"d":` + d + `}`))
		if code := c.waitClose(3 * time.Second); code != 4002 {
			t.Errorf("op 8 d=%s: close %d, want 4002", d, code)
		}
	}
	c := dial(t, s)
	c.expectHello()
	c.sendRaw([]byte(`{"op":8,"d":{"guild_id":"` + g + `","query":"","limit":0}}`))
	if code := c.waitClose(3 * time.Second); code != 4003 {
		t.Errorf("op 8 before IDENTIFY: close %d, want 4003", code)
	}
}

func TestAGuildOf100000MembersIsAnsweredIn100Chunks(t *testing.T) {
	// The client does not heartbeat; reading 100 chunks of 1,000 members under -race on two loaded cores
	// has taken over 20 s, so the session gets a longer interval than the other members tests.
	s := membersSim(t, func(c *Config) { c.Guilds, c.HeartbeatInterval = 1, 2*time.Minute })
	g := s.Guilds()[0]
	if !s.SetGuildMembers(g.ID, 99999) { // and the bot: 100,000
		t.Fatal("SetGuildMembers")
	}
	c := dial(t, s)
	c.expectHello()
	c.send(2, map[string]any{"token": testToken, "intents": IntentGuilds | IntentGuildMembers | IntentGuildPresences,
		"shard": []int{0, 1}, "large_threshold": 250, "properties": map[string]string{"os": "linux", "browser": "t", "device": "t"}})
	c.expectReady()
	var gc struct {
		MemberCount int               `json:"member_count"`
		Large       bool              `json:"large"`
		Members     []json.RawMessage `json:"members"`
	}
	if err := json.Unmarshal(c.expect(0, "GUILD_CREATE").D, &gc); err != nil || gc.MemberCount != 100000 || !gc.Large || len(gc.Members) != 1 {
		t.Fatalf("GUILD_CREATE: member_count %d, large %v, %d members; want 100000, true, only the bot (over 75k members)",
			gc.MemberCount, gc.Large, len(gc.Members))
	}
	start := time.Now()
	requestMembers(c, map[string]any{"guild_id": FormatID(g.ID), "query": "", "limit": 0})
	chunks := readChunksFast(t, c)
	if len(chunks) != 100 {
		t.Fatalf("%d chunks, want 100", len(chunks))
	}
	checkEveryMemberOnce(t, chunks, allMemberIDs(g.ID, 99999))
	t.Logf("100,000 members in 100 chunks read and decoded in %v", time.Since(start).Round(time.Millisecond))
}

func TestManyGuildsOf1000MembersAreEachAnsweredInOneChunk(t *testing.T) {
	s := membersSim(t, func(c *Config) { c.Guilds, c.MembersPerGuild = 100, 999 })
	c, _ := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMembers)
	for _, g := range s.Guilds() {
		requestMembers(c, map[string]any{"guild_id": FormatID(g.ID), "query": "", "limit": 0, "nonce": FormatID(g.ID)})
	}
	for range 100 {
		chunks := readChunksFast(t, c)
		id, _ := strconv.ParseUint(*chunks[0].Nonce, 10, 64)
		if len(chunks) != 1 || chunks[0].GuildID != *chunks[0].Nonce {
			t.Fatalf("guild %d: %d chunks for guild %s, want one of its own", id, len(chunks), chunks[0].GuildID)
		}
		checkEveryMemberOnce(t, chunks, allMemberIDs(id, 999))
	}
}

func TestGuildCreateListsFewMembersOfALargeGuild(t *testing.T) {
	s := membersSim(t, func(c *Config) { c.Guilds, c.MembersPerGuild = 3, 150 })
	gs := s.Guilds()
	s.SetGuildMembers(gs[1].ID, 1000)
	s.SetGuildMembers(gs[2].ID, 80000)
	count := func(intents int) map[uint64]int {
		time.Sleep(s.cfg.IdentifyWindow)
		c := dial(t, s)
		c.expectHello()
		c.send(2, map[string]any{"token": testToken, "intents": intents, "shard": []int{0, 1}, "large_threshold": 250,
			"properties": map[string]string{"os": "linux", "browser": "t", "device": "t"}})
		c.expectReady()
		out := map[uint64]int{}
		for range gs {
			var gc struct {
				ID      string            `json:"id"`
				Large   bool              `json:"large"`
				Members []json.RawMessage `json:"members"`
			}
			_ = json.Unmarshal(c.expect(0, "GUILD_CREATE").D, &gc)
			id, _ := strconv.ParseUint(gc.ID, 10, 64)
			out[id] = len(gc.Members)
			if gc.Large != (id != gs[0].ID) {
				t.Errorf("guild %s: large %v, want it over large_threshold 250", gc.ID, gc.Large)
			}
		}
		return out
	}
	with := count(IntentGuilds | IntentGuildPresences)
	if with[gs[0].ID] != 151 || with[gs[1].ID] != 101 || with[gs[2].ID] != 1 {
		t.Errorf("with GUILD_PRESENCES: %d, %d, %d members; want 151 (every member of a guild that is not large), "+
			"101 (the bot and the 100 online of a large one), 1 (the bot, over 75k members)", with[gs[0].ID], with[gs[1].ID], with[gs[2].ID])
	}
	without := count(IntentGuilds | IntentGuildMembers)
	for id, n := range without {
		if n != 1 {
			t.Errorf("without GUILD_PRESENCES, guild %d: %d members; want only the bot", id, n)
		}
	}
}

func TestChunksAreReplayedByteForByteOnResume(t *testing.T) {
	s := membersSim(t, func(c *Config) { c.Guilds, c.MembersPerGuild = 1, 1500; c.ResumeWindow = 10 * time.Second })
	g := s.Guilds()[0]
	c, r := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMembers|IntentGuildPresences)
	before := c.lastSeq
	requestMembers(c, map[string]any{"guild_id": FormatID(g.ID), "query": "", "limit": 0, "presences": true, "nonce": "r"})
	first := []string{string(nextDispatch(t, c, 3*time.Second).D), string(nextDispatch(t, c, 3*time.Second).D)}
	c.drop()
	c2 := dial(t, s)
	c2.expectHello()
	c2.resume(testToken, r.SessionID, before)
	for i, want := range first {
		if got := nextDispatch(t, c2, 3*time.Second); string(got.D) != want {
			t.Fatalf("replayed chunk %d differs from the one first sent", i)
		}
	}
	c2.expect(0, "RESUMED")
}

func TestAdminSetsAGuildsMemberCount(t *testing.T) {
	s := membersSim(t, nil)
	g := s.Guilds()[0]
	post := func(path string) int {
		resp, err := http.Post(s.URL()+path, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("/_sim/gateway/guilds/" + FormatID(g.ID) + "/members?count=5000"); code != 200 {
		t.Fatalf("set member count: %d", code)
	}
	if got := s.Guilds()[0].MemberCount; got != 5000 {
		t.Fatalf("MemberCount %d, want 5000", got)
	}
	if code := post("/_sim/gateway/guilds/1/members?count=5"); code != 404 {
		t.Errorf("unknown guild: %d, want 404", code)
	}
	if code := post("/_sim/gateway/guilds/" + FormatID(g.ID) + "/members?count=-1"); code != 400 {
		t.Errorf("negative count: %d, want 400", code)
	}
}
