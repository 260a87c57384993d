package restproxy_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddhq/dd/restproxy"
	"github.com/ddhq/dd/sim/discordsim"
)

func TestRequestsPassThroughWithDiscordsAnswer(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, nil)
	ch := e.channel(0, 0)
	body := `{"content":"hello","nonce":"n1"}`
	r := e.do(t, "POST", "/api/v10/channels/"+ch+"/messages?x=1&y=%20", body, "X-Audit-Log-Reason", "because%20tests").want(t, 200)
	var m struct {
		ID, Content string
		ChannelID   string `json:"channel_id"`
	}
	r.json(t, &m)
	if m.Content != "hello" || m.ChannelID != ch {
		t.Fatalf("message %+v", m)
	}
	for _, h := range []string{"X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset", "X-Ratelimit-Reset-After", "X-Ratelimit-Bucket"} {
		if r.header.Get(h) == "" {
			t.Errorf("Discord's %s header was not passed back", h)
		}
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	reqs := e.sim.RESTRequests()
	if len(reqs) != 1 {
		t.Fatalf("simulator saw %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	sum := sha256.Sum256([]byte(body))
	if got.Path != "/api/v10/channels/"+ch+"/messages?x=1&y=%20" || got.TokenIndex != 0 || got.AuditLogReason != "because%20tests" ||
		got.ContentType != "application/json" || got.BodySHA256 != hex.EncodeToString(sum[:]) || !strings.HasPrefix(got.UserAgent, "DiscordBot (") {
		t.Fatalf("the simulator saw %+v", got)
	}

	// Other prefixes: /v10/... (Discordeno's proxy clients) and /api/... (default version).
	e.do(t, "GET", "/v10/channels/"+ch, "").want(t, 200)
	e.do(t, "GET", "/api/channels/"+ch, "", "Authorization", "Bot "+testToken).want(t, 200)
	reqs = e.sim.RESTRequests()
	if reqs[1].Path != "/api/v10/channels/"+ch || reqs[2].Path != "/api/v10/channels/"+ch {
		t.Fatalf("paths upstream: %q, %q", reqs[1].Path, reqs[2].Path)
	}
	e.noRateLimits(t)
}

func TestNoContentStaysNoContent(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, nil)
	ch := e.channel(0, 0)
	r := e.do(t, "PUT", "/api/v10/channels/"+ch+"/messages/"+discordsim.FormatID(discordsim.Snowflake(time.Now().UnixMilli()-5000, 1))+"/reactions/%F0%9F%91%8D/@me", "").want(t, 204)
	if len(r.body) != 0 {
		t.Fatalf("204 with a body: %q", r.body)
	}
	if r.header.Get("X-Ratelimit-Bucket") == "" {
		t.Fatal("rate-limit headers of a 204 were not passed back")
	}
}

func TestMalformedJSONPassesThroughUntouched(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, nil)
	body := `{"content": "unterminated`
	r := e.do(t, "POST", "/api/v10/channels/"+e.channel(0, 0)+"/messages", body).want(t, 400)
	var d struct{ Code int }
	r.json(t, &d)
	if d.Code != 50109 {
		t.Fatalf("want Discord's own verdict (50109 invalid JSON), got %s", r.body)
	}
	sum := sha256.Sum256([]byte(body))
	if got := e.sim.RESTRequests()[0].BodySHA256; got != hex.EncodeToString(sum[:]) {
		t.Fatal("the malformed body did not reach Discord byte for byte")
	}
}

func TestUploadIsForwardedByteForByte(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, nil)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	pj, _ := mw.CreateFormField("payload_json")
	fmt.Fprint(pj, `{"content":"an upload"}`)
	fw, _ := mw.CreateFormFile("files[0]", "big.bin")
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	for range 5 * 16 { // 5 MiB: spooled to disk, not held in memory
		fw.Write(chunk)
	}
	mw.Close()
	sum := sha256.Sum256(buf.Bytes())
	size := buf.Len()
	r := e.do(t, "POST", "/api/v10/channels/"+e.channel(0, 1)+"/messages", buf.String(), "Content-Type", mw.FormDataContentType()).want(t, 200)
	var m struct {
		Attachments []struct {
			Filename string
			Size     int64
		}
	}
	r.json(t, &m)
	if len(m.Attachments) != 1 || m.Attachments[0].Size != 5<<20 {
		t.Fatalf("attachments %+v", m.Attachments)
	}
	got := e.sim.RESTRequests()[0]
	if got.BodySHA256 != hex.EncodeToString(sum[:]) || got.BodySize != int64(size) || got.ContentType != mw.FormDataContentType() {
		t.Fatalf("upload not byte-identical: simulator saw %d bytes sha %s type %q, sent %d bytes sha %x",
			got.BodySize, got.BodySHA256, got.ContentType, size, sum)
	}
}

