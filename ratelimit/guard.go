package ratelimit

import (
	"sort"
	"sync"
	"time"
)

// DiscordInvalidRequestLimit is Discord's ceiling: this many 401, 403 and 429 (not shared-scope) answers
// in InvalidRequestWindow get the client's IP banned for a while.
const (
	DiscordInvalidRequestLimit = 10000
	InvalidRequestWindow       = 10 * time.Minute
)

// guard counts invalid answers (401, 403, non-shared 429) in a sliding window and says when dd must stop
// sending rather than earn Discord's ban. It only needs the last limit events: the count in the window
// reaches limit exactly when the oldest of them is still inside it. It also holds a Cloudflare ban that
// Discord already imposed.
type guard struct {
	mu          sync.Mutex
	limit       int
	window      time.Duration
	times       []time.Time // ring of the last limit invalid answers; oldest at next once full
	next        int
	bannedUntil time.Time
	total       int64
}

func newGuard(limit int, window time.Duration) *guard {
	return &guard{limit: limit, window: window, times: make([]time.Time, 0, min(limit, 1<<16))}
}

func (g *guard) add(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total++
	if len(g.times) < g.limit {
		g.times = append(g.times, now)
		return
	}
	g.times[g.next] = now
	g.next = (g.next + 1) % g.limit
}

// blocked reports whether requests must be refused now, why, and until when.
func (g *guard) blocked(now time.Time) (error, time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bannedUntil.After(now) {
		return ErrBanned, g.bannedUntil
	}
	if len(g.times) == g.limit {
		if oldest := g.times[g.next]; now.Sub(oldest) < g.window {
			return ErrInvalidRequestBudget, oldest.Add(g.window)
		}
	}
	return nil, time.Time{}
}

func (g *guard) ban(until time.Time) {
	g.mu.Lock()
	if until.After(g.bannedUntil) {
		g.bannedUntil = until
	}
	g.mu.Unlock()
}

// count returns the invalid answers inside the window now.
func (g *guard) count(now time.Time) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := len(g.times)
	from := now.Add(-g.window)
	// The ring is in time order starting at next (or 0 while it fills).
	start := 0
	if n == g.limit {
		start = g.next
	}
	i := sort.Search(n, func(i int) bool { return g.times[(start+i)%n].After(from) })
	return n - i
}
