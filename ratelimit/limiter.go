package ratelimit

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Errors Acquire returns instead of a Ticket.
var (
	// ErrWouldWait: the request cannot be sent before its deadline (rest.max_wait).
	ErrWouldWait = errors.New("ratelimit: the request would wait longer than allowed")
	// ErrInvalidRequestBudget: dd stopped short of Discord's invalid-request ban.
	ErrInvalidRequestBudget = errors.New("ratelimit: too many 401/403/429 answers in the last 10 minutes; dd refuses requests until the count falls, to avoid Discord's ban")
	// ErrBanned: Discord (Cloudflare) answered with its ban page; dd waits out the ban.
	ErrBanned = errors.New("ratelimit: Discord has temporarily banned this IP (Cloudflare 429); dd waits until the ban ends")
)

// Options configure a Limiter. Zero values take the defaults in their comments.
type Options struct {
	// GlobalRate is each token's global limit, in requests per second. Default 50.
	GlobalRate int
	// GlobalMargin is the longest a request is assumed to take to reach Discord once dd sends it: until
	// Discord's answer comes, a request holds its global slot from its send plus this; once it comes,
	// from its receipt (sooner or later). Default 50ms.
	GlobalMargin time.Duration
	// InvalidRequestLimit 401/403/429 answers per InvalidRequestWindow make dd refuse requests. Defaults
	// 9500 and 10 minutes (Discord bans at 10,000).
	InvalidRequestLimit  int
	InvalidRequestWindow time.Duration
	// IdleAfter is how long an unused bucket, route or token is kept. Default 10 minutes.
	IdleAfter time.Duration
	// Clock is the time source. Default: the real clock.
	Clock Clock
}

func (o Options) withDefaults() Options {
	if o.GlobalRate <= 0 {
		o.GlobalRate = 50
	}
	if o.GlobalMargin <= 0 {
		o.GlobalMargin = 50 * time.Millisecond
	}
	if o.InvalidRequestLimit <= 0 {
		o.InvalidRequestLimit = 9500
	}
	if o.InvalidRequestWindow <= 0 {
		o.InvalidRequestWindow = InvalidRequestWindow
	}
	if o.IdleAfter <= 0 {
		o.IdleAfter = 10 * time.Minute
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	return o
}

// Limiter keeps the rate limits of every token dd sends with. It is safe for concurrent use.
type Limiter struct {
	o     Options
	clock Clock
	guard *guard

	seed   maphash.Seed
	mu     sync.Mutex
	tokens map[uint64]*tokenState // by a keyed hash of the identity: tokens are not kept in clear

	takenOver time.Time // TakeOverAll: tokens first seen within a global window of it start spent

	waiting atomic.Int64 // requests waiting in bucket and global queues
	stop    chan struct{}
	stopped sync.Once
}

// tokenState is one token's routes, buckets and global limit.
type tokenState struct {
	mu       sync.Mutex
	routes   map[string]*routeState
	buckets  map[bucketKey]*bucket
	majors   map[string][]*bucket // the same buckets by major parameter: a major's are checked and woken together
	temps    int                  // how many of them are temporary (their route's hash not learned yet)
	learning map[string]int       // learning requests of routes with an unknown hash, by major parameter
	hashes   map[string]*hashInfo // what the live buckets of each hash taught (see bucketFor)
	global   *globalLimiter
	born     time.Time     // since when this state has seen every request of the token (first use or TakeOver)
	idleA    time.Duration // Options.IdleAfter
	lastUsed time.Time
	dead     bool // reclaimed: look the token up again
}

// hashInfo is what dd knows of one bucket hash across its major parameters: Discord gives every channel
// (guild, webhook) of a hash its own budget of the same size.
type hashInfo struct {
	buckets   int           // live buckets of the hash (not temporary ones)
	limit     int           // the last X-RateLimit-Limit seen; 0 until one is
	windowLen time.Duration // the longest reset-after seen: about the window's length
}

// routeState is what has been learned about a route key.
type routeState struct {
	hash     string // X-RateLimit-Bucket, "" until learned
	none     bool   // Discord sends no rate-limit headers for this route
	lastUsed time.Time
}

// New returns a Limiter; Close stops its reclaiming of idle state.
func New(o Options) *Limiter {
	o = o.withDefaults()
	l := &Limiter{o: o, clock: o.Clock, guard: newGuard(o.InvalidRequestLimit, o.InvalidRequestWindow),
		seed: maphash.MakeSeed(), tokens: map[uint64]*tokenState{}, stop: make(chan struct{})}
	go l.reclaimLoop()
	return l
}

// Close stops the background reclaiming. Requests in progress are not affected.
func (l *Limiter) Close() { l.stopped.Do(func() { close(l.stop) }) }

// Ticket is the permission to send one attempt. Exactly one of Done, Failed or Cancel must be called.
type Ticket struct {
	l       *Limiter
	ts      *tokenState
	b       *bucket // nil: the route has no bucket
	route   Route
	slot    globalSlot
	hasSlot bool
}

// Acquire waits until a request on route may be sent with the token identified by identity (the
// Authorization value dd sends upstream; it is kept only as a hash), in FIFO order per bucket, then
// within the token's global limit. It returns ErrWouldWait when ctx's deadline comes first (or surely
// will), ErrInvalidRequestBudget or ErrBanned when dd must not send at all, or ctx's error.
func (l *Limiter) Acquire(ctx context.Context, identity string, route Route) (*Ticket, error) {
	now := l.clock.Now()
	if err, _ := l.guard.blocked(now); err != nil {
		return nil, err
	}
	ts := l.token(identity)
	t := &Ticket{l: l, ts: ts, route: route}

	b := ts.bucketFor(route, now)
	if b != nil {
		b.roll(now)
		if b.queue.live == 0 && b.avail(now) > 0 {
			b.take()
			ts.mu.Unlock()
		} else {
			if dl, ok := ctx.Deadline(); ok {
				if at := b.blockedUntil(now); !at.IsZero() && at.After(dl) {
					ts.mu.Unlock()
					return nil, ErrWouldWait
				}
			}
			w := newWaiter(b)
			b.queue.push(w)
			l.waiting.Add(1)
			l.pump(b, now)
			ts.mu.Unlock()
			if err := l.wait(ctx, ts, w); err != nil {
				return nil, err
			}
			b = w.b
		}
	} else {
		ts.mu.Unlock()
	}
	t.b = b

	if route.Global {
		slot, err := ts.global.acquire(ctx)
		if err != nil {
			t.Cancel()
			return nil, err
		}
		t.slot, t.hasSlot = slot, true
	}
	if err, _ := l.guard.blocked(l.clock.Now()); err != nil {
		t.Cancel()
		return nil, err
	}
	return t, nil
}

// wait blocks until w is granted or ctx ends.
func (l *Limiter) wait(ctx context.Context, ts *tokenState, w *waiter) error {
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if w.granted {
		return nil
	}
	w.cancelled = true
	w.b.queue.live--
	l.waiting.Add(-1)
	return waitError(ctx)
}

func waitError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ErrWouldWait
	}
	return ctx.Err()
}

