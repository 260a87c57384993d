package restproxy_test

// End-to-end figures of the rest role against the in-process simulator, as ratios measured in one run
// (README, "REST figures"). Each benchmark runs a fixed workload per iteration; run them with
//
//	go test -run '^$' -bench . -benchtime 1x ./restproxy/

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ddhq/dd/ratelimit"
	"github.com/ddhq/dd/restproxy"
	"github.com/ddhq/dd/sim/discordsim"
)

// benchClient keeps enough idle connections for the concurrency used here.
var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2048, MaxIdleConns: 4096}}

func get(b testing.TB, url, auth string) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", auth)
	req.Header.Set("User-Agent", "DiscordBot (bench, 1)")
	resp, err := benchClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[int(float64(len(d)-1)*p)]
}

// latencies times n sequential requests.
func latencies(b testing.TB, n int, url, auth string) []time.Duration {
	out := make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		get(b, url, auth)
		out[i] = time.Since(start)
	}
	return out
}

// throughput runs workers concurrent callers for d and returns requests per second.
func throughput(b testing.TB, workers int, d time.Duration, url, auth string) float64 {
	var n atomic.Int64
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				get(b, url, auth)
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

// BenchmarkAddedLatency: a route without a limit (GET /gateway), sequential requests straight to the
// simulator and through dd. With no simulated latency the ratio shows dd's own cost (one more loopback
// hop); with 10 ms it shows what a bot sees against a Discord that takes time to answer.
func BenchmarkAddedLatency(b *testing.B) {
	for _, lat := range []time.Duration{0, 10 * time.Millisecond} {
		b.Run(fmt.Sprintf("upstream=%v", lat), func(b *testing.B) {
			e := newEnv(b, discordsim.Config{RESTLatency: lat}, nil)
			n := 3000
			if lat > 0 {
				n = 200
			}
			direct, via := e.sim.APIURL()+"/v10/gateway", e.dd.URL+"/api/v10/gateway"
			for b.Loop() {
				latencies(b, 100, via, testSecret) // warm both pools
				latencies(b, 100, direct, "")
				d := latencies(b, n, direct, "")
				v := latencies(b, n, via, testSecret)
				d50, d99, v50, v99 := percentile(d, .5), percentile(d, .99), percentile(v, .5), percentile(v, .99)
				b.ReportMetric(float64(v50)/float64(d50), "p50-ratio")
				b.ReportMetric(float64(v99)/float64(d99), "p99-ratio")
				b.ReportMetric(float64(v50-d50)/1e3, "added-p50-µs")
				b.ReportMetric(float64(v50)/1e3, "dd-p50-µs")
				b.ReportMetric(float64(d50)/1e3, "direct-p50-µs")
			}
		})
	}
}

// BenchmarkThroughput: requests per second through dd on a route without a limit, 64 concurrent
// callers, client, dd and simulator sharing the machine's cores.
func BenchmarkThroughput(b *testing.B) {
	e := newEnv(b, discordsim.Config{}, nil)
	direct, via := e.sim.APIURL()+"/v10/gateway", e.dd.URL+"/api/v10/gateway"
	for b.Loop() {
		d := throughput(b, 64, 2*time.Second, direct, "")
		v := throughput(b, 64, 2*time.Second, via, testSecret)
		b.ReportMetric(v, "dd-req/s")
		b.ReportMetric(d, "direct-req/s")
		b.ReportMetric(v/d, "ratio")
	}
}

// BenchmarkHotBucket: one bucket with a large quota and 50 ms simulated latency, 64 concurrent callers.
// dd keeps up to `remaining` requests of the bucket in flight, so it should match a client that sends
// straight to the simulator.
func BenchmarkHotBucket(b *testing.B) {
	e := newEnv(b, discordsim.Config{RESTLatency: 50 * time.Millisecond, GlobalRateLimit: 100000},
		func(o *restproxy.Options) { o.Limits = ratelimit.Options{GlobalRate: 100000} })
	if err := e.sim.SetRouteLimit("GET /channels/{channel_id}", 1000000, time.Second); err != nil {
		b.Fatal(err)
	}
	ch := e.channel(0, 0)
	direct, via := e.sim.APIURL()+"/v10/channels/"+ch, e.dd.URL+"/api/v10/channels/"+ch
	for b.Loop() {
		d := throughput(b, 64, 3*time.Second, direct, "Bot "+testToken)
		v := throughput(b, 64, 3*time.Second, via, testSecret)
		b.ReportMetric(v, "dd-req/s")
		b.ReportMetric(d, "direct-req/s")
		b.ReportMetric(v/d, "ratio")
		e.noRateLimits(b)
	}
}

// BenchmarkGlobalLimit: 250 requests on 250 channels (each its own bucket, so only the global limit of 50
// per second holds them), fired at once, with the simulator answering in 0 and 50 ms. A request holds its
// global slot until its answer comes back, so the rate a token keeps is 50 per (1 s + round trip): the
// figure is the minimum ((ceil(250/50)-1) s) ÷ the completion time, the share of the limit used.
func BenchmarkGlobalLimit(b *testing.B) {
	const n, global = 250, 50
	for _, lat := range []time.Duration{0, 50 * time.Millisecond} {
		b.Run(fmt.Sprintf("upstream=%v", lat), func(b *testing.B) {
			e := newEnv(b, discordsim.Config{Guilds: n / 5, ChannelsPerGuild: 5, RESTLatency: lat, GlobalRateLimit: global}, nil)
			var urls []string
			for g := range n / 5 {
				for c := range 5 {
					urls = append(urls, e.dd.URL+"/api/v10/channels/"+e.channel(g, c))
				}
			}
			for b.Loop() {
				time.Sleep(1100 * time.Millisecond) // a fresh window
				t0 := time.Now()
				var wg sync.WaitGroup
				for _, u := range urls {
					wg.Add(1)
					go func() { defer wg.Done(); get(b, u, testSecret) }()
				}
				wg.Wait()
				took := time.Since(t0)
				minimum := time.Duration((n+global-1)/global-1) * time.Second
				b.ReportMetric(minimum.Seconds()/took.Seconds(), "share-of-limit")
				b.ReportMetric(float64(e.sim.RESTStats().RateLimited()), "429s")
			}
			e.noRateLimits(b)
		})
	}
}

// BenchmarkBurst: 1,000 message creates over 20 channels plus 10 reactions per channel, all fired at
// once. The theoretical minimum comes from the simulator's limits: a bucket of L per window W needs
// (ceil(n/L)-1) windows after the first for n requests, and the global limit G per second needs
// ceil(N/G)-1 seconds for N requests; the slowest of these bounds the burst.
func BenchmarkBurst(b *testing.B) {
	const channels, messages, reactionsPerChannel, global = 20, 1000, 10, 1000
	const msgLimit, msgWindow = 10, time.Second
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b, discordsim.Config{Guilds: 10, ChannelsPerGuild: 2, GlobalRateLimit: global},
			func(o *restproxy.Options) { o.Limits = ratelimit.Options{GlobalRate: global} })
		if err := e.sim.SetRouteLimit("POST /channels/{channel_id}/messages", msgLimit, msgWindow); err != nil {
			b.Fatal(err)
		}
		var chans []string
		for g := range 10 {
			chans = append(chans, e.channel(g, 0), e.channel(g, 1))
		}
		limits := map[string]discordsim.RouteLimit{}
		for _, l := range e.sim.RouteLimits() {
			limits[l.Route] = l
		}
		react := limits["PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"]
		windows := func(n, limit int, w time.Duration) time.Duration {
			return time.Duration((n+limit-1)/limit-1) * w
		}
		total := messages + channels*reactionsPerChannel
		minimum := max(windows(messages/channels, msgLimit, msgWindow),
			windows(reactionsPerChannel, react.Limit, react.Window),
			windows(total, global, time.Second))
		msg := discordsim.FormatID(discordsim.Snowflake(time.Now().Add(-time.Hour).UnixMilli(), 1))
		emojis := []string{"%F0%9F%91%8D", "%E2%9C%85", "%F0%9F%8E%89", "%F0%9F%94%A5", "%F0%9F%91%80",
			"%F0%9F%98%80", "%F0%9F%92%AF", "%F0%9F%9A%80", "%E2%AD%90", "%F0%9F%8D%80"}

		// The callers' connections to dd exist already, as a running bot's would (and dd's to Discord).
		var warm sync.WaitGroup
		for range total {
			warm.Add(1)
			go func() { defer warm.Done(); get(b, e.dd.URL+"/api/v10/gateway", testSecret) }()
		}
		warm.Wait()

		var wg sync.WaitGroup
		var failed atomic.Int64
		start := make(chan struct{})
		for i := range total {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				var method, path, body string
				if i < messages {
					method, path, body = "POST", "/api/v10/channels/"+chans[i%channels]+"/messages", fmt.Sprintf(`{"content":"burst %d"}`, i)
				} else {
					j := i - messages
					method, path = "PUT", "/api/v10/channels/"+chans[j%channels]+"/messages/"+msg+"/reactions/"+emojis[j/channels]+"/@me"
				}
				req, _ := http.NewRequest(method, e.dd.URL+path, strings.NewReader(body))
				req.Header.Set("Authorization", testSecret)
				if body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				resp, err := benchClient.Do(req)
				if err != nil || (resp.StatusCode != 200 && resp.StatusCode != 204) {
					failed.Add(1)
				}
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
		time.Sleep(100 * time.Millisecond) // every caller ready
		b.StartTimer()
		t0 := time.Now()
		close(start)
		wg.Wait()
		took := time.Since(t0)
		b.StopTimer()
		if failed.Load() > 0 {
			b.Fatalf("%d requests failed", failed.Load())
		}
		e.noRateLimits(b)
		burstReport(b, e, t0)
		b.ReportMetric(took.Seconds(), "completion-s")
		b.ReportMetric(minimum.Seconds(), "minimum-s")
		b.ReportMetric(took.Seconds()/minimum.Seconds(), "ratio")
		b.ReportMetric(float64(e.sim.RESTStats().RateLimited()), "429s")
		b.StartTimer()
	}
}

// burstReport logs when each of the first channels' windows opened at the simulator (with -v).
func burstReport(b testing.TB, e *env, t0 time.Time) {
	reqs := e.sim.RESTRequests()
	by := map[string][]time.Time{}
	for _, r := range reqs {
		if r.Method == "POST" {
			by[r.Path] = append(by[r.Path], r.Time)
		}
	}
	var firsts [][]time.Duration
	for _, ts := range by {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
		var f []time.Duration
		for i := 0; i < len(ts); i += 10 {
			f = append(f, ts[i].Sub(t0))
		}
		firsts = append(firsts, f)
	}
	for i, f := range firsts {
		if i < 4 {
			b.Logf("channel %d window starts: %v", i, f)
		}
	}
	last := reqs[len(reqs)-1].Time.Sub(t0)
	b.Logf("last request arrival %v", last)
}
