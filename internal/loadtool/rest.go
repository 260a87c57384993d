package loadtool

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RESTOptions configures RunREST. Zero values take the defaults in brackets.
type RESTOptions struct {
	Binaries Binaries
	Callers  int           // concurrent callers, each sending one request after the other [64]
	Fast     time.Duration // phase 1: callers over FastChannels channels, upstream answering at once [2s]
	Slow     time.Duration // phase 2: every caller on one channel, upstream answering in Latency [5s]
	Latency  time.Duration // the upstream's REST latency in phase 2 [50ms]
	// FastChannels is how many channels phase 1 spreads over [Callers].
	FastChannels int
	// FastCallers is how many callers phase 1 runs [Callers]; fewer leave dd a smaller pool of upstream
	// connections than phase 2 needs.
	FastCallers int
	// FirstSlow is added to the first answer of phase 2 only (one slow answer upstream) [none].
	FirstSlow time.Duration
	// HotUsed puts phase 2 on a channel phase 1 used (caller 0's); otherwise on one it never touched.
	HotUsed bool
	// Window is the route bucket's window, so its X-RateLimit-Reset-After [1s]; its limit is 1,000,000.
	Window time.Duration
	// OmitRemaining makes the upstream leave X-RateLimit-Remaining out of its answers.
	OmitRemaining bool
	// Global is the global limit in requests per second, dd's rest.global_rate_limit and the
	// simulator's [1,000,000].
	Global int
	// ClientIdle is the callers' keep-alive pool to dd (MaxIdleConnsPerHost) [2 × Callers]; Go's default
	// client keeps 2, so most of 64 callers' connections are closed after each request and dialled again.
	ClientIdle int
	Env        []string // more DD_* variables for dd
	Dir        string   // parent of the run's directory [the system temp directory]
	Keep       bool
	Logf       func(format string, args ...any)
}