// token returns the token's state with its mutex held.
func (l *Limiter) token(identity string) *tokenState {
	key := maphash.String(l.seed, identity)
	for {
		l.mu.Lock()
		ts := l.tokens[key]
		if ts == nil {
			var spent time.Time
			if now := l.clock.Now(); !l.takenOver.IsZero() && now.Sub(l.takenOver) < globalWindow {
				spent = l.takenOver
			}
			ts = l.newToken(spent, l.clock.Now())
			l.tokens[key] = ts
		}
		l.mu.Unlock()
		ts.mu.Lock()
		if !ts.dead {
			return ts
		}
		ts.mu.Unlock()
	}
}

func (l *Limiter) newToken(spent, now time.Time) *tokenState {
	return &tokenState{routes: map[string]*routeState{}, buckets: map[bucketKey]*bucket{}, majors: map[string][]*bucket{},
		learning: map[string]int{}, hashes: map[string]*hashInfo{}, born: now, idleA: l.o.IdleAfter,
		global: newGlobalLimiter(l.clock, l.o.GlobalRate, l.o.GlobalMargin, func(d int) { l.waiting.Add(int64(d)) }, spent)}
}

// TakeOver forgets what the limiter knows of identity's limits, for a process that starts sending with a
// token another process was sending with until now (cluster mode's new leader): its buckets are learned
// again as on first sight, and its global budget counts as spent just now, so that nothing is sent until
// a full global window has passed (the previous sender may have spent it in its last second). Requests
// already waiting keep the state they waited in.
func (l *Limiter) TakeOver(identity string) {
	key := maphash.String(l.seed, identity)
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if old := l.tokens[key]; old != nil {
		old.mu.Lock()
		old.dead = true
		old.mu.Unlock()
	}
	l.tokens[key] = l.newToken(now, now)
}

