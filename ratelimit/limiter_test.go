package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that moves only when told; due timers run synchronously in Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// Advance moves time forward, running every timer that comes due, in order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
		var next *fakeTimer
		for len(c.timers) > 0 {
			t := c.timers[0]
			if t.stopped {
				c.timers = c.timers[1:]
				continue
			}
			if !t.at.After(end) {
				next = t
				c.timers = c.timers[1:]
			}
			break
		}
		if next == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		if next.at.After(c.now) {
			c.now = next.at
		}
		next.stopped = true
		c.mu.Unlock()
		next.f()
	}
}

// harness runs Acquires in goroutines and tells which have been granted.
type harness struct {
	t     *testing.T
	l     *Limiter
	clock *fakeClock
}

func newHarness(t *testing.T, o Options) *harness {
	c := newFakeClock()
	o.Clock = c
	if o.GlobalRate == 0 {
		o.GlobalRate = 10000
	}
	l := New(o)
	t.Cleanup(l.Close)
	return &harness{t: t, l: l, clock: c}
}

type pendingAcquire struct {
	done chan struct{}
	tk   *Ticket
	err  error
}

func (h *harness) acquire(ctx context.Context, route Route) *pendingAcquire {
	return h.acquireAs(ctx, "Bot tok", route)
}

func (h *harness) acquireAs(ctx context.Context, identity string, route Route) *pendingAcquire {
	p := &pendingAcquire{done: make(chan struct{})}
	go func() {
		p.tk, p.err = h.l.Acquire(ctx, identity, route)
		close(p.done)
	}()
	return p
}

// settle lets goroutines granted by the last step run.
func settle() { time.Sleep(5 * time.Millisecond) }

func granted(ps []*pendingAcquire) int {
	settle()
	n := 0
	for _, p := range ps {
		select {
		case <-p.done:
			n++
		default:
		}
	}
	return n
}

// headers builds Discord's rate-limit headers for a window ending at reset.
func (h *harness) headers(limit, remaining int, reset time.Time, hash string) http.Header {
	hd := http.Header{}
	hd.Set("X-RateLimit-Limit", strconv.Itoa(limit))
	hd.Set("X-RateLimit-Remaining", strconv.Itoa(remaining))
	hd.Set("X-RateLimit-Reset", strconv.FormatFloat(float64(reset.UnixMilli())/1000, 'f', 3, 64))
	hd.Set("X-RateLimit-Reset-After", strconv.FormatFloat(reset.Sub(h.clock.Now()).Seconds(), 'f', 3, 64))
	hd.Set("X-RateLimit-Bucket", hash)
	return hd
}

// acquireEach starts n acquires of route, one after the other (each settled before the next).
func (h *harness) acquireEach(ctx context.Context, route Route, n int) []*pendingAcquire {
	var ps []*pendingAcquire
	for range n {
		ps = append(ps, h.acquire(ctx, route))
		settle()
	}
	return ps
}

// answer has one request of route granted at once and answered with status and those headers.
func (h *harness) answer(ctx context.Context, route Route, status, limit, remaining int, reset time.Time, hash string) {
	p := h.acquire(ctx, route)
	<-p.done
	p.tk.Done(Response{Status: status, Header: h.headers(limit, remaining, reset, hash)})
}

var msgRoute = Route{Key: "POST /channels/{channel_id}/messages", Major: "1", Global: true}

func TestUnknownBucketSendsOneRequestFirstThenSeveralInFlight(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	var ps []*pendingAcquire
	for range 6 {
		ps = append(ps, h.acquire(ctx, msgRoute))
	}
	if n := granted(ps); n != 1 {
		t.Fatalf("unknown bucket: want exactly 1 request out to learn, got %d", n)
	}
	first := firstDone(ps)
	reset := h.clock.Now().Add(5 * time.Second)
	first.tk.Done(Response{Status: 200, Header: h.headers(5, 4, reset, "h1")})
	if n := granted(ps); n != 5 {
		t.Fatalf("after learning limit 5 remaining 4: want 4 more in flight together (5 granted), got %d", n)
	}
	h.clock.Advance(5*time.Second - time.Millisecond)
	if n := granted(ps); n != 5 {
		t.Fatalf("before reset: want still 5 granted, got %d", n)
	}
	h.clock.Advance(time.Millisecond)
	if n := granted(ps); n != 6 {
		t.Fatalf("at reset: want the 6th granted exactly then, got %d", n)
	}
}

