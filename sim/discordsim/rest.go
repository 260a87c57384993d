package discordsim

// The REST side: /api/v{6..10}/... and /api/... (default version), with Discord's auth, per-route
// buckets, global limit, shared-scope limits and invalid-request bans (rest_ratelimit.go), the route
// table and its handlers (rest_routes.go), and what tests read back: stats and a request log.
//

// Admin endpoints (no auth; bodies and answers are JSON):
//

//	GET  /_sim/rest/stats                 RESTStats
//	GET  /_sim/rest/requests[?after=SEQ]  []RecordedRequest, oldest first (only those with seq > SEQ)
//	POST /_sim/rest/reset                 ResetRESTStats: counters and request log
//	POST /_sim/rest/reset-limits          ResetRESTLimits: every budget, ban and forced 429 starts afresh
//	GET  /_sim/rest/limits                []RouteLimit, current values (windows in nanoseconds)
//	POST /_sim/rest/limits                {"route": "<route key, bucket name or hash>", "limit": N, "window_ns": D}
//	POST /_sim/rest/shared-limits         {"route": "<route key>", "limit": N, "window_ns": D}
//	POST /_sim/rest/shared429             {"route": "<route key or empty>", "resource": "<major id or empty>",
//	                                       "count": N, "retry_after": <seconds>}
//	POST /_sim/rest/upload-limit          {"bytes": N}
//	POST /_sim/rest/latency               {"latency_ns": D, "next_extra_ns": E}: SetRESTLatency, from the next
//	                                       answer on; E, when set, is added to the next answer only
//	POST /_sim/rest/omit-headers          {"headers": ["X-RateLimit-Remaining", ...]}: OmitRateLimitHeaders
//

// Route keys are "METHOD /pattern", e.g. "POST /channels/{channel_id}/messages"; see DefaultRouteLimits.
//
// Messages are not stored, so memory stays flat under load: any message ID is accepted unless it cannot
// exist yet (a snowflake from the future: 10008 Unknown Message). Interactions are not stored either:
// a callback is accepted once, within 3 s of the interaction ID's timestamp (10062 after), so whoever
// dispatches INTERACTION_CREATE must mint the ID from the current time.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RequestLogSize is how many requests the REST request log keeps (the most recent).
const RequestLogSize = 100_000

// restState is the REST side's state: budgets per token, what tests read back, and the few objects
// that REST creates (DM channels, webhooks, answered interactions, application commands).
type restState struct {
	s           *Server
	base        time.Time // zero of mono()
	table       *restRouteTable
	limiters    []*restLimiter // one per token; the last one for requests without a bot token
	uploadLimit atomic.Int64
	idSeq       atomic.Uint64
	latency     atomic.Int64             // nanoseconds added to every answer (Config.RESTLatency, SetRESTLatency)
	nextExtra   atomic.Int64             // nanoseconds added to the next answer only (SlowNextRESTAnswer)
	omit        atomic.Pointer[[]string] // X-RateLimit-* headers left out of answers (OmitRateLimitHeaders)

	forcedMu sync.Mutex
	forced   []forcedShared
	forcedN  atomic.Int64
	sharedMu sync.Mutex
	shared   map[sharedKey]*sharedWindow
	ips      sync.Map // client IP -> *ipState

	stats   restCounters
	logMu   sync.Mutex
	log     []RecordedRequest // a ring once full; logNext is then its oldest entry
	logNext int
	seq     uint64

	objMu         sync.RWMutex
	dms           map[uint64]uint64 // recipient -> DM channel
	dmRecipients  map[uint64]uint64 // DM channel -> recipient
	hooks         map[uint64]restWebhook
	hookCount     map[uint64]int // per channel
	answered      map[uint64]struct{}
	answeredOrder []uint64 // ring bounding answered
	answeredNext  int
	cmds          map[cmdScope][]map[string]any
}

type cmdScope struct {
	tok   int
	guild uint64
}