// TakeOverAll is TakeOver for every token, those seen so far and those first seen within the next global
// window.
func (l *Limiter) TakeOverAll() {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, ts := range l.tokens {
		ts.mu.Lock()
		ts.dead = true
		ts.mu.Unlock()
		delete(l.tokens, key)
	}
	l.takenOver = now
}

// bucketFor returns the bucket a request on route waits in, nil when the route has none.
func (ts *tokenState) bucketFor(r Route, now time.Time) *bucket {
	ts.lastUsed = now
	rs := ts.routes[r.Key]
	if rs == nil {
		rs = &routeState{}
		ts.routes[r.Key] = rs
	}
	rs.lastUsed = now
	if rs.none {
		return nil
	}
	temp := bucketKey{hash: r.Key, major: r.Major, temp: true}
	key := temp
	if rs.hash != "" {
		key = bucketKey{hash: rs.hash, major: r.Major}
		// Until its own answer arrives, a temporary bucket of this major keeps the requests in order
		// and its learning request counted.
		if tb := ts.buckets[temp]; tb != nil {
			key = temp
		}
	}
	b := ts.buckets[key]
	if b == nil {
		b = &bucket{key: key, owner: ts}
		if !key.temp {
			ts.startFresh(b, now)
		}
		ts.add(b)
	}
	b.lastUsed = now
	return b
}

// startFresh gives a new bucket of a known hash (a channel dd has not sent to on a route it knows from
// other channels) the state of a window that has just rolled: the hash's limit, all of it available,
// the window pinned by the first answer. Discord gives each major parameter of a hash its own budget of
// that size, so nothing asks the first requests to wait for one of them to come back; holding them
// behind one learning request made every caller of a new hot channel wait as long as that one answer
// took (issue #9).
//
// Only budget spent by requests dd did not see can make this wrong: those of a process that sent with
// the token before this state existed (a dd restart, a cluster leader before TakeOver). Once the token
// has been in use here for a whole window of the hash they all count in windows that are over; until
// then, and for a window longer than a reclaimed bucket's idle time, one request learns first as on
// first sight.
func (ts *tokenState) startFresh(b *bucket, now time.Time) {
	hi := ts.hashes[b.key.hash]
	if hi == nil || hi.limit <= 0 || hi.windowLen <= 0 || now.Sub(ts.born) < hi.windowLen || hi.windowLen > ts.idleA {
		return
	}
	b.state = stateLimited
	b.limit, b.minSeen, b.windowLen = hi.limit, hi.limit, hi.windowLen
}

// noteHash records what a bucket's answer taught about its hash. Called with the token's mutex held.
func (ts *tokenState) noteHash(b *bucket) {
	if b.key.temp || b.state != stateLimited {
		return
	}
	if hi := ts.hashes[b.key.hash]; hi != nil {
		hi.limit = b.limit
		hi.windowLen = max(hi.windowLen, b.windowLen)
	}
}

// pump grants every waiter the bucket allows now, and arms a timer for the instant it next allows one
// when no answer from Discord will. Called with the token's mutex held.
func (l *Limiter) pump(b *bucket, now time.Time) {
	b.roll(now)
	if !b.key.temp && b.owner.temps > 0 {
		// A route of this major not learned yet may be waiting for this bucket's budget (see spentSibling).
		// It goes first: a busy bucket would otherwise take every new window and starve it.
		for _, o := range b.owner.majors[b.key.major] {
			if o.key.temp && o.state == stateUnknown && !o.learning && o.queue.live > 0 {
				l.pump(o, now)
			}
		}
	}
	for b.queue.live > 0 && b.avail(now) > 0 {
		w := b.queue.pop()
		b.take()
		w.grant()
		l.waiting.Add(-1)
	}
	if b.queue.live == 0 {
		return
	}
	at := b.blockedUntil(now)
	if at.IsZero() || (b.timer != nil && b.timerAt.Equal(at)) {
		return
	}
	if b.timer != nil {
		b.timer.Stop()
	}
	ts := b.owner
	b.timerAt = at
	b.timer = l.clock.AfterFunc(at.Sub(now), func() {
		ts.mu.Lock()
		b.timer = nil
		l.pump(b, l.clock.Now())
		ts.mu.Unlock()
	})
}

// Outcome is what the limiter made of an answer.
type Outcome struct {
	// Scope is set for a 429: ScopeUser, ScopeGlobal, ScopeShared or ScopeBan.
	Scope string
	// RetryAfter is how long Discord asked to wait (for a 429). The next Acquire on the route already
	// waits for it.
	RetryAfter time.Duration
	// Invalid says whether the answer counts towards Discord's invalid-request ban.
	Invalid bool
}