func (o *RESTOptions) defaults() {
	if o.Callers <= 0 {
		o.Callers = 64
	}
	if o.Fast <= 0 {
		o.Fast = 2 * time.Second
	}
	if o.Slow <= 0 {
		o.Slow = 5 * time.Second
	}
	if o.Latency <= 0 {
		o.Latency = 50 * time.Millisecond
	}
	if o.FastChannels <= 0 {
		o.FastChannels = o.Callers
	}
	if o.FastCallers <= 0 {
		o.FastCallers = o.Callers
	}
	if o.Window <= 0 {
		o.Window = time.Second
	}
	if o.Global <= 0 {
		o.Global = 1000000
	}
	if o.ClientIdle <= 0 {
		o.ClientIdle = 2 * o.Callers
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// restRouteLimit is the route every caller sends on; its bucket is keyed by channel.
const restRouteLimit = "GET /channels/{channel_id}"

// RESTPhase is what one phase of a rest run measured.
type RESTPhase struct {
	Name      string  `json:"name"`
	Callers   int     `json:"callers"`
	Channels  int     `json:"channels"`
	LatencyMs float64 `json:"upstream_latency_ms"`
	Seconds   float64 `json:"seconds"`
	Requests  int64   `json:"requests"`
	Errors    int64   `json:"errors"` // a transport error or a status other than 200
	PerSecond float64 `json:"requests_per_s"`
	// Ideal is callers ÷ the upstream's latency when there is one: each caller has one request in
	// flight for at least the latency. Ratio is PerSecond ÷ Ideal.
	Ideal float64 `json:"ideal_per_s,omitempty"`
	Ratio float64 `json:"ratio,omitempty"`
	// FirstSecond is the rate over the phase's first second.
	FirstSecond float64 `json:"first_second_per_s"`
	// dd_rest_queue_wait_seconds over the phase: waits longer than 0.05 s, 0.1 s and 1 s, and the upper bound of
	// the histogram bucket that holds the slowest wait (+Inf when past the last bound).
	Waits      int64   `json:"waits"`
	WaitsOver5 int64   `json:"waits_over_50ms"`
	WaitsOver  int64   `json:"waits_over_100ms"`
	WaitsOver1 int64   `json:"waits_over_1s"`
	SlowestLe  float64 `json:"slowest_wait_le_s"`
	// Caller's view of each request: median, p99 and slowest round trip through dd.
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// dd's connections to the simulator at the phase's end: open (ESTABLISHED) and closed by dd since
	// the run started (TIME_WAIT on dd's side; the kernel keeps them 60 s).
	UpstreamOpen   int `json:"upstream_conns_open"`
	UpstreamClosed int `json:"upstream_conns_closed"`
	// CPU used over the phase, in cores: dd, the simulator and this process (the callers); and the
	// machine's load average (1 minute) at its end, since other work shares the cores.
	DDCores   float64 `json:"dd_cores"`
	SimCores  float64 `json:"sim_cores"`
	ToolCores float64 `json:"tool_cores"`
	LoadAvg   float64 `json:"loadavg_1m"`
	// PerQuarter is the rate in each 250 ms of the phase.
	PerQuarter []float64 `json:"per_250ms"`
}

// RESTResult is what RunREST measured.
type RESTResult struct {
	Callers       int         `json:"callers"`
	HotUsed       bool        `json:"hot_channel_used_before"`
	WindowS       float64     `json:"window_s"`
	OmitRemaining bool        `json:"omit_remaining"`
	FirstSlowMs   float64     `json:"first_slow_ms,omitempty"`
	Global        int         `json:"global"`
	ClientIdle    int         `json:"client_idle_conns"`
	Phases        []RESTPhase `json:"phases"`
	Sim429        int64       `json:"sim_429"`
	SimRequests   int64       `json:"sim_requests"`
	Sent          int64       `json:"sent"`
	DDPID         int         `json:"dd_pid"`
	SimPID        int         `json:"sim_pid"`
}

// RunREST is issue #9's REST sequence from outside: the simulator and dd --role=rest as processes,
// callers in this one. Phase 1 (fast): Callers callers loop over FastChannels channels while the upstream
// answers at once; then the upstream's latency is set to Latency; phase 2 (slow): every caller loops on
// one channel. The route's bucket allows 1,000,000 requests per Window and the global limit is Global, so
// nothing in Discord's limits asks a request to wait: dd's queue waits (dd_rest_queue_wait_seconds) and
// the rate against callers ÷ latency show whether dd makes them wait anyway.
func RunREST(ctx context.Context, o RESTOptions) (res RESTResult, err error) {
	o.defaults()
	res.Callers, res.HotUsed, res.WindowS, res.OmitRemaining, res.Global = o.Callers, o.HotUsed, o.Window.Seconds(), o.OmitRemaining, o.Global
	res.ClientIdle, res.FirstSlowMs = o.ClientIdle, ms(o.FirstSlow)
	dir, end, err := beginRun(ctx, &o.Binaries, o.Dir, "rest", o.Keep)
	if err != nil {
		return res, err
	}
	defer end(&err)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sim, err := startRESTSim(ctx, dir, o.Binaries.Sim, o.FastChannels+1, o.Global, o.Window)
	if err != nil {
		return res, err
	}
	defer sim.stop(10 * time.Second)
	res.SimPID = sim.pid()
	channels, err := sim.restChannels()
	if err != nil {
		return res, err
	}
	if o.OmitRemaining {
		body, _ := json.Marshal(map[string]any{"headers": []string{"X-RateLimit-Remaining"}})
		if err := postJSON(sim.url+"/_sim/rest/omit-headers", body); err != nil {
			return res, err
		}
	}
	// The channel look-ups count towards the simulator's global limit, which dd does not know of.
	for _, admin := range []string{"reset", "reset-limits"} {
		if err := postJSON(sim.url+"/_sim/rest/"+admin, nil); err != nil {
			return res, err
		}
	}
	simPort := portOf(sim.url)

	env := []string{"DD_DISCORD__TOKEN=" + simToken, "DD_DISCORD__API_URL=" + sim.url + "/api", "DD_SECRET=" + ddSecret,
		"DD_REST__LISTEN=127.0.0.1:0", "DD_REST__GLOBAL_RATE_LIMIT=" + strconv.Itoa(o.Global),
		"DD_STORE__PATH=" + filepath.Join(dir, "store"), "DD_LOG__LEVEL=info", "DD_LOG__FORMAT=json"}
	dd, err := startDD(ctx, dir, o.Binaries.DD, "rest", append(env, o.Env...), "rest")
	if err != nil {
		return res, err
	}
	defer dd.stop(10 * time.Second)
	res.DDPID = dd.pid()
	base := dd.url("rest")
	o.Logf("dd --role=rest %s, simulator %s: %d callers", base, sim.url, o.Callers)

	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{Proxy: nil,
		MaxIdleConnsPerHost: o.ClientIdle, MaxIdleConns: 2 * o.ClientIdle}}
	defer client.CloseIdleConnections()
	var sent atomic.Int64
	pids := []int{dd.pid(), sim.pid(), os.Getpid()}
	cpu := func() []float64 {
		out := make([]float64, len(pids))
		for i, pid := range pids {
			if s, err := ReadProc(pid); err == nil {
				out[i] = s.CPUSeconds
			}
		}
		return out
	}
	phase := func(name string, d time.Duration, callers, nch int, latency time.Duration, channel func(caller int) uint64) (RESTPhase, error) {
		p := RESTPhase{Name: name, Callers: callers, Channels: nch, LatencyMs: float64(latency) / float64(time.Millisecond)}
		before, err := restWaits(base)
		if err != nil {
			return p, err
		}
		cpu0 := cpu()
		o.Logf("phase %s: %d callers on %d channel(s), upstream latency %v, for %v", name, callers, nch, latency, d)
		start := time.Now()
		until := start.Add(d)
		var (
			mu    sync.Mutex
			lats  []time.Duration
			ends  []time.Duration
			errs  atomic.Int64
			first atomic.Value
			wg    sync.WaitGroup
		)
		for c := range callers {
			wg.Go(func() {
				var mine, myEnds []time.Duration
				path := base + "/api/v10/channels/" + strconv.FormatUint(channel(c), 10)
				for ctx.Err() == nil && time.Now().Before(until) {
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
					req.Header.Set("Authorization", ddSecret)
					t0 := time.Now()
					sent.Add(1)
					resp, err := client.Do(req)
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("GET %s: %s", path, resp.Status)
						}
					}
					if err != nil {
						errs.Add(1)
						first.CompareAndSwap(nil, err.Error())
						continue
					}
					now := time.Now()
					mine = append(mine, now.Sub(t0))
					myEnds = append(myEnds, now.Sub(start))
				}
				mu.Lock()
				lats = append(lats, mine...)
				ends = append(ends, myEnds...)
				mu.Unlock()
			})
		}
		wg.Wait()
		took := time.Since(start)
		if ctx.Err() != nil {
			return p, ctx.Err()
		}
		cpu1 := cpu()
		p.DDCores, p.SimCores, p.ToolCores = round3((cpu1[0]-cpu0[0])/took.Seconds()), round3((cpu1[1]-cpu0[1])/took.Seconds()),
			round3((cpu1[2]-cpu0[2])/took.Seconds())
		p.LoadAvg = loadAvg()
		after, err := restWaits(base)
		if err != nil {
			return p, err
		}
		p.Seconds = took.Seconds()
		p.Requests, p.Errors = int64(len(lats)), errs.Load()
		if p.Errors > 0 {
			o.Logf("phase %s: %d errors, the first: %v", name, p.Errors, first.Load())
		}
		p.PerSecond = float64(p.Requests) / p.Seconds
		if latency > 0 {
			p.Ideal = float64(callers) / latency.Seconds()
			p.Ratio = round3(p.PerSecond / p.Ideal)
		}
		quarters := make([]float64, int(math.Ceil(took.Seconds()*4)))
		for _, e := range ends {
			if i := int(e / (250 * time.Millisecond)); i < len(quarters) {
				quarters[i] += 4
			}
			if e < time.Second {
				p.FirstSecond++
			}
		}
		p.PerQuarter = quarters
		slices.Sort(lats)
		p.P50Ms, p.P99Ms = ms(percentile(lats, 0.5)), ms(percentile(lats, 0.99))
		if len(lats) > 0 {
			p.MaxMs = ms(lats[len(lats)-1])
		}
		d2 := after.minus(before)
		p.Waits, p.WaitsOver5, p.WaitsOver, p.WaitsOver1, p.SlowestLe = d2.total, d2.over(0.05), d2.over(0.1), d2.over(1), d2.slowest()
		p.UpstreamOpen, p.UpstreamClosed, _ = upstreamConns(simPort)
		return p, nil
	}

	fast, err := phase("fast", o.Fast, o.FastCallers, o.FastChannels, 0, func(c int) uint64 { return channels[c%o.FastChannels] })
	if err != nil {
		return res, err
	}
	res.Phases = append(res.Phases, fast)
	body, _ := json.Marshal(map[string]any{"latency_ns": int64(o.Latency), "next_extra_ns": int64(o.FirstSlow)})
	if err := postJSON(sim.url+"/_sim/rest/latency", body); err != nil {
		return res, err
	}
	hot := channels[o.FastChannels] // never used by the fast phase
	if o.HotUsed {
		hot = channels[0]
	}
	slow, err := phase("slow", o.Slow, o.Callers, 1, o.Latency, func(int) uint64 { return hot })
	if err != nil {
		return res, err
	}
	res.Phases = append(res.Phases, slow)

	var st struct {
		Requests          int64 `json:"requests"`
		RateLimitedUser   int64 `json:"rate_limited_user"`
		RateLimitedGlobal int64 `json:"rate_limited_global"`
		RateLimitedShared int64 `json:"rate_limited_shared"`
	}
	if err := getJSON(sim.url+"/_sim/rest/stats", "", &st); err != nil {
		return res, err
	}
	res.SimRequests, res.Sim429 = st.Requests, st.RateLimitedUser+st.RateLimitedGlobal+st.RateLimitedShared
	res.Sent = sent.Load()
	return res, nil
}

