package ratelimit

import (
	"time"
)

// waiter is one request waiting in a queue (a bucket's or a global limiter's).
type waiter struct {
	ch        chan struct{} // closed when granted
	b         *bucket       // the bucket it waits in; nil once its route turned out to have no bucket
	granted   bool
	cancelled bool
	slot      globalSlot // the global slot granted (global queue only)
}

func newWaiter(b *bucket) *waiter { return &waiter{ch: make(chan struct{}), b: b} }

func (w *waiter) grant() {
	w.granted = true
	close(w.ch)
}

// waitQueue is a FIFO of waiters; cancelled ones are skipped lazily.
type waitQueue struct {
	items []*waiter
	head  int
	live  int // waiters neither granted nor cancelled
}

func (q *waitQueue) push(w *waiter) {
	q.items = append(q.items, w)
	q.live++
}

// pop returns the first live waiter; the caller checked live > 0.
func (q *waitQueue) pop() *waiter {
	for {
		w := q.items[q.head]
		q.items[q.head] = nil
		q.head++
		if q.head > 64 && q.head*2 > len(q.items) {
			n := copy(q.items, q.items[q.head:])
			clear(q.items[n:])
			q.items, q.head = q.items[:n], 0
		}
		if !w.cancelled {
			q.live--
			return w
		}
	}
}

// drain removes and returns every live waiter, in order.
func (q *waitQueue) drain() []*waiter {
	var out []*waiter
	for q.live > 0 {
		out = append(out, q.pop())
	}
	q.items, q.head = q.items[:0], 0
	return out
}

type bucketState uint8

const (
	// stateUnknown: nothing learned yet; one request goes first and its answer teaches the limits.
	stateUnknown bucketState = iota
	// stateLimited: limit, remaining and reset are known from Discord's headers.
	stateLimited
)

// bucketKey identifies a bucket within one token: Discord's hash plus the major parameter, or, until the
// hash is learned, the route key plus the major parameter.
type bucketKey struct {
	hash  string // X-RateLimit-Bucket; or the route key when temp
	major string
	temp  bool
}

// bucket is one Discord rate-limit bucket of one token: its budget as learned from headers, the requests
// in flight, and the FIFO of requests waiting for it. All fields are guarded by the token's mutex.
//
// The budget estimate is minSeen - pending: the lowest X-RateLimit-Remaining seen in the current window
// (the answer Discord processed last) minus the requests that may still be charged to the window but whose
// answers are not in. It never overestimates, so several requests can be in flight at once without a 429.
type bucket struct {
	key   bucketKey
	owner *tokenState
	state bucketState

	learning bool // stateUnknown: the one request is in flight
	pending  int  // stateLimited: requests sent and not yet answered

	limit      int
	minSeen    int
	window     float64 // X-RateLimit-Reset of the current window; 0 after a roll until an answer names it
	prevWindow float64
	windowLen  time.Duration // the longest reset-after seen: about the window's length
	resetAt    time.Time     // local instant at which the window is surely over
	resetKnown bool

	pausedUntil time.Time // after a 429: nothing goes before this

	queue    waitQueue
	timer    Timer
	timerAt  time.Time
	lastUsed time.Time
}

// roll starts a new window once the current one is surely over: the full limit is available again, less
// the requests still in flight (they may land in the new window).
func (b *bucket) roll(now time.Time) {
	if b.state == stateLimited && b.resetKnown && !now.Before(b.resetAt) {
		if b.window != 0 {
			b.prevWindow = b.window
		}
		b.window = 0
		b.minSeen = b.limit
		b.resetKnown = false
	}
}

// avail is how many requests may be sent now.
func (b *bucket) avail(now time.Time) int {
	if now.Before(b.pausedUntil) {
		return 0
	}
	if b.state == stateUnknown {
		if b.learning {
			return 0
		}
		if b.key.temp {
			if spent, _ := b.spentSibling(now); spent {
				return 0
			}
		}
		return 1
	}
	n := b.minSeen - b.pending - b.owner.learning[b.key.major]
	if n <= 0 && !b.resetKnown && b.pending == 0 && b.owner.learning[b.key.major] == 0 {
		return 1 // nothing in flight and no reset to wait for: ask Discord again
	}
	return n
}

// blockedUntil is the instant at which the bucket will next allow a request, when a timer decides it;
// zero when an answer from Discord will (or it is not blocked).
func (b *bucket) blockedUntil(now time.Time) time.Time {
	if now.Before(b.pausedUntil) {
		if b.state == stateLimited && b.resetKnown && b.minSeen-b.pending <= 0 && b.resetAt.After(b.pausedUntil) {
			return b.resetAt
		}
		return b.pausedUntil
	}
	if b.state == stateLimited && b.resetKnown && b.minSeen-b.pending <= 0 {
		return b.resetAt
	}
	if b.state == stateUnknown && !b.learning && b.key.temp {
		_, at := b.spentSibling(now)
		return at
	}
	return time.Time{}
}

