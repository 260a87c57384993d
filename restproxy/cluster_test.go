package restproxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ddhq/dd/cluster"
	"github.com/ddhq/dd/cluster/clustertest"
	"github.com/ddhq/dd/ratelimit"
	"github.com/ddhq/dd/restproxy"
)

// member is one rest process of a cluster: a proxy on its own listener, with its own NATS connection.
type member struct {
	name  string
	conn  *cluster.Conn
	proxy *restproxy.Proxy
	srv   *httptest.Server
	reg   *prometheus.Registry
}

// newMember starts a rest process of the cluster at natsURL in front of upstream (Discord's API base).
func newMember(t *testing.T, name, natsURL, upstream string, ttl time.Duration, mod func(*restproxy.Options)) *member {
	t.Helper()
	m := &member{name: name, reg: prometheus.NewRegistry()}
	var h atomic.Pointer[http.Handler]
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*h.Load()).ServeHTTP(w, r) }))
	t.Cleanup(m.srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: natsURL, Instance: name, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m.conn = conn
	cl, err := restproxy.NATSCluster(conn, ttl, m.srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := restproxy.Options{Token: testToken, Secret: testSecret, APIURL: upstream,
		UserAgent: "DiscordBot (https://github.com/ddhq/dd, test)", MaxWait: 10 * time.Second,
		Registerer: m.reg, Limits: ratelimit.Options{GlobalRate: 50}, Cluster: cl}
	if mod != nil {
		mod(&o)
	}
	p, err := restproxy.New(o)
	if err != nil {
		t.Fatal(err)
	}
	m.proxy = p
	var hh http.Handler = p
	h.Store(&hh)
	t.Cleanup(p.Close)
	return m
}

// kill ends a member as a crash would: its listener and NATS connection close, its lease is not released.
func (m *member) kill() {
	m.srv.CloseClientConnections()
	m.srv.Listener.Close()
	m.conn.Close()
}

// leaderGauge reads dd_rest_leader for the configured token.
func leaderGauge(t *testing.T, m *member) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "dd_rest_leader" && len(mf.Metric) > 0 {
			return mf.Metric[0].GetGauge().GetValue()
		}
	}
	return -1
}

// waitLeader waits until exactly one of ms says it leads, and returns it and the others.
func waitLeader(t *testing.T, within time.Duration, ms ...*member) (*member, []*member) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var lead *member
		var rest []*member
		n := 0
		for _, m := range ms {
			if leaderGauge(t, m) == 1 {
				lead, n = m, n+1
			} else {
				rest = append(rest, m)
			}
		}
		if n == 1 && ready(m0(rest)) {
			return lead, rest
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no single leader among %d rest processes after %s", len(ms), within)
	return nil, nil
}

func m0(ms []*member) *member {
	if len(ms) == 0 {
		return nil
	}
	return ms[0]
}

func ready(m *member) bool { return m == nil || m.proxy.Ready() == nil }

// seen is what the fake Discord received.
type seen struct {
	method, uri, auth, ua, reason, ctype, hop string
	sum                                       [32]byte
}