// loadAvg is the machine's 1-minute load average (0 when /proc/loadavg cannot be read).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b) + " 0")[0], 64)
	return f
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

// startRESTSim runs the simulator with one text channel in each of guilds guilds, the global limit and
// the route bucket of restRouteLimit at 1,000,000 per window.
func startRESTSim(ctx context.Context, dir, bin string, guilds, global int, window time.Duration) (*simProcess, error) {
	urlFile := filepath.Join(dir, "discordsim.url")
	args := []string{"-addr", "127.0.0.1:0", "-url-file", urlFile, "-tokens", simToken,
		"-guilds", strconv.Itoa(guilds), "-channels", "1", "-guilds-file", filepath.Join(dir, "discordsim.guilds.json"),
		"-global-rate-limit", strconv.Itoa(global),
		"-route-limit", fmt.Sprintf("%s=1000000/%s", restRouteLimit, window)}
	return runSim(ctx, dir, bin, urlFile, args)
}

// restChannels asks the simulator for each guild's text channel, in the guilds' order.
func (s *simProcess) restChannels() ([]uint64, error) {
	guilds, err := s.guilds()
	if err != nil {
		return nil, err
	}
	out := make([]uint64, 0, len(guilds))
	for _, g := range guilds {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/v10/guilds/%d/channels", s.url, g.ID), nil)
		req.Header.Set("Authorization", "Bot "+simToken)
		req.Header.Set("User-Agent", "DiscordBot (https://github.com/ddhq/dd, ddload)")
		resp, err := localClient.Do(req)
		if err != nil {
			return nil, err
		}
		var list []struct {
			ID   uint64 `json:"id,string"`
			Type int    `json:"type"`
		}
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("the simulator's channels of guild %d: %s %v", g.ID, resp.Status, err)
		}
		for _, c := range list {
			if c.Type == 0 {
				out = append(out, c.ID)
				break
			}
		}
	}
	if len(out) != len(guilds) {
		return nil, fmt.Errorf("the simulator has %d text channels in %d guilds, want one in each", len(out), len(guilds))
	}
	return out, nil
}

