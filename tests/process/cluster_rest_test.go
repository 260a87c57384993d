package process

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddhq/dd/cluster/clustertest"
	"github.com/ddhq/dd/sim/discordsim"
)

// Issue #13's figure, with real processes: two `dd --role=rest` of one token on a NATS server (in this
// test process, a separate process from both dd), a round-robin client sending 2,000 messages over 20
// channels at the global limit, and the leader SIGKILLed halfway. Every request is answered by Discord
// exactly once, or answered 502 by the follower (in flight at the dead leader), or its caller's own
// connection to the killed process drops; none reaches Discord twice (matched by a nonce in each body
// against the simulator's request log), Discord answers no 429, and requests are served again within
// 2 × lease_ttl.
func TestRestClusterLeaderKilledHalfway(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 requests at Discord's global limit: about 45 s")
	}
	const (
		token    = "tok-rest-cluster-0123456789"
		secret   = "rest-secret-0123456789"
		total    = 2000
		channels = 20
		ttl      = 2 * time.Second
	)
	nats := clustertest.Server(t)
	sim := discordsim.New(discordsim.Config{Guilds: 1, ChannelsPerGuild: channels, Tokens: []string{token}})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	// Buckets of 5 per second per channel: 20 channels could send 100/s, so the global limit (50/s) is
	// the one that binds, and every bucket has reset by the time a dead leader's lease has expired.
	if err := sim.SetRouteLimit("POST /channels/{channel_id}/messages", 5, time.Second); err != nil {
		t.Fatal(err)
	}
	chans := sim.Guilds()[0].Channels
	if len(chans) < channels {
		t.Fatalf("simulator has %d channels, want %d", len(chans), channels)
	}

	ports := clustertest.FreePorts(t, 2)
	names := []string{"a", "b"}
	procs := make([]*ddProcess, 2)
	urls := make([]string, 2)
	for i := range procs {
		urls[i] = fmt.Sprintf("http://127.0.0.1:%d", ports[i])
		procs[i] = startDD(t, t.TempDir(), []string{
			"DD_DISCORD__TOKEN=" + token, "DD_DISCORD__API_URL=" + sim.APIURL(), "DD_REST__SECRET=" + secret,
			fmt.Sprintf("DD_REST__LISTEN=127.0.0.1:%d", ports[i]), "DD_REST__MAX_WAIT=20s",
			"DD_CLUSTER__NATS_URL=" + nats.ClientURL(), "DD_CLUSTER__ADVERTISE_URL=" + urls[i],
			"DD_CLUSTER__INSTANCE=" + names[i], "DD_CLUSTER__LEASE_TTL=" + ttl.String(),
		}, "--role=rest")
		procs[i].waitListening(t, 1)
	}
	leader := -1
	deadline := time.Now().Add(20 * time.Second)
	for leader < 0 || !isReady(urls[1-leader]) {
		if time.Now().After(deadline) {
			t.Fatalf("no leader among the two rest processes after 20s; logs:\n%s\n%s", procs[0].Log(), procs[1].Log())
		}
		leader = -1
		for i, u := range urls {
			if leads(u) {
				leader = i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	follower := 1 - leader
	t.Logf("leader %s, follower %s", names[leader], names[follower])

	// Added latency of the hop: sequential reads (well under every limit) through each process.
	var hopL, hopF []time.Duration
	lat := &http.Client{}
	for i := 0; i < 400; i++ {
		via := i % 2
		req, _ := http.NewRequest("GET", urls[via]+"/api/v10/channels/"+discordsim.FormatID(chans[i%channels]), nil)
		req.Header.Set("Authorization", secret)
		start := time.Now()
		resp, err := lat.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if via == leader {
			hopL = append(hopL, time.Since(start))
		} else {
			hopF = append(hopF, time.Since(start))
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Logf("unloaded p50 latency of GET /channels/{id}: through the leader %s, through the follower %s (ratio %.2f, +%s for the hop)",
		median(hopL), median(hopF), float64(median(hopF))/float64(median(hopL)), median(hopF)-median(hopL))

	type result struct {
		via      int
		status   int
		err      error
		nonce    string
		start    time.Time
		took     time.Duration
		afterKil bool
	}
	results := make([]result, total)
	var mu sync.Mutex
	var killedAt time.Time
	dead := -1
	done := 0
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}, Timeout: time.Minute}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 60; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				nonce := fmt.Sprintf("cluster-%d-%d", i, time.Now().UnixNano())
				body := fmt.Sprintf(`{"content":"message %d","nonce":%q}`, i, nonce)
				via := i % 2 // round robin over the two processes
				mu.Lock()
				if via == dead {
					via = 1 - dead // a client that knows the process is gone uses the other one
				}
				afterKill := dead >= 0
				mu.Unlock()
				r := result{via: via, nonce: nonce, start: time.Now(), afterKil: afterKill}
				for {
					req, _ := http.NewRequest("POST", urls[r.via]+"/api/v10/channels/"+discordsim.FormatID(chans[i%channels])+"/messages", strings.NewReader(body))
					req.Header.Set("Authorization", secret)
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						var op *net.OpError
						if errors.As(err, &op) && op.Op == "dial" {
							r.via = 1 - r.via // never reached that process: try the other
							continue
						}
						r.err = err
						break
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					r.status = resp.StatusCode
					break
				}
				r.took = time.Since(r.start)
				mu.Lock()
				results[i] = r
				done++
				if done == total/2 && dead < 0 {
					_ = procs[leader].Cmd.Process.Signal(syscall.SIGKILL)
					killedAt, dead = time.Now(), leader
					t.Logf("leader %s SIGKILLed after %d answers", names[leader], done)
				}
				mu.Unlock()
			}
		}()
	}
	started := time.Now()
	for i := 0; i < total; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(started)

	// Match every request to the simulator's log by its body (the nonce makes each unique).
	arrived := map[string]int{} // body sha256 -> times Discord got it
	for _, rec := range sim.RESTRequests() {
		if rec.Route == "POST /channels/{channel_id}/messages" {
			arrived[rec.BodySHA256]++
		}
	}
	var ok, bad502, dropped, other, twice, okMissing int
	var viaLeader, viaFollower []time.Duration
	var firstAfterKill time.Duration = -1
	for i, r := range results {
		sum := sha256.Sum256([]byte(fmt.Sprintf(`{"content":"message %d","nonce":%q}`, i, r.nonce)))
		n := arrived[hex.EncodeToString(sum[:])]
		if n > 1 {
			twice++
		}
		switch {
		case r.status >= 200 && r.status < 300:
			ok++
			if n != 1 {
				okMissing++
			}
			if !r.afterKil && r.start.Add(r.took).Before(killedAt) {
				if r.via == leader {
					viaLeader = append(viaLeader, r.took)
				} else {
					viaFollower = append(viaFollower, r.took)
				}
			}
			if !killedAt.IsZero() && r.start.After(killedAt) {
				if d := r.start.Add(r.took).Sub(killedAt); firstAfterKill < 0 || d < firstAfterKill {
					firstAfterKill = d
				}
			}
		case r.status == http.StatusBadGateway:
			bad502++
		case r.err != nil && r.via == dead:
			dropped++ // the caller's own connection to the killed process
		default:
			other++
			t.Errorf("request %d via %s: status %d, err %v; want 2xx, or 502", i, names[r.via], r.status, r.err)
		}
	}
	st := sim.RESTStats()
	t.Logf("%d requests in %s: %d answered by Discord, %d × 502 (in flight at the dead leader), %d dropped with the killed process's own connections, %d other",
		total, elapsed.Round(time.Millisecond), ok, bad502, dropped, other)
	t.Logf("Discord: %d requests, %d × 429; first answer to a request sent after the kill %s after it (lease_ttl %s)",
		st.Requests, st.RateLimited(), firstAfterKill.Round(time.Millisecond), ttl)
	p50l, p50f := median(viaLeader), median(viaFollower)
	t.Logf("at the global limit, before the kill, p50 caller latency (mostly queueing for the limit): through the leader %s (%d requests), through the follower %s (%d requests): ratio %.2f",
		p50l, len(viaLeader), p50f, len(viaFollower), float64(p50f)/float64(max(p50l, 1)))
	t.Logf("the follower forwarded %d requests before the kill: %.1f requests/s (the global limit's half: the load is round robin)",
		len(viaFollower), float64(len(viaFollower))/killedAt.Sub(started).Seconds())
	if twice > 0 {
		t.Errorf("%d requests reached Discord twice", twice)
	}
	if okMissing > 0 {
		t.Errorf("%d requests answered 2xx are not in Discord's log exactly once", okMissing)
	}
	if n := st.RateLimited(); n != 0 {
		t.Errorf("Discord answered %d × 429; want none across the switch", n)
	}
	if firstAfterKill < 0 || firstAfterKill > 2*ttl {
		t.Errorf("requests resumed %s after the kill; want within 2 × lease_ttl (%s)", firstAfterKill, 2*ttl)
	}
	if ok < total*9/10 {
		t.Errorf("only %d of %d answered by Discord", ok, total)
	}
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func isReady(base string) bool {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// leads reads dd_rest_leader from a process's metrics.
func leads(base string) bool {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("dd_rest_leader{")) && bytes.HasSuffix(line, []byte(" 1")) {
			return true
		}
	}
	return false
}
