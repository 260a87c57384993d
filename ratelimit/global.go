package ratelimit

import (
	"context"
	"sync"
	"time"
)

// globalWindow is the span in which a token may send at most its global limit (Discord's edge counts a
// sliding second; dd adds a millisecond against rounding).
const globalWindow = time.Second + time.Millisecond

// globalLimiter keeps one token's global limit as Discord's edge judges it: at most n requests arriving
// in any 1 s (a sliding window, not fixed seconds). dd cannot see when a request arrives, only bound it:
// it arrives after dd sends it and before Discord's answer is back, and is assumed to arrive within
// maxTransit of its send until its answer comes. So every grant holds a slot with the latest instant its
// request can have arrived (send+maxTransit, then the answer's receipt), and a new request may go once
// the slot n grants back (and every older one) is a full window behind. A global 429 pauses every
// request of the token.
type globalLimiter struct {
	clock      Clock
	maxTransit time.Duration

	mu          sync.Mutex
	base        time.Time
	bound       []int64  // per slot: latest arrival of its request, ns since base (0: long ago)
	seq         []uint64 // per slot: which grant holds it
	head        int      // the oldest slot, next to reuse
	folded      int64    // the latest bound among grants whose slots were reused
	lastSeq     uint64
	pausedUntil time.Time
	queue       waitQueue
	timer       Timer
	timerAt     time.Time
	onWait      func(delta int)
}

// globalSlot identifies a grant, so that its bound can be lowered when the answer comes.
type globalSlot struct {
	i   int
	seq uint64
}

// newGlobalLimiter returns a token's global limiter. A non-zero spent is when another sender may have
// spent the whole budget (a cluster's previous leader): until a window has passed since spent (plus the
// transit margin), nothing is granted.
func newGlobalLimiter(c Clock, perSecond int, maxTransit time.Duration, onWait func(int), spent time.Time) *globalLimiter {
	// base lies before any grant, so that a zero slot means "long ago".
	g := &globalLimiter{clock: c, maxTransit: maxTransit, base: c.Now().Add(-time.Hour),
		bound: make([]int64, perSecond), seq: make([]uint64, perSecond), onWait: onWait}
	if !spent.IsZero() {
		g.folded = int64(spent.Add(maxTransit).Sub(g.base))
	}
	return g
}

// earliest is the first instant the next grant may happen.
func (g *globalLimiter) earliest() time.Time {
	t := g.base.Add(time.Duration(max(g.bound[g.head], g.folded)) + globalWindow)
	if g.pausedUntil.After(t) {
		t = g.pausedUntil
	}
	return t
}

func (g *globalLimiter) take(now time.Time) globalSlot {
	i := g.head
	g.folded = max(g.folded, g.bound[i])
	g.bound[i] = int64(now.Add(g.maxTransit).Sub(g.base))
	g.lastSeq++
	g.seq[i] = g.lastSeq
	g.head++
	if g.head == len(g.bound) {
		g.head = 0
	}
	return globalSlot{i, g.lastSeq}
}

// settle sets a grant's bound to at: its answer came back (or it failed, or was never sent), so it
// arrived by then. The bound may rise: an answer later than send+maxTransit shows that the assumption
// did not hold (a stalled send, a slow network), and the receipt is the only bound that is proven.
func (g *globalLimiter) settle(s globalSlot, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seq[s.i] != s.seq {
		return
	}
	v := int64(at.Sub(g.base))
	if v == g.bound[s.i] {
		return
	}
	g.bound[s.i] = v
	if g.queue.live > 0 && s.i == g.head {
		g.pump(g.clock.Now())
	}
}

// acquire waits, in FIFO order, for a global slot.
func (g *globalLimiter) acquire(ctx context.Context) (globalSlot, error) {
	now := g.clock.Now()
	g.mu.Lock()
	if g.queue.live == 0 && !g.earliest().After(now) {
		s := g.take(now)
		g.mu.Unlock()
		return s, nil
	}
	if dl, ok := ctx.Deadline(); ok && g.pausedUntil.After(dl) {
		g.mu.Unlock()
		return globalSlot{}, ErrWouldWait
	}
	w := newWaiter(nil)
	g.queue.push(w)
	g.onWait(1)
	g.pump(now)
	g.mu.Unlock()

	select {
	case <-w.ch:
		return w.slot, nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.granted {
		return w.slot, nil // granted while giving up: use the slot
	}
	w.cancelled = true
	g.queue.live--
	g.onWait(-1)
	return globalSlot{}, waitError(ctx)
}

// pump grants what the window allows now and arms a timer for the next slot. Called with g.mu held.
func (g *globalLimiter) pump(now time.Time) {
	for g.queue.live > 0 {
		at := g.earliest()
		if at.After(now) {
			g.arm(now, at)
			return
		}
		w := g.queue.pop()
		w.slot = g.take(now)
		w.grant()
		g.onWait(-1)
	}
}

func (g *globalLimiter) arm(now, at time.Time) {
	if g.timer != nil {
		if g.timerAt.Equal(at) {
			return
		}
		g.timer.Stop()
	}
	g.timerAt = at
	g.timer = g.clock.AfterFunc(at.Sub(now), func() {
		g.mu.Lock()
		g.timer = nil
		g.pump(g.clock.Now())
		g.mu.Unlock()
	})
}

// pause holds every request of the token until t (a global 429).
func (g *globalLimiter) pause(t time.Time) {
	g.mu.Lock()
	if t.After(g.pausedUntil) {
		g.pausedUntil = t
	}
	g.pump(g.clock.Now())
	g.mu.Unlock()
}

// idle reports whether the limiter holds nothing that a fresh one would not.
func (g *globalLimiter) idle(now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	latest := g.folded
	for _, b := range g.bound {
		latest = max(latest, b)
	}
	return g.queue.live == 0 && now.Sub(g.base.Add(time.Duration(latest))) > globalWindow && !g.pausedUntil.After(now)
}