func firstDone(ps []*pendingAcquire) *pendingAcquire {
	for _, p := range ps {
		select {
		case <-p.done:
			return p
		default:
		}
	}
	return nil
}

func doneOnes(ps []*pendingAcquire) []*pendingAcquire {
	var out []*pendingAcquire
	for _, p := range ps {
		select {
		case <-p.done:
			out = append(out, p)
		default:
		}
	}
	return out
}

// Answers that come back out of order never make the limiter believe in more budget than Discord has.
func TestOutOfOrderAnswersNeverOverestimate(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	var ps []*pendingAcquire
	for range 12 {
		ps = append(ps, h.acquire(ctx, msgRoute))
	}
	granted(ps)
	reset := h.clock.Now().Add(time.Second)
	firstDone(ps).tk.Done(Response{Status: 200, Header: h.headers(5, 4, reset, "h1")})
	if n := granted(ps); n != 5 {
		t.Fatalf("want 5 granted, got %d", n)
	}
	out := doneOnes(ps)[1:] // the 4 in flight; Discord processed them in order, remaining 3,2,1,0
	// Answers arrive in the order 2nd, 4th, 1st, 3rd processed.
	for _, i := range []int{1, 3, 0, 2} {
		out[i].tk.Done(Response{Status: 200, Header: h.headers(5, 3-i, reset, "h1")})
		if n := granted(ps); n != 5 {
			t.Fatalf("after answer with remaining %d: want no new grant before reset, got %d granted", 3-i, n)
		}
	}
	h.clock.Advance(time.Second)
	if n := granted(ps); n != 10 {
		t.Fatalf("at reset: want 5 more (10), got %d", n)
	}
}

// Routes Discord puts in one bucket (same X-RateLimit-Bucket hash) share its budget; the same route on
// another channel has its own.
func TestRoutesSharingAHashShareTheBudget(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	get := Route{Key: "GET /channels/{channel_id}/messages/{id}", Major: "1", Global: true}
	patch := Route{Key: "PATCH /channels/{channel_id}/messages/{id}", Major: "1", Global: true}
	reset := h.clock.Now().Add(time.Second)
	h.answer(ctx, get, 200, 3, 2, reset, "msg")
	h.answer(ctx, patch, 200, 3, 1, reset, "msg")
	// One left in the shared bucket: one of GET/PATCH goes, the other waits for the reset.
	a, b := h.acquire(ctx, get), h.acquire(ctx, patch)
	if n := granted([]*pendingAcquire{a, b}); n != 1 {
		t.Fatalf("shared bucket with 1 left: want 1 of 2 granted, got %d", n)
	}
	other := h.acquire(ctx, Route{Key: get.Key, Major: "2", Global: true})
	if n := granted([]*pendingAcquire{other}); n != 1 {
		t.Fatal("the same route on another channel waited: majors must have their own budgets")
	}
	h.clock.Advance(time.Second)
	if n := granted([]*pendingAcquire{a, b}); n != 2 {
		t.Fatalf("after reset: want both granted, got %d", n)
	}
}

func TestRouteWithoutBucketIsNotQueued(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	r := Route{Key: "GET /gateway"}
	p := h.acquire(ctx, r)
	<-p.done
	var ps []*pendingAcquire
	for range 20 {
		ps = append(ps, h.acquire(ctx, r))
	}
	if n := granted(ps); n != 0 {
		t.Fatalf("while learning: want none granted, got %d", n)
	}
	p.tk.Done(Response{Status: 200, Header: http.Header{}})
	if n := granted(ps); n != 20 {
		t.Fatalf("route without rate-limit headers: want all 20 released, got %d", n)
	}
}

