package restproxy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ddhq/dd/restproxy"
	"github.com/ddhq/dd/sim/discordsim"
)

// fire runs n requests concurrently and returns their statuses.
func fire(t *testing.T, e *env, n int, req func(i int) (method, path, body string)) []int {
	t.Helper()
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, p, b := req(i)
			r, err := e.try(m, p, b)
			if err != nil {
				t.Errorf("%s %s: %v", m, p, err)
				return
			}
			statuses[i] = r.status
		}()
	}
	wg.Wait()
	return statuses
}

func wantAll(t *testing.T, statuses []int, ok ...int) {
	t.Helper()
	for i, s := range statuses {
		good := false
		for _, o := range ok {
			good = good || s == o
		}
		if !good {
			t.Fatalf("request %d: status %d, want one of %v (all: %v)", i, s, ok, statuses)
		}
	}
}

func snowflakeAgo(d time.Duration, seq uint64) string {
	return discordsim.FormatID(discordsim.Snowflake(time.Now().Add(-d).UnixMilli(), seq))
}

func TestBurstOverManyChannelsAndReactionsEarnsNo429(t *testing.T) {
	e := newEnv(t, discordsim.Config{Guilds: 10, ChannelsPerGuild: 2, GlobalRateLimit: 200}, nil)
	if err := e.sim.SetRouteLimit("POST /channels/{channel_id}/messages", 5, time.Second); err != nil {
		t.Fatal(err)
	}
	var chans []string
	for g := range 10 {
		chans = append(chans, e.channel(g, 0), e.channel(g, 1))
	}
	msg := snowflakeAgo(time.Minute, 7)
	start := time.Now()
	statuses := fire(t, e, 240, func(i int) (string, string, string) {
		ch := chans[i%len(chans)]
		if i >= 200 { // two reactions per channel: one bucket per channel, 1 per 250 ms
			emoji := []string{"%F0%9F%91%8D", "%E2%9C%85"}[(i-200)/20]
			return "PUT", "/api/v10/channels/" + ch + "/messages/" + msg + "/reactions/" + emoji + "/@me", ""
		}
		return "POST", "/api/v10/channels/" + ch + "/messages", fmt.Sprintf(`{"content":"burst %d"}`, i)
	})
	wantAll(t, statuses, 200, 204)
	e.noRateLimits(t)
	t.Logf("240 requests over 20 channels in %v", time.Since(start).Round(time.Millisecond))
	if n := e.sim.RESTStats().Requests; n != 240 {
		t.Fatalf("simulator saw %d requests, want 240 (each once)", n)
	}
}

func TestRoutesSharingABucketHashShareItsBudget(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, nil)
	// GET and PATCH of a message share Discord's "message" bucket.
	if err := e.sim.SetRouteLimit("message", 2, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ch := e.channel(0, 0)
	m := "/api/v10/channels/" + ch + "/messages/" + snowflakeAgo(time.Minute, 1)
	e.do(t, "PATCH", m, `{"content":"a"}`).want(t, 200)
	e.do(t, "GET", m, "").want(t, 200)
	start := time.Now()
	statuses := fire(t, e, 10, func(i int) (string, string, string) {
		if i%2 == 0 {
			return "GET", m, ""
		}
		return "PATCH", m, `{"content":"b"}`
	})
	wantAll(t, statuses, 200)
	e.noRateLimits(t)
	// 12 requests at 2 per 300 ms: at least 5 window turns.
	if el := time.Since(start); el < 4*300*time.Millisecond {
		t.Fatalf("10 requests on a shared 2-per-300ms bucket took %v: the routes did not share the budget", el)
	}
}

