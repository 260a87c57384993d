package discordsim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Rate-limit scopes, as in X-RateLimit-Scope.
const (
	ScopeUser   = "user"
	ScopeGlobal = "global"
	ScopeShared = "shared"
)

// Major names the top-level resource a bucket is keyed by, besides its hash.
type Major string

const (
	MajorNone        Major = ""
	MajorChannel     Major = "channel_id"
	MajorGuild       Major = "guild_id"
	MajorWebhook     Major = "webhook_id+webhook_token"
	MajorInteraction Major = "interaction_id+interaction_token"
)

// RouteLimit is one line of the simulator's rate-limit table: what a route costs, so that tests can
// compute the fastest a correct client could go.
type RouteLimit struct {
	Route  string        `json:"route"`  // route key, e.g. "POST /channels/{channel_id}/messages"
	Bucket string        `json:"bucket"` // bucket name; routes with the same name share one budget
	Hash   string        `json:"hash"`   // the X-RateLimit-Bucket value
	Major  Major         `json:"major"`  // what the budget is per, besides the token
	Limit  int           `json:"limit"`  // requests per Window; 0 means the route has no bucket
	Window time.Duration `json:"window_ns"`
	// When says when the route uses this bucket ("" = always); message delete picks by message age.
	When string `json:"when,omitempty"`
	// Global is whether the route counts towards the per-token global limit.
	Global bool `json:"global"`
	// SharedLimit per SharedWindow is a per-resource limit shared by every client (scope "shared").
	SharedLimit  int           `json:"shared_limit,omitempty"`
	SharedWindow time.Duration `json:"shared_window_ns,omitempty"`
}

// bucketDef is one budget of the route table. Its limit can be changed at run time; a change starts
// every state of the bucket afresh (gen).
type bucketDef struct {
	name   string
	hash   string
	major  Major
	when   string
	limit  atomic.Int64
	window atomic.Int64 // nanoseconds
	gen    atomic.Uint64
}

func newBucketDef(name string, major Major, limit int, window time.Duration) *bucketDef {
	sum := sha256.Sum256([]byte("discordsim bucket " + name))
	b := &bucketDef{name: name, hash: hex.EncodeToString(sum[:16]), major: major}
	b.limit.Store(int64(limit))
	b.window.Store(int64(window))
	return b
}

func (b *bucketDef) set(limit int, window time.Duration) {
	b.limit.Store(int64(limit))
	b.window.Store(int64(window))
	b.gen.Add(1)
}

// sharedDef is a per-resource limit counted across every token (a "shared" scope 429 when exceeded).
type sharedDef struct {
	limit  atomic.Int64
	window atomic.Int64
	gen    atomic.Uint64
}

// bucketKey is a bucket's hash plus the major parameter: the unit of a per-route budget.
type bucketKey struct {
	def *bucketDef
	id  uint64
	tok string
}

// bucketState is one Discord-style window: it opens at the first request after a reset and closes
// window later.
type bucketState struct {
	resetAt int64 // mono ns
	count   int
	limit   int
	gen     uint64
}

// restLimiter holds one bot token's budgets (and one for unauthenticated requests). A single mutex per
// token keeps the global check and the bucket take atomic together, so a 429 never consumes budget.
type restLimiter struct {
	mu      sync.Mutex
	global  []int64 // ring of the times of the last N requests that counted towards the global limit
	gi      int
	buckets map[bucketKey]*bucketState
	sweepAt int
	invalid invalidCounter
}

func newRESTLimiter(globalLimit int) *restLimiter {
	return &restLimiter{global: make([]int64, globalLimit), buckets: map[bucketKey]*bucketState{}, sweepAt: 4096}
}

// rateVerdict is the outcome of admission; for an accepted request, the bucket headers to send.
type rateVerdict struct {
	scope      string // "" when admitted; otherwise the 429's scope
	retry      time.Duration
	def        *bucketDef
	limit      int
	remaining  int
	resetAfter time.Duration
}

// forcedShared is an admin order: answer the next n matching requests with a shared-scope 429.
type forcedShared struct {
	route    string // route key, "" = any
	resource uint64 // major parameter, 0 = any
	n        int
	retry    time.Duration
}

// sharedKey identifies one resource of one shared limit.
type sharedKey struct {
	def *sharedDef
	id  uint64
}

// mono is the simulator's monotonic clock in nanoseconds. It starts well above zero, so the zero value
// of a ring slot means "long ago".
func (rs *restState) mono() int64 { return int64(time.Since(rs.base)) }