func TestGlobalLimitIsASlidingWindowOfArrivals(t *testing.T) {
	h := newHarness(t, Options{GlobalRate: 4, GlobalMargin: 100 * time.Millisecond})
	ctx := context.Background()
	r := Route{Key: "GET /x", Global: true}
	a := h.acquire(ctx, r)
	<-a.done
	a.tk.Done(Response{Status: 200}) // answered at once: it arrived by t=0
	h.clock.Advance(500 * time.Millisecond)
	ps := h.acquireEach(ctx, r, 6)
	// One send at t=0, now t=0.5 s: three more fit in the window.
	if n := granted(ps); n != 3 {
		t.Fatalf("want 3 granted at t=0.5s (4 per second, one used at t=0), got %d", n)
	}
	sent := doneOnes(ps)
	h.clock.Advance(50 * time.Millisecond)
	sent[0].tk.Done(Response{Status: 200}) // answered at t=0.55; the other two not yet (bound: t=0.6)
	h.clock.Advance(451*time.Millisecond - time.Microsecond)
	if n := granted(ps); n != 3 {
		t.Fatalf("just before t=1.001s: want still 3, got %d", n)
	}
	h.clock.Advance(time.Microsecond)
	if n := granted(ps); n != 4 {
		t.Fatalf("at t=1.001s: want the slot of the t=0 send back (4), got %d", n)
	}
	h.clock.Advance(550 * time.Millisecond)
	if n := granted(ps); n != 5 {
		t.Fatalf("at t=1.551s: want the slot of the send answered at t=0.55s back (5), got %d", n)
	}
	h.clock.Advance(49 * time.Millisecond)
	if n := granted(ps); n != 5 {
		t.Fatalf("at t=1.6s: a send without an answer holds its slot until send+margin+1s (t=1.601s), got %d granted", n)
	}
	h.clock.Advance(time.Millisecond)
	if n := granted(ps); n != 6 {
		t.Fatalf("at t=1.601s: want the last one granted, got %d", n)
	}
}

// A send whose answer comes later than send+margin (a stalled send, a slow network) may have arrived as
// late as that answer: its slot is held from the receipt, not from the assumed bound.
func TestGlobalLateAnswerHoldsItsSlotFromTheReceipt(t *testing.T) {
	h := newHarness(t, Options{GlobalRate: 2, GlobalMargin: 50 * time.Millisecond})
	ctx := context.Background()
	r := Route{Key: "GET /x", Global: true}
	a := h.acquire(ctx, r)
	<-a.done
	a.tk.Done(Response{Status: 200}) // answered at once: arrived by t=0
	b := h.acquire(ctx, r)
	<-b.done
	h.clock.Advance(200 * time.Millisecond)
	b.tk.Done(Response{Status: 200}) // answered at t=0.2s, past its assumed bound of t=0.05s
	ps := []*pendingAcquire{h.acquire(ctx, r), h.acquire(ctx, r)}
	h.clock.Advance(801 * time.Millisecond)
	if n := granted(ps); n != 1 {
		t.Fatalf("at t=1.001s: want only the slot of the t=0 answer back (1), got %d", n)
	}
	h.clock.Advance(200*time.Millisecond - time.Microsecond)
	if n := granted(ps); n != 1 {
		t.Fatalf("just before t=1.201s: the late answer's slot must still be held, got %d granted", n)
	}
	h.clock.Advance(time.Microsecond)
	if n := granted(ps); n != 2 {
		t.Fatalf("at t=1.201s: want the late answer's slot back (2), got %d", n)
	}
}

func TestGlobal429PausesTheToken(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	r := Route{Key: "GET /x", Global: true}
	p := h.acquire(ctx, r)
	<-p.done
	hd := http.Header{}
	hd.Set("X-RateLimit-Global", "true")
	hd.Set("X-RateLimit-Scope", "global")
	out := p.tk.Done(Response{Status: 429, Header: hd, RetryAfter: 2 * time.Second, Global: true, JSON: true})
	if out.Scope != ScopeGlobal || !out.Invalid {
		t.Fatalf("want a global, invalid 429, got %+v", out)
	}
	other := h.acquire(ctx, Route{Key: "GET /y", Global: true})
	if n := granted([]*pendingAcquire{other}); n != 0 {
		t.Fatal("a global 429 must hold every route of the token")
	}
	exempt := h.acquire(ctx, Route{Key: "POST /interactions/{interaction_id}/{interaction_token}/callback", Major: "9/x"})
	if n := granted([]*pendingAcquire{exempt}); n != 1 {
		t.Fatal("interaction callbacks are exempt from the global limit and must not wait")
	}
	h.clock.Advance(2 * time.Second)
	if n := granted([]*pendingAcquire{other}); n != 1 {
		t.Fatal("after retry_after the token must send again")
	}
}

