package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ddhq/dd/cluster/clustertest"
	"github.com/ddhq/dd/identify"
)

func identifyLimiter(t *testing.T, c *Conn, cfg IdentifyConfig) *IdentifyLimiter {
	t.Helper()
	if cfg.Limit.Remaining == 0 {
		cfg.Limit = identify.SessionStartLimit{Total: 1000, Remaining: 1000, ResetAfter: time.Hour, MaxConcurrency: cfg.Limit.MaxConcurrency}
	}
	l, err := NewIdentifyLimiter(ctxFor(t, 10*time.Second), c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// identify plays one shard's identify as shard.Shard does: take the turn, wait for NotBefore, send,
// wait for the answer, release.
type identifyRecord struct {
	shard, bucket  int
	sent, answered time.Time
}

// playShards plays the identifies of shards 0 to n-1 at once, each through play; wait waits for them and
// returns the records of those that completed, in the order they were sent (a failure is an error on t).
func playShards(t *testing.T, n int, play func(id int) (identifyRecord, error)) (wait func() []identifyRecord) {
	var mu sync.Mutex
	var recs []identifyRecord
	var wg sync.WaitGroup
	for id := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := play(id)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			recs = append(recs, r)
			mu.Unlock()
		}()
	}
	return func() []identifyRecord {
		wg.Wait()
		sort.Slice(recs, func(i, j int) bool { return recs[i].sent.Before(recs[j].sent) })
		return recs
	}
}

func playIdentify(ctx context.Context, l identify.Limiter, shardID, buckets int, answerIn time.Duration) (identifyRecord, error) {
	turn, err := l.Acquire(ctx, shardID)
	if err != nil {
		return identifyRecord{}, err
	}
	time.Sleep(time.Until(turn.NotBefore))
	r := identifyRecord{shard: shardID, bucket: shardID % buckets, sent: time.Now()}
	l.Sent(shardID, r.sent)
	time.Sleep(answerIn)
	r.answered = time.Now()
	turn.Release(true)
	return r, nil
}

// TestIdentifySpacedAcrossProcesses runs three limiters on three connections (three dd processes of one
// bot, max_concurrency 2) identifying 18 shards between them, and checks Discord's rule as dd bounds it:
// in each bucket, no IDENTIFY leaves sooner than one window after the previous one's answer came back;
// the two buckets proceed side by side.
func TestIdentifySpacedAcrossProcesses(t *testing.T) {
	s := clustertest.Server(t)
	const window = time.Second
	var limiters []*IdentifyLimiter
	for p := 0; p < 3; p++ {
		c := connect(t, s.ClientURL(), fmt.Sprintf("gw%d", p), 1)
		limiters = append(limiters, identifyLimiter(t, c, IdentifyConfig{Limit: identify.SessionStartLimit{MaxConcurrency: 2},
			Window: window, Margin: 100 * time.Millisecond, TurnTTL: 5 * time.Second}))
	}
	ctx := ctxFor(t, 60*time.Second)
	const shards = 18
	start := time.Now()
	recs := playShards(t, shards, func(id int) (identifyRecord, error) {
		return playIdentify(ctx, limiters[id%3], id, 2, time.Duration(20+rand.IntN(150))*time.Millisecond)
	})()
	span := time.Since(start)
	if len(recs) != shards {
		t.Fatalf("%d identifies, want %d", len(recs), shards)
	}
	minGap := time.Hour
	var firsts [2]time.Time
	prev := map[int]identifyRecord{}
	for _, r := range recs {
		if p, ok := prev[r.bucket]; ok {
			gap := r.sent.Sub(p.answered)
			minGap = min(minGap, gap)
			if gap < window {
				t.Errorf("bucket %d: shard %d identified %s after shard %d's answer; want at least the window %s", r.bucket, r.shard, gap, p.shard, window)
			}
		} else {
			firsts[r.bucket] = r.sent
		}
		prev[r.bucket] = r
	}
	t.Logf("%d identifies in 2 buckets by 3 processes in %s; smallest gap from an answer to the bucket's next identify %s (window %s)",
		shards, span.Round(time.Millisecond), minGap.Round(time.Millisecond), window)
	// 9 a bucket, one window and an answer each: ~8 x 1.1 s side by side, ~17 x 1.1 s one after another.
	if span > 12*time.Second {
		t.Errorf("took %s: the buckets did not run side by side", span)
	}
	if d := firsts[0].Sub(firsts[1]).Abs(); d > window/2 {
		t.Errorf("the buckets' first identifies are %s apart; want them together", d)
	}
	if minGap > window+500*time.Millisecond {
		t.Errorf("smallest gap %s: the limiter waits much longer than the window", minGap)
	}
	rem, err := limiters[1].Remaining(ctx)
	if err != nil || rem != 1000-shards {
		t.Errorf("budget left %d (%v), want %d: every process spends from one budget", rem, err, 1000-shards)
	}
}

