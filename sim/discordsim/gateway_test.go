package discordsim

import (
	"bytes"
	"compress/flate"
	"compress/zlib"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/testkit"
)

const testToken = "sim-token"

// startGateway runs a simulator with short windows; change what a test needs in tune.
func startGateway(t testing.TB, tune func(*Config)) *Server {
	t.Helper()
	cfg := Config{Guilds: 20, HeartbeatInterval: time.Second, IdentifyWindow: 200 * time.Millisecond,
		ResumeWindow: time.Second, MaxConcurrency: 16}
	if tune != nil {
		tune(&cfg)
	}
	s := New(cfg)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func dialQ(t testing.TB, s *Server, query string) *testClient {
	t.Helper()
	c := dialGateway(t, s.GatewayURL(), query)
	return c
}

func dial(t testing.TB, s *Server) *testClient { return dialQ(t, s, "v=10&encoding=json") }

// connectShard dials, identifies and reads READY and the GUILD_CREATEs of an identified shard.
func connectShard(t testing.TB, s *Server, shard, num, intents int) (*testClient, readyD) {
	t.Helper()
	c := dial(t, s)
	c.expectHello()
	var r readyD
	for try := 0; ; try++ {
		c.identify(testToken, shard, num, intents)
		p := c.next(3 * time.Second)
		if p.Op == 9 && try < 3 {
			// Identify pacing: another shard of this bucket identified within the window.
			time.Sleep(s.cfg.IdentifyWindow + 10*time.Millisecond)
			continue
		}
		if p.name() != "READY" {
			t.Fatalf("identify [%d %d]: got %v, want READY", shard, num, p)
		}
		_ = json.Unmarshal(p.D, &r)
		break
	}
	if intents&IntentGuilds != 0 {
		for range r.Guilds {
			c.expect(0, "GUILD_CREATE")
		}
	}
	return c, r
}

func guildIDsOfShard(s *Server, shard, num int) []string {
	var ids []string
	for _, g := range s.Guilds() {
		if ShardFor(g.ID, num) == shard && !g.Unavailable {
			ids = append(ids, FormatID(g.ID))
		}
	}
	slices.Sort(ids)
	return ids
}

func TestHelloThenReadyWithUnavailableGuildsThenOneGuildCreatePerGuildOfTheShard(t *testing.T) {
	s := startGateway(t, nil)
	c := dial(t, s)
	if iv := c.expectHello(); iv != 1000 {
		t.Fatalf("heartbeat_interval %d, want 1000", iv)
	}
	c.identify("Bot "+testToken, 1, 3, IntentGuilds|IntentGuildMessages)
	p := c.expect(0, "READY")
	if *p.S != 1 {
		t.Fatalf("READY has s=%d, want 1", *p.S)
	}
	var r readyD
	_ = json.Unmarshal(p.D, &r)
	want := guildIDsOfShard(s, 1, 3)
	if len(want) == 0 || len(want) == 20 {
		t.Fatalf("test setup: shard 1 of 3 holds %d of 20 guilds", len(want))
	}
	var got []string
	for _, g := range r.Guilds {
		if !g.Unavailable {
			t.Errorf("READY guild %s is not unavailable", g.ID)
		}
		got = append(got, g.ID)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("READY guilds %v, want the guilds with (id>>22)%%3 == 1: %v", got, want)
	}
	if r.V != 10 || r.Shard != [2]int{1, 3} || r.SessionID == "" || r.User.ID != FormatID(BotUserID(0)) ||
		!r.User.Bot || r.Application.ID == "" {
		t.Fatalf("READY %+v: want v 10, shard [1 3], a session_id, the bot user, an application", r)
	}
	if wantURL := strings.TrimSuffix(s.GatewayURL(), "/gateway") + "/gateway-resume"; r.ResumeGatewayURL != wantURL {
		t.Fatalf("resume_gateway_url %q, want %q (distinct from the connect URL)", r.ResumeGatewayURL, wantURL)
	}
	var created []string
	for i := range want {
		p := c.expect(0, "GUILD_CREATE")
		if *p.S != int64(i+2) {
			t.Fatalf("GUILD_CREATE %d has s=%d, want %d", i, *p.S, i+2)
		}
		var g struct {
			ID          string           `json:"id"`
			Unavailable *bool            `json:"unavailable"`
			MemberCount int              `json:"member_count"`
			Large       *bool            `json:"large"`
			JoinedAt    string           `json:"joined_at"`
			Channels    []map[string]any `json:"channels"`
			Roles       []map[string]any `json:"roles"`
			Members     []simMember      `json:"members"`
			Emojis      []any            `json:"emojis"`
			VoiceStates []any            `json:"voice_states"`
		}
		if err := json.Unmarshal(p.D, &g); err != nil {
			t.Fatal(err)
		}
		if g.Unavailable == nil || *g.Unavailable || g.Large == nil || g.MemberCount != 6 || g.JoinedAt == "" ||
			g.Emojis == nil || g.VoiceStates == nil || len(g.Roles) == 0 {
			t.Fatalf("GUILD_CREATE %s", p.D)
		}
		if len(g.Channels) != 3 {
			t.Fatalf("GUILD_CREATE has %d channels, want 3", len(g.Channels))
		}
		for _, ch := range g.Channels {
			if _, ok := ch["guild_id"]; ok {
				t.Fatalf("GUILD_CREATE channel has guild_id; Discord omits it there: %v", ch)
			}
			if ch["type"] != float64(0) || ch["name"] == "" {
				t.Fatalf("channel %v", ch)
			}
		}
		if len(g.Members) == 0 || g.Members[0].User.ID != FormatID(BotUserID(0)) {
			t.Fatalf("GUILD_CREATE members must include the bot: %+v", g.Members)
		}
		created = append(created, g.ID)
	}
	slices.Sort(created)
	if !slices.Equal(created, want) {
		t.Fatalf("GUILD_CREATE for %v, want %v", created, want)
	}
	select {
	case p := <-c.msgs:
		t.Fatalf("unexpected message after the GUILD_CREATEs: %v", p)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestTransportCompressionRoundTripsManyMessagesWithOneContext(t *testing.T) {
	for _, mode := range []string{"zlib-stream", "zstd-stream"} {
		t.Run(mode, func(t *testing.T) {
			s := startGateway(t, func(c *Config) { c.Guilds = 4 })
			c := dialQ(t, s, "v=10&encoding=json&compress="+mode)
			c.expectHello()
			c.identify(testToken, 0, 1, IntentGuilds|IntentGuildMessages)
			r := c.expectReady()
			for range r.Guilds {
				c.expect(0, "GUILD_CREATE")
			}
			guild := s.Guilds()[0].ID
			rnd := rand.New(rand.NewSource(1))
			const n = 600
			var keys []string
			for i := 0; i < n; i++ {
				// Repetitive and random content, small and large, so matches cross message boundaries.
				content := strings.Repeat("hello gateway ", rnd.Intn(50))
				if i%7 == 0 {
					b := make([]byte, 1+rnd.Intn(3000))
					rnd.Read(b)
					content = fmt.Sprintf("%x", b)
				}
				keys = append(keys, s.Dispatch(guild, "MESSAGE_CREATE", map[string]any{"id": strconv.Itoa(i),
					"content": content, "author": map[string]string{"id": "1"}}))
			}
			for i := 0; i < n; i++ {
				p := c.expect(0, "MESSAGE_CREATE")
				if !p.Binary {
					t.Fatalf("message %d was not in a binary frame", i)
				}
				var m struct {
					ID string `json:"id"`
				}
				_ = json.Unmarshal(p.D, &m)
				if m.ID != strconv.Itoa(i) {
					t.Fatalf("message %d has id %s: out of order or corrupt", i, m.ID)
				}
			}
			c.heartbeat()
			c.expect(11, "")
			if err := c.err(); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, 2*time.Second, "sent_seq catches up", func() bool { return int64(len(s.EventKeysSent(r.SessionID))) == c.lastSeq })
			if got := s.EventKeysSent(r.SessionID); len(got) < n || !slices.Equal(got[len(got)-n:], keys) {
				t.Fatalf("EventKeysSent does not end with the dispatched keys")
			}
		})
	}
}

func TestZlibStreamReferencesEarlierMessages(t *testing.T) {
	// A client that inflates each message with a fresh context must fail, as it would on Discord.
	var d deflateStream
	msg := []byte(`{"t":"MESSAGE_CREATE","s":1,"op":0,"d":{"content":"the same text, again and again"}}`)
	first := slices.Clone(d.compress(msg))
	second := slices.Clone(d.compress(msg))
	if len(second) >= len(first)/2 {
		t.Fatalf("second copy compressed to %d bytes (first %d): no back-reference into the first message",
			len(second), len(first))
	}
	if _, err := io.ReadAll(flate.NewReader(bytes.NewReader(second))); err == nil {
		t.Fatal("the second message decoded on its own; it must need the first message's history")
	}
	// And one context decodes everything, including messages far larger than the window.
	var stream bytes.Buffer
	var want bytes.Buffer
	rnd := rand.New(rand.NewSource(2))
	var d2 deflateStream
	for i := 0; i < 300; i++ {
		var m []byte
		switch i % 4 {
		case 0:
			m = bytes.Repeat([]byte("abcabcabd"), rnd.Intn(20000))
		case 1:
			m = make([]byte, rnd.Intn(70000))
			rnd.Read(m)
		default:
			m = []byte(fmt.Sprintf(`{"op":0,"s":%d,"d":{"n":%d}}`, i, rnd.Int()))
		}
		want.Write(m)
		out := d2.compress(m)
		if !bytes.HasSuffix(out, []byte{0, 0, 0xff, 0xff}) {
			t.Fatalf("message %d does not end with a sync flush", i)
		}
		stream.Write(out)
	}
	zr, err := zlib.NewReader(&stream)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil && err != io.ErrUnexpectedEOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("round trip differs: %d bytes back, %d sent", len(got), want.Len())
	}
}

func TestIdentifyValidationClosesWithDiscordsCodes(t *testing.T) {
	props := map[string]string{"os": "linux", "browser": "x", "device": "x"}
	cases := []struct {
		name  string
		query string
		tune  func(*Config)
		send  func(c *testClient)
		code  int
	}{
		{name: "bad token", code: 4004, send: func(c *testClient) { c.identify("nope", 0, 1, IntentGuilds) }},
		{name: "privileged intent not enabled", code: 4014,
			send: func(c *testClient) { c.identify(testToken, 0, 1, IntentGuilds|IntentMessageContent) }},
		{name: "unknown intent bit", code: 4013, send: func(c *testClient) { c.identify(testToken, 0, 1, 1<<30) }},
		{name: "undocumented intent bit 17", code: 4013, send: func(c *testClient) { c.identify(testToken, 0, 1, 1<<17) }},
		{name: "missing intents", code: 4013, send: func(c *testClient) {
			c.send(2, map[string]any{"token": testToken, "properties": props})
		}},
		{name: "shard id equal to num", code: 4010, send: func(c *testClient) { c.identify(testToken, 2, 2, IntentGuilds) }},
		{name: "zero shards", code: 4010, send: func(c *testClient) { c.identify(testToken, 0, 0, IntentGuilds) }},
		{name: "large bot with a shard count not a multiple of max_concurrency", code: 4010,
			tune: func(c *Config) { c.Guilds, c.MaxConcurrency, c.ChannelsPerGuild = largeBotGuilds+1, 16, 1 },
			send: func(c *testClient) { c.identify(testToken, 0, 100, IntentGuilds) }},
		{name: "too many guilds on the shard", code: 4011, tune: func(c *Config) { c.MaxGuildsPerShard = 5 },
			send: func(c *testClient) { c.identify(testToken, 0, 1, IntentGuilds) }},
		{name: "api v9", query: "v=9&encoding=json", code: 4012},
		{name: "no api version", query: "encoding=json", code: 4012},
		{name: "etf encoding", query: "v=10&encoding=etf", code: 4002},
		{name: "unknown compress", query: "v=10&encoding=json&compress=gzip", code: 4002},
		{name: "payload before identify", code: 4003, send: func(c *testClient) { c.send(3, map[string]any{}) }},
		{name: "second identify", code: 4005, send: func(c *testClient) {
			c.identify(testToken, 0, 1, IntentGuilds)
			c.expectReady()
			c.identify(testToken, 0, 1, IntentGuilds)
		}},
		{name: "unknown opcode", code: 4001, send: func(c *testClient) { c.send(5, nil) }},
		{name: "receive-only opcode", code: 4001, send: func(c *testClient) { c.send(11, nil) }},
		{name: "message over 4096 bytes", code: 4002, send: func(c *testClient) {
			c.send(1, strings.Repeat("x", 4100))
		}},
		{name: "invalid JSON", code: 4002, send: func(c *testClient) { c.sendRaw([]byte(`{"op":1,`)) }},
		{name: "op with wrong case", code: 4002, send: func(c *testClient) { c.sendRaw([]byte(`{"OP":1,"d":null}`)) }},
		{name: "large_threshold 300", code: 4002, send: func(c *testClient) {
			p := identifyPayload(testToken, 0, 1, IntentGuilds)
			p["large_threshold"] = 300
			c.send(2, p)
		}},
		{name: "properties missing device", code: 4002, send: func(c *testClient) {
			p := identifyPayload(testToken, 0, 1, IntentGuilds)
			p["properties"] = map[string]string{"os": "linux", "browser": "x"}
			c.send(2, p)
		}},
		{name: "compress true with zlib-stream", query: "v=10&encoding=json&compress=zlib-stream", code: 4002,
			send: func(c *testClient) {
				p := identifyPayload(testToken, 0, 1, IntentGuilds)
				p["compress"] = true
				c.send(2, p)
			}},
		{name: "heartbeat with a string", code: 4002, send: func(c *testClient) { c.send(1, "12") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startGateway(t, tc.tune)
			q := tc.query
			if q == "" {
				q = "v=10&encoding=json"
			}
			c := dialQ(t, s, q)
			if tc.send != nil {
				c.expectHello()
				tc.send(c)
			}
			if code := c.waitClose(3 * time.Second); code != tc.code {
				t.Fatalf("closed with %d, want %d", code, tc.code)
			}
			if n := s.GatewayStats().CloseCodesSent[tc.code]; n != 1 {
				t.Fatalf("stats count %d closes with %d, want 1", n, tc.code)
			}
		})
	}
}

func TestPrivilegedIntentEnabledInPortalIsAccepted(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.PrivilegedIntents = IntentMessageContent | IntentGuildMembers })
	c := dial(t, s)
	c.expectHello()
	c.identify(testToken, 0, 1, IntentGuilds|IntentMessageContent|IntentGuildMembers)
	r := c.expectReady()
	if r.Application.Flags&(1<<18) == 0 || r.Application.Flags&(1<<14) == 0 {
		t.Fatalf("application flags %b lack GATEWAY_MESSAGE_CONTENT / GATEWAY_GUILD_MEMBERS", r.Application.Flags)
	}
}

