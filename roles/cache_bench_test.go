package roles

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/config"
)

// BenchmarkCacheGet loads a cache role over loopback HTTP with 1, 4 and 16 concurrent clients, each
// sending its next GET when the last is answered (members 70%, guilds 20%, users 10%), from a cache of 10
// guilds of 10,000 members, and reports the latency percentiles the clients saw (they share this
// machine's cores with dd, so past saturation the tail is queueing):
//
//	go test -run '^$' -bench CacheGet -benchtime 50000x ./roles/
func BenchmarkCacheGet(b *testing.B) {
	const guilds, members = 10, 10000
	base := startBenchCache(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	post := func(body string) {
		req, _ := http.NewRequest("POST", base+"/events", strings.NewReader(body))
		req.Header.Set("Authorization", "bench-secret-0123456789")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			b.Fatalf("POST /events: %s", resp.Status)
		}
	}
	gid := func(i int) uint64 { return uint64(1<<42) + uint64(i)<<32 } // far apart: no user in two guilds
	for g := range guilds {
		post(benchGuildCreate(gid(g), members))
	}

	time.Sleep(2 * time.Second) // let Badger flush what the load wrote, as a cache that has been up a while has
	for _, clients := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			loadCache(b, client, base, clients, func(rnd uint64) string {
				g := gid(int(rnd % guilds))
				u := g + (rnd/guilds%members)*4096 + 1
				switch r := rnd % 10; {
				case r < 7:
					return fmt.Sprintf("/guilds/%d/members/%d", g, u)
				case r < 9:
					return fmt.Sprintf("/guilds/%d", g)
				default:
					return fmt.Sprintf("/users/%d", u)
				}
			})
		})
	}
}

// loadCache sends b.N GETs from concurrent clients, each to path(random), and reports percentiles.
func loadCache(b *testing.B, client *http.Client, base string, clients int, path func(rnd uint64) string) {
	var mu sync.Mutex
	var lat []time.Duration
	var next sync.Mutex
	n := 0
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			mine := make([]time.Duration, 0, b.N/clients+1)
			rnd := uint64(c)*0x9e3779b97f4a7c15 + 1
			for {
				next.Lock()
				if n >= b.N {
					next.Unlock()
					break
				}
				n++
				next.Unlock()
				rnd ^= rnd << 13
				rnd ^= rnd >> 7
				rnd ^= rnd << 17
				p := path(rnd)
				req, _ := http.NewRequest("GET", base+p, nil)
				req.Header.Set("Authorization", "bench-secret-0123456789")
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mine = append(mine, time.Since(t0))
				if resp.StatusCode != 200 {
					b.Errorf("GET %s: %s", p, resp.Status)
					return
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(0.999), "p99.9-ms")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
	b.ReportMetric(0, "ns/op")
}

// startBenchCache runs a cache role alone and returns its base URL.
func startBenchCache(b *testing.B) string {
	b.Helper()
	env := []string{"DD_CACHE__LISTEN=127.0.0.1:0", "DD_CACHE__SECRET=bench-secret-0123456789", "DD_STORE__PATH=" + b.TempDir()}
	cfg, err := config.Load(config.Source{Environ: env, Role: config.RoleCache})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Role: config.RoleCache, Logger: zap.NewNop(), Version: "bench",
			Ready: func(a map[config.Role]string) { ready <- a[config.RoleCache] }})
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		b.Fatalf("dd stopped: %v", err)
	}
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	return "http://" + addr
}

// benchGuildCreate renders a GUILD_CREATE envelope for POST /events with Discord-shaped members.
func benchGuildCreate(g uint64, members int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `{"shardId":0,"payload":{"op":0,"t":"GUILD_CREATE","s":1,"d":{"id":"%d","name":"bench","icon":null,`+
		`"owner_id":"%d","member_count":%d,"large":true,"joined_at":"2020-09-13T12:26:40.000000+00:00","features":[],`+
		`"roles":[{"id":"%d","name":"@everyone","color":0,"hoist":false,"position":0,"permissions":"1071698660929","managed":false,"mentionable":false,"flags":0}],`+
		`"channels":[{"id":"%d","type":0,"name":"general","position":0,"permission_overwrites":[],"nsfw":false}],"emojis":[],"stickers":[],"members":[`,
		g, g+1, members, g, g+16)
	for i := range members {
		if i > 0 {
			sb.WriteByte(',')
		}
		u := g + uint64(i)*4096 + 1
		fmt.Fprintf(&sb, `{"user":{"id":"%d","username":"user-%d","discriminator":"0","global_name":null,"avatar":null,"public_flags":0},`+
			`"nick":null,"avatar":null,"roles":[],"joined_at":"2020-09-13T12:26:40.000000+00:00","premium_since":null,`+
			`"deaf":false,"mute":false,"flags":0,"pending":false,"communication_disabled_until":null}`, u, u)
	}
	sb.WriteString(`]}}}`)
	return sb.String()
}