// restCounters are the live counters behind RESTStats.
type restCounters struct {
	requests       atomic.Int64
	byRoute        []atomic.Int64 // by route index; the last one for unmatched paths
	byStatus       [600]atomic.Int64
	byToken        []atomic.Int64
	user429        atomic.Int64
	global429      atomic.Int64
	shared429      atomic.Int64
	unauthorized   atomic.Int64
	forbidden      atomic.Int64
	invalid        atomic.Int64
	bans           atomic.Int64
	banned         atomic.Int64
	noUserAgent    atomic.Int64
	unknownWebhook atomic.Int64
	tooLarge       atomic.Int64
	userAgents     sync.Map // string -> *atomic.Int64
	userAgentsN    atomic.Int64
}

func newRESTState(s *Server) *restState {
	rs := &restState{s: s, base: time.Now().Add(-time.Hour), table: newRESTRouteTable(),
		shared: map[sharedKey]*sharedWindow{}, dms: map[uint64]uint64{}, dmRecipients: map[uint64]uint64{},
		hooks: map[uint64]restWebhook{}, hookCount: map[uint64]int{}, answered: map[uint64]struct{}{},
		cmds: map[cmdScope][]map[string]any{}}
	for range len(s.cfg.Tokens) + 1 {
		rs.limiters = append(rs.limiters, newRESTLimiter(s.cfg.GlobalRateLimit))
	}
	rs.uploadLimit.Store(DefaultUploadLimit)
	rs.latency.Store(int64(s.cfg.RESTLatency))
	rs.stats.byRoute = make([]atomic.Int64, len(rs.table.routes)+1)
	rs.stats.byToken = make([]atomic.Int64, len(s.cfg.Tokens))
	return rs
}

func (s *Server) registerREST(mux *http.ServeMux) {
	mux.HandleFunc("/api/", s.rest.serveAPI)
	mux.HandleFunc("/_sim/rest/", s.rest.serveAdmin)
}

// newID mints a snowflake for now; 22 bits of sequence keep IDs unique within a millisecond.
func (rs *restState) newID() uint64 {
	return uint64(time.Now().UnixMilli()-DiscordEpoch)<<22 | rs.idSeq.Add(1)&(1<<22-1)
}

// restBufWriter holds the response until the simulated latency has passed.
type restBufWriter struct {
	w      http.ResponseWriter
	status int
	buf    bytes.Buffer
}

var restBufWriters = sync.Pool{New: func() any { return new(restBufWriter) }}

func (b *restBufWriter) Header() http.Header { return b.w.Header() }

func (b *restBufWriter) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *restBufWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.buf.Write(p)
}

func (b *restBufWriter) code() int {
	if b.status == 0 {
		return http.StatusOK
	}
	return b.status
}

func (b *restBufWriter) flush() {
	if b.status != http.StatusNoContent {
		b.w.Header().Set("Content-Length", strconv.Itoa(b.buf.Len()))
	}
	b.w.WriteHeader(b.code())
	_, _ = b.w.Write(b.buf.Bytes())
}

// serveAPI is the single entry of every Discord REST request.
func (rs *restState) serveAPI(w http.ResponseWriter, r *http.Request) {
	arrival := time.Now()
	now := rs.mono()
	bw := restBufWriters.Get().(*restBufWriter)
	bw.w, bw.status = w, 0
	bw.buf.Reset()
	defer func() {
		if bw.buf.Cap() <= 64<<10 {
			bw.w = nil
			restBufWriters.Put(bw)
		}
	}()
	body := &bodyReader{r: r.Body, limit: rs.uploadLimit.Load()}
	c := &restReq{rs: rs, w: bw, r: r, body: body, tok: -1}
	rec := RecordedRequest{Time: arrival, Method: r.Method, Path: r.URL.RequestURI(), TokenIndex: -1,
		ContentType: r.Header.Get("Content-Type"), AuditLogReason: r.Header.Get("X-Audit-Log-Reason"),
		UserAgent: r.Header.Get("User-Agent")}
	ip := clientIP(r)

	rs.dispatch(c, ip, now, &rec)

	rec.BodySize, rec.BodySHA256 = body.finish()
	rec.Status = bw.code()
	rec.Bucket = w.Header().Get("X-RateLimit-Bucket")
	rec.TokenIndex = c.tok
	var tl *restLimiter
	if c.tok >= 0 {
		tl = rs.limiters[c.tok]
		rs.stats.byToken[c.tok].Add(1)
	}
	switch rec.Status {
	case http.StatusUnauthorized:
		rs.stats.unauthorized.Add(1)
		rs.countInvalid(ip, tl, now)
	case http.StatusForbidden:
		rs.stats.forbidden.Add(1)
		rs.countInvalid(ip, tl, now)
	case http.StatusTooManyRequests:
		if rec.Scope == ScopeUser || rec.Scope == ScopeGlobal {
			rs.countInvalid(ip, tl, now)
		}
	}
	rs.stats.requests.Add(1)
	rs.stats.byStatus[min(rec.Status, len(rs.stats.byStatus)-1)].Add(1)
	rs.countUserAgent(rec.UserAgent)
	rs.record(&rec)

	d := time.Duration(rs.latency.Load())
	if rs.nextExtra.Load() > 0 {
		d += time.Duration(rs.nextExtra.Swap(0))
	}
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	bw.flush()
}

