// Package e2e holds dd's process-level tests that measure the real binaries from outside, as a user runs
// them: the simulator, dd and the bot's receiver as separate processes (internal/loadtool).
package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/loadtool"
)

// A big bot runs a thousand shards in one process. With Discord's 5 s identify window, max_concurrency
// 250 makes four rounds, so the last shards wait 15 s for their turn, longer than the 10 s heartbeat
// (on Discord a shard may wait minutes, many 41.25 s heartbeats): a shard that waited on an open
// connection would go unread and be dropped as a zombie. Every shard must get one connection and one
// identify, none refused, every guild delivered.
//
// Then the memory per shard (issue #15), with zlib-stream: every shard reads 80 MESSAGE_CREATEs (about
// 50 KB, more than its decompressor's 32 KiB window), then idles with heartbeats for at least 30 s and
// until dd has collected its heap twice since going idle (the tool asks for the collections through the
// gateway's /debug/pprof/heap?gc=1 instead of waiting up to two minutes for each), plus 20 s for the
// scavenger (see loadtool's settle). The figure is the RSS slope between 100 and 1,000 shards of the same
// binary, which leaves dd's fixed costs out. About two minutes.
func TestThousandShardsInOneProcessStartOnTime(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 1,000 and 100 shards of the real binary against the simulator (about two minutes)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	bins, err := loadtool.Build(ctx, "../..", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, err := loadtool.RunShards(ctx, loadtool.ShardsOptions{Binaries: bins, Shards: 1000, MaxConcurrency: 250,
		GuildsPerShard: 4, Heartbeat: 10 * time.Second, IdentifyWindow: 5 * time.Second, Compress: "zlib-stream",
		FillEvents: 80, Settle: 30 * time.Second, SettleCollections: 2, BaselineShards: 100, Dir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	r, base := res.Run, res.Baseline
	t.Logf("1,000 shards: ready in %.1f s; identify span %.2f s = %.3f of the %.0f s minimum; RSS %.0f KiB a shard; "+
		"idle CPU %.3f cores; GET /status %.1f ms, %d bytes",
		r.ReadySeconds, r.IdentifySpan, r.SpanRatio, r.IdentifyMinimum, r.RSSPerShard/1024, r.IdleCores, r.StatusMedianMs, r.StatusBytes)
	if r.IdentifiesAccepted != 1000 || r.IdentifiesRefused != 0 || r.IdentifiesOther != 0 {
		t.Errorf("identifies accepted %d, refused %d, other %d; want 1000, 0, 0", r.IdentifiesAccepted, r.IdentifiesRefused, r.IdentifiesOther)
	}
	if r.Connections != 1000 || r.HeartbeatTimeouts != 0 {
		t.Errorf("%d connections, %d heartbeat timeouts; want one connection a shard and none", r.Connections, r.HeartbeatTimeouts)
	}
	if r.GuildCreates != 4000 {
		t.Errorf("%d of 4,000 guilds delivered", r.GuildCreates)
	}
	// The startup defect made 4 shards take 5.2 times the minimum; this bound only catches a collapse.
	if r.SpanRatio > 1.25 {
		t.Errorf("identify span %.3f of the minimum; a shard is waiting for something besides its turn", r.SpanRatio)
	}
	t.Logf("memory: %.1f KiB per added shard over 100 (RssAnon %.1f); %d and %d collections during the settles",
		res.SlopePerShard/1024, res.AnonSlopePerShard/1024, r.SettleGCs, base.SettleGCs)
	if r.SettleGCs == 0 || base.SettleGCs == 0 {
		t.Fatalf("no collection during a settle (%d, %d): RSS still holds the traffic's garbage, the slope says nothing",
			r.SettleGCs, base.SettleGCs)
	}
	if res.SlopePerShard > memoryPerShardBound {
		t.Errorf("%.1f KiB per added shard; want at most %.0f KiB", res.SlopePerShard/1024, float64(memoryPerShardBound)/1024)
	}
}

// memoryPerShardBound is issue #15's goal for the RSS a shard adds to the whole process.
const memoryPerShardBound = 64 << 10