func TestShared429HoldsOnlyItsBucket(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	p := h.acquire(ctx, msgRoute)
	<-p.done
	reset := h.clock.Now().Add(time.Second)
	hd := h.headers(5, 4, reset, "h1")
	hd.Set("X-RateLimit-Scope", "shared")
	out := p.tk.Done(Response{Status: 429, Header: hd, RetryAfter: 3 * time.Second, JSON: true})
	if out.Scope != ScopeShared || out.Invalid {
		t.Fatalf("want a shared 429 that does not count as invalid, got %+v", out)
	}
	same := h.acquire(ctx, msgRoute)
	other := h.acquire(ctx, Route{Key: msgRoute.Key, Major: "2", Global: true})
	if n := granted([]*pendingAcquire{other}); n != 1 {
		t.Fatal("another channel must not wait for a shared 429")
	}
	h.clock.Advance(3*time.Second - time.Millisecond)
	if n := granted([]*pendingAcquire{same}); n != 0 {
		t.Fatal("the bucket must wait retry_after")
	}
	h.clock.Advance(time.Millisecond)
	if n := granted([]*pendingAcquire{same}); n != 1 {
		t.Fatal("after retry_after the bucket must go again")
	}
}

func TestInvalidRequestGuardRefusesNearTheCeiling(t *testing.T) {
	h := newHarness(t, Options{InvalidRequestLimit: 3, InvalidRequestWindow: time.Minute})
	ctx := context.Background()
	r := Route{Key: "GET /applications/{id}/commands", Global: true}
	for i := range 3 {
		tk, err := h.l.Acquire(ctx, "Bot tok", r)
		if err != nil {
			t.Fatalf("request %d refused early: %v", i, err)
		}
		tk.Done(Response{Status: 403, Header: h.headers(50, 49-i, h.clock.Now().Add(time.Second), "apps")})
		h.clock.Advance(10 * time.Second)
	}
	if _, err := h.l.Acquire(ctx, "Bot other", r); !errors.Is(err, ErrInvalidRequestBudget) {
		t.Fatalf("after 3 invalid answers with a limit of 3: want ErrInvalidRequestBudget for any token, got %v", err)
	}
	if got := h.l.Stats().InvalidRequests; got != 3 {
		t.Fatalf("want 3 invalid requests in the window, got %d", got)
	}
	h.clock.Advance(31 * time.Second) // the first one leaves the window
	if _, err := h.l.Acquire(ctx, "Bot tok", r); err != nil {
		t.Fatalf("after the oldest left the window: want the request let through, got %v", err)
	}
}

func TestDeadlineAnswersWouldWait(t *testing.T) {
	h := newHarness(t, Options{})
	h.answer(context.Background(), msgRoute, 200, 1, 0, h.clock.Now().Add(30*time.Second), "h1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	ctx2, cancel2 := context.WithDeadline(context.Background(), h.clock.Now().Add(time.Second))
	defer cancel2()
	_ = ctx
	start := time.Now()
	if _, err := h.l.Acquire(ctx2, "Bot tok", msgRoute); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("reset in 30s, deadline in 1s: want ErrWouldWait, got %v", err)
	}
	if time.Since(start) > 500*time.Millisecond {
		t.Fatal("a wait known to pass the deadline must be refused at once")
	}
}

func TestCancelledWaitersLeaveTheQueue(t *testing.T) {
	h := newHarness(t, Options{})
	h.answer(context.Background(), msgRoute, 200, 1, 0, h.clock.Now().Add(time.Second), "h1")
	ctx, cancel := context.WithCancel(context.Background())
	gone := h.acquire(ctx, msgRoute)
	stay := h.acquire(context.Background(), msgRoute)
	settle()
	if w := h.l.Stats().Waiting; w != 2 {
		t.Fatalf("want 2 waiting, got %d", w)
	}
	cancel()
	<-gone.done
	if !errors.Is(gone.err, context.Canceled) {
		t.Fatalf("cancelled waiter: got %v", gone.err)
	}
	h.clock.Advance(time.Second)
	if n := granted([]*pendingAcquire{stay}); n != 1 {
		t.Fatal("the waiter behind a cancelled one must get the slot")
	}
	if w := h.l.Stats().Waiting; w != 0 {
		t.Fatalf("want 0 waiting, got %d", w)
	}
}