// dispatch runs Discord's checks in order: ban, client, path, auth, rate limits, resource, handler.
func (rs *restState) dispatch(c *restReq, ip string, now int64, rec *RecordedRequest) {
	if d, b := rs.ipBanned(ip, now); b {
		rs.answerBan(c, d, rec)
		return
	}
	// Cloudflare turns away requests without a bot-like User-Agent, with a JSON 403.
	if ua := rec.UserAgent; ua == "" || strings.HasPrefix(ua, "Mozilla/") {
		if ua == "" {
			rs.stats.noUserAgent.Add(1)
		}
		writeError(c.w, http.StatusForbidden, 40333, "internal network error")
		return
	}
	if c.r.ContentLength > c.body.limit {
		c.bodyError(errTooLarge)
		return
	}
	segs, ok := apiSegments(c.r.URL.EscapedPath())
	var rt *restRoute
	var pat *restRoutePattern
	if ok {
		rt, pat = rs.table.match(c.r.Method, segs)
	}
	if rt == nil {
		rs.stats.byRoute[len(rs.table.routes)].Add(1)
		if pat != nil {
			writeError(c.w, http.StatusMethodNotAllowed, 0, "405: Method Not Allowed")
		} else {
			writeError(c.w, http.StatusNotFound, 0, "404: Not Found")
		}
		return
	}
	c.rt, rec.Route = rt, rt.key
	rs.stats.byRoute[rt.idx].Add(1)
	if auth := c.r.Header.Get("Authorization"); strings.HasPrefix(auth, "Bot ") {
		c.tok = rs.s.tokenIndex(auth[len("Bot "):])
	}
	l := rs.limiters[len(rs.limiters)-1]
	if rt.auth {
		if c.tok < 0 {
			writeError(c.w, http.StatusUnauthorized, 0, "401: Unauthorized")
			return
		}
		l = rs.limiters[c.tok]
		if d, b := l.invalid.banned(now); b {
			rs.answerBan(c, d, rec)
			return
		}
	}
	if !c.parseParams(segs) {
		return
	}
	var def *bucketDef
	if rt.pick != nil {
		def = rt.pick(c)
	} else if len(rt.buckets) > 0 {
		def = rt.buckets[0]
	}
	var key bucketKey
	if def != nil {
		key = c.major(def)
	}
	var resource uint64
	if rt.sharedResource != nil {
		resource = rt.sharedResource(c)
	}
	v := rs.admit(l, rt, def, key, resource, now)
	if v.scope != "" {
		switch v.scope {
		case ScopeUser:
			rs.stats.user429.Add(1)
		case ScopeGlobal:
			rs.stats.global429.Add(1)
		case ScopeShared:
			rs.stats.shared429.Add(1)
		}
		rec.Scope = v.scope
		write429(c.w, v)
		return
	}
	setBucketHeaders(c.w.Header(), v)
	if omit := rs.omit.Load(); omit != nil {
		for _, k := range *omit {
			c.w.Header().Del(k)
		}
	}
	if c.exists() {
		rt.handle(c)
	}
}

