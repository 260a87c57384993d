package discordsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testUA = "DiscordBot (https://github.com/ddhq/dd, test)"

func startREST(t *testing.T, cfg Config) *Server {
	t.Helper()
	s := New(cfg)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// reply is a response with its body read.
type reply struct {
	*http.Response
	body []byte
}

func (r reply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("%s %s: body %q is not JSON: %v", r.Request.Method, r.Request.URL.Path, r.body, err)
	}
}

// code is the "code" field of a Discord error body.
func (r reply) code(t *testing.T) int {
	t.Helper()
	var e struct{ Code int }
	r.json(t, &e)
	return e.Code
}

func (r reply) want(t *testing.T, status int) reply {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.body)
	}
	return r
}

// call sends one request. headers are name, value pairs; "Authorization" defaults to the first token
// (pass "" to send none) and "User-Agent" to a DiscordBot one.
func call(t *testing.T, s *Server, method, path, body string, headers ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, s.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bot "+s.Config().Tokens[0])
	req.Header.Set("User-Agent", testUA)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
			if headers[i] == "User-Agent" { // an empty value keeps Go's default out
				req.Header["User-Agent"] = []string{""}
			}
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	return send(t, req)
}

// rawCall is call for other goroutines than the test's: it reports errors instead of failing.
func rawCall(s *Server, method, path string) (reply, error) {
	req, err := http.NewRequest(method, s.URL()+path, nil)
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Authorization", "Bot "+s.Config().Tokens[0])
	req.Header.Set("User-Agent", testUA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{resp, b}, err
}

func send(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp, b}
}

func channelOf(s *Server, guild, ch int) string { return FormatID(s.Guilds()[guild].Channels[ch]) }

func guildOf(s *Server, guild int) string { return FormatID(s.Guilds()[guild].ID) }

func TestMissingOrWrongBotTokenGets401AndCountsAsInvalid(t *testing.T) {
	s := startREST(t, Config{Tokens: []string{"tok-a", "tok-b"}})
	for _, auth := range []string{"", "tok-a", "Bearer tok-a", "bot tok-a", "Bot tok-c", "Bot tok-a2"} {
		r := call(t, s, "GET", "/api/v10/users/@me", "", "Authorization", auth).want(t, 401)
		var e struct {
			Message string
			Code    *int
		}
		r.json(t, &e)
		if e.Message != "401: Unauthorized" || e.Code == nil || *e.Code != 0 {
			t.Fatalf("Authorization %q: body %s, want Discord's 401 body", auth, r.body)
		}
	}
	var u struct{ ID string }
	call(t, s, "GET", "/api/v10/users/@me", "", "Authorization", "Bot tok-b").want(t, 200).json(t, &u)
	if u.ID != FormatID(BotUserID(1)) {
		t.Fatalf("users/@me with the second token: id %s, want the second bot %d", u.ID, BotUserID(1))
	}
	st := s.RESTStats()
	if st.Unauthorized != 6 || st.InvalidRequests != 6 {
		t.Fatalf("stats: %d 401s and %d invalid requests, want 6 and 6", st.Unauthorized, st.InvalidRequests)
	}
	if st.ByToken[1] != 1 {
		t.Fatalf("stats by token %v: want one request for token 1", st.ByToken)
	}
}

func TestGatewayNeedsNoAuthAndGatewayBotRecommendsShards(t *testing.T) {
	s := startREST(t, Config{Guilds: 2500, GuildsPerRecommendedShard: 1000, MaxConcurrency: 16})
	var g struct{ URL string }
	call(t, s, "GET", "/api/v10/gateway", "", "Authorization", "").want(t, 200).json(t, &g)
	if g.URL != s.GatewayURL() {
		t.Fatalf("/gateway url %q, want %q", g.URL, s.GatewayURL())
	}
	call(t, s, "GET", "/api/v10/gateway/bot", "", "Authorization", "").want(t, 401)
	var gb struct {
		URL               string
		Shards            int
		SessionStartLimit SessionStartLimit `json:"session_start_limit"`
	}
	call(t, s, "GET", "/api/v10/gateway/bot", "").want(t, 200).json(t, &gb)
	if gb.URL != s.GatewayURL() || gb.Shards != 3 || gb.SessionStartLimit.MaxConcurrency != 16 || gb.SessionStartLimit.Total != 1000 {
		t.Fatalf("/gateway/bot = %+v, want 3 shards (2500 guilds / 1000), max_concurrency 16, total 1000", gb)
	}
}