func TestTokensHaveTheirOwnLimits(t *testing.T) {
	h := newHarness(t, Options{GlobalRate: 1})
	ctx := context.Background()
	r := Route{Key: "GET /x", Global: true}
	a, err := h.l.Acquire(ctx, "Bot a", r)
	if err != nil {
		t.Fatal(err)
	}
	a.Done(Response{Status: 200})
	b := h.acquireAs(ctx, "Bot a", r)
	if n := granted([]*pendingAcquire{b}); n != 0 {
		t.Fatal("token a used its 1/s: a second request must wait")
	}
	c, err := h.l.Acquire(ctx, "Bot c", r)
	if err != nil {
		t.Fatal(err)
	}
	c.Cancel()
	h.clock.Advance(2 * time.Second)
	<-b.done
}

func TestIdleStateIsReclaimed(t *testing.T) {
	h := newHarness(t, Options{IdleAfter: time.Minute})
	for i := range 100 {
		r := Route{Key: msgRoute.Key, Major: fmt.Sprint(i), Global: true}
		tk, err := h.l.Acquire(context.Background(), fmt.Sprint("Bot ", i%3), r)
		if err != nil {
			t.Fatal(err)
		}
		tk.Done(Response{Status: 200, Header: h.headers(5, 4, h.clock.Now().Add(5*time.Second), "h1")})
	}
	if s := h.l.Stats(); s.Buckets != 100 || s.Tokens != 3 {
		t.Fatalf("want 100 buckets over 3 tokens, got %+v", s)
	}
	indexed := 0
	for _, ts := range h.l.tokens {
		for _, bs := range ts.majors {
			indexed += len(bs)
		}
		if ts.temps != 0 {
			t.Fatalf("every route learned, yet %d temporary buckets counted", ts.temps)
		}
	}
	if indexed != 100 {
		t.Fatalf("%d buckets indexed by major, want 100", indexed)
	}
	h.clock.Advance(2 * time.Minute)
	h.l.Reclaim()
	if s := h.l.Stats(); s.Buckets != 0 || s.Tokens != 0 {
		t.Fatalf("after 2 idle minutes: want everything reclaimed, got %+v", s)
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	l := New(Options{GlobalRate: 100000, GlobalMargin: time.Nanosecond})
	defer l.Close()
	ctx := context.Background()
	reset := time.Now().Add(time.Hour)
	hd := http.Header{}
	hd.Set("X-RateLimit-Limit", "1000000000")
	hd.Set("X-RateLimit-Remaining", "999999999")
	hd.Set("X-RateLimit-Reset", strconv.FormatFloat(float64(reset.UnixMilli())/1000, 'f', 3, 64))
	hd.Set("X-RateLimit-Reset-After", "3600.000")
	hd.Set("X-RateLimit-Bucket", "hot")
	// The global limit is left out: it would pace the benchmark at its own rate.
	route := Route{Key: msgRoute.Key, Major: msgRoute.Major}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tk, err := l.Acquire(ctx, "Bot tok", route)
			if err != nil {
				b.Fatal(err)
			}
			tk.Done(Response{Status: 200, Header: hd})
		}
	})
}