// siblingWaitLimit bounds how long an unknown route waits for a spent bucket of its major parameter. A
// bucket spent for longer has a long window (a channel rename's 10 minutes) that an unknown route is
// unlikely to share; making every new route of the channel wait that long would be worse than risking one
// 429, which dd retries.
const siblingWaitLimit = 5 * time.Second

// spentSibling reports, for a temporary bucket (its route's hash not learned yet), whether a known bucket
// of the same major parameter has no budget now. Discord puts several routes in one bucket and says which
// only in its answer, so the unknown route may be in that bucket: its learning request waits until the
// latest such bucket resets (at), or, when one waits for an answer instead (at is zero), until that
// answer wakes it (see pump).
func (b *bucket) spentSibling(now time.Time) (spent bool, at time.Time) {
	answer := false
	for _, s := range b.owner.majors[b.key.major] {
		if s.key.temp || s.state != stateLimited {
			continue
		}
		s.roll(now)
		if s.avail(now) > 0 {
			continue
		}
		t := s.blockedUntil(now)
		if t.Sub(now) > siblingWaitLimit {
			continue
		}
		spent = true
		if !t.IsZero() {
			at = later(at, t)
		} else {
			answer = true
		}
	}
	if answer {
		return spent, time.Time{}
	}
	return spent, at
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// take counts a request as sent.
func (b *bucket) take() {
	if b.state == stateUnknown {
		b.setLearning(true)
	} else {
		b.pending++
	}
}

// setLearning marks the bucket's one learning request out or back. While a route whose hash is unknown
// is learning, it may be spending the budget of any bucket of the same major parameter (Discord puts
// several routes in one bucket), so those count it as in flight too.
func (b *bucket) setLearning(v bool) {
	if b.learning == v {
		return
	}
	b.learning = v
	if b.key.temp {
		if v {
			b.owner.learning[b.key.major]++
		} else if b.owner.learning[b.key.major]--; b.owner.learning[b.key.major] <= 0 {
			delete(b.owner.learning, b.key.major)
		}
	}
}

// release undoes take for a request that got its answer or was never sent. consumed says whether it may
// have been charged against the budget without an answer telling so (a network error).
func (b *bucket) release(consumed bool) {
	if b.state == stateUnknown {
		b.setLearning(false)
		return
	}
	if b.pending > 0 {
		b.pending--
	}
	if consumed {
		b.minSeen--
	}
}

// tolerance is how far apart two X-RateLimit-Reset values of one window may be (Discord rounds to the
// millisecond; without the header dd derives it from its own clock, which jitters more).
func (b *bucket) tolerance() float64 {
	t := b.windowLen / 4
	t = min(t, 50*time.Millisecond)
	t = max(t, 2*time.Millisecond)
	return t.Seconds()
}

// observe applies the rate-limit headers of an answer received at now.
func (b *bucket) observe(h rateHeaders, now time.Time) {
	if !h.hasLimit {
		return
	}
	resetAt := now.Add(h.resetAfter)
	win := h.reset
	if win == 0 {
		win = unixSecs(resetAt)
	}
	b.windowLen = max(b.windowLen, h.resetAfter)
	if b.state != stateLimited {
		if b.learning {
			b.pending++ // another request is out learning: it now counts as in flight
			b.setLearning(false)
		}
		b.state = stateLimited
		b.limit, b.minSeen, b.window = h.limit, h.remaining, win
		b.resetAt, b.resetKnown = resetAt, true
		return
	}
	b.limit = h.limit
	tol := b.tolerance()
	switch {
	case b.window == 0:
		if b.prevWindow != 0 && win <= b.prevWindow+tol {
			return // an answer from the window before the roll: it was charged there
		}
		b.window = win
		b.minSeen = min(b.minSeen, h.remaining)
		b.resetAt, b.resetKnown = resetAt, true
	case win < b.window-tol:
		return // an older window
	case win <= b.window+tol:
		b.minSeen = min(b.minSeen, h.remaining)
		// Every answer's receipt plus its reset-after is at or after the true reset (Discord computed
		// reset-after before answering): the earliest of them is the tightest safe one.
		if !b.resetKnown || resetAt.Before(b.resetAt) {
			b.resetAt = resetAt
		}
		b.resetKnown = true
	default:
		// Discord started a window that dd did not see begin.
		b.prevWindow, b.window = b.window, win
		b.minSeen = h.remaining
		b.resetAt, b.resetKnown = resetAt, true
	}
}

// idle reports whether the bucket holds nothing a fresh one would not learn again at the cost of one
// request.
func (b *bucket) idle(now time.Time, after time.Duration) bool {
	return b.queue.live == 0 && !b.learning && b.pending == 0 && b.timer == nil &&
		!b.pausedUntil.After(now) && (!b.resetKnown || now.After(b.resetAt)) && now.Sub(b.lastUsed) > after
}