func (rs *restState) answerBan(c *restReq, d time.Duration, rec *RecordedRequest) {
	rs.stats.banned.Add(1)
	rec.Scope = "ban"
	writeBan(c.w, d)
}

// apiSegments strips /api and an optional /v{6..10} and returns the unescaped path segments.
func apiSegments(p string) ([]string, bool) {
	rest, ok := strings.CutPrefix(p, "/api/")
	if !ok {
		return nil, false
	}
	if len(rest) > 1 && rest[0] == 'v' && rest[1] >= '0' && rest[1] <= '9' {
		v, tail, _ := strings.Cut(rest[1:], "/")
		n, err := strconv.Atoi(v)
		if err != nil || n < 6 || n > 10 {
			return nil, false
		}
		rest = tail
	}
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		if strings.IndexByte(s, '%') >= 0 {
			u, err := url.PathUnescape(s)
			if err != nil {
				return nil, false
			}
			segs[i] = u
		}
	}
	return segs, true
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (rs *restState) countUserAgent(ua string) {
	if v, ok := rs.stats.userAgents.Load(ua); ok {
		v.(*atomic.Int64).Add(1)
		return
	}
	if rs.stats.userAgentsN.Load() >= 1000 { // bound the set against a client that varies it
		ua = "(other)"
	}
	v, loaded := rs.stats.userAgents.LoadOrStore(ua, new(atomic.Int64))
	if !loaded {
		rs.stats.userAgentsN.Add(1)
	}
	v.(*atomic.Int64).Add(1)
}

// RecordedRequest is one REST request as the simulator received it.
type RecordedRequest struct {
	Seq            uint64    `json:"seq"`
	Time           time.Time `json:"time"` // arrival
	Method         string    `json:"method"`
	Path           string    `json:"path"`  // path and query, as sent
	Route          string    `json:"route"` // route key; "" when no route matched
	TokenIndex     int       `json:"token_index"`
	ContentType    string    `json:"content_type"`
	BodySize       int64     `json:"body_size"`
	BodySHA256     string    `json:"body_sha256"` // hex; of the bytes read, when the body was over the limit
	AuditLogReason string    `json:"audit_log_reason,omitempty"`
	UserAgent      string    `json:"user_agent"`
	Status         int       `json:"status"`
	Scope          string    `json:"scope,omitempty"`  // for a 429: user, global, shared or ban
	Bucket         string    `json:"bucket,omitempty"` // X-RateLimit-Bucket sent
}

func (rs *restState) record(rec *RecordedRequest) {
	rs.logMu.Lock()
	rs.seq++
	rec.Seq = rs.seq
	if len(rs.log) < RequestLogSize {
		rs.log = append(rs.log, *rec)
	} else {
		rs.log[rs.logNext] = *rec
		rs.logNext = (rs.logNext + 1) % RequestLogSize
	}
	rs.logMu.Unlock()
}

// RESTRequests returns the request log (the last RequestLogSize requests), oldest first.
func (s *Server) RESTRequests() []RecordedRequest {
	rs := s.rest
	rs.logMu.Lock()
	defer rs.logMu.Unlock()
	out := make([]RecordedRequest, 0, len(rs.log))
	out = append(out, rs.log[rs.logNext:]...)
	return append(out, rs.log[:rs.logNext]...)
}