// A channel whose first request is still out learning keeps its queue even after another channel taught
// the route's hash: a second learning request could land in the same window unseen.
func TestAMajorStillLearningKeepsItsQueue(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	chanA, chanB := msgRoute, Route{Key: msgRoute.Key, Major: "2", Global: true}
	a := h.acquire(ctx, chanA)
	b1 := h.acquire(ctx, chanB)
	<-a.done
	<-b1.done
	reset := h.clock.Now().Add(time.Second)
	a.tk.Done(Response{Status: 200, Header: h.headers(2, 1, reset, "h1")})
	b2 := h.acquire(ctx, chanB)
	if n := granted([]*pendingAcquire{b2}); n != 0 {
		t.Fatal("channel B's learning request is still out: B's next request must wait for its answer")
	}
	b1.tk.Done(Response{Status: 200, Header: h.headers(2, 1, reset, "h1")})
	if n := granted([]*pendingAcquire{b2}); n != 1 {
		t.Fatal("after B's answer (1 left) its next request must go")
	}
	b3 := h.acquire(ctx, chanB)
	if n := granted([]*pendingAcquire{b3}); n != 0 {
		t.Fatal("B's bucket is spent: the third must wait for the reset")
	}
	h.clock.Advance(time.Second)
	if n := granted([]*pendingAcquire{b3}); n != 1 {
		t.Fatal("after the reset the third must go")
	}
}

// The first request of a route not learned yet may land in a spent bucket of its channel (Discord says
// which bucket only in its answer): it waits for that bucket's reset, and then goes before the bucket's
// own queue, which would otherwise take every new window.
func TestAnUnknownRouteWaitsForASpentBucketOfItsMajor(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	known := Route{Key: "PATCH /channels/{channel_id}/messages/{id}", Major: "1", Global: true}
	unknown := Route{Key: "GET /channels/{channel_id}/messages/{id}", Major: "1", Global: true}
	h.answer(ctx, known, 200, 1, 0, h.clock.Now().Add(time.Second), "msg")
	queued := []*pendingAcquire{h.acquire(ctx, known), h.acquire(ctx, known)}
	settle()
	u := h.acquire(ctx, unknown)
	if n := granted([]*pendingAcquire{u}); n != 0 {
		t.Fatal("the channel's known bucket is spent: the unknown route's first request must wait")
	}
	h.clock.Advance(time.Second)
	if n := granted([]*pendingAcquire{u}); n != 1 {
		t.Fatal("at the reset the unknown route's first request must go")
	}
	if n := granted(queued); n != 0 {
		t.Fatalf("1 per window and the unknown route out learning: the known queue must wait, got %d granted", n)
	}
	u.tk.Done(Response{Status: 200, Header: h.headers(5, 4, h.clock.Now().Add(time.Second), "other")})
	if n := granted(queued); n != 1 {
		t.Fatalf("the unknown route has its own bucket: the known queue's first must go, got %d granted", n)
	}
}

// A bucket spent for minutes (a channel rename's window) does not hold a new route of its channel: the
// new route is unlikely to share it, and waiting that long would be worse than one retried 429.
func TestAnUnknownRouteDoesNotWaitMinutesForASibling(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	rename := Route{Key: "PATCH /channels/{channel_id}", Major: "1", Global: true}
	unknown := Route{Key: "GET /channels/{channel_id}/messages/{id}", Major: "1", Global: true}
	h.answer(ctx, rename, 200, 2, 0, h.clock.Now().Add(10*time.Minute), "rename")
	if n := granted([]*pendingAcquire{h.acquire(ctx, unknown)}); n != 1 {
		t.Fatal("the channel's spent bucket resets in 10 minutes: the unknown route must not wait for it")
	}
}

// A route whose hash dd learned on another channel is no stranger on a new one: its first request there
// does not wait for the channel's other buckets.
func TestARouteWithAKnownHashIgnoresSpentBucketsOfItsMajor(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	create := Route{Key: "POST /channels/{channel_id}/messages", Major: "1", Global: true}
	react := Route{Key: "PUT|DELETE /channels/{channel_id}/messages/{id}/reactions", Major: "2", Global: true}
	reset := h.clock.Now().Add(time.Second)
	h.answer(ctx, create, 200, 1, 0, reset, "create") // channel 1's creates: spent
	h.answer(ctx, react, 204, 1, 0, reset, "react")   // the hash of reactions, on channel 2
	react.Major = "1"
	if n := granted([]*pendingAcquire{h.acquire(ctx, react)}); n != 1 {
		t.Fatal("reactions have their own known bucket: their first request on channel 1 must go at once")
	}
}