// admit decides whether a request may proceed, and consumes budget only if it does. Order: the global
// limit, forced and natural shared limits, then the route's bucket.
func (rs *restState) admit(l *restLimiter, rt *restRoute, def *bucketDef, key bucketKey, resource uint64, now int64) rateVerdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	// The instant the request is counted is read under the lock, so that the global ring holds times in
	// order: a handler that stalled between its arrival and this point must not write an older time
	// after newer ones, or the ring's oldest slot would not be the oldest request.
	now = rs.mono()
	var v rateVerdict
	if rt.global {
		if old := l.global[l.gi]; now-old < int64(time.Second) {
			return rateVerdict{scope: ScopeGlobal, retry: time.Duration(old + int64(time.Second) - now)}
		}
	}
	if retry, ok := rs.takeForced(rt.key, key.id); ok {
		v = l.peek(def, key, now)
		v.scope, v.retry = ScopeShared, retry
		return v
	}
	var sk sharedKey
	if rt.shared != nil && resource != 0 {
		sk = sharedKey{rt.shared, resource}
		if retry, ok := rs.takeShared(sk, now); !ok {
			v = l.peek(def, key, now)
			v.scope, v.retry = ScopeShared, retry
			return v
		}
	}
	if def != nil {
		v = l.take(def, key, now)
		if v.scope != "" {
			if sk.def != nil {
				rs.refundShared(sk)
			}
			return v
		}
	}
	if rt.global {
		l.global[l.gi] = now
		l.gi = (l.gi + 1) % len(l.global)
	}
	return v
}

func (l *restLimiter) state(def *bucketDef, key bucketKey, now int64) *bucketState {
	st := l.buckets[key]
	if st == nil {
		if len(l.buckets) >= l.sweepAt {
			l.sweep(now)
		}
		st = &bucketState{}
		l.buckets[key] = st
	}
	if gen := def.gen.Load(); st.gen != gen {
		*st = bucketState{gen: gen}
	}
	if now >= st.resetAt {
		st.count = 0
		st.limit = int(def.limit.Load())
		st.resetAt = now + def.window.Load()
	}
	return st
}

// sweep drops states whose window is over: they are equivalent to no state at all.
func (l *restLimiter) sweep(now int64) {
	for k, st := range l.buckets {
		if now >= st.resetAt {
			delete(l.buckets, k)
		}
	}
	l.sweepAt = max(4096, 2*len(l.buckets))
}

func (l *restLimiter) take(def *bucketDef, key bucketKey, now int64) rateVerdict {
	st := l.state(def, key, now)
	v := rateVerdict{def: def, limit: st.limit, resetAfter: time.Duration(st.resetAt - now)}
	if st.count >= st.limit {
		v.scope, v.retry = ScopeUser, v.resetAfter
		return v
	}
	st.count++
	v.remaining = st.limit - st.count
	return v
}

// peek reports a bucket's state without consuming it. A bucket with no open window reports a full one.
func (l *restLimiter) peek(def *bucketDef, key bucketKey, now int64) rateVerdict {
	if def == nil {
		return rateVerdict{}
	}
	st := l.buckets[key]
	if st == nil || now >= st.resetAt || st.gen != def.gen.Load() {
		lim := int(def.limit.Load())
		return rateVerdict{def: def, limit: lim, remaining: lim, resetAfter: time.Duration(def.window.Load())}
	}
	return rateVerdict{def: def, limit: st.limit, remaining: max(0, st.limit-st.count), resetAfter: time.Duration(st.resetAt - now)}
}

func (rs *restState) takeForced(routeKey string, resource uint64) (time.Duration, bool) {
	if rs.forcedN.Load() == 0 {
		return 0, false
	}
	rs.forcedMu.Lock()
	defer rs.forcedMu.Unlock()
	for i, f := range rs.forced {
		if (f.route == "" || f.route == routeKey) && (f.resource == 0 || f.resource == resource) {
			rs.forced[i].n--
			if rs.forced[i].n <= 0 {
				rs.forced = append(rs.forced[:i], rs.forced[i+1:]...)
				rs.forcedN.Store(int64(len(rs.forced)))
			}
			return f.retry, true
		}
	}
	return 0, false
}

// sharedWindow is a fixed window of a shared limit.
type sharedWindow struct {
	resetAt int64
	count   int
	limit   int
	gen     uint64
}

func (rs *restState) takeShared(k sharedKey, now int64) (time.Duration, bool) {
	rs.sharedMu.Lock()
	defer rs.sharedMu.Unlock()
	w := rs.shared[k]
	if w == nil {
		if len(rs.shared) >= 1<<16 {
			for kk, ww := range rs.shared {
				if now >= ww.resetAt {
					delete(rs.shared, kk)
				}
			}
		}
		w = &sharedWindow{}
		rs.shared[k] = w
	}
	if gen := k.def.gen.Load(); w.gen != gen {
		*w = sharedWindow{gen: gen}
	}
	if now >= w.resetAt {
		w.count, w.limit, w.resetAt = 0, int(k.def.limit.Load()), now+k.def.window.Load()
	}
	if w.count >= w.limit {
		return time.Duration(w.resetAt - now), false
	}
	w.count++
	return 0, true
}

func (rs *restState) refundShared(k sharedKey) {
	rs.sharedMu.Lock()
	defer rs.sharedMu.Unlock()
	if w := rs.shared[k]; w != nil && w.count > 0 {
		w.count--
	}
}