// RESTStats is a snapshot of what the REST side has answered. A client that keeps every limit shows
// RateLimited() == 0 and Bans == 0.
type RESTStats struct {
	Requests int64            `json:"requests"`
	ByRoute  map[string]int64 `json:"by_route"` // route key -> requests; "unmatched" for 404/405 paths
	ByStatus map[int]int64    `json:"by_status"`
	ByToken  []int64          `json:"by_token"` // requests carrying each configured token
	// 429s by X-RateLimit-Scope.
	RateLimitedUser   int64 `json:"rate_limited_user"`
	RateLimitedGlobal int64 `json:"rate_limited_global"`
	RateLimitedShared int64 `json:"rate_limited_shared"`
	Unauthorized      int64 `json:"unauthorized"` // 401s
	Forbidden         int64 `json:"forbidden"`    // 403s
	// InvalidRequests counts 401, 403 and non-shared 429s, the ones Discord bans for.
	InvalidRequests int64 `json:"invalid_requests"`
	Bans            int64 `json:"bans"`            // invalid requests that started a ban (address, token or both)
	BannedRequests  int64 `json:"banned_requests"` // requests answered with the ban page
	// MissingUserAgent counts requests without a User-Agent (answered 403).
	MissingUserAgent int64            `json:"missing_user_agent"`
	UnknownWebhook   int64            `json:"unknown_webhook"` // 10015 answers: Discord punishes repeats
	TooLarge         int64            `json:"too_large"`       // 413s
	UserAgents       map[string]int64 `json:"user_agents"`
}

// RateLimited is every 429 answered, ban pages included.
func (st RESTStats) RateLimited() int64 {
	return st.RateLimitedUser + st.RateLimitedGlobal + st.RateLimitedShared + st.BannedRequests
}