// A route dd has never seen may share its bucket with a known route of the same channel (Discord does not
// say so until it answers): GET and PATCH of a message share one. Its first request must not go while
// that bucket is spent.
func TestAFirstSeenRouteWaitsForASpentBucketOfItsChannel(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, nil)
	if err := e.sim.SetRouteLimit("message", 1, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	m := "/api/v10/channels/" + e.channel(0, 0) + "/messages/" + snowflakeAgo(time.Minute, 3)
	e.do(t, "PATCH", m, `{"content":"a"}`).want(t, 200) // learns the bucket: 1 per 300 ms, now spent
	statuses := fire(t, e, 3, func(i int) (string, string, string) {
		if i == 0 {
			return "GET", m, "" // never seen: the same bucket, unknown to dd
		}
		return "PATCH", m, `{"content":"b"}`
	})
	wantAll(t, statuses, 200)
	e.noRateLimits(t)
}

func TestGlobalLimitIsKept(t *testing.T) {
	e := newEnv(t, discordsim.Config{Guilds: 10, ChannelsPerGuild: 3, GlobalRateLimit: 10}, nil)
	var paths []string
	for g := range 10 {
		for c := range 3 {
			paths = append(paths, "/api/v10/channels/"+e.channel(g, c))
		}
	}
	start := time.Now()
	statuses := fire(t, e, 25, func(i int) (string, string, string) { return "GET", paths[i], "" })
	wantAll(t, statuses, 200)
	e.noRateLimits(t)
	if el := time.Since(start); el < 2*time.Second {
		t.Fatalf("25 requests at 10/s took %v: the global limit was not kept", el)
	}
}

func TestA429IsRetriedAndNotSurfaced(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, nil)
	if err := e.sim.SetRouteLimit("GET /channels/{channel_id}", 1, 400*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ch := e.channel(0, 0)
	// Someone else (not through dd) spends the bucket: dd cannot know and gets a 429.
	req, _ := http.NewRequest("GET", e.sim.APIURL()+"/v10/channels/"+ch, nil)
	req.Header.Set("Authorization", "Bot "+testToken)
	req.Header.Set("User-Agent", "DiscordBot (x, 1)")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	e.do(t, "GET", "/api/v10/channels/"+ch, "").want(t, 200)
	if st := e.sim.RESTStats(); st.RateLimitedUser != 1 || st.Requests != 3 {
		t.Fatalf("simulator: %d user 429s in %d requests; want the one 429 dd could not foresee, then its retry", st.RateLimitedUser, st.Requests)
	}
	if n := e.metric(t, "dd_rest_discord_429_total", "scope", "user"); n != 1 {
		t.Fatalf("dd_rest_discord_429_total{scope=user} = %v, want 1", n)
	}
}

