package roles

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/gateway"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/sim/discordsim"
)

// Tokens and secrets of 16 characters at least, as the config requires of real ones.
const (
	hardToken   = "tok-hardening-0123456789"
	hardSecret  = "hardening-secret-0123456789"
	hardRestSec = "hardening-rest-secret-012345"
)

func hardSim(t *testing.T, guilds, maxConcurrency int) *discordsim.Server {
	t.Helper()
	return startSim(t, discordsim.Config{Guilds: guilds, MaxConcurrency: maxConcurrency, IdentifyWindow: testIdentifyWindow,
		Tokens: []string{hardToken}})
}

// startDDObserved is startDDWindow whose log the test can also read.
func startDDObserved(t *testing.T, role config.Role, env ...string) (*runningDD, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel), zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, core)
	})))
	return startDDWith(t, role, Options{Logger: log, IdentifyWindow: testIdentifyWindow}, env...), logs
}

func hardGatewayEnv(t *testing.T, sim *discordsim.Server, extra ...string) []string {
	bot := newBot(t)
	return append([]string{"DD_DISCORD__TOKEN=" + hardToken, "DD_DISCORD__API_URL=" + sim.APIURL(),
		"DD_STORE__PATH=" + filepath.Join(t.TempDir(), "data"), "DD_EVENTS__URLS=" + bot.URL(),
		"DD_EVENTS__SECRET=bot-secret-0123456789", "DD_GATEWAY__SECRET=" + hardSecret, "DD_GATEWAY__TOTAL_SHARDS=2",
		"DD_GATEWAY__RESHARD_IDENTIFY_RESERVE=0", "DD_REST__SECRET=" + hardRestSec, "DD_CACHE__SECRET=" + hardSecret}, extra...)
}

