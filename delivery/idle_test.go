package delivery

import (
	"context"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/queue"
)

// appendAcross appends one call's worth of events, n to each of shards, and adds their ids to want.
func (e *qenv) appendAcross(shards []int, n int, want map[int][]string) {
	e.t.Helper()
	var recs []queue.Record
	for _, s := range shards {
		for range n {
			recs = append(recs, queue.Record{Shard: s, Payload: payload(s, len(want[s])+len(recs))})
		}
	}
	if err := e.q.Append(context.Background(), recs); err != nil {
		e.t.Fatal(err)
	}
	for _, r := range recs {
		want[r.Shard] = append(want[r.Shard], e.q.EventID(r.Seq))
	}
}

// deliveredAll reports whether the bot has every wanted id, and fails on a repeat or a wrong order.
func deliveredAll(t testing.TB, b *bot, want map[int][]string) bool {
	t.Helper()
	_, evs := b.snapshot()
	got, dups := idsByShard(evs)
	if dups > 0 {
		t.Fatalf("%d events delivered twice", dups)
	}
	for s, ids := range want {
		if !slices.Equal(got[s], ids[:min(len(ids), len(got[s]))]) {
			t.Fatalf("shard %d: delivered %v, want a prefix of %v (in order)", s, got[s], ids)
		}
		if len(got[s]) < len(ids) {
			return false
		}
	}
	return true
}

// goroutinesAtMost waits until at most n goroutines run, and returns how many do.
func goroutinesAtMost(n int) int {
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return runtime.NumGoroutine()
}

// A gateway of 1,000 shards with nothing to deliver keeps no goroutine per shard (issue #15: 1,000
// workers parked in the queue cost about 8 KiB of stack each), and an idle shard's next event is still
// delivered.
func TestIdleShardsHoldNoGoroutine(t *testing.T) {
	const shards = 1000
	e := newQueue(t)
	b := newBot(t)
	ids := make([]int, shards)
	for i := range ids {
		ids[i] = i
	}
	want := map[int][]string{}
	e.appendAcross(ids, 2, want)
	before := runtime.NumGoroutine()
	start(t, e.c, Options{URLs: []string{b.url()}, MaxInFlight: 4})
	testkit.Eventually(t, 15*time.Second, "every shard's events delivered", func() bool { return deliveredAll(t, b, want) })
	// The HTTP client's and the test server's connections (4 at most, a few goroutines each) remain.
	const slack = 50
	if n := goroutinesAtMost(before + slack); n > before+slack {
		t.Fatalf("%d goroutines with %d idle shards, %d before delivery started: want at most %d more, not one per shard",
			n, shards, before, slack)
	}
	e.appendAcross(ids, 1, want)
	testkit.Eventually(t, 15*time.Second, "every idle shard's next event delivered", func() bool { return deliveredAll(t, b, want) })
	if n := goroutinesAtMost(before + slack); n > before+slack {
		t.Fatalf("%d goroutines once idle again, %d before: want at most %d more", n, before, slack)
	}
}

// Short bursts on many shards, each landing while the shard's worker may be exiting after the last one:
// every event is delivered once, in order per shard, and none waits for a later burst.
func TestBurstsOnManyShardsAreDeliveredOnceInOrder(t *testing.T) {
	const shards, rounds = 100, 40
	e := newQueue(t)
	b := newBot(t)
	start(t, e.c, Options{URLs: []string{b.url()}, MaxInFlight: 16})
	want := map[int][]string{}
	for range rounds {
		var burst []int
		for s := range shards {
			if rand.N(4) == 0 {
				burst = append(burst, s)
			}
		}
		e.appendAcross(burst, 1+rand.N(3), want)
		time.Sleep(time.Duration(rand.N(3)) * time.Millisecond)
	}
	// No append after the last burst: an event whose wake was lost would never be delivered. The wait
	// lasts while delivery progresses (the race detector and a loaded machine slow it down).
	last, stalled := -1, time.Now()
	for !deliveredAll(t, b, want) {
		_, evs := b.snapshot()
		if len(evs) != last {
			last, stalled = len(evs), time.Now()
		}
		if time.Since(stalled) > 5*time.Second {
			got, _ := idsByShard(evs)
			var missing []int
			for s, ids := range want {
				if len(got[s]) < len(ids) {
					missing = append(missing, s)
				}
			}
			slices.Sort(missing)
			t.Fatalf("delivery stopped with %d events delivered: shards %v still hold events (a lost wake)", len(evs), missing)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