func TestEveryAPIVersionPathServesAndUnknownRoutesAre404(t *testing.T) {
	s := startREST(t, Config{})
	for _, p := range []string{"/api/users/@me", "/api/v6/users/@me", "/api/v9/users/@me", "/api/v10/users/@me"} {
		call(t, s, "GET", p, "").want(t, 200)
	}
	for _, p := range []string{"/api/v11/users/@me", "/api/v5/users/@me", "/api/v10/nothing", "/api/v10/users/@me/", "/api/v10/channels"} {
		r := call(t, s, "GET", p, "").want(t, 404)
		if !bytes.Contains(r.body, []byte(`"message":"404: Not Found"`)) || r.code(t) != 0 {
			t.Fatalf("GET %s: body %s, want Discord's 404", p, r.body)
		}
	}
	r := call(t, s, "DELETE", "/api/v10/users/@me", "").want(t, 405)
	if !bytes.Contains(r.body, []byte(`"message":"405: Method Not Allowed"`)) {
		t.Fatalf("DELETE users/@me: body %s, want Discord's 405", r.body)
	}
	if st := s.RESTStats(); st.ByRoute["unmatched"] != 6 || st.ByRoute["GET /users/{user_id}"] != 0 || st.ByRoute["GET /users/@me"] != 4 {
		t.Fatalf("by route %v: want 4 on GET /users/@me and 6 unmatched", st.ByRoute)
	}
}

func TestRequestsWithoutUserAgentAreForbidden(t *testing.T) {
	s := startREST(t, Config{})
	r := call(t, s, "GET", "/api/v10/users/@me", "", "User-Agent", "").want(t, 403)
	if r.code(t) != 40333 {
		t.Fatalf("no User-Agent: body %s, want code 40333", r.body)
	}
	if st := s.RESTStats(); st.MissingUserAgent != 1 || st.Forbidden != 1 || st.InvalidRequests != 1 {
		t.Fatalf("stats %+v: want one missing user agent, counted as a 403 invalid request", st)
	}
}

func TestRequestLogRecordsEachRequestByteForByte(t *testing.T) {
	s := startREST(t, Config{})
	ch := channelOf(s, 0, 0)
	body := `{"content":"hello \u00e9"}`
	call(t, s, "POST", "/api/v10/channels/"+ch+"/messages?x=1", body, "X-Audit-Log-Reason", "because%20yes").want(t, 200)
	reqs := s.RESTRequests()
	if len(reqs) != 1 {
		t.Fatalf("request log holds %d requests, want 1", len(reqs))
	}
	sum := sha256.Sum256([]byte(body))
	got := reqs[0]
	if got.BodySHA256 != hex.EncodeToString(sum[:]) || got.BodySize != int64(len(body)) || got.Method != "POST" ||
		got.Path != "/api/v10/channels/"+ch+"/messages?x=1" || got.Route != "POST /channels/{channel_id}/messages" ||
		got.TokenIndex != 0 || got.AuditLogReason != "because%20yes" || got.UserAgent != testUA ||
		got.ContentType != "application/json" || got.Status != 200 || got.Bucket == "" {
		t.Fatalf("recorded %+v; want the request as sent", got)
	}
	// The same over HTTP, and a reset empties it.
	var viaHTTP []RecordedRequest
	call(t, s, "GET", "/_sim/rest/requests", "").want(t, 200).json(t, &viaHTTP)
	if len(viaHTTP) != 1 || viaHTTP[0].BodySHA256 != got.BodySHA256 {
		t.Fatalf("/_sim/rest/requests = %+v, want the one request", viaHTTP)
	}
	call(t, s, "GET", "/_sim/rest/requests?after=1", "").want(t, 200).json(t, &viaHTTP)
	if len(viaHTTP) != 0 {
		t.Fatalf("/_sim/rest/requests?after=1 = %+v, want none", viaHTTP)
	}
	var st RESTStats
	call(t, s, "GET", "/_sim/rest/stats", "").want(t, 200).json(t, &st)
	if st.Requests != 1 || st.ByStatus[200] != 1 || st.UserAgents[testUA] != 1 {
		t.Fatalf("/_sim/rest/stats = %+v, want one 200 from %q", st, testUA)
	}
	call(t, s, "POST", "/_sim/rest/reset", "").want(t, 204)
	if n := len(s.RESTRequests()); n != 0 || s.RESTStats().Requests != 0 {
		t.Fatalf("after reset: %d logged, %d counted; want none", n, s.RESTStats().Requests)
	}
}