func TestLargeBotShardCountMultipleOfMaxConcurrencyIsAccepted(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.Guilds, c.MaxConcurrency, c.ChannelsPerGuild = largeBotGuilds+1, 16, 1 })
	c := dial(t, s)
	c.expectHello()
	c.identify(testToken, 3, 160, IntentGuildMessages)
	if r := c.expectReady(); len(r.Guilds) != len(guildIDsOfShard(s, 3, 160)) {
		t.Fatalf("READY lists %d guilds, want %d", len(r.Guilds), len(guildIDsOfShard(s, 3, 160)))
	}
}

func TestSendLimitClosesWith4008OnThe121stMessageInTheWindow(t *testing.T) {
	s := startGateway(t, nil)
	c := dial(t, s)
	c.expectHello()
	for i := 0; i < 120; i++ {
		c.heartbeat()
	}
	for i := 0; i < 120; i++ {
		c.expect(11, "")
	}
	c.heartbeat()
	if code := c.waitClose(3 * time.Second); code != 4008 {
		t.Fatalf("121st message: closed with %d, want 4008", code)
	}
	if st := s.GatewayStats(); st.RateLimitCloses != 1 {
		t.Fatalf("RateLimitCloses %d, want 1", st.RateLimitCloses)
	}
}

func TestSendLimitWindowSlides(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.SendLimit, c.SendWindow = 5, 500*time.Millisecond })
	c := dial(t, s)
	c.expectHello()
	for i := 0; i < 5; i++ {
		c.heartbeat()
		c.expect(11, "")
	}
	time.Sleep(550 * time.Millisecond)
	for i := 0; i < 5; i++ {
		c.heartbeat()
		c.expect(11, "")
	}
	c.heartbeat()
	if code := c.waitClose(3 * time.Second); code != 4008 {
		t.Fatalf("6th message within 500ms: closed with %d, want 4008", code)
	}
}

