package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddhq/dd/cluster/clustertest"
)

func TestLeaseHasOneOwnerAndIsRenewed(t *testing.T) {
	s := clustertest.Server(t)
	// TTL 3 s: renewed every second, given up 2.4 s after a renewal that did not land.
	a := leaser(t, connect(t, s.ClientURL(), "a", 1), 3*time.Second)
	b := leaser(t, connect(t, s.ClientURL(), "b", 1), 3*time.Second)
	ctx := ctxFor(t, 30*time.Second)

	la, err := a.TryAcquire(ctx, "shard.0", []byte(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if p := la.Prior(); p.Revision != 0 {
		t.Errorf("prior of a new key: %+v, want none", p)
	}
	// Nearly three TTLs later a still holds it (renewed), and b is refused each time, told who holds it.
	for i := 0; i < 8; i++ {
		_, err := b.TryAcquire(ctx, "shard.0", nil)
		if !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "by a") {
			t.Fatalf("b's try %d: err %v, want ErrLeaseHeld naming a (a's lease: valid %v, err %v)", i, err, la.Valid(), la.Err())
		}
		time.Sleep(time.Second)
	}
	if !la.Valid() || la.Err() != nil {
		t.Fatalf("a's lease after 3 TTLs: valid %v, err %v; want renewed", la.Valid(), la.Err())
	}
	if h, _ := b.Holder(ctx, "shard.0"); h != "a" {
		t.Errorf("holder %q, want a", h)
	}
	// Release hands it over at once, not after the TTL.
	got := make(chan *Lease, 1)
	go func() {
		lb, err := b.Acquire(ctx, "shard.0", nil)
		if err != nil {
			t.Error(err)
		}
		got <- lb
	}()
	time.Sleep(300 * time.Millisecond)
	released := time.Now()
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	lb := <-got
	took := time.Since(released)
	t.Logf("handover after release: %s", took)
	if took > time.Second {
		t.Errorf("b took the released lease %s after the release; want well under the TTL", took)
	}
	if !errors.Is(la.Err(), ErrLeaseReleased) {
		t.Errorf("a's Err %v, want ErrLeaseReleased", la.Err())
	}
	if p := lb.Prior(); !p.Deleted || p.Expired {
		t.Errorf("b's prior %+v, want a release (deleted, not expired)", p)
	}
	// ReleaseWith leaves data for the next holder.
	if err := lb.ReleaseWith(ctx, []byte(`{"left":"by b"}`)); err != nil {
		t.Fatal(err)
	}
	lc, err := a.TryAcquire(ctx, "shard.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(lc.Prior().Data) != `{"left":"by b"}` {
		t.Errorf("prior data %s, want what b left", lc.Prior().Data)
	}
	lc.Release(ctx)
}

func TestLeaseOfDeadHolderExpires(t *testing.T) {
	s := clustertest.Server(t)
	const ttl = 2 * time.Second
	ca := connect(t, s.ClientURL(), "a", 1)
	a := leaser(t, ca, ttl)
	b := leaser(t, connect(t, s.ClientURL(), "b", 1), ttl)
	ctx := ctxFor(t, 30*time.Second)
	la, err := a.TryAcquire(ctx, "leader", nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // a renewal or two
	aLostc := make(chan time.Time, 1)
	go func() { aLostc <- waitDone(t, la, 2*ttl) }()
	// The process dies: its connection closes without a release.
	died := time.Now()
	ca.Close()
	lb, err := b.Acquire(ctx, "leader", nil)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(died)
	aLost := <-aLostc
	t.Logf("dead holder: a gave up %s after its connection closed, b held the lease %s after", aLost.Sub(died).Round(time.Millisecond), took.Round(time.Millisecond))
	if !aLost.Before(died.Add(took)) {
		t.Errorf("a gave up %s after b took the lease", aLost.Sub(died.Add(took)))
	}
	if !errors.Is(la.Err(), ErrLeaseExpired) {
		t.Errorf("a's Err %v, want ErrLeaseExpired", la.Err())
	}
	if took > ttl+1500*time.Millisecond {
		t.Errorf("b took the dead holder's lease %s after it died; want within TTL %s + 1.5s", took, ttl)
	}
	if !lb.Prior().Expired {
		t.Errorf("b's prior %+v, want the expiry marker", lb.Prior())
	}
	lb.Release(ctx)
}

// TestLeaseNeverHasTwoHolders runs four processes that keep taking one key, hold it a while and give it
// up (or let it expire), and checks that no two holdings overlap in time: each holding counts from the
// acknowledgement of its acquiring write to its end (Release called, or Done).
func TestLeaseNeverHasTwoHolders(t *testing.T) {
	s := clustertest.Server(t)
	type holding struct {
		who        string
		from, till time.Time
	}
	var mu sync.Mutex
	var holdings []holding
	ctx := ctxFor(t, 60*time.Second)
	stop := time.Now().Add(6 * time.Second)
	var wg sync.WaitGroup
	for p := 0; p < 4; p++ {
		c := connect(t, s.ClientURL(), fmt.Sprintf("p%d", p), 1)
		l := leaser(t, c, 2*time.Second)
		for g := 0; g < 2; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					le, err := l.Acquire(ctx, "hot", nil)
					if err != nil {
						t.Error(err)
						return
					}
					_, from := le.Acquired()
					time.Sleep(time.Duration(rand.IntN(60)) * time.Millisecond)
					till := time.Now()
					if !le.Valid() {
						t.Errorf("%s lost the lease while holding it briefly: %v", c.Instance(), le.Err())
					}
					le.Release(ctx)
					mu.Lock()
					holdings = append(holdings, holding{c.Instance(), from, till})
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	sort.Slice(holdings, func(i, j int) bool { return holdings[i].from.Before(holdings[j].from) })
	for i := 1; i < len(holdings); i++ {
		if prev, cur := holdings[i-1], holdings[i]; cur.from.Before(prev.till) {
			t.Errorf("holdings overlap: %s %s..%s and %s from %s", prev.who, prev.from.Format("15:04:05.000"),
				prev.till.Format("15:04:05.000"), cur.who, cur.from.Format("15:04:05.000"))
		}
	}
	t.Logf("%d holdings in 6 s by 8 contenders in 4 processes, none overlapping", len(holdings))
	if len(holdings) < 20 {
		t.Errorf("only %d holdings: the key is not handed over promptly", len(holdings))
	}
}

// TestLeasePartitionedHolderStopsFirst cuts a holder off from NATS (a black-holing proxy: no reset, just
// silence). It must give the lease up before another process can take it, and the other must take it
// within about 2 TTLs of the cut.
func TestLeasePartitionedHolderStopsFirst(t *testing.T) {
	s := clustertest.Server(t)
	const ttl = 3 * time.Second
	proxy := clustertest.NewProxy(t, s.Addr().String())
	a := leaser(t, connect(t, proxy.URL(), "a", 1), ttl)
	b := leaser(t, connect(t, s.ClientURL(), "b", 1), ttl)
	ctx := ctxFor(t, 60*time.Second)
	la, err := a.TryAcquire(ctx, "shard.7", nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // renewed at least once
	deadline := la.Deadline()
	cut := time.Now()
	proxy.Block()

	var bAt time.Time
	var lb *Lease
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		lb, err = b.Acquire(ctx, "shard.7", nil)
		if err != nil {
			t.Error(err)
			return
		}
		bAt = time.Now()
	}()
	aLost := waitDone(t, la, 2*ttl)
	<-done
	if lb == nil {
		return
	}
	t.Logf("partition: a gave up %s after the cut (%s before b held it); b held it %s after the cut",
		aLost.Sub(cut).Round(time.Millisecond), bAt.Sub(aLost).Round(time.Millisecond), bAt.Sub(cut).Round(time.Millisecond))
	if !errors.Is(la.Err(), ErrLeaseExpired) {
		t.Errorf("a's Err %v, want ErrLeaseExpired", la.Err())
	}
	if !aLost.Before(bAt) {
		t.Errorf("a gave the lease up at %s, after b took it at %s: two holders", aLost.Format("15:04:05.000"), bAt.Format("15:04:05.000"))
	}
	if aLost.After(deadline.Add(100 * time.Millisecond)) {
		t.Errorf("a gave up at %s, past its deadline %s", aLost.Format("15:04:05.000"), deadline.Format("15:04:05.000"))
	}
	if bAt.Sub(cut) > 2*ttl {
		t.Errorf("b took the lease %s after the cut; want within 2 TTLs (%s)", bAt.Sub(cut), 2*ttl)
	}
	// Healed, a finds b's lease and cannot take it back.
	proxy.Unblock()
	time.Sleep(200 * time.Millisecond)
	if _, err := a.TryAcquire(ctxFor(t, 20*time.Second), "shard.7", nil); err != nil && !errors.Is(err, ErrLeaseHeld) {
		t.Logf("a after healing: %v (still reconnecting)", err)
	} else if err == nil {
		t.Error("a took b's lease back after healing")
	}
	lb.Release(context.Background())
}