func TestLatencyIsAddedToEveryResponse(t *testing.T) {
	s := startREST(t, Config{RESTLatency: 150 * time.Millisecond})
	for _, p := range []string{"/api/v10/gateway", "/api/v10/nothing"} {
		start := time.Now()
		call(t, s, "GET", p, "")
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Fatalf("GET %s answered in %v, want at least the 150ms latency", p, d)
		}
	}
}

func TestLatencyAndOmittedHeadersChangeWhileRunning(t *testing.T) {
	s := startREST(t, Config{})
	ch := "/api/v10/channels/" + channelOf(s, 0, 0)
	timed := func() (reply, time.Duration) {
		start := time.Now()
		r := call(t, s, "GET", ch, "").want(t, 200)
		return r, time.Since(start)
	}
	if r, d := timed(); d >= 150*time.Millisecond || r.Header.Get("X-RateLimit-Remaining") == "" {
		t.Fatalf("before any change: answered in %v with X-RateLimit-Remaining %q, want at once and the header",
			d, r.Header.Get("X-RateLimit-Remaining"))
	}
	call(t, s, "POST", "/_sim/rest/latency", `{"latency_ns": 150000000, "next_extra_ns": 300000000}`).want(t, 204)
	if _, d := timed(); d < 450*time.Millisecond {
		t.Fatalf("the next answer after next_extra_ns 300ms: answered in %v, want at least 150ms + 300ms", d)
	}
	call(t, s, "POST", "/_sim/rest/omit-headers", `{"headers": ["x-ratelimit-remaining"]}`).want(t, 204)
	r, d := timed()
	if d < 150*time.Millisecond {
		t.Fatalf("after POST /_sim/rest/latency 150ms: answered in %v, want at least 150ms", d)
	}
	if v, ok := r.Header["X-Ratelimit-Remaining"]; ok || r.Header.Get("X-RateLimit-Limit") == "" {
		t.Fatalf("after omitting X-RateLimit-Remaining: it is %q (sent: %v) and X-RateLimit-Limit %q; want only the one left out",
			v, ok, r.Header.Get("X-RateLimit-Limit"))
	}
	call(t, s, "POST", "/_sim/rest/omit-headers", `{"headers": ["Content-Type"]}`).want(t, 400)
	call(t, s, "POST", "/_sim/rest/latency", `{"latency_ns": -1}`).want(t, 400)
	call(t, s, "POST", "/_sim/rest/latency", `{"latency_ns": 0}`).want(t, 204)
	call(t, s, "POST", "/_sim/rest/omit-headers", `{"headers": []}`).want(t, 204)
	if r, d := timed(); d >= 150*time.Millisecond || r.Header.Get("X-RateLimit-Remaining") == "" {
		t.Fatalf("after undoing both: answered in %v with X-RateLimit-Remaining %q, want at once and the header",
			d, r.Header.Get("X-RateLimit-Remaining"))
	}
}

func TestRequestLogKeepsTheMostRecentInOrder(t *testing.T) {
	rs := New(Config{}).rest
	for i := range RequestLogSize + 5 {
		rs.record(&RecordedRequest{Path: strconv.Itoa(i)})
	}
	s := rs.s
	got := s.RESTRequests()
	if len(got) != RequestLogSize || got[0].Path != "5" || got[len(got)-1].Path != strconv.Itoa(RequestLogSize+4) {
		t.Fatalf("log of %d: first %q last %q, want %d entries from 5 to %d", len(got), got[0].Path, got[len(got)-1].Path,
			RequestLogSize, RequestLogSize+4)
	}
	s.ResetRESTStats()
	rs.record(&RecordedRequest{Path: "after reset"})
	if got := s.RESTRequests(); len(got) != 1 || got[0].Path != "after reset" || got[0].Seq != RequestLogSize+6 {
		t.Fatalf("after reset: %+v, want the one new request with the next seq", got)
	}
}