func TestCallerAuthentication(t *testing.T) {
	e := newEnv(t, discordsim.Config{Tokens: []string{testToken, "other-token"}}, func(o *restproxy.Options) {
		o.SecretHeader = "X-DD-Secret"
	})
	path := "/api/v10/users/@me"
	e.do(t, "GET", path, "", "Authorization", testSecret).want(t, 200)
	e.do(t, "GET", path, "", "Authorization", "Bot "+testToken).want(t, 200)
	e.do(t, "GET", path, "", "Authorization", "", "X-DD-Secret", testSecret).want(t, 200)
	// OAuth2: the secret in its own header, the caller's Bearer token passed through (the simulator only
	// knows bot tokens, so Discord's 401 comes back: it was forwarded).
	e.do(t, "GET", path, "", "Authorization", "Bearer user-oauth-token", "X-DD-Secret", testSecret).want(t, 401)
	if st := e.sim.RESTStats(); st.Requests != 4 || st.Unauthorized != 1 {
		t.Fatalf("simulator: %d requests, %d 401s; want 4 and 1", st.Requests, st.Unauthorized)
	}

	for _, h := range [][]string{
		{"Authorization", ""},
		{"Authorization", "wrong-secret"},
		{"Authorization", "Bot other-token"}, // another bot's token without rest.allow_any_token
		{"Authorization", "Bearer user-oauth-token"},
		{"Authorization", testSecret + "x"},
		{"Authorization", "", "X-DD-Secret", "wrong"},
		{"Authorization", "Bot " + testToken + "x"},
	} {
		msg := e.do(t, "GET", path, "", h...).ddError(t, 401)
		if strings.Contains(msg, testSecret) || strings.Contains(msg, testToken) {
			t.Fatalf("the 401 message reveals a secret: %q", msg)
		}
	}
	if st := e.sim.RESTStats(); st.Requests != 4 {
		t.Fatalf("refused callers reached the simulator: %d requests, want still 4", st.Requests)
	}
	if n := e.metric(t, "dd_rest_unauthorized_total"); n != 7 {
		t.Fatalf("dd_rest_unauthorized_total = %v, want 7", n)
	}
	// Discord serves GET /gateway without authentication; so does dd. Nothing else.
	e.do(t, "GET", "/api/v10/gateway", "", "Authorization", "").want(t, 200)
	e.do(t, "GET", "/api/v10/gateway/bot", "", "Authorization", "").ddError(t, 401)
	e.do(t, "GET", "/timecheck", "", "Authorization", "").ddError(t, 401)
}

func TestAnyTokenGetsItsOwnLimits(t *testing.T) {
	e := newEnv(t, discordsim.Config{Tokens: []string{testToken, "other-token"}}, func(o *restproxy.Options) {
		o.AllowAnyToken = true
	})
	for range 3 {
		e.do(t, "GET", "/api/v10/users/@me", "", "Authorization", "Bot other-token").want(t, 200)
	}
	e.do(t, "GET", "/api/v10/users/@me", "", "Authorization", "Bot unknown-token").want(t, 401) // Discord's 401
	if st := e.sim.RESTStats(); st.ByToken[0] != 0 || st.ByToken[1] != 3 {
		t.Fatalf("requests by token %v: the caller's own token must be used", st.ByToken)
	}
}

func TestTimecheck(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, nil)
	before := time.Now().UnixMilli()
	var v struct{ Message int64 }
	e.do(t, "GET", "/timecheck", "").want(t, 200).json(t, &v)
	if v.Message < before || v.Message > time.Now().UnixMilli() {
		t.Fatalf("timecheck %d not the current unix time in ms", v.Message)
	}
}

