package loadtool

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestWaitHistogramCountsWaitsOverABoundBetweenScrapes(t *testing.T) {
	scrape := func(text string) histogram {
		t.Helper()
		ms, err := ParseMetrics(text)
		if err != nil {
			t.Fatal(err)
		}
		return waitHistogram(ms)
	}
	// Two routes, summed; cumulative counts as Prometheus writes them.
	before := scrape(`dd_rest_queue_wait_seconds_bucket{route="a",le="0.1"} 10
dd_rest_queue_wait_seconds_bucket{route="a",le="1"} 10
dd_rest_queue_wait_seconds_bucket{route="a",le="+Inf"} 10
dd_rest_queue_wait_seconds_count{route="a"} 10
dd_rest_queue_wait_seconds_bucket{route="b",le="0.1"} 5
dd_rest_queue_wait_seconds_bucket{route="b",le="1"} 5
dd_rest_queue_wait_seconds_bucket{route="b",le="+Inf"} 5
dd_rest_queue_wait_seconds_count{route="b"} 5
`)
	after := scrape(`dd_rest_queue_wait_seconds_bucket{route="a",le="0.1"} 100
dd_rest_queue_wait_seconds_bucket{route="a",le="1"} 103
dd_rest_queue_wait_seconds_bucket{route="a",le="+Inf"} 104
dd_rest_queue_wait_seconds_count{route="a"} 104
dd_rest_queue_wait_seconds_bucket{route="b",le="0.1"} 5
dd_rest_queue_wait_seconds_bucket{route="b",le="1"} 5
dd_rest_queue_wait_seconds_bucket{route="b",le="+Inf"} 5
dd_rest_queue_wait_seconds_count{route="b"} 5
`)
	d := after.minus(before)
	if d.total != 94 || d.over(0.1) != 4 || d.over(1) != 1 || !math.IsInf(d.slowest(), 1) {
		t.Errorf("between the scrapes: %d waits, %d over 0.1 s, %d over 1 s, slowest <= %v; want 94, 4, 1, +Inf",
			d.total, d.over(0.1), d.over(1), d.slowest())
	}
	if s := before.minus(before); s.total != 0 || s.slowest() != 0 {
		t.Errorf("nothing between two equal scrapes: %d waits, slowest %v", s.total, s.slowest())
	}
	if s := before.slowest(); s != 0.1 {
		t.Errorf("every wait of the first scrape is under 0.1 s: slowest <= %v", s)
	}
}

func TestParseProcNetTCPCountsOpenAndClosedByRemotePort(t *testing.T) {
	// Port 8000 is 1F40; rows: established to 8000, TIME_WAIT to 8000, established from 8000 (the
	// server's side), listening.
	text := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A000 0100007F:1F40 01 00000000:00000000 00:00000000 00000000  1000        0 1 1
   1: 0100007F:A001 0100007F:1F40 06 00000000:00000000 03:00001000 00000000     0        0 0 3
   2: 0100007F:1F40 0100007F:A000 01 00000000:00000000 00:00000000 00000000  1000        0 2 1
   3: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 3 1
`
	open, closed, err := parseProcNetTCP(strings.NewReader(text), 8000)
	if err != nil || open != 1 || closed != 1 {
		t.Errorf("parseProcNetTCP = %d open, %d closed, %v; want 1, 1", open, closed, err)
	}
}

// A short rest run through the real binaries: both phases measured, no 429, every request answered 200
// and seen once by the simulator, and no process outlives the run.
func TestRESTFromSeparateProcessesMeasuresBothPhases(t *testing.T) {
	s := newScenarioTest(t, 60*time.Second)
	res, err := RunREST(s.ctx, RESTOptions{Binaries: s.bins, Callers: 8, Fast: 300 * time.Millisecond, Slow: 500 * time.Millisecond,
		Latency: 20 * time.Millisecond, Dir: t.TempDir(), Logf: s.logf})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.logs.String())
	}
	if len(res.Phases) != 2 {
		t.Fatalf("phases %+v, want fast and slow", res.Phases)
	}
	fast, slow := res.Phases[0], res.Phases[1]
	if fast.Channels != 8 || slow.Channels != 1 || fast.Ideal != 0 || slow.Ideal != 8/0.02 {
		t.Errorf("fast on %d channels (ideal %v), slow on %d (ideal %v); want 8 (none) and 1 (400/s)", fast.Channels, fast.Ideal, slow.Channels, slow.Ideal)
	}
	for _, p := range res.Phases {
		if p.Requests == 0 || p.Errors != 0 || p.Waits != p.Requests || p.P50Ms <= 0 || p.MaxMs < p.P99Ms || p.UpstreamOpen == 0 {
			t.Errorf("phase %s: %+v", p.Name, p)
		}
	}
	if slow.P50Ms < 20 {
		t.Errorf("slow phase median %.1f ms, below the upstream's 20 ms latency", slow.P50Ms)
	}
	if res.Sim429 != 0 || res.SimRequests != res.Sent || res.Sent != fast.Requests+slow.Requests {
		t.Errorf("simulator: %d requests, %d 429; the callers sent %d (fast %d + slow %d)", res.SimRequests, res.Sim429,
			res.Sent, fast.Requests, slow.Requests)
	}
	if !gone(res.DDPID) || !gone(res.SimPID) {
		t.Errorf("dd (pid %d) or the simulator (pid %d) outlived the run", res.DDPID, res.SimPID)
	}
}