// RESTStats returns a snapshot of the REST counters.
func (s *Server) RESTStats() RESTStats {
	c := &s.rest.stats
	st := RESTStats{Requests: c.requests.Load(), ByRoute: map[string]int64{}, ByStatus: map[int]int64{},
		RateLimitedUser: c.user429.Load(), RateLimitedGlobal: c.global429.Load(), RateLimitedShared: c.shared429.Load(),
		Unauthorized: c.unauthorized.Load(), Forbidden: c.forbidden.Load(), InvalidRequests: c.invalid.Load(),
		Bans: c.bans.Load(), BannedRequests: c.banned.Load(), MissingUserAgent: c.noUserAgent.Load(),
		UnknownWebhook: c.unknownWebhook.Load(), TooLarge: c.tooLarge.Load(), UserAgents: map[string]int64{}}
	for i := range c.byRoute {
		if n := c.byRoute[i].Load(); n > 0 {
			key := "unmatched"
			if i < len(s.rest.table.routes) {
				key = s.rest.table.routes[i].key
			}
			st.ByRoute[key] = n
		}
	}
	for i := range c.byStatus {
		if n := c.byStatus[i].Load(); n > 0 {
			st.ByStatus[i] = n
		}
	}
	for i := range c.byToken {
		st.ByToken = append(st.ByToken, c.byToken[i].Load())
	}
	c.userAgents.Range(func(k, v any) bool {
		st.UserAgents[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return st
}

// ResetRESTStats zeroes the REST counters and empties the request log. Budgets are kept.
func (s *Server) ResetRESTStats() {
	c := &s.rest.stats
	for _, a := range []*atomic.Int64{&c.requests, &c.user429, &c.global429, &c.shared429, &c.unauthorized,
		&c.forbidden, &c.invalid, &c.bans, &c.banned, &c.noUserAgent, &c.unknownWebhook, &c.tooLarge, &c.userAgentsN} {
		a.Store(0)
	}
	for i := range c.byRoute {
		c.byRoute[i].Store(0)
	}
	for i := range c.byStatus {
		c.byStatus[i].Store(0)
	}
	for i := range c.byToken {
		c.byToken[i].Store(0)
	}
	c.userAgents.Clear()
	s.rest.logMu.Lock()
	s.rest.log, s.rest.logNext = nil, 0
	s.rest.logMu.Unlock()
}

// ResetRESTLimits starts every budget afresh: buckets, global windows, shared limits, invalid-request
// counts and bans, and forced shared 429s. Limits set with SetRouteLimit stay.
func (s *Server) ResetRESTLimits() {
	rs := s.rest
	for _, l := range rs.limiters {
		l.mu.Lock()
		clear(l.buckets)
		clear(l.global)
		l.gi = 0
		l.invalid.times, l.invalid.i = nil, 0
		l.invalid.bannedUntil.Store(0)
		l.mu.Unlock()
	}
	rs.ips.Clear()
	rs.sharedMu.Lock()
	clear(rs.shared)
	rs.sharedMu.Unlock()
	rs.forcedMu.Lock()
	rs.forced = nil
	rs.forcedN.Store(0)
	rs.forcedMu.Unlock()
}

// RouteLimits is the current rate-limit table (DefaultRouteLimits plus SetRouteLimit changes).
func (s *Server) RouteLimits() []RouteLimit { return s.rest.table.limits() }

// SetRouteLimit changes a bucket's limit and window for every token. key is a route key (all of its
// buckets), a bucket name or a bucket hash; every route sharing the bucket changes with it, and the
// bucket's current windows start afresh. It lets a test build one hot bucket with a large quota.
func (s *Server) SetRouteLimit(key string, limit int, window time.Duration) error {
	if limit < 1 || window <= 0 {
		return fmt.Errorf("discordsim: restRoute limit %d per %v: need a limit >= 1 and a window > 0", limit, window)
	}
	t := s.rest.table
	var defs []*bucketDef
	for _, r := range t.routes {
		if r.key == key {
			defs = append(defs, r.buckets...)
		}
	}
	for _, d := range t.buckets {
		if d.name == key || d.hash == key {
			defs = append(defs, d)
		}
	}
	if len(defs) == 0 {
		return fmt.Errorf("discordsim: no restRoute or bucket %q", key)
	}
	for _, d := range defs {
		d.set(limit, window)
	}
	return nil
}

// SetSharedLimit changes a route's per-resource shared limit (see RouteLimit.SharedLimit).
func (s *Server) SetSharedLimit(routeKey string, limit int, window time.Duration) error {
	if limit < 1 || window <= 0 {
		return fmt.Errorf("discordsim: shared limit %d per %v: need a limit >= 1 and a window > 0", limit, window)
	}
	d, ok := s.rest.table.shared[routeKey]
	if !ok {
		return fmt.Errorf("discordsim: restRoute %q has no shared limit", routeKey)
	}
	d.limit.Store(int64(limit))
	d.window.Store(int64(window))
	d.gen.Add(1)
	return nil
}

// ForceShared429 makes the next n requests on a route (routeKey "" = any route) and resource (the
// major parameter's ID: channel, guild, webhook or interaction; 0 = any) answer a shared-scope 429
// with that retry_after, as Discord does for limits a client cannot foresee. They count as neither
// invalid requests nor budget.
func (s *Server) ForceShared429(routeKey string, resource uint64, n int, retryAfter time.Duration) error {
	if n < 1 {
		return fmt.Errorf("discordsim: forced 429 count %d: need >= 1", n)
	}
	if routeKey != "" {
		found := false
		for _, r := range s.rest.table.routes {
			found = found || r.key == routeKey
		}
		if !found {
			return fmt.Errorf("discordsim: no restRoute %q", routeKey)
		}
	}
	rs := s.rest
	rs.forcedMu.Lock()
	rs.forced = append(rs.forced, forcedShared{route: routeKey, resource: resource, n: n, retry: retryAfter})
	rs.forcedN.Store(int64(len(rs.forced)))
	rs.forcedMu.Unlock()
	return nil
}

// SetUploadLimit sets the largest request body accepted (DefaultUploadLimit until then); larger
// bodies get 413 with code 40005.
func (s *Server) SetUploadLimit(n int64) { s.rest.uploadLimit.Store(n) }

// SetRESTLatency changes the time added to every REST answer (Config.RESTLatency) while the simulator
// runs: answers sent from now on wait d; requests are still admitted and counted on arrival.
func (s *Server) SetRESTLatency(d time.Duration) { s.rest.latency.Store(int64(max(d, 0))) }

// SlowNextRESTAnswer adds d to the latency of the next REST answer only: one slow answer, as a lost SYN
// or a slow moment upstream gives.
func (s *Server) SlowNextRESTAnswer(d time.Duration) { s.rest.nextExtra.Store(int64(max(d, 0))) }

// OmitRateLimitHeaders leaves the named headers out of successful answers from now on, to model an
// upstream (a proxy in front of Discord, a test server) that does not send all of Discord's
// X-RateLimit-* set; nil sends them all again, as Discord does. 429 answers keep every header.
func (s *Server) OmitRateLimitHeaders(headers []string) error {
	if len(headers) == 0 {
		s.rest.omit.Store(nil)
		return nil
	}
	canon := make([]string, len(headers))
	for i, h := range headers {
		if !strings.HasPrefix(strings.ToLower(h), "x-ratelimit-") {
			return fmt.Errorf("discordsim: %q is not an X-RateLimit-* header", h)
		}
		canon[i] = http.CanonicalHeaderKey(h)
	}
	s.rest.omit.Store(&canon)
	return nil
}

// serveAdmin serves /_sim/rest/ (see the top of this file).
func (rs *restState) serveAdmin(w http.ResponseWriter, r *http.Request) {
	s := rs.s
	var in struct {
		Route      string      `json:"route"`
		Limit      int         `json:"limit"`
		WindowNs   int64       `json:"window_ns"`
		Resource   json.Number `json:"resource"`
		Count      int         `json:"count"`
		RetryAfter float64     `json:"retry_after"`
		Bytes      int64       `json:"bytes"`
		LatencyNs  int64       `json:"latency_ns"`
		NextExtra  int64       `json:"next_extra_ns"`
		Headers    []string    `json:"headers"`
	}
	if r.Method == http.MethodPost && r.ContentLength != 0 {
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			writeError(w, http.StatusBadRequest, 0, "bad admin request body: "+err.Error())
			return
		}
	}
	reply := func(err error) {
		if err != nil {
			writeError(w, http.StatusBadRequest, 0, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
	switch r.Method + " " + strings.TrimPrefix(r.URL.Path, "/_sim/rest/") {
	case "GET stats":
		writeJSON(w, http.StatusOK, s.RESTStats())
	case "GET requests":
		after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
		reqs := s.RESTRequests()
		i := sort.Search(len(reqs), func(i int) bool { return reqs[i].Seq > after })
		writeJSON(w, http.StatusOK, reqs[i:])
	case "POST reset":
		s.ResetRESTStats()
		reply(nil)
	case "POST reset-limits":
		s.ResetRESTLimits()
		reply(nil)
	case "GET limits":
		writeJSON(w, http.StatusOK, s.RouteLimits())
	case "POST limits":
		reply(s.SetRouteLimit(in.Route, in.Limit, time.Duration(in.WindowNs)))
	case "POST shared-limits":
		reply(s.SetSharedLimit(in.Route, in.Limit, time.Duration(in.WindowNs)))
	case "POST shared429":
		var res uint64
		if in.Resource != "" {
			var err error
			if res, err = strconv.ParseUint(in.Resource.String(), 10, 64); err != nil {
				reply(fmt.Errorf("resource %q is not a snowflake", in.Resource))
				return
			}
		}
		reply(s.ForceShared429(in.Route, res, in.Count, time.Duration(in.RetryAfter*float64(time.Second))))
	case "POST upload-limit":
		if in.Bytes < 1 {
			reply(errors.New("bytes must be >= 1"))
			return
		}
		s.SetUploadLimit(in.Bytes)
		reply(nil)
	case "POST latency":
		if in.LatencyNs < 0 || in.NextExtra < 0 {
			reply(errors.New("latency_ns and next_extra_ns must be >= 0"))
			return
		}
		s.SetRESTLatency(time.Duration(in.LatencyNs))
		s.SlowNextRESTAnswer(time.Duration(in.NextExtra))
		reply(nil)
	case "POST omit-headers":
		reply(s.OmitRateLimitHeaders(in.Headers))
	default:
		writeError(w, http.StatusNotFound, 0, "404: Not Found")
	}
}

func (rs *restState) isDM(ch uint64) bool {
	rs.objMu.RLock()
	defer rs.objMu.RUnlock()
	_, ok := rs.dmRecipients[ch]
	return ok
}

func (rs *restState) dmRecipient(ch uint64) uint64 {
	rs.objMu.RLock()
	defer rs.objMu.RUnlock()
	return rs.dmRecipients[ch]
}

// dmFor returns the DM channel with a user, creating it once (Discord returns the same channel).
func (rs *restState) dmFor(user uint64) uint64 {
	rs.objMu.Lock()
	defer rs.objMu.Unlock()
	if ch, ok := rs.dms[user]; ok {
		return ch
	}
	ch := rs.newID()
	rs.dms[user], rs.dmRecipients[ch] = ch, user
	return ch
}

func (rs *restState) webhook(id uint64) (restWebhook, bool) {
	rs.objMu.RLock()
	defer rs.objMu.RUnlock()
	h, ok := rs.hooks[id]
	return h, ok
}

// addWebhook stores a new webhook unless its channel already has the maximum.
func (rs *restState) addWebhook(h restWebhook) bool {
	rs.objMu.Lock()
	defer rs.objMu.Unlock()
	if rs.hookCount[h.channel] >= maxWebhooksPerChannel {
		return false
	}
	rs.hooks[h.id] = h
	rs.hookCount[h.channel]++
	return true
}

func (rs *restState) channelWebhooks(ch uint64) []restWebhook {
	rs.objMu.RLock()
	defer rs.objMu.RUnlock()
	var out []restWebhook
	for _, h := range rs.hooks {
		if h.channel == ch {
			out = append(out, h)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func (rs *restState) renameWebhook(id uint64, name string) {
	rs.objMu.Lock()
	defer rs.objMu.Unlock()
	if h, ok := rs.hooks[id]; ok {
		h.name = name
		rs.hooks[id] = h
	}
}

func (rs *restState) deleteWebhook(id uint64) {
	rs.objMu.Lock()
	defer rs.objMu.Unlock()
	if h, ok := rs.hooks[id]; ok {
		delete(rs.hooks, id)
		rs.hookCount[h.channel]--
	}
}

// answeredLimit bounds the set of answered interactions; older ones are long past their 3 s anyway.
const answeredLimit = 100_000

// answerInteraction records an interaction's response; false if it was already answered.
func (rs *restState) answerInteraction(id uint64) bool {
	rs.objMu.Lock()
	defer rs.objMu.Unlock()
	if _, ok := rs.answered[id]; ok {
		return false
	}
	if len(rs.answeredOrder) < answeredLimit {
		rs.answeredOrder = append(rs.answeredOrder, id)
	} else {
		delete(rs.answered, rs.answeredOrder[rs.answeredNext])
		rs.answeredOrder[rs.answeredNext] = id
		rs.answeredNext = (rs.answeredNext + 1) % answeredLimit
	}
	rs.answered[id] = struct{}{}
	return true
}

func (rs *restState) commands(tok int, guild uint64) []map[string]any {
	rs.objMu.RLock()
	defer rs.objMu.RUnlock()
	cmds := rs.cmds[cmdScope{tok, guild}]
	if cmds == nil {
		return []map[string]any{}
	}
	return cmds
}

// setCommands replaces a bot's commands (bulk overwrite). A command keeps its ID across overwrites
// when its name and type stay, as on Discord.
func (rs *restState) setCommands(tok int, guild uint64, cmds []map[string]any) []map[string]any {
	rs.objMu.Lock()
	defer rs.objMu.Unlock()
	scope := cmdScope{tok, guild}
	old := map[string]any{}
	for _, c := range rs.cmds[scope] {
		old[fmt.Sprint(c["type"], "/", c["name"])] = c["id"]
	}
	out := make([]map[string]any, len(cmds))
	for i, in := range cmds {
		c := make(map[string]any, len(in)+4)
		for k, v := range in {
			c[k] = v
		}
		if _, ok := c["type"]; !ok {
			c["type"] = float64(1)
		}
		if _, ok := c["description"]; !ok {
			c["description"] = ""
		}
		id, ok := old[fmt.Sprint(c["type"], "/", c["name"])]
		if !ok {
			id = FormatID(rs.newID())
		}
		c["id"], c["application_id"], c["version"] = id, FormatID(BotUserID(tok)), FormatID(rs.newID())
		c["default_member_permissions"] = nil
		if guild != 0 {
			c["guild_id"] = FormatID(guild)
		}
		out[i] = c
	}
	rs.cmds[scope] = out
	return out
}