func TestBadInputIsRefusedAndNothingForwarded(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, func(o *restproxy.Options) { o.MaxBody = 2 << 20 })
	ch := e.channel(0, 0)
	for _, path := range []string{
		"/api/v10/channels/" + ch + "/../../users/@me",
		"/api/v10/channels/%2e%2e/users/@me",
		"/api/v10/channels/%2E%2E%2Fusers/@me",
		"/api/v10/channels/" + ch + "%2fmessages",
		"/api/v10/./users/@me",
		"/api/v10/users/%252e%252e",
		"/api/v10/users/..%5cx",
		"/api/v99999/users/@me",
		"/apiv10/users/@me",
		"/users/@me",
	} {
		code, body := e.raw(t, "GET "+path+" HTTP/1.1\r\nHost: x\r\nAuthorization: "+testSecret+"\r\n\r\n")
		if code < 400 || code >= 500 || !strings.Contains(body, `"code":0`) {
			t.Errorf("GET %s: %d %s, want a 4xx with dd's JSON error", path, code, body)
		}
	}
	for _, req := range []string{
		"GET http://discord.com/api/v10/users/@me HTTP/1.1\r\nHost: discord.com\r\nAuthorization: " + testSecret + "\r\n\r\n",
		"BREW /api/v10/users/@me HTTP/1.1\r\nHost: x\r\nAuthorization: " + testSecret + "\r\n\r\n",
	} {
		if code, body := e.raw(t, req); code < 400 || code >= 500 || !strings.Contains(body, `"code":0`) {
			t.Errorf("%q: %d %s, want a 4xx with dd's JSON error", strings.SplitN(req, "\r\n", 2)[0], code, body)
		}
	}
	// The HTTP server refuses these before dd sees them, still with a 4xx.
	for _, req := range []string{
		"GET /api/v10/users/@me HTTP/1.1\r\nHost: x\r\nAuthorization: " + testSecret + "\r\nX-Audit-Log-Reason: a\rInjected: b\r\n\r\n",
		"GET /api/v10/users/@me HTTP/1.1\r\nHost: x\r\nAuthorization: " + testSecret + "\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n",
	} {
		if code, _ := e.raw(t, req); code < 400 || code >= 500 {
			t.Errorf("%.60q...: %d, want a 4xx", req, code)
		}
	}
	// Bodies over rest.max_body, announced or chunked.
	big := strings.Repeat("x", 3<<20)
	e.do(t, "POST", "/api/v10/channels/"+ch+"/messages", big).ddError(t, 413)
	req, _ := http.NewRequest("POST", e.dd.URL+"/api/v10/channels/"+ch+"/messages", struct{ *strings.Reader }{strings.NewReader(big)})
	req.Header.Set("Authorization", testSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 || req.ContentLength != 0 {
		t.Fatalf("chunked body over max_body: %d (content length %d), want 413", resp.StatusCode, req.ContentLength)
	}

	if st := e.sim.RESTStats(); st.Requests != 0 {
		t.Fatalf("bad input reached the simulator: %d requests", st.Requests)
	}
	// dd keeps serving.
	e.do(t, "GET", "/api/v10/users/@me", "").want(t, 200)
	if n := e.metric(t, "dd_rest_refused_total"); n != 14 {
		t.Fatalf("dd_rest_refused_total = %v, want every refusal counted", n)
	}
}

func TestHeadersDiscordReadsAreForwarded(t *testing.T) {
	var got http.Header
	var gotURI string
	upstream := newCapture(t, func(w http.ResponseWriter, r *http.Request) {
		got, gotURI = r.Header.Clone(), r.RequestURI
		w.Header().Set("X-RateLimit-Limit", "5")
		w.Header().Set("X-RateLimit-Remaining", "4")
		w.Header().Set("X-RateLimit-Reset-After", "1.000")
		w.Header().Set("X-RateLimit-Bucket", "abc")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		fmt.Fprint(w, `{"ok":true}`)
	})
	e := newEnvUpstream(t, upstream, nil)
	r := e.do(t, "PATCH", "/api/v9/guilds/1234/members/5678?x=%2F&y=1", `{"nick":"a"}`,
		"X-Audit-Log-Reason", "caf%C3%A9", "Accept-Encoding", "gzip", "X-Forwarded-For", "10.0.0.1", "Cookie", "a=b").want(t, 201)
	if string(r.body) != `{"ok":true}` || r.header.Get("X-Ratelimit-Bucket") != "abc" {
		t.Fatalf("answer not passed back as is: %q %v", r.body, r.header)
	}
	if gotURI != "/api/v9/guilds/1234/members/5678?x=%2F&y=1" {
		t.Fatalf("upstream request target %q", gotURI)
	}
	want := map[string]string{"Authorization": "Bot " + testToken, "X-Audit-Log-Reason": "caf%C3%A9", "Content-Type": "application/json",
		"Accept-Encoding": "gzip", "X-Forwarded-For": "", "Cookie": "", "User-Agent": "DiscordBot (https://github.com/ddhq/dd, test)"}
	for k, v := range want {
		if got.Get(k) != v {
			t.Errorf("upstream %s = %q, want %q", k, got.Get(k), v)
		}
	}
}

func TestWebhookTokensStayOutOfMetrics(t *testing.T) {
	var seen []*http.Request
	upstream := newCapture(t, func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Clone(r.Context()))
		w.WriteHeader(204)
	})
	e := newEnvUpstream(t, upstream, nil)
	e.do(t, "POST", "/api/v10/webhooks/1234/very-secret-webhook-token", `{"content":"x"}`).want(t, 204)
	e.do(t, "POST", "/api/v10/interactions/1234/very-secret-interaction-token/callback", `{"type":1}`).want(t, 204)
	e.do(t, "POST", "/api/v10/channels/1234/typing", "").want(t, 204)
	if seen[0].Header.Get("Authorization") != "Bot "+testToken || seen[2].ContentLength != 0 || seen[2].Header.Get("Content-Length") != "" && seen[2].Header.Get("Content-Length") != "0" {
		t.Fatalf("upstream requests: %v / %v", seen[0].Header, seen[2].Header)
	}
	mfs, _ := e.reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "very-secret") {
					t.Fatalf("metric %s carries a token: %s", mf.GetName(), l.GetValue())
				}
			}
		}
	}
	if n := e.metric(t, "dd_rest_requests_total", "route", "POST /webhooks/{webhook_id}/{webhook_token}", "status", strconv.Itoa(204)); n != 1 {
		t.Fatalf("webhook request counted %v times under its route template", n)
	}
}
