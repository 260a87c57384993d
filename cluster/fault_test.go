package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ddhq/dd/cluster/clustertest"
	"github.com/ddhq/dd/identify"
)

// TestClusterSurvivesLossOfANode runs leases and the identify limiter on a three-node JetStream cluster
// (buckets with 3 replicas) and shuts down the server leading the leases bucket mid-way, as a crashed
// machine would. The lease stays with its holder (or, should the election outlast its deadline, is given
// up before anyone else takes it), and identifies keep their spacing and all complete.
func TestClusterSurvivesLossOfANode(t *testing.T) {
	servers := clustertest.Cluster(t, 3)
	urls := clustertest.URLs(servers...)
	ca := connect(t, urls, "a", 3)
	cb := connect(t, urls, "b", 3)
	ctx := ctxFor(t, 90*time.Second)

	const ttl = 10 * time.Second // the product's default lease_ttl
	la, err := leaser(t, ca, ttl).TryAcquire(ctx, "shard.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	lb := leaser(t, cb, ttl)

	const window = time.Second
	cfg := IdentifyConfig{Limit: identify.SessionStartLimit{MaxConcurrency: 1}, Window: window, Margin: 100 * time.Millisecond, TurnTTL: 15 * time.Second}
	limiters := []*IdentifyLimiter{identifyLimiter(t, ca, cfg), identifyLimiter(t, cb, cfg)}
	wait := playShards(t, 8, func(id int) (identifyRecord, error) {
		return playIdentify(ctx, limiters[id%2], id, 1, 50*time.Millisecond)
	})

	time.Sleep(1500 * time.Millisecond)
	info, err := ca.JetStream().Stream(ctx, "KV_dd_leases")
	if err != nil {
		t.Fatal(err)
	}
	si, err := info.Info(ctx)
	if err != nil || si.Cluster == nil || si.Cluster.Leader == "" {
		t.Fatalf("leases stream cluster info: %+v, %v", si, err)
	}
	var victim *server.Server
	for _, s := range servers {
		if s.Name() == si.Cluster.Leader {
			victim = s
		}
	}
	if victim == nil {
		t.Fatalf("leader %q not among the servers", si.Cluster.Leader)
	}
	shutAt := time.Now()
	victim.Shutdown()
	t.Logf("shut down %s, leader of the leases bucket (replicas %d)", victim.Name(), si.Config.Replicas)

	// While the leader is elected anew, the holder keeps its lease, and nobody else gets it.
	minSlack := ttl
	for time.Since(shutAt) < ttl+2*time.Second {
		minSlack = min(minSlack, time.Until(la.Deadline()))
		if _, err := lb.TryAcquire(ctxFor(t, 2*time.Second), "shard.0", nil); err == nil {
			if la.Valid() {
				t.Fatal("b acquired shard.0 while a's lease is valid")
			}
			t.Fatalf("b acquired shard.0 (a's lease ended: %v)", la.Err())
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("a's lease through the election: at worst %s before its deadline (renewal every %s, deadline TTL - margin = %s after a renewal)",
		minSlack.Round(time.Millisecond), ttl/3, ttl-ttl/5)
	if la.Err() != nil {
		t.Errorf("a lost its lease across the loss of one node of three: %v", la.Err())
	}
	recs := wait()
	if len(recs) != 8 {
		t.Fatalf("%d of 8 identifies completed", len(recs))
	}
	minGap := time.Hour
	for i := 1; i < len(recs); i++ {
		gap := recs[i].sent.Sub(recs[i-1].answered)
		minGap = min(minGap, gap)
		if gap < window {
			t.Errorf("identify of shard %d %s after shard %d's answer; want at least %s", recs[i].shard, gap, recs[i-1].shard, window)
		}
	}
	t.Logf("8 identifies across the node loss, span %s, smallest gap from an answer %s", recs[7].sent.Sub(recs[0].sent).Round(time.Millisecond), minGap.Round(time.Millisecond))

	// And the buckets still work for a new holder.
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := lb.Acquire(ctx, "shard.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the node loss, a released lease changed hands in %s", time.Since(start).Round(time.Millisecond))
	if errors.Is(got.Err(), ErrLeaseExpired) {
		t.Error("new lease expired at once")
	}
	got.Release(ctx)
}