// histogram is dd_rest_queue_wait_seconds summed over routes: cumulative counts by upper bound.
type histogram struct {
	le    []float64
	count []float64
	total int64
}

func restWaits(base string) (histogram, error) {
	resp, err := localClient.Get(base + "/metrics")
	if err != nil {
		return histogram{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return histogram{}, err
	}
	ms, err := ParseMetrics(string(b))
	if err != nil {
		return histogram{}, err
	}
	return waitHistogram(ms), nil
}

// waitHistogram reads dd_rest_queue_wait_seconds from a scrape, every route together.
func waitHistogram(ms Metrics) histogram {
	var h histogram
	byLe := map[float64]float64{}
	for _, m := range ms {
		switch m.Name {
		case "dd_rest_queue_wait_seconds_bucket":
			le, err := parseMetricValue(m.Labels["le"])
			if err == nil {
				byLe[le] += m.Value
			}
		case "dd_rest_queue_wait_seconds_count":
			h.total += int64(m.Value)
		}
	}
	for le := range byLe {
		h.le = append(h.le, le)
	}
	slices.Sort(h.le)
	for _, le := range h.le {
		h.count = append(h.count, byLe[le])
	}
	return h
}

func (h histogram) minus(o histogram) histogram {
	out := histogram{le: h.le, count: make([]float64, len(h.count)), total: h.total - o.total}
	for i, le := range h.le {
		out.count[i] = h.count[i]
		if j := slices.Index(o.le, le); j >= 0 {
			out.count[i] -= o.count[j]
		}
	}
	return out
}

// over is how many waits were longer than the bound le (one of the histogram's bounds).
func (h histogram) over(le float64) int64 {
	for i, b := range h.le {
		if b == le {
			return h.total - int64(h.count[i])
		}
	}
	return -1
}

// slowest is the upper bound of the lowest bucket that holds every wait (0 when there were none).
func (h histogram) slowest() float64 {
	for i, b := range h.le {
		if int64(h.count[i]) >= h.total {
			if h.total == 0 {
				return 0
			}
			return b
		}
	}
	return math.Inf(1)
}

func portOf(u string) int {
	pu, err := url.Parse(u)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(pu.Port())
	return p
}

// upstreamConns counts the loopback TCP connections to port from /proc/net/tcp: open ones and those in
// TIME_WAIT on the connecting side (closed by it).
func upstreamConns(port int) (open, closed int, err error) {
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		o, c, err := countConns(f, port)
		if err != nil {
			return 0, 0, err
		}
		open, closed = open+o, closed+c
	}
	return open, closed, nil
}

