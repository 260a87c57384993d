package discordsim

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"testing"
	"time"
)

func headerFloat(t *testing.T, r reply, name string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(r.Header.Get(name), 64)
	if err != nil {
		t.Fatalf("%s: header %s = %q, want a number", r.Request.URL.Path, name, r.Header.Get(name))
	}
	return v
}

type limitedBody struct {
	Message    string
	RetryAfter float64 `json:"retry_after"`
	Global     bool
}

func limitOf(t *testing.T, s *Server, bucket string) RouteLimit {
	t.Helper()
	for _, l := range s.RouteLimits() {
		if l.Bucket == bucket {
			return l
		}
	}
	t.Fatalf("no bucket %q in the route table", bucket)
	return RouteLimit{}
}

func TestBucketHeadersDescribeTheBudget(t *testing.T) {
	s := startREST(t, Config{})
	ch := channelOf(s, 0, 0)
	before := float64(time.Now().UnixMilli()) / 1000
	r := call(t, s, "POST", "/api/v10/channels/"+ch+"/messages", `{"content":"a"}`).want(t, 200)
	lim := limitOf(t, s, "message-create")
	if lim.Limit != 5 || lim.Window != 5*time.Second || lim.Major != MajorChannel {
		t.Fatalf("message-create limit %+v, want 5 per 5s per channel", lim)
	}
	if r.Header.Get("X-RateLimit-Limit") != "5" || r.Header.Get("X-RateLimit-Remaining") != "4" {
		t.Fatalf("limit/remaining %q/%q, want 5/4", r.Header.Get("X-RateLimit-Limit"), r.Header.Get("X-RateLimit-Remaining"))
	}
	if b := r.Header.Get("X-RateLimit-Bucket"); b != lim.Hash || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(b) {
		t.Fatalf("bucket %q, want the table's hash %q (32 hex digits)", b, lim.Hash)
	}
	after := headerFloat(t, r, "X-RateLimit-Reset-After")
	reset := headerFloat(t, r, "X-RateLimit-Reset")
	if after > 5 || after < 4.9 {
		t.Fatalf("reset-after %v, want just under 5", after)
	}
	if reset < before+4.9 || reset > before+5.2 {
		t.Fatalf("reset %v, want about %v", reset, before+5)
	}
	for _, h := range []string{"X-RateLimit-Reset", "X-RateLimit-Reset-After"} {
		if !regexp.MustCompile(`^\d+\.\d{3}$`).MatchString(r.Header.Get(h)) {
			t.Fatalf("%s = %q, want seconds with 3 decimals", h, r.Header.Get(h))
		}
	}
	r = call(t, s, "POST", "/api/v10/channels/"+ch+"/messages", `{"content":"b"}`).want(t, 200)
	if r.Header.Get("X-RateLimit-Remaining") != "3" || headerFloat(t, r, "X-RateLimit-Reset") > reset+0.002 {
		t.Fatalf("second request: remaining %q reset %q, want 3 and the same window", r.Header.Get("X-RateLimit-Remaining"), r.Header.Get("X-RateLimit-Reset"))
	}
}