// invalidCounter counts 401/403/429 answers in a sliding window and keeps the resulting ban. It only
// needs the last limit events: the count in the window reaches limit exactly when the oldest of them
// is still inside it.
type invalidCounter struct {
	times       []int64
	i           int
	bannedUntil atomic.Int64
}

// add records an invalid request; it reports whether that started a ban.
func (c *invalidCounter) add(now, window int64, limit int) bool {
	if len(c.times) < limit {
		c.times = append(c.times, now)
	} else {
		c.times[c.i] = now
		c.i = (c.i + 1) % limit
	}
	if len(c.times) < limit {
		return false
	}
	oldest := c.times[c.i%limit]
	if now-oldest >= window {
		return false
	}
	until := oldest + window
	prev := c.bannedUntil.Swap(until)
	return prev <= now
}

func (c *invalidCounter) banned(now int64) (time.Duration, bool) {
	u := c.bannedUntil.Load()
	return time.Duration(u - now), u > now
}

// ipState is the invalid-request count of one client address.
type ipState struct {
	mu sync.Mutex
	c  invalidCounter
}

func (rs *restState) ipCounter(ip string) *ipState {
	if v, ok := rs.ips.Load(ip); ok {
		return v.(*ipState)
	}
	v, _ := rs.ips.LoadOrStore(ip, &ipState{})
	return v.(*ipState)
}

// countInvalid records a 401, 403 or non-shared 429 for the client address and, when known, the token.
// A request that bans both counts as one ban.
func (rs *restState) countInvalid(ip string, l *restLimiter, now int64) {
	rs.stats.invalid.Add(1)
	window, limit := int64(rs.s.cfg.InvalidRequestWindow), rs.s.cfg.InvalidRequestLimit
	st := rs.ipCounter(ip)
	st.mu.Lock()
	ban := st.c.add(now, window, limit)
	st.mu.Unlock()
	if l != nil {
		l.mu.Lock()
		ban = l.invalid.add(now, window, limit) || ban
		l.mu.Unlock()
	}
	if ban {
		rs.stats.bans.Add(1)
	}
}

// ipBanned reports whether the client address is banned, and for how long still.
func (rs *restState) ipBanned(ip string, now int64) (time.Duration, bool) {
	if v, ok := rs.ips.Load(ip); ok {
		return v.(*ipState).c.banned(now)
	}
	return 0, false
}

// rateSecs renders a duration as Discord does in headers and retry_after: seconds with 3 decimals, rounded
// up to the millisecond so that a client waiting exactly that long is never early.
func rateSecs(d time.Duration) float64 {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return float64(ms) / 1000
}

func fmtSecs(f float64) string { return strconv.FormatFloat(f, 'f', 3, 64) }

// setBucketHeaders writes X-RateLimit-* for a bucket.
func setBucketHeaders(h http.Header, v rateVerdict) {
	if v.def == nil {
		return
	}
	after := rateSecs(v.resetAfter)
	reset := float64(time.Now().UnixMilli())/1000 + after
	h["X-Ratelimit-Limit"] = []string{strconv.Itoa(v.limit)}
	h["X-Ratelimit-Remaining"] = []string{strconv.Itoa(v.remaining)}
	h["X-Ratelimit-Reset"] = []string{fmtSecs(reset)}
	h["X-Ratelimit-Reset-After"] = []string{fmtSecs(after)}
	h["X-Ratelimit-Bucket"] = []string{v.def.hash}
}

// rateLimitBody is Discord's 429 body.
type rateLimitBody struct {
	Message    string  `json:"message"`
	RetryAfter float64 `json:"retry_after"`
	Global     bool    `json:"global"`
}

// write429 answers a rate-limited request as Discord does for its scope.
func write429(w http.ResponseWriter, v rateVerdict) {
	h := w.Header()
	retry := rateSecs(v.retry)
	h.Set("Retry-After", strconv.Itoa(int(math.Ceil(retry))))
	h.Set("X-RateLimit-Scope", v.scope)
	body := rateLimitBody{Message: "You are being rate limited.", RetryAfter: retry}
	switch v.scope {
	case ScopeGlobal:
		h.Set("X-RateLimit-Global", "true")
		body.Global = true
	case ScopeShared:
		body.Message = "The resource is being rate limited."
		setBucketHeaders(h, v)
	default:
		v.remaining = 0
		setBucketHeaders(h, v)
	}
	writeJSON(w, http.StatusTooManyRequests, body)
}

// writeBan answers as Cloudflare does for a banned client: a 429 with an HTML page, not JSON.
func writeBan(w http.ResponseWriter, d time.Duration) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=UTF-8")
	h.Set("Retry-After", strconv.Itoa(int(math.Ceil(rateSecs(d)))))
	w.WriteHeader(http.StatusTooManyRequests)
	fmt.Fprint(w, "<!DOCTYPE html>\n<html><head><title>Access denied | discord.com used Cloudflare to restrict access</title></head>\n"+
		"<body><h1>Error 1015</h1><p>You are being rate limited.</p>"+
		"<p>The owner of this website (discord.com) has banned you temporarily from accessing this website.</p></body></html>\n")
}