// Done reports Discord's answer to the attempt: the limiter learns the route's bucket from its headers,
// and for a 429 holds the bucket (or every request of the token, or of dd, for a global 429 or a ban)
// for retry_after.
func (t *Ticket) Done(resp Response) Outcome {
	l, ts := t.l, t.ts
	now := l.clock.Now()
	if t.hasSlot {
		ts.global.settle(t.slot, now)
	}
	h := parseRateHeaders(resp.Header)
	var out Outcome
	if resp.Status == 429 {
		out.RetryAfter = resp.RetryAfter
		if out.RetryAfter <= 0 {
			out.RetryAfter = max(h.retryAfter, h.resetAfter)
		}
		switch {
		case h.scope == ScopeShared:
			out.Scope = ScopeShared
		case h.scope == ScopeGlobal || h.global || resp.Global:
			out.Scope = ScopeGlobal
		case h.scope == "" && !resp.JSON && !h.hasLimit:
			out.Scope = ScopeBan
		default:
			out.Scope = ScopeUser
		}
	}
	out.Invalid = resp.Status == 401 || resp.Status == 403 || (resp.Status == 429 && out.Scope != ScopeShared)
	if out.Invalid {
		l.guard.add(now)
	}
	switch out.Scope {
	case ScopeGlobal:
		ts.global.pause(now.Add(out.RetryAfter))
	case ScopeBan:
		l.guard.ban(now.Add(max(out.RetryAfter, time.Second)))
	}

	ts.mu.Lock()
	defer ts.mu.Unlock()
	rs := ts.routes[t.route.Key]
	if rs == nil { // reclaimed while in flight (cannot happen while the ticket holds a bucket)
		rs = &routeState{lastUsed: now}
		ts.routes[t.route.Key] = rs
	}
	learned := t.b != nil && t.b.key.temp && t.b.learning
	if t.b != nil {
		t.b.release(false)
	}
	var target *bucket
	switch {
	case h.bucket != "" && h.hasLimit:
		rs.none, rs.hash = false, h.bucket
		target = ts.learn(t.b, bucketKey{hash: h.bucket, major: t.route.Major}, now)
	case h.hasLimit:
		rs.none = false // limits without a hash: keep them under the route's own key
		target = t.b
		if target == nil {
			target = ts.bucketFor(t.route, now)
		}
	case resp.Status >= 200 && resp.Status < 300 && rs.hash == "":
		rs.none = true
		if t.b != nil {
			ts.unlimit(l, t.b)
		}
	default:
		target = t.b // nothing learned (an error without headers, a global 429)
	}
	if target != nil && out.Scope != ScopeGlobal && out.Scope != ScopeBan {
		target.observe(h, now)
		if out.Scope == ScopeUser || out.Scope == ScopeShared {
			if p := now.Add(out.RetryAfter); p.After(target.pausedUntil) {
				target.pausedUntil = p
			}
		}
		target.lastUsed = now
		if h.hasLimit {
			ts.noteHash(target)
		}
	}
	if target != nil {
		l.pump(target, now)
	}
	if t.b != nil && t.b != target {
		l.pump(t.b, now)
	}
	if learned {
		ts.pumpMajor(l, t.route.Major, now)
	}
	return out
}

// learn moves what waited under a route's temporary bucket to the bucket Discord named. Called with the
// token's mutex held.
func (ts *tokenState) learn(from *bucket, key bucketKey, now time.Time) *bucket {
	to := ts.buckets[key]
	if to == from && to != nil {
		return to
	}
	if to == nil && from != nil && from.key.temp && from.state == stateUnknown && !from.learning {
		// Re-key the temporary bucket: its waiters carry over in order.
		ts.remove(from)
		from.key = key
		ts.add(from)
		return from
	}
	if to == nil {
		to = &bucket{key: key, owner: ts, lastUsed: now}
		ts.add(to)
	}
	if from != nil && from.key.temp {
		for _, w := range from.queue.drain() {
			w.b = to
			to.queue.push(w)
		}
		if from.timer != nil {
			from.timer.Stop()
			from.timer = nil
		}
		if !from.learning && from.pending == 0 {
			ts.remove(from)
		}
	}
	return to
}

// unlimit lets every request waiting for a route without a bucket go (they still keep the global limit).
func (ts *tokenState) unlimit(l *Limiter, b *bucket) {
	for _, w := range b.queue.drain() {
		w.b = nil
		w.grant()
		l.waiting.Add(-1)
	}
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if b.key.temp && !b.learning && b.pending == 0 {
		ts.remove(b)
	}
}