func TestExhaustedBucketAnswers429UntilReset(t *testing.T) {
	s := startREST(t, Config{})
	if err := s.SetRouteLimit("POST /channels/{channel_id}/messages", 2, 400*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	path := "/api/v10/channels/" + channelOf(s, 0, 0) + "/messages"
	start := time.Now()
	call(t, s, "POST", path, `{"content":"1"}`).want(t, 200)
	call(t, s, "POST", path, `{"content":"2"}`).want(t, 200)
	r := call(t, s, "POST", path, `{"content":"3"}`).want(t, 429)
	var b limitedBody
	r.json(t, &b)
	elapsed := time.Since(start).Seconds()
	if b.Message != "You are being rate limited." || b.Global || b.RetryAfter <= 0 || b.RetryAfter > 0.4 || b.RetryAfter < 0.4-elapsed-0.01 {
		t.Fatalf("429 body %+v, want user-scope retry_after about %.3f", b, 0.4-elapsed)
	}
	if r.Header.Get("X-RateLimit-Scope") != "user" || r.Header.Get("Retry-After") != "1" ||
		r.Header.Get("X-RateLimit-Remaining") != "0" || r.Header.Get("X-RateLimit-Global") != "" ||
		r.Header.Get("X-RateLimit-Bucket") == "" {
		t.Fatalf("429 headers %v, want scope user, Retry-After 1 (rounded up), remaining 0, a bucket, no global", r.Header)
	}
	// A 429 consumes nothing: waiting retry_after from the 429 is enough.
	call(t, s, "POST", path, `{"content":"4"}`).want(t, 429)
	time.Sleep(time.Duration(b.RetryAfter * float64(time.Second)))
	r = call(t, s, "POST", path, `{"content":"5"}`).want(t, 200)
	if r.Header.Get("X-RateLimit-Remaining") != "1" {
		t.Fatalf("after the reset: remaining %q, want a fresh window (1 left)", r.Header.Get("X-RateLimit-Remaining"))
	}
	if st := s.RESTStats(); st.RateLimitedUser != 2 || st.InvalidRequests != 2 {
		t.Fatalf("stats: %d user 429s and %d invalid requests, want 2 and 2", st.RateLimitedUser, st.InvalidRequests)
	}
}

func TestChannelsAndTokensHaveIndependentBudgets(t *testing.T) {
	s := startREST(t, Config{Tokens: []string{"a", "b"}})
	if err := s.SetRouteLimit("message-create", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	a, b := channelOf(s, 0, 0), channelOf(s, 0, 1)
	call(t, s, "POST", "/api/v10/channels/"+a+"/messages", `{"content":"x"}`).want(t, 200)
	call(t, s, "POST", "/api/v10/channels/"+a+"/messages", `{"content":"x"}`).want(t, 429)
	call(t, s, "POST", "/api/v10/channels/"+b+"/messages", `{"content":"x"}`).want(t, 200)
	call(t, s, "POST", "/api/v10/channels/"+a+"/messages", `{"content":"x"}`, "Authorization", "Bot b").want(t, 200)
}

func TestRoutesSharingABucketShareItsBudget(t *testing.T) {
	s := startREST(t, Config{})
	if err := s.SetRouteLimit("message", 2, time.Minute); err != nil {
		t.Fatal(err)
	}
	ch := channelOf(s, 1, 0)
	msg := "/api/v10/channels/" + ch + "/messages/" + FormatID(Snowflake(time.Now().UnixMilli()-1000, 1))
	r1 := call(t, s, "GET", msg, "").want(t, 200)
	r2 := call(t, s, "PATCH", msg, `{"content":"edited"}`).want(t, 200)
	if r1.Header.Get("X-RateLimit-Bucket") != r2.Header.Get("X-RateLimit-Bucket") || r2.Header.Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("get and edit message: buckets %q/%q remaining %q, want one shared bucket with 0 left",
			r1.Header.Get("X-RateLimit-Bucket"), r2.Header.Get("X-RateLimit-Bucket"), r2.Header.Get("X-RateLimit-Remaining"))
	}
	call(t, s, "GET", msg, "").want(t, 429)
}

func TestReactionsShareOneBucketPerChannel(t *testing.T) {
	s := startREST(t, Config{})
	ch := channelOf(s, 0, 0)
	m := FormatID(Snowflake(time.Now().UnixMilli()-1000, 1))
	base := "/api/v10/channels/" + ch + "/messages/" + m + "/reactions/"
	lim := limitOf(t, s, "reactions")
	if lim.Limit != 1 || lim.Window != 250*time.Millisecond {
		t.Fatalf("reactions %+v, want 1 per 250ms", lim)
	}
	r := call(t, s, "PUT", base+"%F0%9F%91%8D/@me", "").want(t, 204)
	if len(r.body) != 0 {
		t.Fatalf("reaction add: body %q, want none with 204", r.body)
	}
	call(t, s, "DELETE", base+"%F0%9F%91%8D/@me", "").want(t, 429)
	call(t, s, "DELETE", base+"name:123456789012345678/"+FormatID(MemberUserID(s.Guilds()[0].ID, 1)), "").want(t, 429)
	// Another message in the same channel is the same bucket; another channel is not.
	call(t, s, "PUT", "/api/v10/channels/"+ch+"/messages/"+FormatID(Snowflake(time.Now().UnixMilli()-2000, 1))+"/reactions/x/@me", "").want(t, 429)
	call(t, s, "PUT", "/api/v10/channels/"+channelOf(s, 0, 1)+"/messages/"+m+"/reactions/x/@me", "").want(t, 204)
	time.Sleep(260 * time.Millisecond)
	call(t, s, "DELETE", base+"%F0%9F%91%8D/@me", "").want(t, 204)
}

func TestMessageDeleteBucketDependsOnMessageAge(t *testing.T) {
	s := startREST(t, Config{})
	ch := channelOf(s, 0, 0)
	now := time.Now().UnixMilli()
	ages := []struct {
		name   string
		id     uint64
		bucket string
		limit  int
	}{
		{"2s old", Snowflake(now-2000, 1), "message-delete-recent", 5},
		{"1h old", Snowflake(now-3600_000, 1), "message-delete", 3},
		{"15 days old", Snowflake(now-15*24*3600_000, 1), "message-delete-old", 30},
	}
	seen := map[string]bool{}
	for _, a := range ages {
		r := call(t, s, "DELETE", "/api/v10/channels/"+ch+"/messages/"+FormatID(a.id), "").want(t, 204)
		h := r.Header.Get("X-RateLimit-Bucket")
		if h != limitOf(t, s, a.bucket).Hash || r.Header.Get("X-RateLimit-Limit") != strconv.Itoa(a.limit) {
			t.Fatalf("delete of a message %s: bucket %q limit %q, want %s (%d)", a.name, h, r.Header.Get("X-RateLimit-Limit"), a.bucket, a.limit)
		}
		seen[h] = true
	}
	if len(seen) != 3 {
		t.Fatalf("three ages gave %d buckets, want 3", len(seen))
	}
	// Exhausting one age's bucket leaves the others.
	if err := s.SetRouteLimit("message-delete", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	call(t, s, "DELETE", "/api/v10/channels/"+ch+"/messages/"+FormatID(ages[1].id), "").want(t, 204)
	call(t, s, "DELETE", "/api/v10/channels/"+ch+"/messages/"+FormatID(ages[1].id+1), "").want(t, 429)
	call(t, s, "DELETE", "/api/v10/channels/"+ch+"/messages/"+FormatID(ages[0].id+1), "").want(t, 204)
}

func TestGlobalLimitAllowsFiftyPerSecond(t *testing.T) {
	s := startREST(t, Config{Guilds: 20})
	var chans []string
	for i := range 20 {
		for c := range 3 {
			chans = append(chans, channelOf(s, i, c))
		}
	}
	// Sequentially, so that exactly the 51st is over the limit.
	var globals []reply
	start := time.Now()
	for i := range 51 {
		if r := call(t, s, "GET", "/api/v10/channels/"+chans[i], ""); r.StatusCode == 429 {
			if i != 50 {
				t.Fatalf("request %d got 429 %s, want only the 51st", i+1, r.body)
			}
			globals = append(globals, r)
		}
	}
	if time.Since(start) > time.Second {
		t.Skip("51 requests took over a second on this machine; the global limit is not exercised")
	}
	if len(globals) != 1 {
		t.Fatalf("51 requests to 51 buckets in under 1s: %d 429s, want the 51st to be a global 429", len(globals))
	}
	r := globals[0]
	var b limitedBody
	r.json(t, &b)
	if !b.Global || r.Header.Get("X-RateLimit-Global") != "true" || r.Header.Get("X-RateLimit-Scope") != "global" || b.RetryAfter <= 0 || b.RetryAfter > 1 {
		t.Fatalf("global 429: headers %v body %+v, want global scope and retry_after within 1s", r.Header, b)
	}
	if st := s.RESTStats(); st.RateLimitedGlobal != 1 || st.InvalidRequests != 1 {
		t.Fatalf("stats: %d global 429s, %d invalid; want 1 and 1", st.RateLimitedGlobal, st.InvalidRequests)
	}
}

// A fixed one-second window would allow a new burst one second after the first request; Discord's
// limit holds over any one-second span.
func TestGlobalLimitIsASlidingWindow(t *testing.T) {
	s := startREST(t, Config{GlobalRateLimit: 10, Guilds: 10})
	get := func(i int) reply { return call(t, s, "GET", "/api/v10/channels/"+channelOf(s, i%10, i/10), "") }
	start := time.Now()
	for i := range 5 {
		get(i).want(t, 200)
	}
	time.Sleep(600*time.Millisecond - time.Since(start))
	for i := 5; i < 10; i++ {
		get(i).want(t, 200)
	}
	get(10).want(t, 429)
	time.Sleep(1050*time.Millisecond - time.Since(start))
	// The first five have left the window; the second five have not.
	for i := 11; i < 16; i++ {
		get(i).want(t, 200)
	}
	r := get(16).want(t, 429)
	var b limitedBody
	r.json(t, &b)
	if want := 1.6 - time.Since(start).Seconds(); math.Abs(b.RetryAfter-want) > 0.1 {
		t.Fatalf("retry_after %v, want about %.3f (until the second burst leaves the window)", b.RetryAfter, want)
	}
}

// A handler that stalls between its arrival and the limit check is counted when it is checked: the
// global ring stays in time order, so its oldest slot is the oldest request.
func TestGlobalLimitCountsARequestWhenItIsChecked(t *testing.T) {
	s := New(Config{GlobalRateLimit: 1})
	rs := s.rest
	rt := &restRoute{global: true}
	l := newRESTLimiter(1)
	stale := rs.mono() - int64(2*time.Second) // arrived 2 s ago, checked only now
	if v := rs.admit(l, rt, nil, bucketKey{}, 0, stale); v.scope != "" {
		t.Fatalf("first request: %q, want admitted", v.scope)
	}
	if v := rs.admit(l, rt, nil, bucketKey{}, 0, rs.mono()); v.scope != ScopeGlobal {
		t.Fatalf("second request in the same second: %q, want a global 429 (the first counts from its check)", v.scope)
	}
}

func TestInteractionsAndWebhooksAreExemptFromTheGlobalLimit(t *testing.T) {
	s := startREST(t, Config{GlobalRateLimit: 3})
	ch := channelOf(s, 0, 0)
	var hook struct{ ID, Token string }
	call(t, s, "POST", "/api/v10/channels/"+ch+"/webhooks", `{"name":"hook"}`).want(t, 200).json(t, &hook)
	for i := range 2 {
		call(t, s, "GET", "/api/v10/channels/"+channelOf(s, i, 0), "").want(t, 200)
	}
	call(t, s, "GET", "/api/v10/users/@me", "").want(t, 429)
	for i := range 3 {
		id := FormatID(Snowflake(time.Now().UnixMilli(), uint64(i)))
		call(t, s, "POST", "/api/v10/interactions/"+id+"/tok/callback", `{"type":5}`, "Authorization", "").want(t, 204)
	}
	call(t, s, "POST", "/api/v10/webhooks/"+hook.ID+"/"+hook.Token, `{"content":"x"}`, "Authorization", "").want(t, 204)
	call(t, s, "GET", "/api/v10/users/@me", "").want(t, 429)
}

func TestForcedShared429IsNotAnInvalidRequest(t *testing.T) {
	s := startREST(t, Config{})
	ch, other := channelOf(s, 0, 0), channelOf(s, 0, 1)
	route := "POST /channels/{channel_id}/messages"
	call(t, s, "POST", "/_sim/rest/shared429",
		fmt.Sprintf(`{"route":%q,"resource":%q,"count":2,"retry_after":1.5}`, route, ch)).want(t, 204)
	call(t, s, "POST", "/api/v10/channels/"+other+"/messages", `{"content":"x"}`).want(t, 200)
	for range 2 {
		r := call(t, s, "POST", "/api/v10/channels/"+ch+"/messages", `{"content":"x"}`).want(t, 429)
		var b limitedBody
		r.json(t, &b)
		if r.Header.Get("X-RateLimit-Scope") != "shared" || b.RetryAfter != 1.5 || b.Global || r.Header.Get("Retry-After") != "2" ||
			b.Message != "The resource is being rate limited." || r.Header.Get("X-RateLimit-Remaining") != "5" {
			t.Fatalf("forced 429: headers %v body %+v, want shared scope, retry_after 1.5, untouched bucket", r.Header, b)
		}
	}
	call(t, s, "POST", "/api/v10/channels/"+ch+"/messages", `{"content":"x"}`).want(t, 200)
	st := s.RESTStats()
	if st.RateLimitedShared != 2 || st.InvalidRequests != 0 {
		t.Fatalf("stats: %d shared 429s, %d invalid; want 2 and 0", st.RateLimitedShared, st.InvalidRequests)
	}
	if err := s.ForceShared429("GET /nothing", 0, 1, time.Second); err == nil {
		t.Fatal("ForceShared429 on an unknown route: want an error")
	}
}

func TestWebhookExecutionsHaveASharedPerChannelLimit(t *testing.T) {
	s := startREST(t, Config{})
	route := "POST /webhooks/{webhook_id}/{webhook_token}"
	if err := s.SetSharedLimit(route, 2, time.Minute); err != nil {
		t.Fatal(err)
	}
	hooks := make([]struct{ ID, Token string }, 3)
	for i, ch := range []string{channelOf(s, 0, 0), channelOf(s, 0, 0), channelOf(s, 0, 1)} {
		call(t, s, "POST", "/api/v10/channels/"+ch+"/webhooks", `{"name":"h"}`).want(t, 200).json(t, &hooks[i])
	}
	exec := func(i int) reply {
		return call(t, s, "POST", "/api/v10/webhooks/"+hooks[i].ID+"/"+hooks[i].Token, `{"content":"x"}`, "Authorization", "")
	}
	exec(0).want(t, 204)
	exec(1).want(t, 204)
	r := exec(0).want(t, 429)
	if r.Header.Get("X-RateLimit-Scope") != "shared" {
		t.Fatalf("third execution in one channel: scope %q, want shared", r.Header.Get("X-RateLimit-Scope"))
	}
	exec(2).want(t, 204)
	if st := s.RESTStats(); st.RateLimitedShared != 1 || st.InvalidRequests != 0 {
		t.Fatalf("stats: %d shared, %d invalid; want 1 and 0", st.RateLimitedShared, st.InvalidRequests)
	}
	var lim RouteLimit
	for _, l := range s.RouteLimits() {
		if l.Route == route {
			lim = l
		}
	}
	if lim.SharedLimit != 2 || lim.SharedWindow != time.Minute || lim.Global {
		t.Fatalf("route table for %s: %+v, want shared 2/min, exempt from global", route, lim)
	}
}

func TestInvalidRequestsPastTheLimitBanTheClient(t *testing.T) {
	s := startREST(t, Config{InvalidRequestLimit: 3, InvalidRequestWindow: 500 * time.Millisecond})
	start := time.Now()
	for range 3 {
		call(t, s, "GET", "/api/v10/users/@me", "", "Authorization", "Bot wrong").want(t, 401)
	}
	r := call(t, s, "GET", "/api/v10/users/@me", "").want(t, 429)
	if ct := r.Header.Get("Content-Type"); ct == "application/json" || r.Header.Get("X-RateLimit-Scope") != "" {
		t.Fatalf("ban answer: content type %q, headers %v; want Cloudflare's HTML page", ct, r.Header)
	}
	call(t, s, "GET", "/api/v10/gateway", "", "Authorization", "").want(t, 429)
	st := s.RESTStats()
	if st.Bans != 1 || st.BannedRequests != 2 || st.InvalidRequests != 3 || st.RateLimited() != 2 {
		t.Fatalf("stats %+v: want 1 ban, 2 banned requests, 3 invalid", st)
	}
	time.Sleep(510*time.Millisecond - time.Since(start))
	call(t, s, "GET", "/api/v10/users/@me", "").want(t, 200)
}

func TestRateLimitTableIsDiscoverable(t *testing.T) {
	limits := DefaultRouteLimits()
	byBucket := map[string]RouteLimit{}
	for _, l := range limits {
		if l.Limit > 0 {
			if prev, ok := byBucket[l.Bucket]; ok && (prev.Hash != l.Hash || prev.Limit != l.Limit) {
				t.Fatalf("bucket %s appears with two hashes or limits: %+v and %+v", l.Bucket, prev, l)
			}
			byBucket[l.Bucket] = l
		}
	}
	if byBucket["reactions"].Major != MajorChannel || byBucket["member-get"].Major != MajorGuild ||
		byBucket["webhook-execute"].Major != MajorWebhook {
		t.Fatalf("majors: %+v", byBucket)
	}
	s := startREST(t, Config{})
	if err := s.SetRouteLimit("nope", 1, time.Second); err == nil {
		t.Fatal("SetRouteLimit on an unknown key: want an error")
	}
	call(t, s, "POST", "/_sim/rest/limits", `{"route":"GET /users/@me","limit":100,"window_ns":1000000000}`).want(t, 204)
	var got []RouteLimit
	call(t, s, "GET", "/_sim/rest/limits", "").want(t, 200).json(t, &got)
	for _, l := range got {
		if l.Route == "GET /users/@me" && (l.Limit != 100 || l.Window != time.Second) {
			t.Fatalf("after POST /_sim/rest/limits: %+v, want 100 per 1s", l)
		}
	}
	if DefaultRouteLimits()[1].Limit != limits[1].Limit {
		t.Fatal("a server's SetRouteLimit changed the default table")
	}
}

func TestResetLimitsStartsEveryBudgetAfresh(t *testing.T) {
	s := startREST(t, Config{InvalidRequestLimit: 1})
	if err := s.SetRouteLimit("user-me", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	call(t, s, "GET", "/api/v10/users/@me", "").want(t, 200)
	call(t, s, "GET", "/api/v10/users/@me", "").want(t, 429)
	call(t, s, "GET", "/api/v10/users/@me", "").want(t, 429) // banned now: one invalid request is the limit
	if st := s.RESTStats(); st.Bans != 1 {
		t.Fatalf("stats %+v: want a ban after one invalid request", st)
	}
	call(t, s, "POST", "/_sim/rest/reset-limits", "").want(t, 204)
	r := call(t, s, "GET", "/api/v10/users/@me", "").want(t, 200)
	if r.Header.Get("X-RateLimit-Limit") != "1" {
		t.Fatalf("after reset-limits: limit %q, want the SetRouteLimit value kept", r.Header.Get("X-RateLimit-Limit"))
	}
}
