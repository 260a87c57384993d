package ratelimit

import (
	"context"
	"sync"
	"time"
)

// globalLimiter keeps one token's global limit as Discord's edge judges it: at most n requests in any
// span of 1 s (a sliding window, not fixed seconds), plus a margin for the jitter between the instant
// dd grants a send and the instant Discord sees it. A global 429 pauses every request of the token.
type globalLimiter struct {
	clock Clock
	span  time.Duration

	mu          sync.Mutex
	base        time.Time
	ring        []int64 // the last n grants, as nanoseconds since base (0: none), oldest at head
	head        int
	pausedUntil time.Time
	queue       waitQueue
	timer       Timer
	timerAt     time.Time
	onWait      func(delta int)
}

func newGlobalLimiter(c Clock, perSecond int, margin time.Duration, onWait func(int)) *globalLimiter {
	// base lies before any grant, so that a zero slot means "long ago".
	return &globalLimiter{clock: c, span: time.Second + margin, base: c.Now().Add(-time.Hour), ring: make([]int64, perSecond), onWait: onWait}
}

// earliest is the first instant the next grant may happen.
func (g *globalLimiter) earliest() time.Time {
	t := g.base.Add(time.Duration(g.ring[g.head]) + g.span)
	if g.pausedUntil.After(t) {
		t = g.pausedUntil
	}
	return t
}

func (g *globalLimiter) take(now time.Time) {
	g.ring[g.head] = int64(now.Sub(g.base))
	g.head++
	if g.head == len(g.ring) {
		g.head = 0
	}
}

// acquire waits, in FIFO order, for a global slot. It fails at once with ErrWouldWait when the slot
// cannot come before ctx's deadline.
func (g *globalLimiter) acquire(ctx context.Context) error {
	now := g.clock.Now()
	g.mu.Lock()
	if g.queue.live == 0 && !g.earliest().After(now) {
		g.take(now)
		g.mu.Unlock()
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && g.pausedUntil.After(dl) {
		g.mu.Unlock()
		return ErrWouldWait
	}
	w := newWaiter(nil)
	g.queue.push(w)
	g.onWait(1)
	g.pump(now)
	g.mu.Unlock()

	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.granted {
		return nil // granted while giving up: use the slot
	}
	w.cancelled = true
	g.queue.live--
	g.onWait(-1)
	return waitError(ctx)
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
		g.take(now)
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
	last := g.base.Add(time.Duration(g.ring[(g.head+len(g.ring)-1)%len(g.ring)]))
	return g.queue.live == 0 && now.Sub(last) > g.span && !g.pausedUntil.After(now)
}