// call sends one request and returns its status and body.
func call(t *testing.T, method, url, secret, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if secret != "" {
		req.Header.Set("Authorization", secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// rawAnswer writes request on a new connection to addr and reads the answer's status and body, failing
// when none comes within wait.
func rawAnswer(t *testing.T, addr, request string, wait time.Duration) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer within %s to %q: %v", wait, strings.SplitN(request, "\r\n", 2)[0], err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// ---- 1. shard counts from requests ----

// POST /reshard with an absurd count is refused before anything is sized by it (the old code built the
// list of 100 million shard ids, gigabytes, before the identify budget refused it), and a count Discord's
// large-bot sharding would refuse (not a multiple of max_concurrency) is refused with the reason.
func TestReshardCountsAreCheckedBeforeAnythingIsSized(t *testing.T) {
	sim := hardSim(t, 10, 2)
	dd := startDD(t, config.RoleGateway, hardGatewayEnv(t, sim)...)
	base := "http://" + dd.addrs[config.RoleGateway]
	testkit.Eventually(t, 10*time.Second, "2 shards ready", func() bool {
		_, s := call(t, "GET", base+"/status", hardSecret, "")
		return strings.Count(s, `"state":"ready"`) == 2
	})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, c := range []struct {
		body, says string
	}{
		{`{"total_shards":100000000}`, "at most 65536"},
		{`{"total_shards":-5}`, "at least 1"},
		{`{"total_shards":3}`, "multiple of max_concurrency 2"},
		{`{"total_shards":4} {"total_shards":8}`, "after the JSON value"},
	} {
		code, body := call(t, "POST", base+"/reshard", hardSecret, c.body)
		if code != http.StatusBadRequest || !strings.Contains(body, c.says) {
			t.Errorf("POST /reshard %s: %d %s; want 400 saying %q", c.body, code, body, c.says)
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("refusing the counts allocated %d MB; nothing may be sized by a number from a request", grew>>20)
	}
	if n := len(sim.GatewayStats().Identifies); n != 2 {
		t.Errorf("%d identifies; a refused reshard spends none", n)
	}
}

// The rest role's coordinator refuses to store a count no gateway could run, and a split gateway that
// finds one stored (an older rest role) ignores it, saying so once rather than on every poll.
func TestCoordinatorRefusesAndGatewaysIgnoreAnInvalidTarget(t *testing.T) {
	coordinatorPoll = 100 * time.Millisecond
	defer func() { coordinatorPoll = 2 * time.Second }()
	sim := hardSim(t, 10, 1)
	rest := startDD(t, config.RoleRest, "DD_DISCORD__TOKEN="+hardToken, "DD_DISCORD__API_URL="+sim.APIURL(),
		"DD_REST__SECRET="+hardRestSec, "DD_STORE__PATH="+filepath.Join(t.TempDir(), "r"))
	restURL := "http://" + rest.addrs[config.RoleRest]
	code, body := call(t, "POST", restURL+gateway.CoordinatorPath, hardRestSec, `{"total_shards":40000000}`)
	if code != http.StatusBadRequest || !strings.Contains(body, "at most 65536") {
		t.Errorf("coordinator took 40,000,000 shards: %d %s", code, body)
	}
	if _, body := call(t, "GET", restURL+gateway.CoordinatorPath, hardRestSec, ""); !strings.Contains(body, `"total_shards":0`) {
		t.Errorf("the coordinator stored a refused count: %s", body)
	}

	// A rest role that answers an invalid stored target (as one before this check could).
	target, _ := url.Parse(restURL)
	rp := httputil.NewSingleHostReverseProxy(target)
	front := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == gateway.CoordinatorPath {
			httpapi.WriteJSON(w, http.StatusOK, map[string]any{"total_shards": 40000000})
			return
		}
		rp.ServeHTTP(w, r)
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = front.Serve(l) }()
	defer front.Close()
	gw, logs := startDDObserved(t, config.RoleGateway, hardGatewayEnv(t, sim, "DD_REST__URL=http://"+l.Addr().String(),
		"DD_GATEWAY__CLUSTERS=2", "DD_GATEWAY__CLUSTER_ID=0")...)
	testkit.Eventually(t, 10*time.Second, "the invalid target ignored", func() bool {
		return logs.FilterMessageSnippet("ignoring the rest role's reshard target").Len() > 0
	})
	time.Sleep(10 * coordinatorPoll)
	if n := logs.FilterMessageSnippet("ignoring the rest role's reshard target").Len(); n != 1 {
		t.Errorf("the ignored target was logged %d times; want once", n)
	}
	if n := logs.FilterMessageSnippet("cannot follow").Len(); n != 0 {
		t.Errorf("the gateway tried to follow the invalid target %d times", n)
	}
	_, status := call(t, "GET", "http://"+gw.addrs[config.RoleGateway]+"/status", hardSecret, "")
	if !strings.Contains(status, `"total_shards":2`) || strings.Contains(status, `"in_progress":true`) {
		t.Errorf("the gateway moved: %s", status)
	}
}

// ---- 2. what a client may hold ----

// A request without the secret is answered 401 without its body being read, on every authenticated
// endpoint of every role: a stranger sending a body slowly holds nothing. (Go's server reads up to
// 256 KiB of an unread body before it answers, unless the answer closes the connection.)
func TestUnauthenticatedRequestsAreAnsweredWithoutReadingTheirBody(t *testing.T) {
	sim := hardSim(t, 4, 1)
	dd := startDD(t, config.RoleAll, hardGatewayEnv(t, sim)...)
	rest, gw, cache := dd.addrs[config.RoleRest], dd.addrs[config.RoleGateway], dd.addrs[config.RoleCache]
	for _, c := range []struct{ addr, path string }{
		{rest, "/api/v10/channels/1/messages"},
		{rest, gateway.CoordinatorPath},
		{rest, identify.QueuePath + "acquire"},
		{gw, "/"},
		{gw, "/shards/0/send"},
		{gw, "/reshard"},
		{cache, "/events"},
	} {
		for _, framing := range []string{"Content-Length: 1000\r\n", "Transfer-Encoding: chunked\r\n"} {
			code, body := rawAnswer(t, c.addr, "POST "+c.path+" HTTP/1.1\r\nHost: dd\r\nAuthorization: wrong\r\n"+framing+
				"Content-Type: application/json\r\n\r\n", 3*time.Second)
			if code != http.StatusUnauthorized {
				t.Errorf("POST %s (%s) without the secret: %d %s, want 401", c.path, strings.TrimSpace(framing), code, body)
			}
		}
	}
}

// A body that arrives slower than the minimum rate is cut after the grace period, instead of holding the
// handler (and its connection) as long as the sender likes.
func TestSlowBodiesAreCut(t *testing.T) {
	grace, rate := bodyGrace, bodyMinRate
	bodyGrace, bodyMinRate = 300*time.Millisecond, 100
	defer func() { bodyGrace, bodyMinRate = grace, rate }()
	sim := hardSim(t, 4, 1)
	dd := startDD(t, config.RoleAll, hardGatewayEnv(t, sim)...)
	for _, c := range []struct {
		addr, path, secret string
		want               int
	}{
		{dd.addrs[config.RoleGateway], "/shards/0/send", hardSecret, http.StatusBadRequest},
		{dd.addrs[config.RoleRest], "/api/v10/channels/1/messages", hardRestSec, http.StatusRequestTimeout},
		{dd.addrs[config.RoleCache], "/events", hardSecret, http.StatusRequestEntityTooLarge},
	} {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: dd\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n", c.path, c.secret)
		stop := make(chan struct{})
		go func() { // 20 bytes a second, under the minimum of 100
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		}()
		start := time.Now()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		close(stop)
		if err != nil {
			t.Errorf("POST %s with a trickled body: no answer in 5 s (%v)", c.path, err)
			conn.Close()
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != c.want || time.Since(start) > 3*time.Second {
			t.Errorf("POST %s with a trickled body: %d %s after %s; want %d within 3 s", c.path, resp.StatusCode, b, time.Since(start), c.want)
		}
		conn.Close()
	}
}

// Past max_connections a connection gets a 503 at once (health checks still answered), not a place in
// a queue; an idle keep-alive connection is closed after the idle timeout, giving its slot back.
func TestConnectionCapAndIdleTimeout(t *testing.T) {
	idle := idleTimeout
	idleTimeout = 300 * time.Millisecond
	defer func() { idleTimeout = idle }()
	sim := hardSim(t, 1, 1)
	addr := startRestRole(t, sim, "DD_DISCORD__TOKEN="+hardToken, "DD_REST__MAX_CONNECTIONS=2")
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		// One request each, so the server has surely taken the connection.
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: dd\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("held connection: %v", err)
		}
	}
	start := time.Now()
	code, body := rawAnswer(t, addr, "GET /api/v10/gateway HTTP/1.1\r\nHost: dd\r\n\r\n", 2*time.Second)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "rest.max_connections") {
		t.Errorf("third connection: %d %s; want 503 naming rest.max_connections", code, body)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the refusal took %s", took)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := rawAnswer(t, addr, "GET "+p+" HTTP/1.1\r\nHost: dd\r\n\r\n", 2*time.Second); code != http.StatusOK {
			t.Errorf("%s past the cap: %d %s", p, code, body)
		}
	}
	// The held connections go idle: the server closes them and their slots serve again.
	for _, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("an idle connection was not closed by the server: %v", err)
		}
		c.Close()
	}
	testkit.Eventually(t, 3*time.Second, "the API served again", func() bool {
		code, _ := rawAnswer(t, addr, "GET /api/v10/gateway HTTP/1.1\r\nHost: dd\r\n\r\n", 2*time.Second)
		return code == http.StatusOK
	})
	_, metrics := call(t, "GET", "http://"+addr+"/metrics", "", "")
	if !strings.Contains(metrics, `dd_http_connections_refused_total{role="rest"} 3`) {
		t.Errorf("refused connections not counted as 3:\n%s", grepLines(metrics, "dd_http_connections_refused_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// ---- 4. gateway commands (3, the HTTP server's own errors: internal/httpapi) ----

// Only the commands a bot may send, with d of the documented shape, reach Discord; anything else is a
// 400 that says why, and no shard is closed by Discord for it.
func TestGatewayCommandsAreCheckedBeforeDiscordSeesThem(t *testing.T) {
	sim := hardSim(t, 4, 1)
	dd := startDD(t, config.RoleGateway, hardGatewayEnv(t, sim)...)
	base := "http://" + dd.addrs[config.RoleGateway]
	testkit.Eventually(t, 10*time.Second, "2 shards ready", func() bool {
		_, s := call(t, "GET", base+"/status", hardSecret, "")
		return strings.Count(s, `"state":"ready"`) == 2
	})
	g := discordsim.FormatID(sim.Guilds()[0].ID)
	for _, c := range []struct{ path, body, says string }{
		{"/shards/0/send", `{"op":0}`, "op 0 is not a gateway command"},
		{"/shards/0/send", `{"op":999,"d":{}}`, "op 999 is not"},
		{"/shards/0/send", `{"op":1,"d":null}`, "dd's to send"},
		{"/shards/0/send", `{"op":3,"d":"x"}`, "d must be an object"},
		{"/shards/0/send", `{"op":3,"d":{"status":"online","afk":false,"activities":[]}}`, "d.since is required"},
		{"/shards/0/send", `{"op":3,"d":{"since":null,"status":"busy","afk":false,"activities":[]}}`, "d.status must be one of"},
		{"/shards/0/send", `{"op":3,"d":{"since":null,"status":"online","afk":false,"activities":[{"type":0}]}}`, "d.activities"},
		{"/shards/0/send", `{"op":4,"d":{"guild_id":"` + g + `","channel_id":"x","self_mute":false,"self_deaf":false}}`, "d.channel_id must be a snowflake"},
		{"/shards/0/send", `{"op":8,"d":{"guild_id":"` + g + `"}}`, "query (with limit) or user_ids"},
		{"/shards/0/send", `{"op":8,"d":{"guild_id":"` + g + `","query":""}}`, "d.limit is required"},
		{"/shards/0/send", `{"op":31,"d":{"guild_ids":"` + g + `"}}`, "d.guild_ids must be an array"},
		{"/shards/0/send", `{"op":3,"d":{"since":null,"status":"online","afk":false,"activities":[]}} trailing`, "after the JSON value"},
		{"/", `{"type":"EditShardsPresence"}`, "EditShardsPresence needs payload"},
		{"/", `{"type":"ShardPayload","shardId":0,"payload":{"op":999}}`, "op 999"},
		{"/", `{"type":"ShardInfoFromGuild","guildId":"` + g + `"}{}`, "after the JSON value"},
	} {
		code, body := call(t, "POST", base+c.path, hardSecret, c.body)
		if code != http.StatusBadRequest || !strings.Contains(body, c.says) {
			t.Errorf("POST %s %s: %d %s; want 400 saying %q", c.path, c.body, code, body, c.says)
		}
	}
	for _, body := range []string{
		`{"op":3,"d":{"since":null,"status":"idle","afk":false,"activities":[{"name":"x","type":0}]}}`,
		`{"op":3,"d":{"since":91879201,"status":"dnd","afk":true,"activities":[]}}`,
		`{"op":4,"d":{"guild_id":"` + g + `","channel_id":null,"self_mute":false,"self_deaf":true}}`,
		`{"op":8,"d":{"guild_id":"` + g + `","query":"","limit":0,"presences":false,"nonce":"n-1"}}`,
		`{"op":8,"d":{"guild_id":"` + g + `","user_ids":["1","2"]}}`,
		`{"op":31,"d":{"guild_ids":["` + g + `"]}}`,
	} {
		if code, resp := call(t, "POST", base+"/shards/0/send", hardSecret, body); code != http.StatusNoContent {
			t.Errorf("POST /shards/0/send %s: %d %s; want 204", body, code, resp)
		}
	}
	if code, resp := call(t, "POST", base+"/", hardSecret, `{"type":"EditShardsPresence","payload":{"since":null,"status":"online","afk":false,"activities":[]}}`); code != http.StatusNoContent {
		t.Errorf("EditShardsPresence: %d %s", code, resp)
	}
	time.Sleep(300 * time.Millisecond)
	st := sim.GatewayStats()
	if st.CloseCodesSent[4001] != 0 || st.CloseCodesSent[4002] != 0 || len(st.Identifies) != 2 || len(st.Resumes) != 0 {
		t.Errorf("Discord closed shards over commands: closes %v, identifies %d, resumes %d", st.CloseCodesSent, len(st.Identifies), len(st.Resumes))
	}
}

// ---- 5. no Discord call from a stranger ----

// The identify queue's first request makes the rest role fetch /gateway/bot (and refresh it every few
// minutes after): only an authenticated one may.
func TestIdentifyQueueAuthenticatesBeforeAskingDiscord(t *testing.T) {
	sim := hardSim(t, 1, 1)
	addr := startRestRole(t, sim, "DD_DISCORD__TOKEN="+hardToken, "DD_REST__SECRET="+hardRestSec)
	for _, secret := range []string{"", "wrong-secret-0123456789"} {
		if code, body := call(t, "POST", "http://"+addr+identify.QueuePath+"acquire", secret, `{"shard_id":0}`); code != http.StatusUnauthorized {
			t.Errorf("identify acquire with secret %q: %d %s; want 401", secret, code, body)
		}
	}
	gatewayBot := func() int {
		n := 0
		for _, r := range sim.RESTRequests() {
			if strings.Contains(r.Path, "/gateway/bot") {
				n++
			}
		}
		return n
	}
	time.Sleep(300 * time.Millisecond)
	if n := gatewayBot(); n != 0 {
		t.Fatalf("unauthenticated requests made dd call /gateway/bot %d times", n)
	}
	call(t, "POST", "http://"+addr+identify.QueuePath+"acquire", hardRestSec, `{"shard_id":0}`)
	testkit.Eventually(t, 5*time.Second, "/gateway/bot after an authenticated request", func() bool { return gatewayBot() == 1 })
}

// ---- 7. readiness ----

func readyz(t *testing.T, addr string) (int, string) {
	t.Helper()
	return call(t, "GET", "http://"+addr+"/readyz", "", "")
}

// The rest role is ready until Discord fails to answer, not ready while it does not, and ready again
// once it answers (found by the role itself: a load balancer sends no traffic to a role not ready).
func TestRestReadyzFollowsDiscordsReachability(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	discordAddr := l.Addr().String()
	l.Close() // nothing listens there: Discord is unreachable
	sim := discordsim.New(discordsim.Config{Tokens: []string{hardToken}})
	addr := startRestRole(t, sim, "DD_DISCORD__TOKEN="+hardToken, "DD_DISCORD__API_URL=http://"+discordAddr+"/api",
		"DD_REST__SECRET="+hardRestSec, "DD_REST__MAX_RETRIES=0")
	if code, body := readyz(t, addr); code != http.StatusOK {
		t.Errorf("before any call to Discord: %d %s", code, body)
	}
	if code, body := call(t, "POST", "http://"+addr+"/api/v10/channels/1/messages", hardRestSec, `{"content":"x"}`); code != http.StatusBadGateway {
		t.Fatalf("a request to an unreachable Discord: %d %s", code, body)
	}
	if code, body := readyz(t, addr); code != http.StatusServiceUnavailable || !strings.Contains(body, "Discord cannot be reached") {
		t.Errorf("with Discord unreachable: %d %s; want 503 saying so", code, body)
	}
	if err := sim.Start(discordAddr); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	testkit.Eventually(t, 10*time.Second, "ready once Discord answers", func() bool { code, _ := readyz(t, addr); return code == http.StatusOK })
}

// The gateway is not ready before its shards run or while one of them is neither connected nor resuming.
func TestGatewayReadyzFollowsItsShards(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := "http://" + l.Addr().String() + "/api"
	l.Close()
	sim := hardSim(t, 4, 1)
	down := startDD(t, config.RoleGateway, hardGatewayEnv(t, sim, "DD_DISCORD__API_URL="+nowhere)...)
	if code, body := readyz(t, down.addrs[config.RoleGateway]); code != http.StatusServiceUnavailable || !strings.Contains(body, "shards are not started") {
		t.Errorf("gateway with Discord unreachable: %d %s; want 503", code, body)
	}

	dd := startDD(t, config.RoleGateway, hardGatewayEnv(t, sim)...)
	addr := dd.addrs[config.RoleGateway]
	testkit.Eventually(t, 10*time.Second, "ready with both shards connected", func() bool { code, _ := readyz(t, addr); return code == http.StatusOK })
	// Discord refuses shard 1 for good (4013, invalid intents): shard 0 runs on, the gateway is not ready.
	for _, id := range sim.ShardSessionIDs(1, 2) {
		sim.CloseSession(id, 4013)
	}
	testkit.Eventually(t, 5*time.Second, "not ready with shard 1 down", func() bool {
		code, body := readyz(t, addr)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "1 of 2 shards are not connected")
	})
}

// ---- 8. /status after a restart ----

// After a restart the shards resume (no READY, no GUILD_CREATE burst), yet /status still counts their
// guilds: each shard's guilds are stored beside its session.
func TestStatusCountsGuildsAfterARestart(t *testing.T) {
	sim := hardSim(t, 10, 1)
	env := hardGatewayEnv(t, sim)
	guilds := func(addr string) int {
		_, body := call(t, "GET", "http://"+addr+"/status", hardSecret, "")
		var st struct {
			Shards []gateway.ShardStatus `json:"shards"`
		}
		if json.Unmarshal([]byte(body), &st) != nil || len(st.Shards) != 2 {
			return -1
		}
		n := 0
		for _, s := range st.Shards {
			if s.State == "ready" {
				n += s.Guilds
			} else {
				return -1
			}
		}
		return n
	}
	dd := startDD(t, config.RoleGateway, env...)
	testkit.Eventually(t, 10*time.Second, "10 guilds on ready shards", func() bool { return guilds(dd.addrs[config.RoleGateway]) == 10 })
	time.Sleep(200 * time.Millisecond) // the last batch's session and guilds committed
	if err := dd.stop(t); err != nil {
		t.Fatal(err)
	}
	dd = startDD(t, config.RoleGateway, env...)
	addr := dd.addrs[config.RoleGateway]
	testkit.Eventually(t, 10*time.Second, "both shards ready again", func() bool { return guilds(addr) >= 0 })
	if st := sim.GatewayStats(); len(st.Identifies) != 2 || len(st.Resumes) != 2 {
		t.Fatalf("the restart should resume both shards: identifies %d, resumes %d", len(st.Identifies), len(st.Resumes))
	}
	if n := guilds(addr); n != 10 {
		t.Errorf("/status counts %d guilds after the restart; the shards hold 10", n)
	}
}

// BenchmarkGatewayReadyz1000Shards is /readyz's gateway check over 1,000 shards, in its costliest case
// (every shard disconnected without a session: each state and session is read). The store's checks
// before it are two atomic loads.
func BenchmarkGatewayReadyz1000Shards(b *testing.B) {
	ids := make([]int, 1000)
	for i := range ids {
		ids[i] = i
	}
	mgr, err := shard.NewManager(shard.ManagerConfig{TotalShards: 1000, ShardIDs: ids, Logger: zap.NewNop(),
		Template: shard.Config{Token: hardToken, GatewayURL: "ws://127.0.0.1:1/gateway", APIVersion: 10}})
	if err != nil {
		b.Fatal(err)
	}
	shards := mgr.Shards()
	for b.Loop() {
		if shardsDown(shards) == nil {
			b.Fatal("ready with every shard down")
		}
	}
}