func countConns(path string, port int) (open, closed int, err error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return 0, 0, nil
		}
		return 0, 0, err
	}
	defer f.Close()
	return parseProcNetTCP(f, port)
}

// parseProcNetTCP counts the rows of /proc/net/tcp whose remote port is port, by state (01 ESTABLISHED,
// 06 TIME_WAIT).
func parseProcNetTCP(r io.Reader, port int) (open, closed int, err error) {
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[0] == "sl" || !strings.HasSuffix(f[2], want) {
			continue
		}
		switch f[3] {
		case "01":
			open++
		case "06":
			closed++
		}
	}
	return open, closed, sc.Err()
}

// Print writes the figures of a rest run as lines a person reads.
func (r RESTResult) Print(w io.Writer) {
	hot := "a new channel"
	if r.HotUsed {
		hot = "a channel of phase 1"
	}
	remaining := "sent"
	if r.OmitRemaining {
		remaining = "left out"
	}
	fmt.Fprintf(w, "rest: %d callers (%d idle connections kept), --role=rest, bucket 1,000,000 per %.1fs (X-RateLimit-Remaining %s), global %d/s; slow phase on %s",
		r.Callers, r.ClientIdle, r.WindowS, remaining, r.Global, hot)
	if r.FirstSlowMs > 0 {
		fmt.Fprintf(w, ", its first answer %.0f ms slower", r.FirstSlowMs)
	}
	fmt.Fprintln(w)
	for _, p := range r.Phases {
		fmt.Fprintf(w, "  %-5s %2d callers on %2d channel(s), upstream %3.0f ms: %6d requests in %.2fs = %6.0f/s (first second %.0f/s)",
			p.Name, p.Callers, p.Channels, p.LatencyMs, p.Requests, p.Seconds, p.PerSecond, p.FirstSecond)
		if p.Ideal > 0 {
			fmt.Fprintf(w, " ÷ ideal %.0f/s = %.3f", p.Ideal, p.Ratio)
		}
		fmt.Fprintf(w, "; %d errors\n", p.Errors)
		fmt.Fprintf(w, "        dd_rest_queue_wait_seconds: %d waits, %d over 0.05s, %d over 0.1s, %d over 1s, slowest <= %gs; caller p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
			p.Waits, p.WaitsOver5, p.WaitsOver, p.WaitsOver1, p.SlowestLe, p.P50Ms, p.P99Ms, p.MaxMs)
		q := make([]string, len(p.PerQuarter))
		for i, v := range p.PerQuarter {
			q[i] = strconv.FormatFloat(v, 'f', 0, 64)
		}
		fmt.Fprintf(w, "        CPU in cores: dd %.2f, simulator %.2f, callers %.2f; load average %.2f\n", p.DDCores, p.SimCores, p.ToolCores, p.LoadAvg)
		fmt.Fprintf(w, "        dd's connections to the upstream: %d open, %d closed so far; per 250 ms (as /s): %s\n",
			p.UpstreamOpen, p.UpstreamClosed, strings.Join(q, " "))
	}
	fmt.Fprintf(w, "  simulator: %d requests (%d sent by the callers), %d answered 429\n", r.SimRequests, r.Sent, r.Sim429)
}
