package restproxy_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ddhq/dd/ratelimit"
	"github.com/ddhq/dd/restproxy"
	"github.com/ddhq/dd/sim/discordsim"
)

const (
	testSecret = "rest-secret-for-tests"
	testToken  = "sim-token"
)

// env is dd's rest proxy in front of an in-process simulator, both on real sockets.
type env struct {
	sim      *discordsim.Server
	proxy    *restproxy.Proxy
	dd       *httptest.Server
	reg      *prometheus.Registry
	accepted *atomic.Int64 // connections the simulator accepted from dd
}

// newEnv starts a simulator (its REST side behind a listener that counts connections) and dd in front.
func newEnv(t testing.TB, simCfg discordsim.Config, mod func(*restproxy.Options)) *env {
	t.Helper()
	if len(simCfg.Tokens) == 0 {
		simCfg.Tokens = []string{testToken}
	}
	sim := discordsim.New(simCfg)
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	e := &env{sim: sim, reg: prometheus.NewRegistry(), accepted: new(atomic.Int64)}
	// A second listener serving the same simulator, counting the connections dd opens.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upstream := &http.Server{Handler: sim.Handler(), ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			e.accepted.Add(1)
		}
	}}
	go func() { _ = upstream.Serve(l) }()
	t.Cleanup(func() { _ = upstream.Close() })

	e.startProxy(t, "http://"+l.Addr().String()+"/api", sim.Config().Tokens[0], sim.Config().GlobalRateLimit, mod)
	return e
}

// newCapture is a fake Discord for tests that need to see or shape raw HTTP.
func newCapture(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// newEnvUpstream puts dd in front of a fake Discord.
func newEnvUpstream(t testing.TB, upstream *httptest.Server, mod func(*restproxy.Options)) *env {
	t.Helper()
	e := &env{reg: prometheus.NewRegistry(), accepted: new(atomic.Int64)}
	e.startProxy(t, upstream.URL+"/api", testToken, 50, mod)
	return e
}

func (e *env) startProxy(t testing.TB, apiURL, token string, globalRate int, mod func(*restproxy.Options)) {
	t.Helper()
	o := restproxy.Options{
		Token:      token,
		Secret:     testSecret,
		APIURL:     apiURL,
		UserAgent:  "DiscordBot (https://github.com/ddhq/dd, test)",
		MaxWait:    30 * time.Second,
		Registerer: e.reg,
		Limits:     ratelimit.Options{GlobalRate: globalRate},
	}
	if mod != nil {
		mod(&o)
	}
	p, err := restproxy.New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = p
	e.dd = httptest.NewServer(p)
	t.Cleanup(func() {
		e.dd.Close()
		p.Close()
	})
}

// reply is a response with its body read.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.body, err)
	}
}

func (r reply) want(t *testing.T, status int) reply {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	return r
}

// ddError checks dd's own error body {"code":0,"message":...}.
func (r reply) ddError(t *testing.T, status int) string {
	t.Helper()
	r.want(t, status)
	var e struct {
		Code    *int    `json:"code"`
		Message *string `json:"message"`
	}
	r.json(t, &e)
	if e.Code == nil || *e.Code != 0 || e.Message == nil || *e.Message == "" {
		t.Fatalf("want dd's error body {\"code\":0,\"message\":...}, got %s", r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("dd's error: Content-Type %q", ct)
	}
	return *e.Message
}

// do sends one request to dd. headers are name, value pairs; Authorization defaults to the secret
// (pass "" to send none).
func (e *env) do(t *testing.T, method, path, body string, headers ...string) reply {
	t.Helper()
	r, err := e.try(method, path, body, headers...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func (e *env) try(method, path, body string, headers ...string) (reply, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.dd.URL+path, rd)
	if err != nil {
		return reply{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", testSecret)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}, err
}

// raw writes bytes on a fresh connection to dd and returns the status line's code.
func (e *env) raw(t *testing.T, request string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", e.dd.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading dd's answer to %q: %v", request, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) channel(g, c int) string { return discordsim.FormatID(e.sim.Guilds()[g].Channels[c]) }

func (e *env) guild(g int) string { return discordsim.FormatID(e.sim.Guilds()[g].ID) }

// noRateLimits fails the test if the simulator answered any 429.
func (e *env) noRateLimits(t testing.TB) {
	t.Helper()
	st := e.sim.RESTStats()
	if n := st.RateLimited(); n != 0 {
		reqs := e.sim.RESTRequests()
		for _, r := range reqs {
			if r.Status != 429 {
				continue
			}
			t.Logf("first 429: %s %s (bucket %s, scope %s) at %s; that path's requests:", r.Method, r.Route, r.Bucket, r.Scope, r.Time.Format("15:04:05.000000"))
			for _, q := range reqs {
				if q.Path == r.Path && q.Method == r.Method {
					t.Logf("  %s %d", q.Time.Format("15:04:05.000000"), q.Status)
				}
			}
			break
		}
		t.Fatalf("the simulator answered %d 429s (user %d, global %d, shared %d, ban pages %d): dd must keep every limit",
			n, st.RateLimitedUser, st.RateLimitedGlobal, st.RateLimitedShared, st.BannedRequests)
	}
}

// metric returns the value of a counter or gauge in dd's registry (sum over label sets matching labels).
func (e *env) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}
