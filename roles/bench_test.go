package roles

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/sim/botsim"
	"github.com/ddhq/dd/sim/discordsim"
)

// BenchmarkGatewayEndToEnd measures events per second from the simulator's firehose through dd's
// gateway role (4 shards, zstd-stream, filter, Badger queue, delivery) to a bot on loopback, everything on
// this machine's cores. Compare with shard's BenchmarkShardIngest (receiving alone) run alongside:
//
//	go test -run '^$' -bench 'GatewayEndToEnd|ShardIngest' -benchtime 40000x ./roles/ ./shard/
func BenchmarkGatewayEndToEnd(b *testing.B) {
	for _, c := range []struct {
		name string
		env  []string
	}{
		{"batch=1", []string{"DD_EVENTS__BATCH_MAX=1"}},
		{"batch=100", []string{"DD_EVENTS__BATCH_MAX=100"}},
		{"batch=100,sync_writes", []string{"DD_EVENTS__BATCH_MAX=100", "DD_STORE__SYNC_WRITES=true"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			sim := startSim(b, discordsim.Config{Guilds: 64, MaxConcurrency: 16, Tokens: []string{"tok-bench-0123456789"}})
			bot := botsim.New("bot-secret-0123456789")
			defer bot.Close()
			env := append([]string{"DD_DISCORD__TOKEN=tok-bench-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(),
				"DD_STORE__PATH=" + b.TempDir(), "DD_EVENTS__URLS=" + bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789",
				"DD_GATEWAY__TOTAL_SHARDS=4", "DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false", "DD_LOG__LEVEL=error"}, c.env...)
			startBenchDD(b, env)
			for bot.Count() < 4+64 { // READY per shard and the guilds
				time.Sleep(10 * time.Millisecond)
			}
			start := bot.Count()
			b.ResetTimer()
			t0 := time.Now()
			stop := sim.StartFirehose(discordsim.FirehoseOptions{MaxSpeed: true, Total: int64(b.N), MessageCreate: 1})
			defer stop()
			deadline := time.Now().Add(5 * time.Minute)
			for bot.Count() < start+b.N {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d events delivered", bot.Count()-start, b.N)
				}
				time.Sleep(5 * time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "events/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func startBenchDD(b *testing.B, env []string) {
	b.Helper()
	env = append([]string{"DD_GATEWAY__LISTEN=127.0.0.1:0", "DD_SHUTDOWN_TIMEOUT=30s"}, env...)
	cfg, err := config.Load(config.Source{Environ: env, Role: config.RoleGateway})
	if err != nil {
		b.Fatal(err)
	}
	r := &runningDD{done: make(chan error, 1)}
	ready := make(chan struct{})
	ctx, cancel := contextWithCancel()
	r.cancel = cancel
	go func() {
		r.done <- Run(ctx, Options{Config: cfg, Role: config.RoleGateway, Logger: nopLogger(), Version: "bench",
			Ready: func(map[config.Role]string) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-r.done:
		b.Fatalf("dd stopped: %v", err)
	}
	b.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			b.Error(fmt.Errorf("dd: %w", err))
		}
	})
}

// BenchmarkReshardSwitchVersusIdentifyLimit reshards 2 → 8 shards (max_concurrency 2, a 1 s identify
// window) under a firehose and reports the time from POST /reshard to the switch divided by the identify
// limit: ceil(8/2) windows (as for startup), and ceil(8/2)-1 windows (when the last identify may start).
//
//	go test -run '^$' -bench ReshardSwitch -benchtime 2x ./roles/
func BenchmarkReshardSwitchVersusIdentifyLimit(b *testing.B) {
	const window, newShards, conc = time.Second, 8, 2
	var took time.Duration
	for i := 0; i < b.N; i++ {
		sim := discordsim.New(discordsim.Config{Guilds: 64, MaxConcurrency: conc, IdentifyWindow: window, Tokens: []string{"tok-bench-0123456789"}})
		if err := sim.Start("127.0.0.1:0"); err != nil {
			b.Fatal(err)
		}
		bot := botsim.New("bot-secret-0123456789")
		cfg, err := config.Load(config.Source{Role: config.RoleGateway, Environ: []string{"DD_DISCORD__TOKEN=tok-bench-0123456789",
			"DD_DISCORD__API_URL=" + sim.APIURL(), "DD_STORE__PATH=" + b.TempDir(), "DD_EVENTS__URLS=" + bot.URL(),
			"DD_EVENTS__SECRET=bot-secret-0123456789", "DD_GATEWAY__LISTEN=127.0.0.1:0", "DD_GATEWAY__TOTAL_SHARDS=2",
			"DD_GATEWAY__RESHARD_IDENTIFY_RESERVE=0", "DD_LOG__LEVEL=error"}})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := contextWithCancel()
		addr := make(chan string, 1)
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Options{Config: cfg, Role: config.RoleGateway, Logger: nopLogger(), IdentifyWindow: window,
				Ready: func(a map[config.Role]string) { addr <- a[config.RoleGateway] }})
		}()
		base := "http://" + <-addr
		for len(sim.Sessions()) < 2 {
			time.Sleep(10 * time.Millisecond)
		}
		stop := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 2000, MessageCreate: 1})
		// A reshard comes long after the old shards identified; here, wait out their window so that it
		// does not delay the new set's first round (which the limit rightly would).
		time.Sleep(window + 100*time.Millisecond)
		start := time.Now()
		resp, err := http.Post(base+"/reshard", "application/json", strings.NewReader(fmt.Sprintf(`{"total_shards": %d}`, newShards)))
		if err != nil || resp.StatusCode != http.StatusAccepted {
			b.Fatalf("POST /reshard: %v %v", err, resp)
		}
		resp.Body.Close()
		for {
			r, err := http.Get(base + "/status")
			if err != nil {
				b.Fatal(err)
			}
			body, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if strings.Contains(string(body), `"result":"switched"`) {
				break
			}
			if strings.Contains(string(body), `"result":"rolled back`) {
				b.Fatalf("rolled back: %s", body)
			}
			time.Sleep(5 * time.Millisecond)
		}
		took += time.Since(start)
		if v := sim.GatewayStats().IdentifyViolations; v != 0 {
			b.Fatalf("%d identify violations", v)
		}
		stop()
		cancel()
		<-done
		bot.Close()
		sim.Close()
	}
	avg := float64(took) / float64(b.N)
	rounds := (newShards + conc - 1) / conc
	b.ReportMetric(avg/float64(time.Duration(rounds)*window), "switch/rounds×window")
	b.ReportMetric(avg/float64(time.Duration(rounds-1)*window), "switch/(rounds-1)×window")
	b.ReportMetric(0, "ns/op")
}