// Failed reports that the attempt got no answer (a network error): it may have reached Discord, so it
// stays charged to its bucket.
func (t *Ticket) Failed() { t.finish(true) }

// Cancel reports that the attempt was not sent after all.
func (t *Ticket) Cancel() { t.finish(false) }

func (t *Ticket) finish(consumed bool) {
	now := t.l.clock.Now()
	if t.hasSlot {
		t.ts.global.settle(t.slot, now)
	}
	if t.b == nil {
		return
	}
	t.ts.mu.Lock()
	learned := t.b.key.temp && t.b.learning
	t.b.release(consumed)
	t.l.pump(t.b, now)
	if learned {
		t.ts.pumpMajor(t.l, t.route.Major, now)
	}
	t.ts.mu.Unlock()
}

// pumpMajor wakes the buckets of a major parameter after a learning request of an unknown route
// returned: they counted it as in flight. Called with the token's mutex held.
func (ts *tokenState) pumpMajor(l *Limiter, major string, now time.Time) {
	for _, b := range ts.majors[major] {
		if b.queue.live > 0 {
			l.pump(b, now)
		}
	}
}

// add registers a new bucket. Called with the token's mutex held.
func (ts *tokenState) add(b *bucket) {
	ts.buckets[b.key] = b
	if b.key.temp {
		ts.temps++
	} else {
		hi := ts.hashes[b.key.hash]
		if hi == nil {
			hi = &hashInfo{}
			ts.hashes[b.key.hash] = hi
		}
		hi.buckets++
	}
	ts.majors[b.key.major] = append(ts.majors[b.key.major], b)
}

// remove forgets a bucket. Called with the token's mutex held.
func (ts *tokenState) remove(b *bucket) {
	delete(ts.buckets, b.key)
	if b.key.temp {
		ts.temps--
	} else if hi := ts.hashes[b.key.hash]; hi != nil {
		if hi.buckets--; hi.buckets <= 0 {
			delete(ts.hashes, b.key.hash)
		}
	}
	bs := ts.majors[b.key.major]
	for i, o := range bs {
		if o == b {
			bs[i] = bs[len(bs)-1]
			bs[len(bs)-1] = nil
			bs = bs[:len(bs)-1]
			break
		}
	}
	if len(bs) == 0 {
		delete(ts.majors, b.key.major)
	} else {
		ts.majors[b.key.major] = bs
	}
}

// Stats is a snapshot for metrics.
type Stats struct {
	Waiting         int64 // requests waiting in bucket and global queues
	InvalidRequests int   // 401/403/429 answers in the sliding window
	InvalidTotal    int64 // since start
	Tokens          int
	Buckets         int
}

// Stats returns the limiter's current figures.
func (l *Limiter) Stats() Stats {
	now := l.clock.Now()
	s := Stats{Waiting: l.waiting.Load(), InvalidRequests: l.guard.count(now)}
	l.guard.mu.Lock()
	s.InvalidTotal = l.guard.total
	l.guard.mu.Unlock()
	l.mu.Lock()
	tokens := make([]*tokenState, 0, len(l.tokens))
	for _, ts := range l.tokens {
		tokens = append(tokens, ts)
	}
	l.mu.Unlock()
	s.Tokens = len(tokens)
	for _, ts := range tokens {
		ts.mu.Lock()
		s.Buckets += len(ts.buckets)
		ts.mu.Unlock()
	}
	return s
}

// reclaimLoop drops idle buckets, routes and tokens, so that memory follows the live working set.
func (l *Limiter) reclaimLoop() {
	every := max(l.o.IdleAfter/2, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.Reclaim()
		}
	}
}

// Reclaim drops state unused for IdleAfter now (it also runs on its own in the background).
func (l *Limiter) Reclaim() {
	now := l.clock.Now()
	after := l.o.IdleAfter
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, ts := range l.tokens {
		ts.mu.Lock()
		for _, b := range ts.buckets {
			if b.idle(now, after) {
				ts.remove(b)
			}
		}
		for k, rs := range ts.routes {
			if now.Sub(rs.lastUsed) > after {
				delete(ts.routes, k)
			}
		}
		if len(ts.buckets) == 0 && len(ts.routes) == 0 && now.Sub(ts.lastUsed) > after && ts.global.idle(now) {
			ts.dead = true
			delete(l.tokens, key)
		}
		ts.mu.Unlock()
	}
}