func capture(t *testing.T, log *[]seen, mu *sync.Mutex) *httptest.Server {
	return newCapture(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		*log = append(*log, seen{method: r.Method, uri: r.RequestURI, auth: r.Header.Get("Authorization"), ua: r.Header.Get("User-Agent"),
			reason: r.Header.Get("X-Audit-Log-Reason"), ctype: r.Header.Get("Content-Type"), hop: r.Header.Get(restproxy.HopHeader), sum: sha256.Sum256(b)})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Test-Echo", r.URL.Query().Get("q"))
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"len":%d}`, len(b))
	})
}

// A follower forwards a request to the leader as it came (path, query, headers, a large body streamed),
// the leader sends it to Discord once with the bot's token, and the answer comes back as Discord gave
// it. A caller without credentials is refused at the follower and reaches neither the leader nor Discord.
func TestFollowerForwardsToTheLeaderAsReceived(t *testing.T) {
	s := clustertest.Server(t)
	var mu sync.Mutex
	var log []seen
	up := capture(t, &log, &mu)
	a := newMember(t, "a", s.ClientURL(), up.URL+"/api", 2*time.Second, nil)
	b := newMember(t, "b", s.ClientURL(), up.URL+"/api", 2*time.Second, nil)
	lead, others := waitLeader(t, 10*time.Second, a, b)
	fol := others[0]

	body := bytes.Repeat([]byte("0123456789abcdef"), 300_000) // 4.8 MB: spooled at the leader, streamed here
	req, _ := http.NewRequest("POST", fol.srv.URL+"/api/v10/channels/42/messages?q=a%20b&x=1", bytes.NewReader(body))
	req.Header.Set("Authorization", testSecret)
	req.Header.Set("Content-Type", "multipart/form-data; boundary=xyz")
	req.Header.Set("X-Audit-Log-Reason", "why%20not")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || string(got) != fmt.Sprintf(`{"len":%d}`, len(body)) || resp.Header.Get("X-Test-Echo") != "a b" {
		t.Fatalf("through the follower: %d %s (echo %q); want Discord's 201 with the body's length", resp.StatusCode, got, resp.Header.Get("X-Test-Echo"))
	}
	mu.Lock()
	if len(log) != 1 {
		t.Fatalf("Discord got %d requests, want 1", len(log))
	}
	g := log[0]
	mu.Unlock()
	if g.method != "POST" || g.uri != "/api/v10/channels/42/messages?q=a%20b&x=1" || g.auth != "Bot "+testToken ||
		g.reason != "why%20not" || g.ctype != "multipart/form-data; boundary=xyz" || g.sum != sha256.Sum256(body) || g.hop != "" {
		t.Errorf("Discord got %+v; want the request as sent, with the bot's token and no hop header", g)
	}
	if n := counter(t, lead.reg, "dd_rest_forwarded_served_total"); n != 1 {
		t.Errorf("the leader served %v forwarded requests, want 1", n)
	}

	// No credentials: 401 at the follower, nothing further.
	r2, _ := http.NewRequest("POST", fol.srv.URL+"/api/v10/channels/42/messages", strings.NewReader("{}"))
	r2.Header.Set("Authorization", "wrong")
	resp, err = http.DefaultClient.Do(r2)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("wrong credentials through the follower: %d, want 401", resp.StatusCode)
	}
	if n := counter(t, lead.reg, "dd_rest_forwarded_served_total"); n != 1 {
		t.Errorf("the leader got a request with wrong credentials (served %v)", n)
	}
	// A request that claims to be a hop, sent to a follower, is not forwarded again: 421 to its sender.
	r3, _ := http.NewRequest("GET", fol.srv.URL+"/api/v10/users/@me", nil)
	r3.Header.Set("Authorization", testSecret)
	r3.Header.Set(restproxy.HopHeader, "1")
	resp, err = http.DefaultClient.Do(r3)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("a hop to a follower: %d, want 421", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(log) != 1 {
		t.Errorf("Discord got %d requests, want still 1", len(log))
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.Metric {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// When the leader dies, requests that reach the follower in the meantime wait for the election and are
// then served by the follower, now the leader, within 2 × lease_ttl; the new leader's first request
// waits a global window (the old leader may have spent it). Its /readyz says ready again.
func TestLeaderDiesFollowerTakesOverAndServesWaitingRequests(t *testing.T) {
	s := clustertest.Server(t)
	var mu sync.Mutex
	var log []seen
	up := capture(t, &log, &mu)
	const ttl = 2 * time.Second
	a := newMember(t, "a", s.ClientURL(), up.URL+"/api", ttl, nil)
	b := newMember(t, "b", s.ClientURL(), up.URL+"/api", ttl, nil)
	lead, others := waitLeader(t, 10*time.Second, a, b)
	fol := others[0]
	get := func(m *member) (int, time.Duration) {
		start := time.Now()
		req, _ := http.NewRequest("GET", m.srv.URL+"/api/v10/channels/7", nil)
		req.Header.Set("Authorization", testSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, time.Since(start)
		}
		resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}
	if st, _ := get(fol); st != 201 {
		t.Fatalf("before the failover: %d", st)
	}
	died := time.Now()
	lead.kill()
	var wg sync.WaitGroup
	statuses := make([]int, 10)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 100 * time.Millisecond)
			statuses[i], _ = get(fol)
		}()
	}
	wg.Wait()
	took := time.Since(died)
	for i, st := range statuses {
		if st != 201 {
			t.Errorf("request %d during the election: %d, want 201 (it should wait for the new leader)", i, st)
		}
	}
	if leaderGauge(t, fol) != 1 {
		t.Fatal("the follower does not lead after the leader died")
	}
	t.Logf("all requests sent during the election answered %s after the leader died (lease_ttl %s)", took.Round(time.Millisecond), ttl)
	if took > 2*ttl+time.Second {
		t.Errorf("took %s; want the requests served within 2 × lease_ttl (+ the new leader's first global window)", took)
	}
	if err := fol.proxy.Ready(); err != nil {
		t.Errorf("new leader not ready: %v", err)
	}
}
