package loadtool

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// Cluster mode from outside, small: NATS (this test binary started again as its child), the simulator
// and three dd gateway processes on 6 shards under a firehose; one is SIGKILLed and restarted. Its shards
// are READY on the other two with no identify, the restart rebalances them evenly with none, and every
// event reaches the receiver: none lost, copies only under the same X-DD-Event-Id, in order per shard.
// Every process of the run is gone afterwards.
func TestClusterFromSeparateProcessesSurvivesAKill(t *testing.T) {
	s := newScenarioTest(t, 2*time.Minute)
	const shards = 6
	ttl := 2 * time.Second
	res, err := RunCluster(s.ctx, ClusterOptions{Binaries: s.bins, Processes: 3, Shards: shards, Rate: 300,
		Duration: 8 * time.Second, LeaseTTL: ttl, BatchMax: 1, KillAfter: 1500 * time.Millisecond,
		RestartAfter: 500 * time.Millisecond, DrainTimeout: time.Minute, Dir: t.TempDir(),
		Logf: func(f string, a ...any) { fmt.Fprintf(&s.logs, f+"\n", a...) }})
	b, _ := json.MarshalIndent(res, "", "  ")
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, s.logs.String(), b)
	}
	t.Logf("%s", s.logs.String())
	if !even(res.StartupSplit, shards) || len(res.StartupSplit) != 3 {
		t.Errorf("startup split %v; want 2/2/2", res.StartupSplit)
	}
	k := res.Kill
	if k == nil {
		t.Fatalf("no kill figures: %s", b)
	}
	if k.Shards != 2 || len(k.TakeoverSplit) != 2 || k.TakeoverSplit[0]+k.TakeoverSplit[1] != shards {
		t.Errorf("the killed process ran %d shards, the other two then %v; want 2, and all %d on the two", k.Shards, k.TakeoverSplit, shards)
	}
	if k.TakeoverIdentifies != 0 || k.RestartIdentifies != 0 {
		t.Errorf("identifies spent: %d by the takeover, %d by the restart; want 0 (resumed)", k.TakeoverIdentifies, k.RestartIdentifies)
	}
	if k.TakeoverResumes < k.Shards {
		t.Errorf("%d resumes for the %d shards taken over", k.TakeoverResumes, k.Shards)
	}
	if k.TakeoverSeconds <= 0 || k.TakeoverSeconds > (10*ttl).Seconds() || k.RestartSeconds <= 0 || !even(k.RestartSplit, shards) {
		t.Errorf("takeover %.2fs, restart %.2fs to %v: want both timed and an even split", k.TakeoverSeconds, k.RestartSeconds, k.RestartSplit)
	}
	if res.Created < 2400 || res.Delivered < res.Created || !res.Complete {
		t.Errorf("firehose made %d events, %d delivered, complete %v; want 2,400 or so, all delivered", res.Created, res.Delivered, res.Complete)
	}
	if res.Lost != 0 || res.Unexpected != 0 || res.OutOfOrder != 0 || res.BadAuth != 0 || res.Invalid != 0 {
		t.Errorf("lost %d, unexpected %d, out of order %d, bad auth %d, invalid %d; want 0 each", res.Lost, res.Unexpected, res.OutOfOrder, res.BadAuth, res.Invalid)
	}
	// A copy comes under the id it had (the stream's Nats-Msg-Id): as many copies by (shard, seq) as by id.
	if res.Sessions != shards || res.Duplicates != res.DuplicateIDs {
		t.Errorf("%d sessions for %d shards; copies %d by (shard, seq), %d by X-DD-Event-Id: want one session each and copies only under the same id",
			res.Sessions, shards, res.Duplicates, res.DuplicateIDs)
	}
	if len(res.DD) != 3 || len(res.DD[0].PIDs) != 2 || res.NATSProc.PeakRSS <= 0 || res.NATSProc.CPUSeconds <= 0 || res.Machine.Cores < 1 {
		t.Errorf("process figures missing: dd %+v, NATS %+v, machine %+v", res.DD, res.NATSProc, res.Machine)
	}
	for _, d := range res.DD {
		if d.PeakRSS <= 0 || d.CPUSeconds <= 0 {
			t.Errorf("%s: figures missing: %+v", d.Instance, d)
		}
	}
	for _, pid := range res.PIDs {
		if !gone(pid) {
			t.Errorf("pid %d outlived the run (pids %v)", pid, res.PIDs)
		}
	}
}