// A route whose hash is unknown may share a bucket with a known route of the same channel; while it is
// out learning, the known bucket counts it as in flight.
func TestAnUnknownRouteLearningCountsAgainstItsMajor(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	known := Route{Key: "GET /channels/{channel_id}/messages/{id}", Major: "1", Global: true}
	unknown := Route{Key: "PATCH /channels/{channel_id}/messages/{id}", Major: "1", Global: true}
	reset := h.clock.Now().Add(time.Second)
	h.answer(ctx, known, 200, 3, 1, reset, "msg")
	u := h.acquire(ctx, unknown)
	<-u.done
	k2 := h.acquire(ctx, known)
	if n := granted([]*pendingAcquire{k2}); n != 0 {
		t.Fatal("1 left and an unknown route of the channel out learning: the known route must wait")
	}
	u.tk.Done(Response{Status: 200, Header: h.headers(5, 4, reset, "other")})
	if n := granted([]*pendingAcquire{k2}); n != 1 {
		t.Fatal("the unknown route turned out to have its own bucket: the known route's waiter must go")
	}
}

// A channel dd has not sent to yet, on a route whose bucket dd knows from other channels, is a fresh
// window of a known size: Discord lets its first `limit` requests go at once, so dd does not hold them
// behind one learning request (issue #9: the callers of a new hot channel waited for that one answer,
// however slow it was). The next ones wait for answers, then for the reset, as on any known bucket.
func TestANewChannelOfAKnownBucketDoesNotWaitForALearningRequest(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	h.answer(ctx, msgRoute, 200, 5, 4, h.clock.Now().Add(5*time.Second), "msg")
	h.clock.Advance(5 * time.Second) // the token has been in use for a whole window of the bucket

	other := Route{Key: msgRoute.Key, Major: "2", Global: true}
	ps := h.acquireEach(ctx, other, 6)
	if n := granted(ps); n != 5 {
		t.Fatalf("a new channel of a bucket known to allow 5 per window: %d granted at once, want 5", n)
	}
	reset := h.clock.Now().Add(5 * time.Second)
	done := doneOnes(ps)
	done[0].tk.Done(Response{Status: 200, Header: h.headers(5, 0, reset, "msg")})
	if n := granted(ps); n != 5 {
		t.Fatalf("Discord says 0 left: %d granted, want still 5 until the reset", n)
	}
	h.clock.Advance(5 * time.Second)
	if n := granted(ps); n != 6 {
		t.Fatalf("at the reset: %d granted, want the 6th", n)
	}
}

// Until the token has been in use for a whole window of the bucket, a new channel of it may hold
// requests dd did not see (a dd process that ran before this one, a cluster leader before a TakeOver):
// one request learns first, as on first sight.
func TestANewChannelLearnsFirstWhileTheTokenIsYoungerThanTheWindow(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := context.Background()
	h.answer(ctx, msgRoute, 200, 5, 4, h.clock.Now().Add(5*time.Second), "msg")
	h.clock.Advance(5*time.Second - time.Millisecond)

	other := Route{Key: msgRoute.Key, Major: "2", Global: true}
	ps := h.acquireEach(ctx, other, 3)
	if n := granted(ps); n != 1 {
		t.Fatalf("the token is younger than the bucket's 5 s window: %d granted, want 1 learning request", n)
	}
	doneOnes(ps)[0].tk.Done(Response{Status: 200, Header: h.headers(5, 4, h.clock.Now().Add(5*time.Second), "msg")})
	if n := granted(ps); n != 3 {
		t.Fatalf("after the learning answer (4 left): %d granted, want 3", n)
	}
}

// A bucket reclaimed after IdleAfter may have had requests charged in a window still running when that
// window is longer than IdleAfter (a failed request is charged without an answer): a new channel of such
// a hash learns first, however old the token.
func TestANewChannelLearnsFirstWhenTheWindowOutlastsIdleState(t *testing.T) {
	h := newHarness(t, Options{IdleAfter: 2 * time.Second})
	ctx := context.Background()
	h.answer(ctx, msgRoute, 200, 5, 4, h.clock.Now().Add(5*time.Second), "msg")
	h.clock.Advance(5 * time.Second)
	other := Route{Key: msgRoute.Key, Major: "2", Global: true}
	ps := h.acquireEach(ctx, other, 3)
	if n := granted(ps); n != 1 {
		t.Fatalf("a 5 s window and idle state kept 2 s: %d granted, want 1 learning request", n)
	}
}