func TestIdentifyPacingSecondIdentifyInABucketGetsOp9AndIsCounted(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.MaxConcurrency = 1 })
	a := dial(t, s)
	b := dial(t, s)
	a.expectHello()
	b.expectHello()
	a.identify(testToken, 0, 2, IntentGuilds)
	a.expectReady()
	b.identify(testToken, 1, 2, IntentGuilds) // bucket 1 % 1 == 0, same as shard 0
	p := b.expect(9, "")
	if string(p.D) != "false" {
		t.Fatalf("op 9 d=%s, want false", p.D)
	}
	st := s.GatewayStats()
	if st.IdentifyViolations != 1 || len(st.Identifies) != 2 || st.Identifies[1].Outcome != IdentifyRateLimited {
		t.Fatalf("stats: %d violations, identifies %+v; want the second rate limited", st.IdentifyViolations, st.Identifies)
	}
	if got := s.gw.sessionStartLimit(0).Remaining; got != 999 {
		t.Fatalf("a refused identify cost budget: remaining %d, want 999", got)
	}
	// The connection stays open (as on Discord); after the window the same connection may identify.
	time.Sleep(220 * time.Millisecond)
	b.identify(testToken, 1, 2, IntentGuilds)
	b.expectReady()
}

func TestIdentifyPacingAllowsDifferentBucketsAtOnce(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.MaxConcurrency = 4 })
	clients := make([]*testClient, 4)
	for shard := range clients {
		clients[shard] = dial(t, s)
		clients[shard].expectHello()
	}
	for shard, c := range clients {
		c.identify(testToken, shard, 4, IntentGuilds) // back to back: buckets 0, 1, 2, 3
	}
	for _, c := range clients {
		c.expectReady()
	}
	if v := s.GatewayStats().IdentifyViolations; v != 0 {
		t.Fatalf("%d violations for 4 shards in 4 buckets, want 0", v)
	}
}