// TestIdentifyNotBeforeFollowsTheAnswer checks the handover between two processes precisely: NotBefore
// is one window after the previous identify's answer (plus the margin when there was none), and not much
// more; a turn given back without an IDENTIFY leaves the bucket's timing as it was.
func TestIdentifyNotBeforeFollowsTheAnswer(t *testing.T) {
	s := clustertest.Server(t)
	const window, margin = time.Second, 300 * time.Millisecond
	cfg := IdentifyConfig{Limit: identify.SessionStartLimit{MaxConcurrency: 1}, Window: window, Margin: margin, TurnTTL: 5 * time.Second}
	a := identifyLimiter(t, connect(t, s.ClientURL(), "a", 1), cfg)
	b := identifyLimiter(t, connect(t, s.ClientURL(), "b", 1), cfg)
	ctx := ctxFor(t, 30*time.Second)

	for _, answered := range []bool{true, false} {
		ta, err := a.Acquire(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(ta.NotBefore))
		a.Sent(0, time.Now())
		time.Sleep(200 * time.Millisecond)
		released := time.Now() // the answer's receipt, or the failure
		ta.Release(answered)
		tb, err := b.Acquire(ctx, 3)
		if err != nil {
			t.Fatal(err)
		}
		want := released.Add(window)
		if !answered {
			want = want.Add(margin)
		}
		late := tb.NotBefore.Sub(want)
		t.Logf("answered=%v: b's NotBefore is %s after a's release + window (+ margin)", answered, late.Round(time.Microsecond))
		if late < 0 {
			t.Errorf("answered=%v: b may identify %s too early", answered, -late)
		}
		if late > 100*time.Millisecond {
			t.Errorf("answered=%v: b waits %s longer than needed", answered, late)
		}
		// b gives its turn back without identifying: the next holder still waits for a's identify.
		tb.Release(false)
		tc, err := a.Acquire(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if late := tc.NotBefore.Sub(want); late < 0 || late > 100*time.Millisecond {
			t.Errorf("after a turn without identify: NotBefore %s from a's bound, want 0..100ms", late)
		}
		time.Sleep(time.Until(tc.NotBefore))
		tc.Release(false) // not sent: keeps a's bound; it is past now
	}
}

// TestIdentifyDeadHolderFreesBucket: a process that dies holding a turn (connection closed, no release)
// blocks its bucket for the turn's TTL, not forever, and its identify counts as unanswered.
func TestIdentifyDeadHolderFreesBucket(t *testing.T) {
	s := clustertest.Server(t)
	const window, margin, ttl = time.Second, 300 * time.Millisecond, 2 * time.Second
	cfg := IdentifyConfig{Limit: identify.SessionStartLimit{MaxConcurrency: 2}, Window: window, Margin: margin, TurnTTL: ttl}
	ca := connect(t, s.ClientURL(), "a", 1)
	a := identifyLimiter(t, ca, cfg)
	b := identifyLimiter(t, connect(t, s.ClientURL(), "b", 1), cfg)
	ctx := ctxFor(t, 30*time.Second)

	ta, err := a.Acquire(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	a.Sent(4, time.Now())
	died := time.Now()
	ca.Close()
	// The other bucket is not held up.
	t1, err := b.Acquire(ctxFor(t, time.Second), 1)
	if err != nil {
		t.Fatalf("bucket 1 while bucket 0's holder is dead: %v", err)
	}
	t1.Release(false)
	tb, err := b.Acquire(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	granted := time.Now()
	t.Logf("dead holder: bucket freed %s after the holder died (turn TTL %s); NotBefore %s after that",
		granted.Sub(died).Round(time.Millisecond), ttl, tb.NotBefore.Sub(granted).Round(time.Millisecond))
	if took := granted.Sub(died); took > ttl+1500*time.Millisecond || took < ttl-ttl/5-100*time.Millisecond {
		t.Errorf("bucket freed %s after its holder died; want about the TTL %s", took, ttl)
	}
	if wait := tb.NotBefore.Sub(granted); wait < window+margin-100*time.Millisecond {
		t.Errorf("NotBefore %s after the grant; want window + margin (%s): the dead holder's identify counts as unanswered", wait, window+margin)
	}
	tb.Release(false)
	ta.Release(true) // too late: its lease is gone; must not disturb the bucket
	if h, _ := b.leaser.Holder(ctx, bucketKey(0)); h != "" {
		t.Errorf("bucket 0 held by %q after every release", h)
	}
}

// TestIdentifyBudgetShared: the daily budget is one count for every process; the last identify waits for
// the reset rather than being spent, and Update refills it.
func TestIdentifyBudgetShared(t *testing.T) {
	s := clustertest.Server(t)
	limit := identify.SessionStartLimit{Total: 1000, Remaining: 3, ResetAfter: time.Hour, MaxConcurrency: 4}
	cfg := IdentifyConfig{Limit: limit, Window: time.Second, TurnTTL: 5 * time.Second}
	a := identifyLimiter(t, connect(t, s.ClientURL(), "a", 1), cfg)
	b := identifyLimiter(t, connect(t, s.ClientURL(), "b", 1), cfg)
	ctx := ctxFor(t, 30*time.Second)
	for id, l := range []*IdentifyLimiter{a, b, a} {
		turn, err := l.Acquire(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		turn.Release(false)
	}
	if rem, _ := b.Remaining(ctx); rem != 0 {
		t.Errorf("remaining %d after 3 of 3, want 0", rem)
	}
	_, err := b.Acquire(ctxFor(t, 1500*time.Millisecond), 3)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire with the budget spent: err %v, want to wait (deadline exceeded)", err)
	}
	if err := a.Update(ctx, identify.SessionStartLimit{Total: 1000, Remaining: 10, ResetAfter: time.Hour, MaxConcurrency: 4}); err != nil {
		t.Fatal(err)
	}
	turn, err := b.Acquire(ctxFor(t, 5*time.Second), 3)
	if err != nil {
		t.Fatalf("acquire after Update: %v", err)
	}
	turn.Release(false)
	if rem, _ := a.Remaining(ctx); rem != 9 {
		t.Errorf("remaining %d, want 9", rem)
	}
}
