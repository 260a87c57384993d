package loadtool

import (
	"testing"
	"time"

	"github.com/ddhq/dd/sim/discordsim"
)

func TestPercentileByNearestRank(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 100 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(d, c.q); got != c.want {
			t.Errorf("percentile(1..100 ms, %v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of nothing = %v, want 0", got)
	}
	if got := percentile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("percentile of one = %v, want it", got)
	}
}

func TestMemberRequestMinimumIsWholeMinutesOfTheBusiestShard(t *testing.T) {
	for _, c := range []struct {
		large []int
		pace  int
		want  time.Duration
	}{
		{[]int{51, 50}, 60, 0}, // under the pace: no wait
		{[]int{60, 0}, 60, 0},  // exactly the pace: all at once
		{[]int{61, 10}, 60, time.Minute},
		{[]int{10, 250}, 60, 4 * time.Minute},
		{nil, 60, 0},
		{[]int{5}, 0, 0},
	} {
		if got := memberRequestMinimum(c.large, c.pace); got != c.want {
			t.Errorf("memberRequestMinimum(%v, %d) = %v, want %v", c.large, c.pace, got, c.want)
		}
	}
}

func TestMemberPickerCoversEveryMemberOnce(t *testing.T) {
	guilds := []simGuild{{ID: 1 << 22, MemberCount: 3}, {ID: 2 << 22, MemberCount: 1}, {ID: 3 << 22, MemberCount: 2}}
	p := newMemberPicker(guilds)
	seen := map[uint64]bool{}
	for r := 0; r < 6; r++ {
		g, u := p.at(r)
		seen[u] = true
		found := false
		for _, gd := range guilds {
			for i := 0; i < gd.MemberCount; i++ {
				if gd.ID == g && discordsim.MemberUserID(g, i) == u {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("member %d: guild %d user %d is not one of the guilds' members", r, g, u)
		}
	}
	if len(seen) != 6 {
		t.Errorf("6 draws 0..5 gave %d distinct members, want 6", len(seen))
	}
}

func TestEnvIntTakesTheLastValue(t *testing.T) {
	env := []string{"DD_X=1", "DD_Y=2", "DD_X=3", "DD_XY=9"}
	if got := envInt(env, "DD_X", 60); got != 3 {
		t.Errorf("envInt = %d, want 3", got)
	}
	if got := envInt(env, "DD_Z", 60); got != 60 {
		t.Errorf("envInt of a missing key = %d, want the default", got)
	}
}

// The members scenario at a small size through the real binaries: every list completes, the readers
// saw both 404s and 200s or at least answers, and no process outlives the run.
func TestMembersFromSeparateProcessesCompletesEveryList(t *testing.T) {
	s := newScenarioTest(t, 60*time.Second)
	res, err := RunMembers(s.ctx, MembersOptions{Binaries: s.bins, Shards: 2, Guilds: 5, MembersPerGuild: 200,
		LargeGuilds: 1, LargeMembers: 2000, Slice: 20 * time.Millisecond, CompleteTimeout: 40 * time.Second,
		Dir: t.TempDir(), Logf: s.logf})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.logs.String())
	}
	if res.Members != 5*200+2000 || res.Guilds != 6 {
		t.Errorf("members %d in %d guilds, want 3000 in 6", res.Members, res.Guilds)
	}
	if res.CompleteSeconds <= 0 || res.MinimumSeconds != 0 || res.CacheMembers < 3000-6 {
		t.Errorf("complete after %vs (minimum %v), cache holds %d members", res.CompleteSeconds, res.MinimumSeconds, res.CacheMembers)
	}
	if res.Requests != 6 || res.RateLimited != 0 || res.SimChunks != 5+2 {
		t.Errorf("dd sent %d requests (%d RATE_LIMITED), the simulator sent %d chunks: want 6, 0, 7", res.Requests, res.RateLimited, res.SimChunks)
	}
	if len(res.Reads) != 2 || res.Reads[0].Clients != 1 || res.Reads[1].Clients != 16 {
		t.Fatalf("reads %+v, want 1 and 16 clients", res.Reads)
	}
	for _, f := range res.Reads {
		if f.Requests == 0 || f.Other != 0 || f.Requests != f.Found+f.NotFound || f.P50Ms <= 0 || f.P99Ms < f.P50Ms {
			t.Errorf("reads with %d clients: %+v", f.Clients, f)
		}
	}
	if !res.CleanStop || res.StoreBytes <= 0 || res.PeakRSS <= 0 {
		t.Errorf("clean stop %v, store %d bytes, peak RSS %d", res.CleanStop, res.StoreBytes, res.PeakRSS)
	}
	if !gone(res.DDPID) || !gone(res.SimPID) {
		t.Errorf("dd (pid %d) or the simulator (pid %d) outlived the run", res.DDPID, res.SimPID)
	}
}