func getGatewayBot(t *testing.T, s *Server) SessionStartLimit {
	t.Helper()
	req, _ := http.NewRequest("GET", s.APIURL()+"/v10/gateway/bot", nil)
	req.Header.Set("Authorization", "Bot "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var gb struct {
		SessionStartLimit SessionStartLimit `json:"session_start_limit"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&gb); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/gateway/bot: %d %v", resp.StatusCode, err)
	}
	return gb.SessionStartLimit
}

func TestSessionStartBudgetIsSpentByIdentifyNotResumeAndExhaustionResetsTheToken(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.SessionStartTotal, c.SessionStartReset = 3, time.Hour })
	if l := getGatewayBot(t, s); l.Remaining != 3 || l.Total != 3 || l.ResetAfter != 3600000 {
		t.Fatalf("/gateway/bot before any identify: %+v", l)
	}
	a, ra := connectShard(t, s, 0, 2, IntentGuilds)
	b, _ := connectShard(t, s, 1, 2, IntentGuilds)
	l := getGatewayBot(t, s)
	if l.Remaining != 1 || l.ResetAfter <= 0 || l.ResetAfter > 3600000 {
		t.Fatalf("/gateway/bot after 2 identifies: %+v, want remaining 1 and reset_after counting down", l)
	}
	// A resume costs nothing.
	a.drop()
	a2 := dialGateway(t, ra.ResumeGatewayURL, "v=10&encoding=json")
	a2.expectHello()
	a2.resume(testToken, ra.SessionID, a.lastSeq)
	a2.expect(0, "RESUMED")
	if got := s.gw.sessionStartLimit(0).Remaining; got != 1 {
		t.Fatalf("remaining %d after a resume, want 1", got)
	}
	connectShard(t, s, 0, 2, IntentGuilds) // the last one
	d := dial(t, s)
	d.expectHello()
	d.identify(testToken, 1, 2, IntentGuilds)
	if code := d.waitClose(3 * time.Second); code != 4004 {
		t.Fatalf("identify past the budget: closed with %d, want 4004", code)
	}
	// The token is reset: its sessions end.
	for _, c := range []*testClient{a2, b} {
		if code := c.waitClose(3 * time.Second); code != 4004 {
			t.Fatalf("a session of the exhausted token closed with %d, want 4004", code)
		}
	}
	st := s.GatewayStats()
	if st.BudgetExhaustions != 1 || st.Identifies[len(st.Identifies)-1].Outcome != IdentifyBudgetExhausted {
		t.Fatalf("stats: %d exhaustions, last identify %+v", st.BudgetExhaustions, st.Identifies[len(st.Identifies)-1])
	}
	testkit.Eventually(t, 2*time.Second, "the token reset ends every session", func() bool { return len(s.Sessions()) == 0 })
}

func TestHeartbeatIsAckedWithOp11(t *testing.T) {
	s := startGateway(t, nil)
	c := dial(t, s)
	c.expectHello()
	c.send(1, nil)
	p := c.expect(11, "")
	if string(p.D) != "null" || p.S != nil || p.T != nil {
		t.Fatalf("ACK %v: want d, s and t null", p)
	}
	c.send(1, 42)
	c.expect(11, "")
}

func TestMissingHeartbeatClosesResumably(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.HeartbeatInterval = 200 * time.Millisecond })
	start := time.Now() // before HELLO, so the measured time can only be longer than the server's
	c := dial(t, s)
	c.expectHello()
	c.identify(testToken, 0, 1, IntentGuilds)
	r := c.expectReady()
	code := c.waitClose(2 * time.Second)
	if code != closeHeartbeatTimeout {
		t.Fatalf("closed with %d, want %d", code, closeHeartbeatTimeout)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 1500*time.Millisecond {
		t.Fatalf("closed after %v; want about 1.5 × 200ms", el)
	}
	if st := s.GatewayStats(); st.HeartbeatTimeouts != 1 {
		t.Fatalf("HeartbeatTimeouts %d, want 1", st.HeartbeatTimeouts)
	}
	c2 := dialGateway(t, r.ResumeGatewayURL, "v=10&encoding=json")
	c2.expectHello()
	c2.resume(testToken, r.SessionID, 1)
	for {
		if p := c2.next(2 * time.Second); p.name() == "RESUMED" {
			break
		}
	}
}

func TestHeartbeatingClientStaysConnected(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.HeartbeatInterval = 300 * time.Millisecond })
	c := dial(t, s)
	c.expectHello()
	c.heartbeatEvery(100 * time.Millisecond)
	time.Sleep(900 * time.Millisecond)
	select {
	case <-c.done:
		t.Fatalf("closed with %d although the client heartbeats", c.closeCode)
	default:
	}
}

func TestZombieAdminStopsAcks(t *testing.T) {
	s := startGateway(t, nil)
	c, r := connectShard(t, s, 0, 1, IntentGuilds)
	if !s.SetHeartbeatAck(r.SessionID, false) {
		t.Fatal("SetHeartbeatAck: session not found")
	}
	c.heartbeat()
	select {
	case p := <-c.msgs:
		t.Fatalf("zombie connection answered %v", p)
	case <-time.After(200 * time.Millisecond):
	}
	if info := s.Sessions()[0]; !info.Zombie {
		t.Fatalf("session info %+v: want zombie", info)
	}
}

func TestResumeAfterDropReplaysExactlyTheMissedEventsInOrderThenResumed(t *testing.T) {
	s := startGateway(t, nil)
	c, r := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMessages)
	guild := s.Guilds()[3].ID
	for i := 0; i < 5; i++ {
		s.Dispatch(guild, "MESSAGE_CREATE", map[string]any{"id": "before-" + strconv.Itoa(i)})
		c.expect(0, "MESSAGE_CREATE")
	}
	seen := c.lastSeq
	if !s.DropSession(r.SessionID) {
		t.Fatal("DropSession: not connected")
	}
	if code := c.waitClose(2 * time.Second); code != 0 {
		t.Fatalf("a drop must not send a close frame; got %d", code)
	}
	var missed []string
	for i := 0; i < 7; i++ {
		missed = append(missed, s.Dispatch(guild, "MESSAGE_CREATE", map[string]any{"id": "missed-" + strconv.Itoa(i)}))
	}
	testkit.Eventually(t, 2*time.Second, "the server notices the drop", func() bool { return !s.Sessions()[0].Connected })
	if info := s.Sessions()[0]; info.Seq != seen+7 {
		t.Fatalf("session while disconnected: %+v; want seq %d", info, seen+7)
	}
	c2 := dialGateway(t, r.ResumeGatewayURL, "v=10&encoding=json")
	c2.expectHello()
	c2.resume("Bot "+testToken, r.SessionID, seen)
	for i := 0; i < 7; i++ {
		p := c2.expect(0, "MESSAGE_CREATE")
		var m struct{ ID string }
		_ = json.Unmarshal(p.D, &m)
		if *p.S != seen+1+int64(i) || m.ID != "missed-"+strconv.Itoa(i) {
			t.Fatalf("replay %d: s=%d id=%s, want s=%d id=missed-%d", i, *p.S, m.ID, seen+1+int64(i), i)
		}
	}
	p := c2.expect(0, "RESUMED")
	if *p.S != seen+8 {
		t.Fatalf("RESUMED s=%d, want %d", *p.S, seen+8)
	}
	live := s.Dispatch(guild, "MESSAGE_CREATE", map[string]any{"id": "live"})
	c2.expect(0, "MESSAGE_CREATE")
	testkit.Eventually(t, 2*time.Second, "sent_seq catches up", func() bool { return len(s.EventKeysSent(r.SessionID)) == int(seen)+9 })
	keys := s.EventKeysSent(r.SessionID)
	if len(keys) != int(seen)+9 || !slices.Equal(keys[seen:seen+7], missed) || keys[len(keys)-1] != live {
		t.Fatalf("EventKeysSent %v: want the missed keys %v at seq %d.. and %s last", keys, missed, seen+1, live)
	}
	st := s.GatewayStats()
	if len(st.Resumes) != 1 || !st.Resumes[0].OK || st.Resumes[0].Replayed != 7 || st.Resumes[0].Endpoint != "resume" {
		t.Fatalf("resume records %+v: want one OK, 7 replayed, on the resume endpoint", st.Resumes)
	}
	if got := s.gw.sessionStartLimit(0).Remaining; got != 999 {
		t.Fatalf("remaining %d after one identify and one resume, want 999", got)
	}
}

func TestResumeFromAnOlderSeqReplaysFromThere(t *testing.T) {
	s := startGateway(t, nil)
	c, r := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMessages)
	guild := s.Guilds()[0].ID
	for i := 0; i < 4; i++ {
		s.Dispatch(guild, "MESSAGE_CREATE", map[string]any{"id": strconv.Itoa(i)})
		c.expect(0, "MESSAGE_CREATE")
	}
	c.drop()
	c2 := dial(t, s) // the connect URL works too
	c2.expectHello()
	c2.resume(testToken, r.SessionID, c.lastSeq-2)
	for i := 2; i < 4; i++ {
		p := c2.expect(0, "MESSAGE_CREATE")
		if !strings.Contains(string(p.D), `"id":"`+strconv.Itoa(i)+`"`) {
			t.Fatalf("replay %v, want message %d", p, i)
		}
	}
	c2.expect(0, "RESUMED")
	if st := s.GatewayStats(); st.Resumes[0].Endpoint != "gateway" {
		t.Fatalf("resume endpoint %q, want gateway", st.Resumes[0].Endpoint)
	}
}

func TestNoResumeAfterClientCloses1000ButAfter4000(t *testing.T) {
	for _, tc := range []struct {
		code      int
		resumable bool
	}{{1000, false}, {1001, false}, {4000, true}, {4999, true}} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			s := startGateway(t, nil)
			c, r := connectShard(t, s, 0, 1, IntentGuilds)
			c.closeWith(tc.code)
			if n := s.GatewayStats().CloseCodesReceived[tc.code]; n != 1 {
				t.Fatalf("CloseCodesReceived[%d] = %d, want 1", tc.code, n)
			}
			c2 := dial(t, s)
			c2.expectHello()
			c2.resume(testToken, r.SessionID, c.lastSeq)
			p := c2.next(2 * time.Second)
			if tc.resumable && p.name() != "RESUMED" {
				t.Fatalf("after a client close with %d: got %v, want RESUMED", tc.code, p)
			}
			if !tc.resumable && (p.Op != 9 || string(p.D) != "false") {
				t.Fatalf("after a client close with %d: got %v, want op 9 d:false", tc.code, p)
			}
		})
	}
}

func TestResumeWindowExpires(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.ResumeWindow = 300 * time.Millisecond })
	c, r := connectShard(t, s, 0, 1, IntentGuilds)
	c.drop()
	time.Sleep(350 * time.Millisecond)
	testkit.Eventually(t, 2*time.Second, "the session expires", func() bool { return len(s.Sessions()) == 0 })
	c2 := dial(t, s)
	c2.expectHello()
	c2.resume(testToken, r.SessionID, c.lastSeq)
	if p := c2.next(2 * time.Second); p.Op != 9 || string(p.D) != "false" {
		t.Fatalf("resume after the window: %v, want op 9 d:false", p)
	}
}

func TestResumeRejections(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.Tokens = []string{testToken, "other-token"} })
	c, r := connectShard(t, s, 0, 1, IntentGuilds)
	c.drop()
	t.Run("another bot's token gets op 9 and the session survives", func(t *testing.T) {
		c2 := dial(t, s)
		c2.expectHello()
		c2.resume("other-token", r.SessionID, c.lastSeq)
		if p := c2.next(2 * time.Second); p.Op != 9 || string(p.D) != "false" {
			t.Fatalf("got %v, want op 9 d:false", p)
		}
	})
	t.Run("unknown session gets op 9", func(t *testing.T) {
		c2 := dial(t, s)
		c2.expectHello()
		c2.resume(testToken, "no-such-session", 1)
		if p := c2.next(2 * time.Second); p.Op != 9 || string(p.D) != "false" {
			t.Fatalf("got %v, want op 9 d:false", p)
		}
	})
	t.Run("seq past the last dispatch closes 4007", func(t *testing.T) {
		c2 := dial(t, s)
		c2.expectHello()
		c2.resume(testToken, r.SessionID, c.lastSeq+5)
		if code := c2.waitClose(3 * time.Second); code != 4007 {
			t.Fatalf("closed with %d, want 4007", code)
		}
		testkit.Eventually(t, 2*time.Second, "a 4007 close ends the session", func() bool { return len(s.Sessions()) == 0 })
	})
}

func TestResumeTakesOverAStillConnectedSession(t *testing.T) {
	s := startGateway(t, nil)
	c, r := connectShard(t, s, 0, 1, IntentGuilds)
	c2 := dial(t, s)
	c2.expectHello()
	c2.resume(testToken, r.SessionID, c.lastSeq)
	c2.expect(0, "RESUMED")
	c.waitClose(2 * time.Second)
	if st := s.GatewayStats(); !st.Resumes[0].TookOver {
		t.Fatalf("resume record %+v: want TookOver", st.Resumes[0])
	}
}

func TestAdminOp7ThenServerClosesIfClientStays(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.HeartbeatInterval = 300 * time.Millisecond })
	c, r := connectShard(t, s, 0, 1, IntentGuilds)
	c.heartbeatEvery(100 * time.Millisecond)
	if !s.ReconnectSession(r.SessionID) {
		t.Fatal("ReconnectSession: not connected")
	}
	c.expect(7, "")
	if code := c.waitClose(2 * time.Second); code != 4000 {
		t.Fatalf("client ignored op 7: closed with %d, want 4000", code)
	}
	c2 := dialGateway(t, r.ResumeGatewayURL, "v=10&encoding=json")
	c2.expectHello()
	c2.resume(testToken, r.SessionID, c.lastSeq)
	c2.expect(0, "RESUMED")
}

func TestAdminOp9(t *testing.T) {
	for _, resumable := range []bool{true, false} {
		t.Run(strconv.FormatBool(resumable), func(t *testing.T) {
			s := startGateway(t, nil)
			c, r := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMessages)
			if !s.InvalidateSession(r.SessionID, resumable) {
				t.Fatal("InvalidateSession: not connected")
			}
			p := c.expect(9, "")
			if string(p.D) != strconv.FormatBool(resumable) {
				t.Fatalf("op 9 d=%s, want %v", p.D, resumable)
			}
			s.Dispatch(s.Guilds()[0].ID, "MESSAGE_CREATE", map[string]any{"id": "1"})
			c.closeWith(4000)
			c2 := dial(t, s)
			c2.expectHello()
			c2.resume(testToken, r.SessionID, c.lastSeq)
			p = c2.next(2 * time.Second)
			if resumable {
				if p.name() != "MESSAGE_CREATE" {
					t.Fatalf("after op 9 true the resume replays the message sent meanwhile; got %v", p)
				}
				c2.expect(0, "RESUMED")
			} else if p.Op != 9 || string(p.D) != "false" {
				t.Fatalf("after op 9 false: %v, want op 9 d:false", p)
			}
		})
	}
}

func TestAdminOp1AndCloseWithCode(t *testing.T) {
	s := startGateway(t, nil)
	c, r := connectShard(t, s, 0, 1, IntentGuilds)
	s.RequestHeartbeat(r.SessionID)
	c.expect(1, "")
	s.CloseSession(r.SessionID, 4009)
	if code := c.waitClose(2 * time.Second); code != 4009 {
		t.Fatalf("closed with %d, want 4009", code)
	}
	testkit.Eventually(t, 2*time.Second, "a 4009 close ends the session", func() bool { return len(s.Sessions()) == 0 })
}

func TestDispatchReachesConcurrentSessionsOfDifferentShardCounts(t *testing.T) {
	s := startGateway(t, nil)
	gd := s.Guilds()[5]
	k := ShardFor(gd.ID, 2)
	a, _ := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMessages)
	b, rb := connectShard(t, s, k, 2, IntentGuilds|IntentGuildMessages)
	other, _ := connectShard(t, s, 1-k, 2, IntentGuilds|IntentGuildMessages)
	key := s.Dispatch(gd.ID, "MESSAGE_CREATE", map[string]any{"id": "x", "guild_id": FormatID(gd.ID)})
	a.expect(0, "MESSAGE_CREATE")
	p := b.expect(0, "MESSAGE_CREATE")
	select {
	case p := <-other.msgs:
		t.Fatalf("shard %d of 2 got %v for a guild of shard %d", 1-k, p, k)
	case <-time.After(100 * time.Millisecond):
	}
	testkit.Eventually(t, 2*time.Second, "sent_seq catches up", func() bool { return int64(len(s.EventKeysSent(rb.SessionID))) >= *p.S })
	if keys := s.EventKeysSent(rb.SessionID); keys[*p.S-1] != key {
		t.Fatalf("key of seq %d is %s, want %s", *p.S, keys[*p.S-1], key)
	}
	// Same [id, num] twice is allowed too.
	b2, _ := connectShard(t, s, k, 2, IntentGuilds|IntentGuildMessages)
	s.Dispatch(gd.ID, "MESSAGE_CREATE", map[string]any{"id": "y"})
	b.expect(0, "MESSAGE_CREATE")
	b2.expect(0, "MESSAGE_CREATE")
}

func TestDispatchRespectsIntentsAndMessageContent(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.PrivilegedIntents = IntentMessageContent })
	with, rw := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMessages|IntentMessageContent)
	without, _ := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMessages)
	none, _ := connectShard(t, s, 0, 1, IntentGuilds)
	g := s.Guilds()[0].ID
	s.Dispatch(g, "MESSAGE_CREATE", map[string]any{"id": "1", "content": "secret", "author": map[string]string{"id": "5"},
		"embeds": []any{map[string]string{"title": "x"}}})
	s.Dispatch(g, "MESSAGE_CREATE", map[string]any{"id": "2", "content": "hi bot",
		"author": map[string]string{"id": rw.User.ID}})
	p := with.expect(0, "MESSAGE_CREATE")
	if !strings.Contains(string(p.D), "secret") {
		t.Fatalf("with MESSAGE_CONTENT: %s", p.D)
	}
	p = without.expect(0, "MESSAGE_CREATE")
	if strings.Contains(string(p.D), "secret") || strings.Contains(string(p.D), `"title"`) {
		t.Fatalf("without MESSAGE_CONTENT the content and embeds must be empty: %s", p.D)
	}
	if p = without.expect(0, "MESSAGE_CREATE"); !strings.Contains(string(p.D), "hi bot") {
		t.Fatalf("the bot's own message keeps its content: %s", p.D)
	}
	select {
	case p := <-none.msgs:
		t.Fatalf("a session without GUILD_MESSAGES got %v", p)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestFirehoseRespectsIntentsAndKeysMatchNonces(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.PrivilegedIntents = IntentGuildMembers | IntentMessageContent })
	all := IntentGuilds | IntentGuildMembers | IntentGuildMessages | IntentGuildMessageReactions |
		IntentGuildMessageTyping | IntentMessageContent
	full, rf := connectShard(t, s, 0, 1, all)
	msgsOnly, _ := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMessages)
	done := make(chan struct{})
	stop := s.StartFirehose(FirehoseOptions{MaxSpeed: true, Total: 2000, Done: done})
	defer stop()
	<-done
	// Reads until want firehose events came (0: until none comes for a while). A loaded machine can
	// pause the test's reader for longer than any short quiet period.
	count := func(c *testClient, want int) (map[string]int, []gwPayload) {
		kinds := map[string]int{}
		var ps []gwPayload
		n := 0
		quiet := 2 * time.Second
		if want > 0 {
			quiet = 15 * time.Second
		}
		for want == 0 || n < want {
			select {
			case p := <-c.msgs:
				kinds[p.name()]++
				ps = append(ps, p)
				if p.name() != "" {
					n++
				}
			case <-time.After(quiet):
				return kinds, ps
			}
		}
		return kinds, ps
	}
	fk, fps := count(full, 2000)
	mk, mps := count(msgsOnly, 0)
	total := 0
	for _, k := range []string{"MESSAGE_CREATE", "MESSAGE_UPDATE", "GUILD_MEMBER_ADD", "TYPING_START", "MESSAGE_REACTION_ADD"} {
		if fk[k] == 0 {
			t.Errorf("the session with every intent got no %s: %v", k, fk)
		}
		total += fk[k]
	}
	if total != 2000 {
		t.Errorf("the session with every intent got %d events, want all 2000", total)
	}
	for _, k := range []string{"GUILD_MEMBER_ADD", "TYPING_START", "MESSAGE_REACTION_ADD"} {
		if mk[k] != 0 {
			t.Errorf("a session without the intent got %d %s", mk[k], k)
		}
	}
	if mk["MESSAGE_CREATE"] != fk["MESSAGE_CREATE"] || mk["MESSAGE_UPDATE"] != fk["MESSAGE_UPDATE"] {
		t.Errorf("message events differ: %v vs %v", mk, fk)
	}
	for _, p := range mps {
		if p.name() == "MESSAGE_CREATE" && strings.Contains(string(p.D), "firehose message") {
			t.Fatalf("content leaked to a session without MESSAGE_CONTENT: %s", p.D)
		}
	}
	keys := s.EventKeysSent(rf.SessionID)
	unfurls := 0
	for _, p := range fps {
		var m struct {
			Nonce           string     `json:"nonce"`
			Content         string     `json:"content"`
			Embeds          []simEmbed `json:"embeds"`
			EditedTimestamp *string    `json:"edited_timestamp"`
		}
		_ = json.Unmarshal(p.D, &m)
		switch p.name() {
		case "MESSAGE_CREATE":
			if m.Nonce != keys[*p.S-1] || !strings.HasSuffix(m.Content, m.Nonce) {
				t.Fatalf("seq %d: nonce %q, content %q, key %q", *p.S, m.Nonce, m.Content, keys[*p.S-1])
			}
		case "MESSAGE_UPDATE":
			if len(m.Embeds) > 0 && m.EditedTimestamp == nil {
				unfurls++
			}
		}
	}
	if unfurls == 0 {
		t.Error("no MESSAGE_UPDATE looked like an embed unfurl (same content, embeds added, not edited)")
	}
}

func TestGuildLifecycleEventsReachTheRightShard(t *testing.T) {
	s := startGateway(t, nil)
	a, _ := connectShard(t, s, 0, 2, IntentGuilds)
	b, _ := connectShard(t, s, 1, 2, IntentGuilds)
	added := s.AddGuilds(1)[0]
	on, off := a, b
	if ShardFor(added.ID, 2) == 1 {
		on, off = b, a
	}
	p := on.expect(0, "GUILD_CREATE")
	if !strings.Contains(string(p.D), FormatID(added.ID)) {
		t.Fatalf("GUILD_CREATE %s, want guild %d", p.D, added.ID)
	}
	s.SetGuildOutage(added.ID, true)
	if p := on.expect(0, "GUILD_DELETE"); string(p.D) != `{"id":"`+FormatID(added.ID)+`","unavailable":true}` {
		t.Fatalf("outage: %s", p.D)
	}
	if s.Dispatch(added.ID, "MESSAGE_CREATE", map[string]any{}) != "" {
		t.Fatal("Dispatch to a guild in an outage must send nothing")
	}
	s.SetGuildOutage(added.ID, false)
	on.expect(0, "GUILD_CREATE")
	s.RemoveGuild(added.ID)
	if p := on.expect(0, "GUILD_DELETE"); string(p.D) != `{"id":"`+FormatID(added.ID)+`"}` {
		t.Fatalf("removal: %s, want no unavailable field", p.D)
	}
	select {
	case p := <-off.msgs:
		t.Fatalf("the other shard got %v", p)
	case <-time.After(100 * time.Millisecond):
	}
	// A new identify lists guilds in an outage as unavailable and sends no GUILD_CREATE for them.
	down := s.Guilds()[0]
	s.SetGuildOutage(down.ID, true)
	time.Sleep(s.cfg.IdentifyWindow) // identify pacing: shard 0 of 2 identified moments ago in this bucket
	c := dial(t, s)
	c.expectHello()
	c.identify(testToken, 0, 1, IntentGuilds)
	r := c.expectReady()
	for range len(r.Guilds) - 1 {
		if p := c.expect(0, "GUILD_CREATE"); strings.Contains(string(p.D), `"id":"`+FormatID(down.ID)+`"`) {
			t.Fatal("GUILD_CREATE for a guild in an outage")
		}
	}
}

func TestPayloadCompressionSendsLargePayloadsAsZlib(t *testing.T) {
	s := startGateway(t, func(c *Config) { c.Guilds = 2 })
	c := dial(t, s)
	c.expectHello()
	p := identifyPayload(testToken, 0, 1, IntentGuilds|IntentGuildMessages)
	p["compress"] = true
	c.send(2, p)
	c.expectReady()
	c.expect(0, "GUILD_CREATE")
	c.expect(0, "GUILD_CREATE")
	s.Dispatch(s.Guilds()[0].ID, "CHANNEL_UPDATE", map[string]string{"topic": strings.Repeat("z", 3000)})
	if m := c.expect(0, "CHANNEL_UPDATE"); !m.Binary {
		t.Fatal("a 3 KB payload with compress:true must arrive as a binary zlib frame")
	}
	c.heartbeat()
	if m := c.expect(11, ""); m.Binary {
		t.Fatal("a small payload must stay text")
	}
}

func TestAdminHTTPEndpoints(t *testing.T) {
	s := startGateway(t, nil)
	c, r := connectShard(t, s, 0, 1, IntentGuilds|IntentGuildMessages)
	post := func(path, body string) map[string]any {
		t.Helper()
		resp, err := http.Post(s.URL()+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s: %d %v", path, resp.StatusCode, out)
		}
		return out
	}
	resp, err := http.Get(s.URL() + "/_sim/gateway/sessions?shard=0&num=1")
	if err != nil {
		t.Fatal(err)
	}
	var list []SessionInfo
	_ = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list) != 1 || list[0].ID != r.SessionID || !list[0].Connected {
		t.Fatalf("sessions: %+v", list)
	}
	out := post("/_sim/gateway/dispatch?guild="+FormatID(s.Guilds()[0].ID)+"&event=CHANNEL_UPDATE", `{"id":"1"}`)
	if out["key"] == "" {
		t.Fatalf("dispatch: %v", out)
	}
	c.expect(0, "CHANNEL_UPDATE")
	if out := post("/_sim/gateway/heartbeat?session="+r.SessionID, ""); out["affected"] != float64(1) {
		t.Fatalf("heartbeat: %v", out)
	}
	c.expect(1, "")
	if hose := post("/_sim/gateway/firehose", `{"rate":2000,"message_create":1}`); hose["id"] == nil {
		t.Fatalf("firehose: %v", hose)
	}
	c.expect(0, "MESSAGE_CREATE")
	if out := post("/_sim/gateway/firehose/stop", ""); out["affected"] != float64(1) {
		t.Fatalf("firehose/stop: %v", out)
	}
	if out := post("/_sim/gateway/drop?shard=0&num=1", ""); out["affected"] != float64(1) {
		t.Fatalf("drop: %v", out)
	}
	if code := c.waitClose(2 * time.Second); code != 0 {
		t.Fatalf("drop sent close %d", code)
	}
	if s.GatewayStats().AdminDrops != 1 {
		t.Fatal("AdminDrops not counted")
	}
	resp, err = http.Get(s.URL() + "/_sim/gateway/keys?session=" + r.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	_ = json.NewDecoder(resp.Body).Decode(&keys)
	resp.Body.Close()
	if len(keys) < 3 || keys[0] == "" {
		t.Fatalf("keys: %v", keys)
	}
}

func TestCloseAllKeepsSessionsResumable(t *testing.T) {
	s := startGateway(t, nil)
	c, r := connectShard(t, s, 0, 1, IntentGuilds)
	s.gw.closeAll()
	c.waitClose(2 * time.Second)
	c2 := dial(t, s)
	c2.expectHello()
	c2.resume(testToken, r.SessionID, c.lastSeq)
	c2.expect(0, "RESUMED")
}

// BenchmarkGatewayFirehose measures events per second from a max-speed firehose to one reading client
// over real sockets (uncompressed, zlib-stream, zstd-stream); the client decodes in the same process.
//
//	go test -run XXX -bench BenchmarkGatewayFirehose -benchtime 200000x -cpu 2 ./discordsim/
//	(Xeon, 2 cores): 85k events/s uncompressed, 98k zlib-stream, 100k zstd-stream
func BenchmarkGatewayFirehose(b *testing.B) {
	for _, mode := range []string{"", "zlib-stream", "zstd-stream"} {
		b.Run("compress="+mode, func(b *testing.B) {
			s := startGateway(b, func(c *Config) { c.Guilds = 100; c.HeartbeatInterval = time.Minute })
			q := "v=10&encoding=json"
			if mode != "" {
				q += "&compress=" + mode
			}
			c := dialQ(b, s, q)
			c.expectHello()
			c.identify(testToken, 0, 1, IntentGuilds|IntentGuildMessages|IntentGuildMessageReactions|IntentGuildMessageTyping)
			r := c.expectReady()
			for range r.Guilds {
				c.expect(0, "GUILD_CREATE")
			}
			b.ResetTimer()
			start := time.Now()
			stop := s.StartFirehose(FirehoseOptions{MaxSpeed: true, Total: int64(b.N), MessageCreate: 60,
				MessageUpdate: 15, TypingStart: 10, ReactionAdd: 15})
			for i := 0; i < b.N; i++ {
				c.next(10 * time.Second)
			}
			el := time.Since(start)
			stop()
			b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
		})
	}
}
