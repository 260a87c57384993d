package shard

import (
	"context"
	"sync"
	"time"
)

// sendLimiter keeps a connection under Discord's 120 sends per 60 s. The window slides (at most limit
// sends in ANY window-long span), which is the strict reading of the rule. Commands from the bot may
// use limit-reserve slots; heartbeats, identify and resume may use the reserve too, so a bot that floods
// commands can never starve the heartbeat into a zombie.
type sendLimiter struct {
	mu      sync.Mutex
	limit   int
	reserve int
	window  time.Duration
	base    time.Time
	sent    []time.Duration // ring of the last `limit` send times, as offsets from base (small: 8 bytes each)
	next    int
	count   int
}

func newSendLimiter(limit, reserve int, window time.Duration) *sendLimiter {
	return &sendLimiter{limit: limit, reserve: reserve, window: window, base: time.Now(), sent: make([]time.Duration, limit)}
}

// wait blocks until a send is allowed and records it. priority sends may use the reserve.
func (l *sendLimiter) wait(ctx context.Context, priority bool) error {
	for {
		l.mu.Lock()
		now := time.Now()
		allowed := l.limit
		if !priority {
			allowed -= l.reserve
		}
		inWindow := l.inWindow(now)
		if inWindow < allowed {
			l.record(now)
			l.mu.Unlock()
			return nil
		}
		// The (inWindow-allowed+1)-th oldest send in the window must age out first.
		oldest := l.nthOldestInWindow(now, inWindow-allowed)
		delay := oldest.Add(l.window).Sub(now) + time.Millisecond
		l.mu.Unlock()
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (l *sendLimiter) inWindow(now time.Time) int {
	n := 0
	for i := 0; i < l.count; i++ {
		if now.Sub(l.at(i)) < l.window {
			n++
		}
	}
	return n
}

// at returns the i-th oldest recorded send (0 = oldest kept).
func (l *sendLimiter) at(i int) time.Time {
	start := (l.next - l.count + l.limit) % l.limit
	return l.base.Add(l.sent[(start+i)%l.limit])
}

func (l *sendLimiter) nthOldestInWindow(now time.Time, n int) time.Time {
	seen := 0
	for i := 0; i < l.count; i++ {
		t := l.at(i)
		if now.Sub(t) < l.window {
			if seen == n {
				return t
			}
			seen++
		}
	}
	return now
}

func (l *sendLimiter) record(now time.Time) {
	l.sent[l.next] = now.Sub(l.base)
	l.next = (l.next + 1) % l.limit
	if l.count < l.limit {
		l.count++
	}
}
