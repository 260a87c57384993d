package roles

import (
	"fmt"
	"testing"
	"time"

	"github.com/ddhq/dd/botsim"
	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/discordsim"
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
			sim := discordsim.New(discordsim.Config{Guilds: 64, MaxConcurrency: 16, Tokens: []string{"tok-bench"}})
			if err := sim.Start("127.0.0.1:0"); err != nil {
				b.Fatal(err)
			}
			defer sim.Close()
			bot := botsim.New("s")
			defer bot.Close()
			env := append([]string{"DD_DISCORD__TOKEN=tok-bench", "DD_DISCORD__API_URL=" + sim.APIURL(),
				"DD_STORE__PATH=" + b.TempDir(), "DD_EVENTS__URLS=" + bot.URL(), "DD_EVENTS__SECRET=s",
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