func TestSharedScope429IsSurfacedOnlyOnTheLastRetry(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, func(o *restproxy.Options) { o.MaxRetries = 2 })
	route := "POST /channels/{channel_id}/messages"
	path := "/api/v10/channels/" + e.channel(0, 0) + "/messages"
	if err := e.sim.ForceShared429(route, 0, 2, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	e.do(t, "POST", path, `{"content":"a"}`).want(t, 200)
	if err := e.sim.ForceShared429(route, 0, 3, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	r := e.do(t, "POST", path, `{"content":"b"}`).want(t, 429)
	if r.header.Get("X-Ratelimit-Scope") != "shared" || !strings.Contains(string(r.body), "retry_after") {
		t.Fatalf("want Discord's shared 429 as is, got %v %s", r.header, r.body)
	}
	if st := e.sim.RESTStats(); st.RateLimitedShared != 5 || st.Requests != 6 {
		t.Fatalf("simulator: %d shared 429s in %d requests, want 5 in 6", st.RateLimitedShared, st.Requests)
	}
}

func TestInvalidRequestGuardAnswers503BeforeDiscordsBan(t *testing.T) {
	e := newEnv(t, discordsim.Config{InvalidRequestLimit: 30}, func(o *restproxy.Options) {
		o.Limits.InvalidRequestLimit = 20
	})
	if err := e.sim.SetRouteLimit("GET /applications/{application_id}/commands", 1000, time.Second); err != nil {
		t.Fatal(err)
	}
	forbidden, refused := 0, 0
	for range 40 {
		r := e.do(t, "GET", "/api/v10/applications/1/commands", "") // not our application: 403
		switch r.status {
		case 403:
			forbidden++
		case 503:
			r.ddError(t, 503)
			refused++
		default:
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	st := e.sim.RESTStats()
	if forbidden != 20 || refused != 20 || st.Forbidden != 20 || st.Bans != 0 {
		t.Fatalf("%d 403s passed, %d refused by dd; simulator saw %d 403s and %d bans; want 20, 20, 20, 0",
			forbidden, refused, st.Forbidden, st.Bans)
	}
	if n := e.metric(t, "dd_rest_invalid_requests"); n != 20 {
		t.Fatalf("dd_rest_invalid_requests = %v, want 20", n)
	}
}

// TestCallersThatDisconnectStillGetTheirRequestsSent: a request dd accepted (read in full) reaches Discord
// exactly once even when its caller leaves while it waits in dd's queues. Each caller disconnects the
// moment dd has read its whole request, so every request is accepted and most are still queued when
// their caller goes. (With a fixed client timeout instead, a loaded machine let callers give up before dd
// had read their request at all: dd owes those nothing, and the test counted them as lost.)
func TestCallersThatDisconnectStillGetTheirRequestsSent(t *testing.T) {
	e := newEnv(t, discordsim.Config{Guilds: 10, ChannelsPerGuild: 1, GlobalRateLimit: 100}, nil)
	if err := e.sim.SetRouteLimit("POST /channels/{channel_id}/messages", 5, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	const n = 100
	sums := make([]string, n)
	leave := map[string]context.CancelFunc{}
	for i := range n {
		sum := sha256.Sum256([]byte(fmt.Sprintf(`{"content":"caller %d"}`, i)))
		sums[i] = hex.EncodeToString(sum[:])
	}
	// dd behind a front that notes each body dd read to its end (the request is then accepted) and makes
	// that request's caller leave at once.
	var mu sync.Mutex
	accepted := map[string]bool{}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = &recordingBody{ReadCloser: r.Body, done: func(b []byte) {
			sum := sha256.Sum256(b)
			mu.Lock()
			accepted[hex.EncodeToString(sum[:])] = true
			cancel := leave[hex.EncodeToString(sum[:])]
			mu.Unlock()
			if cancel != nil {
				cancel()
			}
		}}
		e.proxy.ServeHTTP(w, r)
	}))
	defer front.Close()

	gaveUp := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		mu.Lock()
		leave[sums[i]] = cancel
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"content":"caller %d"}`, i)
			req, _ := http.NewRequestWithContext(ctx, "POST", front.URL+"/api/v10/channels/"+e.channel(i%10, 0)+"/messages", strings.NewReader(body))
			req.Header.Set("Authorization", testSecret)
			req.Header.Set("Content-Type", "application/json")
			if resp, err := http.DefaultClient.Do(req); err != nil {
				gaveUp[i] = true
			} else {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	nAccepted, left := len(accepted), 0
	for i, sum := range sums {
		if gaveUp[i] && accepted[sum] {
			left++
		}
	}
	mu.Unlock()
	// 100 requests against 5 per 500 ms on each of 10 channels and 100 per second: most wait in dd.
	if left < n/2 {
		t.Fatalf("only %d callers left after dd accepted their request (%d accepted); the test needs most of them gone while queued", left, nAccepted)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.sim.RESTStats().Requests < int64(nAccepted) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // anything more would be a duplicate
	seen := map[string]int{}
	for _, r := range e.sim.RESTRequests() {
		seen[r.BodySHA256]++
	}
	mu.Lock()
	defer mu.Unlock()
	for i, sum := range sums {
		switch {
		case accepted[sum] && seen[sum] != 1:
			t.Errorf("caller %d's request, accepted by dd (caller left: %v), reached the simulator %d times, want once (%d of %d accepted, %d callers left; simulator saw %d requests)",
				i, gaveUp[i], seen[sum], nAccepted, n, left, len(e.sim.RESTRequests()))
		case !accepted[sum] && seen[sum] != 0:
			t.Errorf("caller %d's request reached the simulator %d times though dd never read it in full", i, seen[sum])
		}
	}
	e.noRateLimits(t)
}

// recordingBody calls done with the whole body once it has been read to its end.
type recordingBody struct {
	io.ReadCloser
	buf  []byte
	done func([]byte)
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.buf = append(b.buf, p[:n]...)
	if err == io.EOF && b.done != nil {
		b.done(b.buf)
		b.done = nil
	}
	return n, err
}

func TestMaxWaitAnswers504(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, func(o *restproxy.Options) { o.MaxWait = 300 * time.Millisecond })
	if err := e.sim.SetRouteLimit("GET /channels/{channel_id}", 1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	path := "/api/v10/channels/" + e.channel(0, 0)
	e.do(t, "GET", path, "").want(t, 200)
	start := time.Now()
	msg := e.do(t, "GET", path, "").ddError(t, 504)
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("504 after %v; a wait known to exceed max_wait must be refused at once", el)
	}
	if !strings.Contains(msg, "max_wait") {
		t.Fatalf("504 message %q does not name rest.max_wait", msg)
	}
	if n := e.sim.RESTStats().Requests; n != 1 {
		t.Fatalf("simulator saw %d requests, want 1", n)
	}
}

func TestUpstreamConnectionsAreReused(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, nil)
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				if r, err := e.try("GET", "/api/v10/gateway", ""); err != nil || r.status != 200 {
					t.Errorf("worker %d: %v %d", w, err, r.status)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := e.accepted.Load(); n > 25 {
		t.Fatalf("500 requests from 20 concurrent callers opened %d connections to Discord; want them pooled (at most ~20)", n)
	}
}

func TestServerErrorsAreRetriedOnlyWhereSafe(t *testing.T) {
	var calls atomic.Int64
	upstream := newCapture(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1)%3 != 0 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"1"}`)
	})
	e := newEnvUpstream(t, upstream, nil)
	e.do(t, "GET", "/api/v10/channels/1", "").want(t, 200)
	if n := calls.Load(); n != 3 {
		t.Fatalf("GET after two 502s: %d attempts, want 3", n)
	}
	calls.Store(0)
	e.do(t, "POST", "/api/v10/channels/1/messages", `{"content":"x"}`).want(t, 502)
	if n := calls.Load(); n != 1 {
		t.Fatalf("POST answered 502: %d attempts, want 1 (not safe to repeat)", n)
	}

	down := newCapture(t, func(http.ResponseWriter, *http.Request) {})
	down.Close()
	e2 := newEnvUpstream(t, down, func(o *restproxy.Options) { o.MaxRetries = 1 })
	msg := e2.do(t, "GET", "/api/v10/webhooks/1/secret-webhook-token", "").ddError(t, 502)
	if strings.Contains(msg, "secret-webhook-token") {
		t.Fatalf("the 502 message shows the webhook token: %q", msg)
	}
}

func TestMessageDeletesUseTheBucketOfTheMessagesAge(t *testing.T) {
	e := newEnv(t, discordsim.Config{}, nil)
	ch := e.channel(0, 0)
	statuses := fire(t, e, 16, func(i int) (string, string, string) {
		age := time.Hour // 3 per 333 ms
		if i%2 == 0 {
			age = time.Second // 5 per 1 s
		}
		return "DELETE", "/api/v10/channels/" + ch + "/messages/" + snowflakeAgo(age, uint64(i)), ""
	})
	wantAll(t, statuses, 204)
	e.noRateLimits(t)
}
