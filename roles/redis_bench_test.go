package roles

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ddhq/dd/internal/redistest"
	"github.com/ddhq/dd/sim/discordsim"
)

// BenchmarkGatewayEndToEndRedis is BenchmarkGatewayEndToEnd with events.sink = "redis": events per second
// from the simulator's firehose through dd's gateway role into a real redis-server on this machine, one
// stream entry per event. Run both together to compare with the HTTP figure of the same run:
//
//	go test -run '^$' -bench 'GatewayEndToEnd' -benchtime 60000x ./roles/
func BenchmarkGatewayEndToEndRedis(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	xlen := func(stream string) int {
		n, _ := rdb.XLen(context.Background(), stream).Result()
		return int(n)
	}
	sim := startSim(b, discordsim.Config{Guilds: 64, MaxConcurrency: 16, Tokens: []string{"tok-bench-0123456789"}})
	startBenchDD(b, []string{"DD_DISCORD__TOKEN=tok-bench-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(),
		"DD_STORE__PATH=" + b.TempDir(), "DD_EVENTS__SINK=redis", "DD_EVENTS__REDIS_URL=" + srv.URL(""),
		"DD_GATEWAY__TOTAL_SHARDS=4", "DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false", "DD_LOG__LEVEL=error"})
	for xlen("READY")+xlen("GUILD_CREATE") < 4+64 {
		time.Sleep(10 * time.Millisecond)
	}
	b.ResetTimer()
	t0 := time.Now()
	stop := sim.StartFirehose(discordsim.FirehoseOptions{MaxSpeed: true, Total: int64(b.N), MessageCreate: 1})
	defer stop()
	deadline := time.Now().Add(5 * time.Minute)
	for xlen("MESSAGE_CREATE") < b.N {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d events in Redis", xlen("MESSAGE_CREATE"), b.N)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "events/s")
	b.ReportMetric(0, "ns/op")
}
