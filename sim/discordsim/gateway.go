package discordsim

// The gateway half of the simulator: websocket connections on /gateway (the URL /gateway/bot hands
// out) and /gateway-resume (the resume_gateway_url of READY; RESUME is accepted on both, and
// ResumeRecord.Endpoint tells which one was used), sessions that outlive connections, identify pacing
// and budget, and the admin API.
//
// Choices where Discord's documentation is silent or the simulator must pick one behaviour:
//   - Query: v must be 10 (else close 4012); encoding must be json (etf, anything else or none: close
//     4002, etf is not simulated); compress may be zlib-stream or zstd-stream (else close 4002).
//   - Heartbeats: the server wants one within 1.5 × heartbeat_interval of HELLO and of the previous one.
//     Without it the server closes with 4000 and the session stays resumable (Discord documents no
//     server-side code; 4000 is the generic "reconnect" code).
//   - IDENTIFY: missing intents close with 4013; large_threshold outside 50–250, a malformed field, or
//     compress: true together with transport compression close with 4002. compress: true alone turns on
//     payload compression: payloads of 1 KiB or more arrive as binary frames, each a complete zlib
//     stream. Identify pacing (one per max_concurrency bucket per IdentifyWindow, judged at receipt,
//     per token) answers op 9 d:false and keeps the connection open. Past the session start budget the
//     token is "reset": every session of that token is closed with 4004 and identifies get 4004 until
//     the budget resets.
//   - RESUME: unknown, ended or expired session, or another bot's token: op 9 d:false. seq beyond the
//     last dispatch of the session: close 4007 (the session ends). seq older than the replay buffer
//     (ReplayLimit dispatches or ResumeWindow, whichever is shorter): op 9 d:false. Otherwise every
//     dispatch after seq is replayed in order (READY included if seq is 0, earlier RESUMEDs included:
//     the replay is exactly the session's sequence), then RESUMED, which takes the next seq. A RESUME of
//     a session that is still connected takes it over: the old socket is dropped.
//   - Server close codes 4004, 4007, 4009–4014 (and 1000/1001) end the session; any other server code, a
//     client close with a code other than 1000/1001, or a dropped socket leaves it resumable for
//     ResumeWindow. After op 7 the server closes the socket with 4000 if the client has not left within
//     one heartbeat interval. Op 9 from the admin API detaches the session from its socket (the socket
//     stays open and may IDENTIFY or RESUME again); d:false also ends the session.
//   - Event keys: every dispatch has a key "evt-<n>" unique in the server; the (session, seq) → key
//     mapping is kept for the session's life (EventKeysSent, GET /_sim/gateway/keys). The firehose's
//     MESSAGE_CREATE also carries its key as nonce; payloads are otherwise Discord-shaped.
//   - A client that leaves 2^18 messages unread, or stops reading for 30s, is dropped (TCP close) and its
//     session stays resumable. Messages to sessions without MESSAGE_CONTENT have content, embeds,
//     attachments, components and poll emptied, unless the bot wrote or is mentioned in the message.
//   - GUILD_CREATE's members hold the bot; with GUILD_PRESENCES also every member of a guild that is not
//     large (member_count up to large_threshold), the first 100 members (the "online" ones) of a large
//     guild, and none past 75,000 members. member_count is MemberCount + 1 (the bot).
//   - Cost per identified idle connection (measured with 500): ~25 KB heap uncompressed, ~75 KB with
//     zlib-stream (own small encoder, see gateway_compress.go), plus two goroutines; zstd-stream was
//     ~520 KB with klauspost's encoder, and its own (gateway_zstd.go) holds a 64 KiB hash table and a
//     window buffer of up to 64 KiB (not re-measured). Run the simulator in its own process for memory
//     benchmarks.
//   - REQUEST_GUILD_MEMBERS (op 8) is answered with GUILD_MEMBERS_CHUNK or RATE_LIMITED; see
//     gateway_members.go for the choices made where Discord's documentation is silent.
//   - Not simulated: presence and voice updates, soundboard requests (ops 3, 4, 31 are accepted after
//     IDENTIFY and checked to carry an object, nothing more).
//
// Admin API (no auth; JSON answers). A target is ?session=<id>, or ?shard=<id>&num=<n> for every live
// session of that shard:
//
//	GET    /_sim/gateway/sessions[?shard=&num=]    SessionInfo list (live and resumable sessions)
//	GET    /_sim/gateway/stats                     GatewayStats
//	POST   /_sim/gateway/stats/reset               ResetGatewayStats
//	GET    /_sim/gateway/keys?session=<id>         EventKeysSent: keys of seq 1..sent_seq, in order
//	POST   /_sim/gateway/drop?<target>             drop the socket (no close frame)
//	POST   /_sim/gateway/close?code=<n>&<target>   close with a code
//	POST   /_sim/gateway/reconnect?<target>        send op 7
//	POST   /_sim/gateway/invalidate?resumable=<bool>&<target>   send op 9
//	POST   /_sim/gateway/heartbeat?<target>        send op 1
//	POST   /_sim/gateway/zombie?ack=<bool>&<target> stop (ack=false) or resume ACKing heartbeats
//	POST   /_sim/gateway/guilds?n=<n>              add n guilds (GUILD_CREATE to their shards)
//	DELETE /_sim/gateway/guilds/{id}               remove a guild (GUILD_DELETE)
//	POST   /_sim/gateway/guilds/{id}/outage        GUILD_DELETE unavailable:true
//	POST   /_sim/gateway/guilds/{id}/restore       GUILD_CREATE after an outage
//	POST   /_sim/gateway/guilds/{id}/members?count=<n>  set the guild's member count (no event sent)
//	POST   /_sim/gateway/dispatch?guild=<id>&event=<NAME>   body: d; answers {"key": ...}
//	POST   /_sim/gateway/firehose                  body: FirehoseOptions; answers {"id": n}
//	POST   /_sim/gateway/firehose/stop[?id=<n>]    stop one firehose, or all
//
// Action endpoints answer {"affected": <sessions touched>}.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ReplayLimit is the most dispatches a session keeps for a resume (besides the ResumeWindow age limit).
const ReplayLimit = 1 << 17

// Outcomes of an IDENTIFY.
const (
	IdentifyAccepted        = "accepted"
	IdentifyRateLimited     = "rate_limited"     // pacing violation: op 9 d:false
	IdentifyBudgetExhausted = "budget_exhausted" // session start limit spent: close 4004
	IdentifyRejected        = "rejected"         // invalid: closed with CloseCode
)

type gatewayState struct {
	s *Server
	eventCounters

	routes atomic.Pointer[routeTable]

	mu        sync.Mutex // guards what follows; taken after a session's mu, never before
	sessions  map[string]*session
	live      map[*session]struct{}
	conns     map[*gwConn]struct{}
	tokens    []*tokenState
	firehoses map[int]func()
	nextHose  int

	statsMu sync.Mutex
	stats   GatewayStats
}

// routeTable maps a shard count and a shard ID to the live sessions of that shard. It is rebuilt when
// sessions come or go and read without locks by every dispatch.
type routeTable struct {
	byNum map[int]map[int][]*session
}

type tokenState struct {
	lastIdentify map[int]time.Time // rate_limit_key -> last accepted IDENTIFY
	remaining    int
	resetAt      time.Time // zero until the first IDENTIFY of the period
}

func newGatewayState(s *Server) *gatewayState {
	g := &gatewayState{s: s, sessions: map[string]*session{}, live: map[*session]struct{}{},
		conns: map[*gwConn]struct{}{}, firehoses: map[int]func(){}}
	for range s.cfg.Tokens {
		g.tokens = append(g.tokens, &tokenState{lastIdentify: map[int]time.Time{}, remaining: s.cfg.SessionStartTotal})
	}
	g.routes.Store(&routeTable{byNum: map[int]map[int][]*session{}})
	g.resetStatsLocked()
	return g
}

func (s *Server) registerGateway(mux *http.ServeMux) {
	g := s.gw
	mux.HandleFunc("GET /gateway", g.serveWS("gateway"))
	mux.HandleFunc("GET /gateway-resume", g.serveWS("resume"))
	g.registerAdmin(mux)
}

// closeAll drops every connection abruptly; sessions stay resumable.
func (g *gatewayState) closeAll() {
	g.mu.Lock()
	conns := make([]*gwConn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.drop()
	}
}

func (g *gatewayState) addConn(c *gwConn) {
	g.mu.Lock()
	g.conns[c] = struct{}{}
	g.mu.Unlock()
	g.bump(func(st *GatewayStats) { st.Connections++ })
}

func (g *gatewayState) removeConn(c *gwConn) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
}

// ---- session start budget ----

// SessionStartLimit is what /gateway/bot reports for one bot token.
type SessionStartLimit struct {
	Total          int `json:"total"`
	Remaining      int `json:"remaining"`
	ResetAfter     int `json:"reset_after"` // milliseconds
	MaxConcurrency int `json:"max_concurrency"`
}

func (t *tokenState) refresh(now time.Time, total int) {
	if !t.resetAt.IsZero() && !now.Before(t.resetAt) {
		t.remaining, t.resetAt = total, time.Time{}
	}
}

// sessionStartLimit reports the identify budget of the bot with that token index: what is left and
// when it refills.
func (g *gatewayState) sessionStartLimit(tokenIdx int) SessionStartLimit {
	c := g.s.cfg
	out := SessionStartLimit{Total: c.SessionStartTotal, Remaining: c.SessionStartTotal,
		ResetAfter: int(c.SessionStartReset.Milliseconds()), MaxConcurrency: c.MaxConcurrency}
	if tokenIdx < 0 || tokenIdx >= len(g.tokens) {
		return out
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.tokens[tokenIdx]
	t.refresh(now, c.SessionStartTotal)
	out.Remaining = t.remaining
	if !t.resetAt.IsZero() {
		out.ResetAfter = int(t.resetAt.Sub(now).Milliseconds())
	}
	return out
}

// ---- sessions ----

type session struct {
	g              *gatewayState
	id             string
	tokenIdx       int
	botID          uint64
	shard, num     int
	intents        int
	largeThreshold int
	identifiedAt   time.Time

	mu             sync.Mutex
	seq            int64      // last sequence number given
	log            []*gwEvent // replay buffer: log[i] has sequence logFirst+i
	logFirst       int64
	keys           []uint64 // keys[i] is the event number of sequence i+1
	conn           *gwConn
	disconnectedAt time.Time
	expiry         *time.Timer
	ended          bool
	endReason      string
	memberReqs     map[uint64]time.Time // guild -> last accepted request for every member (op 8's limit)

	sentSeq atomic.Int64 // highest sequence written to a socket
}

func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *session) push(e *gwEvent) {
	s.mu.Lock()
	s.pushLocked(e)
	s.mu.Unlock()
}

func (s *session) pushLocked(e *gwEvent) {
	if s.ended {
		return
	}
	s.seq++
	if len(s.log) == 0 {
		s.logFirst = s.seq
	}
	s.log = append(s.log, e)
	s.keys = append(s.keys, e.n)
	s.trimLocked(e.at)
	s.g.dispatched.Add(1)
	if s.conn != nil {
		s.conn.enqueue(outItem{ev: e, seq: s.seq, sess: s})
	}
}

// trimLocked keeps the replay buffer within ReplayLimit entries and ResumeWindow of age.
func (s *session) trimLocked(now int64) {
	oldest := now - int64(s.g.s.cfg.ResumeWindow)
	k := 0
	for k < len(s.log) && (len(s.log)-k > ReplayLimit || s.log[k].at < oldest) {
		s.log[k] = nil
		k++
	}
	if k > 0 {
		s.log = s.log[k:]
		s.logFirst += int64(k)
	}
}

func (s *session) markSent(seq int64) {
	for {
		cur := s.sentSeq.Load()
		if seq <= cur || s.sentSeq.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// endLocked ends the session: it can no longer be resumed and gets no more events.
func (s *session) endLocked(why string) {
	if s.ended {
		return
	}
	s.ended, s.endReason = true, why
	s.conn = nil
	s.log = nil
	if s.expiry != nil {
		s.expiry.Stop()
	}
	g := s.g
	g.mu.Lock()
	delete(g.live, s)
	g.rebuildRoutesLocked()
	g.mu.Unlock()
}

func (g *gatewayState) rebuildRoutesLocked() {
	rt := &routeTable{byNum: map[int]map[int][]*session{}}
	for s := range g.live {
		m := rt.byNum[s.num]
		if m == nil {
			m = map[int][]*session{}
			rt.byNum[s.num] = m
		}
		m[s.shard] = append(m[s.shard], s)
	}
	g.routes.Store(rt)
}

// detach is called when a connection ends: the session waits for a resume, or ends.
func (g *gatewayState) detach(s *session, c *gwConn, end bool, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != c {
		return
	}
	if end {
		s.endLocked(why)
		return
	}
	s.conn = nil
	s.disconnectedAt = time.Now()
	s.expiry = time.AfterFunc(g.s.cfg.ResumeWindow, func() { g.expire(s) })
}

func (g *gatewayState) expire(s *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.conn != nil {
		return
	}
	if left := g.s.cfg.ResumeWindow - time.Since(s.disconnectedAt); left > 0 {
		s.expiry = time.AfterFunc(left, func() { g.expire(s) })
		return
	}
	s.endLocked("resume window expired")
}

// identify runs an IDENTIFY that passed validation: pacing, budget, then the new session.
func (g *gatewayState) identify(c *gwConn, req identifyReq) {
	now := time.Now()
	cfg := g.s.cfg
	rec := IdentifyRecord{At: now, TokenIdx: req.tokenIdx, Shard: req.shard, NumShards: req.num, Endpoint: c.endpoint}
	bucket := req.shard % cfg.MaxConcurrency
	g.mu.Lock()
	t := g.tokens[req.tokenIdx]
	if last, ok := t.lastIdentify[bucket]; ok && now.Sub(last) < cfg.IdentifyWindow {
		g.mu.Unlock()
		rec.Outcome = IdentifyRateLimited
		rec.Reason = fmt.Sprintf("bucket %d (shard %d %% max_concurrency %d) identified %v earlier; the window is %v",
			bucket, req.shard, cfg.MaxConcurrency, now.Sub(last).Round(time.Millisecond), cfg.IdentifyWindow)
		g.recordIdentify(rec)
		g.bump(func(st *GatewayStats) { st.IdentifyViolations++ })
		c.sendRaw([]byte(`{"t":null,"s":null,"op":9,"d":false}`))
		return
	}
	t.refresh(now, cfg.SessionStartTotal)
	if t.remaining <= 0 {
		g.mu.Unlock()
		rec.Outcome, rec.CloseCode = IdentifyBudgetExhausted, 4004
		rec.Reason = fmt.Sprintf("session start limit of %d per %v spent: the token is reset", cfg.SessionStartTotal,
			cfg.SessionStartReset)
		g.recordIdentify(rec)
		g.bump(func(st *GatewayStats) { st.BudgetExhaustions++ })
		g.revokeToken(req.tokenIdx)
		c.closeWith(4004, "authentication failed: session start limit exhausted")
		return
	}
	t.remaining--
	if t.resetAt.IsZero() {
		t.resetAt = now.Add(cfg.SessionStartReset)
	}
	t.lastIdentify[bucket] = now
	s := &session{g: g, id: newSessionID(), tokenIdx: req.tokenIdx, botID: BotUserID(req.tokenIdx), shard: req.shard,
		num: req.num, intents: req.intents, largeThreshold: req.largeThreshold, identifiedAt: now}
	// Nobody else can hold s.mu yet; holding it from here makes READY and the GUILD_CREATEs the first
	// dispatches of the session even if events are being routed to it meanwhile.
	s.mu.Lock()
	g.sessions[s.id] = s
	g.live[s] = struct{}{}
	g.rebuildRoutesLocked()
	g.mu.Unlock()
	rec.Outcome, rec.SessionID = IdentifyAccepted, s.id
	g.recordIdentify(rec)

	c.payloadCompress.Store(req.compress)
	s.conn = c
	c.sess.Store(s)
	ready := g.newEvent("READY", 0, nil)
	ready.data = g.buildReady(s, req.guilds, c.resumeURL)
	s.pushLocked(ready)
	if s.intents&IntentGuilds != 0 {
		for i := range req.guilds {
			gd := &req.guilds[i]
			if gd.Unavailable {
				continue
			}
			e := g.newEvent("GUILD_CREATE", gd.ID, nil)
			e.data = buildGuildCreate(gd, s)
			s.pushLocked(e)
		}
	}
	s.mu.Unlock()
}

// revokeToken ends every session of a token whose session start budget ran out.
func (g *gatewayState) revokeToken(tokenIdx int) {
	g.mu.Lock()
	var victims []*session
	for s := range g.live {
		if s.tokenIdx == tokenIdx {
			victims = append(victims, s)
		}
	}
	g.mu.Unlock()
	for _, s := range victims {
		s.mu.Lock()
		c := s.conn
		s.endLocked("token reset: session start limit exhausted")
		s.mu.Unlock()
		if c != nil {
			c.closeWith(4004, "authentication failed: token reset")
		}
	}
}

// resume runs a RESUME that passed validation.
func (g *gatewayState) resume(c *gwConn, req resumeReq) {
	rec := ResumeRecord{At: time.Now(), SessionID: req.sessionID, TokenIdx: req.tokenIdx, Seq: req.seq,
		Endpoint: c.endpoint}
	invalid := func(why string) {
		rec.Reason = why
		g.recordResume(rec)
		c.sendRaw([]byte(`{"t":null,"s":null,"op":9,"d":false}`))
	}
	g.mu.Lock()
	s := g.sessions[req.sessionID]
	g.mu.Unlock()
	if s == nil {
		invalid("unknown session")
		return
	}
	s.mu.Lock()
	rec.Shard, rec.NumShards = s.shard, s.num
	switch {
	case s.ended:
		s.mu.Unlock()
		invalid("session ended: " + s.endReason)
		return
	case req.tokenIdx != s.tokenIdx:
		s.mu.Unlock()
		invalid("token does not match the session")
		return
	case s.conn == nil && time.Since(s.disconnectedAt) > g.s.cfg.ResumeWindow:
		s.endLocked("resume window expired")
		s.mu.Unlock()
		invalid("resume window expired")
		return
	case req.seq > s.seq:
		s.endLocked(fmt.Sprintf("resume with seq %d past the last sequence %d", req.seq, s.seq))
		s.mu.Unlock()
		rec.Reason = fmt.Sprintf("seq %d is past the last sequence %d: close 4007", req.seq, s.seq)
		g.recordResume(rec)
		c.closeWith(4007, "invalid seq")
		return
	case req.seq < s.seq && (len(s.log) == 0 || req.seq+1 < s.logFirst):
		s.endLocked("replay buffer no longer holds the missed events")
		s.mu.Unlock()
		invalid(fmt.Sprintf("seq %d is older than the replay buffer (first %d)", req.seq, s.logFirst))
		return
	}
	if old := s.conn; old != nil {
		old.sess.Store(nil)
		old.drop()
		rec.TookOver = true
	}
	if s.expiry != nil {
		s.expiry.Stop()
	}
	s.conn = c
	c.sess.Store(s)
	for i := req.seq + 1 - s.logFirst; i < int64(len(s.log)) && i >= 0; i++ {
		c.enqueue(outItem{ev: s.log[i], seq: s.logFirst + i, sess: s})
		rec.Replayed++
	}
	resumed := g.newEvent("RESUMED", 0, []byte(`{"_trace":["[\"gateway-sim\",{\"micros\":0}]"]}`))
	s.pushLocked(resumed)
	s.mu.Unlock()
	rec.OK = true
	g.recordResume(rec)
}

// ---- stats ----

// IdentifyRecord is one IDENTIFY the gateway received.
type IdentifyRecord struct {
	At        time.Time `json:"at"`
	TokenIdx  int       `json:"token_idx"` // -1: the token was not recognised
	Shard     int       `json:"shard"`
	NumShards int       `json:"num_shards"`
	Outcome   string    `json:"outcome"` // IdentifyAccepted, IdentifyRateLimited, ...
	Reason    string    `json:"reason,omitempty"`
	CloseCode int       `json:"close_code,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	Endpoint  string    `json:"endpoint"` // "gateway" or "resume"
}

// ResumeRecord is one RESUME the gateway received.
type ResumeRecord struct {
	At        time.Time `json:"at"`
	SessionID string    `json:"session_id"`
	TokenIdx  int       `json:"token_idx"`
	Shard     int       `json:"shard"`
	NumShards int       `json:"num_shards"`
	Seq       int64     `json:"seq"`
	OK        bool      `json:"ok"`
	Reason    string    `json:"reason,omitempty"`
	Replayed  int       `json:"replayed"`
	TookOver  bool      `json:"took_over,omitempty"` // the session was still connected elsewhere
	Endpoint  string    `json:"endpoint"`            // "gateway" or "resume" (resume_gateway_url)
}

// GatewayStats is what the gateway saw since the start or the last ResetGatewayStats.
type GatewayStats struct {
	Connections        int64            `json:"connections"`
	Identifies         []IdentifyRecord `json:"identifies"`
	Resumes            []ResumeRecord   `json:"resumes"`
	IdentifyViolations int              `json:"identify_violations"` // pacing: answered with op 9
	BudgetExhaustions  int              `json:"budget_exhaustions"`  // identifies past the session start limit
	CloseCodesSent     map[int]int      `json:"close_codes_sent"`
	CloseCodesReceived map[int]int      `json:"close_codes_received"` // closes started by clients
	RateLimitCloses    int              `json:"rate_limit_closes"`    // 4008
	DecodeErrorCloses  int              `json:"decode_error_closes"`  // 4002
	HeartbeatTimeouts  int              `json:"heartbeat_timeouts"`
	Heartbeats         int64            `json:"heartbeats"`
	SlowConsumerDrops  int              `json:"slow_consumer_drops"`
	AdminDrops         int              `json:"admin_drops"`
	EventsCreated      int64            `json:"events_created"`    // distinct event keys
	EventsDispatched   int64            `json:"events_dispatched"` // event × session, replays not counted
	// REQUEST_GUILD_MEMBERS (op 8): well-formed requests received, those ignored (unknown guild, guild
	// not on the session's shard or in an outage, every member asked without GUILD_MEMBERS), those
	// answered with RATE_LIMITED, and the GUILD_MEMBERS_CHUNK dispatches sent in answer.
	MemberRequests        int64 `json:"member_requests"`
	MemberRequestsIgnored int64 `json:"member_requests_ignored"`
	MemberRateLimited     int64 `json:"member_rate_limited"`
	MemberChunks          int64 `json:"member_chunks"`
}

func (g *gatewayState) bump(f func(*GatewayStats)) {
	g.statsMu.Lock()
	f(&g.stats)
	g.statsMu.Unlock()
}

func (g *gatewayState) recordIdentify(r IdentifyRecord) {
	g.bump(func(st *GatewayStats) { st.Identifies = append(st.Identifies, r) })
}

func (g *gatewayState) recordResume(r ResumeRecord) {
	g.bump(func(st *GatewayStats) { st.Resumes = append(st.Resumes, r) })
}

func (g *gatewayState) resetStatsLocked() {
	g.stats = GatewayStats{CloseCodesSent: map[int]int{}, CloseCodesReceived: map[int]int{}}
	g.eventsCreated.Store(0)
	g.dispatched.Store(0)
	g.heartbeats.Store(0)
}

// GatewayStats returns a snapshot of the gateway's counters and records.
func (s *Server) GatewayStats() GatewayStats {
	g := s.gw
	g.statsMu.Lock()
	defer g.statsMu.Unlock()
	st := g.stats
	st.Identifies = slices.Clone(st.Identifies)
	st.Resumes = slices.Clone(st.Resumes)
	st.CloseCodesSent = make(map[int]int, len(g.stats.CloseCodesSent))
	for k, v := range g.stats.CloseCodesSent {
		st.CloseCodesSent[k] = v
	}
	st.CloseCodesReceived = make(map[int]int, len(g.stats.CloseCodesReceived))
	for k, v := range g.stats.CloseCodesReceived {
		st.CloseCodesReceived[k] = v
	}
	st.EventsCreated = g.eventsCreated.Load()
	st.EventsDispatched = g.dispatched.Load()
	st.Heartbeats = g.heartbeats.Load()
	return st
}

// ResetGatewayStats clears the stats and forgets ended sessions (and their event keys). Sessions,
// budgets and pacing are untouched; event keys stay unique.
func (s *Server) ResetGatewayStats() {
	g := s.gw
	g.statsMu.Lock()
	g.resetStatsLocked()
	g.statsMu.Unlock()
	g.mu.Lock()
	for id, sess := range g.sessions {
		if _, ok := g.live[sess]; !ok {
			delete(g.sessions, id)
		}
	}
	g.mu.Unlock()
}

// ---- admin API (Go) ----

// SessionInfo describes a live or resumable session.
type SessionInfo struct {
	ID             string    `json:"id"`
	TokenIdx       int       `json:"token_idx"`
	Shard          int       `json:"shard"`
	NumShards      int       `json:"num_shards"`
	Connected      bool      `json:"connected"`
	Endpoint       string    `json:"endpoint,omitempty"` // of the current connection
	Seq            int64     `json:"seq"`                // last sequence number given
	SentSeq        int64     `json:"sent_seq"`           // last sequence number written to a socket
	Intents        int       `json:"intents"`
	IdentifiedAt   time.Time `json:"identified_at"`
	DisconnectedAt time.Time `json:"disconnected_at,omitzero"`
	Zombie         bool      `json:"zombie,omitempty"` // heartbeats are not ACKed
}

// Sessions lists live and resumable sessions, oldest first.
func (s *Server) Sessions() []SessionInfo {
	g := s.gw
	g.mu.Lock()
	list := make([]*session, 0, len(g.live))
	for sess := range g.live {
		list = append(list, sess)
	}
	g.mu.Unlock()
	out := make([]SessionInfo, 0, len(list))
	for _, sess := range list {
		sess.mu.Lock()
		info := SessionInfo{ID: sess.id, TokenIdx: sess.tokenIdx, Shard: sess.shard, NumShards: sess.num,
			Connected: sess.conn != nil, Seq: sess.seq, SentSeq: sess.sentSeq.Load(), Intents: sess.intents,
			IdentifiedAt: sess.identifiedAt}
		if sess.conn != nil {
			info.Endpoint, info.Zombie = sess.conn.endpoint, sess.conn.noAck.Load()
		} else {
			info.DisconnectedAt = sess.disconnectedAt
		}
		ended := sess.ended
		sess.mu.Unlock()
		if !ended {
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return a.IdentifiedAt.Compare(b.IdentifiedAt) })
	return out
}

// ShardSessionIDs returns the IDs of the live sessions of shard [shard, num], oldest first.
func (s *Server) ShardSessionIDs(shard, num int) []string {
	var ids []string
	for _, info := range s.Sessions() {
		if info.Shard == shard && info.NumShards == num {
			ids = append(ids, info.ID)
		}
	}
	return ids
}

// withConn runs f on the session's current connection; false if the session is unknown, ended or not
// connected.
func (g *gatewayState) withConn(id string, f func(*session, *gwConn)) bool {
	g.mu.Lock()
	s := g.sessions[id]
	g.mu.Unlock()
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.conn == nil {
		return false
	}
	f(s, s.conn)
	return true
}

// DropSession closes the session's TCP connection without a close frame; the session stays resumable.
func (s *Server) DropSession(id string) bool {
	ok := s.gw.withConn(id, func(_ *session, c *gwConn) { c.drop() })
	if ok {
		s.gw.bump(func(st *GatewayStats) { st.AdminDrops++ })
	}
	return ok
}

// DropShard drops the connections of every session of shard [shard, num]; it returns how many.
func (s *Server) DropShard(shard, num int) int {
	n := 0
	for _, id := range s.ShardSessionIDs(shard, num) {
		if s.DropSession(id) {
			n++
		}
	}
	return n
}

// CloseSession closes the session's connection with a close code (see closeEndsSession for which codes
// end the session).
func (s *Server) CloseSession(id string, code int) bool {
	if code < 1000 || code > 4999 {
		return false
	}
	var conn *gwConn
	s.gw.withConn(id, func(_ *session, c *gwConn) { conn = c })
	if conn == nil {
		return false
	}
	conn.closeWith(code, "closed by the simulator")
	return true
}

// ReconnectSession sends op 7; the server closes the socket with 4000 if the client is still there one
// heartbeat interval later.
func (s *Server) ReconnectSession(id string) bool {
	g := s.gw
	return g.withConn(id, func(_ *session, c *gwConn) {
		if !c.sendRaw([]byte(`{"t":null,"s":null,"op":7,"d":null}`)) {
			return
		}
		c.mu.Lock()
		if c.reconnect == nil {
			c.reconnect = time.AfterFunc(g.s.cfg.HeartbeatInterval, func() { c.closeWith(4000, "reconnect requested") })
		}
		c.mu.Unlock()
	})
}

// InvalidateSession sends op 9 with d = resumable and detaches the session from its socket; with
// resumable false the session also ends.
func (s *Server) InvalidateSession(id string, resumable bool) bool {
	return s.gw.withConn(id, func(sess *session, c *gwConn) {
		c.sendRaw([]byte(`{"t":null,"s":null,"op":9,"d":` + strconv.FormatBool(resumable) + `}`))
		c.sess.Store(nil)
		if !resumable {
			sess.endLocked("invalidated by the simulator (op 9 d:false)")
			return
		}
		sess.conn = nil
		sess.disconnectedAt = time.Now()
		sess.expiry = time.AfterFunc(s.cfg.ResumeWindow, func() { s.gw.expire(sess) })
	})
}

// RequestHeartbeat sends op 1: the client must heartbeat at once.
func (s *Server) RequestHeartbeat(id string) bool {
	return s.gw.withConn(id, func(_ *session, c *gwConn) { c.sendRaw([]byte(`{"t":null,"s":null,"op":1,"d":null}`)) })
}

// SetHeartbeatAck with ack false stops ACKing the heartbeats of the session's current connection (a
// zombie connection); a new connection ACKs again.
func (s *Server) SetHeartbeatAck(id string, ack bool) bool {
	return s.gw.withConn(id, func(_ *session, c *gwConn) { c.noAck.Store(!ack) })
}

// EventKeysSent returns the event keys of the session's dispatches with sequence 1..n in order, where n
// is the last sequence written to a socket (index i holds the key of sequence i+1). Works for ended
// sessions until ResetGatewayStats.
func (s *Server) EventKeysSent(sessionID string) []string {
	g := s.gw
	g.mu.Lock()
	sess := g.sessions[sessionID]
	g.mu.Unlock()
	if sess == nil {
		return nil
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	n := min(sess.sentSeq.Load(), int64(len(sess.keys)))
	out := make([]string, n)
	for i := range out {
		out[i] = eventKey(sess.keys[i])
	}
	return out
}

// AddGuilds adds n guilds to the world and sends GUILD_CREATE to the sessions whose shard holds them.
func (s *Server) AddGuilds(n int) []Guild {
	added := s.world.addGuilds(n)
	out := make([]Guild, len(added))
	for i, gp := range added {
		out[i] = *gp
		gd := out[i]
		s.gw.deliverEach("GUILD_CREATE", gd.ID, func(sess *session) []byte { return buildGuildCreate(&gd, sess) })
	}
	return out
}

// RemoveGuild removes the bot from a guild: GUILD_DELETE without unavailable, then the guild is gone.
func (s *Server) RemoveGuild(id uint64) bool {
	if _, ok := s.world.guild(id); !ok {
		return false
	}
	e := s.gw.newEvent("GUILD_DELETE", id, []byte(`{"id":"`+FormatID(id)+`"}`))
	s.gw.deliver(e)
	s.world.removeGuild(id)
	return true
}

// SetGuildOutage puts a guild in an outage (GUILD_DELETE unavailable:true) or ends it (GUILD_CREATE).
// It returns false if the guild is unknown or already in that state.
func (s *Server) SetGuildOutage(id uint64, down bool) bool {
	gd, changed := s.world.setUnavailable(id, down)
	if !changed {
		return false
	}
	if down {
		s.gw.deliver(s.gw.newEvent("GUILD_DELETE", id, []byte(`{"id":"`+FormatID(id)+`","unavailable":true}`)))
	} else {
		s.gw.deliverEach("GUILD_CREATE", id, func(sess *session) []byte { return buildGuildCreate(&gd, sess) })
	}
	return true
}

// removeGuild deletes a guild and its channels from the world.
func (w *world) removeGuild(id uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g, ok := w.byID[id]
	if !ok {
		return
	}
	delete(w.byID, id)
	for _, ch := range g.Channels {
		delete(w.channels, ch)
	}
	w.guilds = slices.DeleteFunc(w.guilds, func(x *Guild) bool { return x.ID == id })
}

// setUnavailable sets a guild's outage flag; changed is false if it already had that value.
func (w *world) setUnavailable(id uint64, v bool) (Guild, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g, ok := w.byID[id]
	if !ok || g.Unavailable == v {
		return Guild{}, false
	}
	g.Unavailable = v
	return *g, true
}

// ---- admin API (HTTP) ----

func (g *gatewayState) registerAdmin(mux *http.ServeMux) {
	s := g.s
	const p = "/_sim/gateway/"
	mux.HandleFunc("GET "+p+"sessions", func(w http.ResponseWriter, r *http.Request) {
		list := s.Sessions()
		if r.URL.Query().Has("shard") {
			shard, num := qInt(r, "shard"), qInt(r, "num")
			list = slices.DeleteFunc(list, func(i SessionInfo) bool { return i.Shard != shard || i.NumShards != num })
		}
		writeJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("GET "+p+"stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.GatewayStats())
	})
	mux.HandleFunc("POST "+p+"stats/reset", func(w http.ResponseWriter, r *http.Request) {
		s.ResetGatewayStats()
		writeJSON(w, http.StatusOK, map[string]any{})
	})
	mux.HandleFunc("GET "+p+"keys", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.EventKeysSent(r.URL.Query().Get("session")))
	})
	action := func(name string, f func(r *http.Request, id string) bool) {
		mux.HandleFunc("POST "+p+name, func(w http.ResponseWriter, r *http.Request) {
			ids := []string{r.URL.Query().Get("session")}
			if r.URL.Query().Has("shard") {
				ids = s.ShardSessionIDs(qInt(r, "shard"), qInt(r, "num"))
			}
			n := 0
			for _, id := range ids {
				if f(r, id) {
					n++
				}
			}
			writeJSON(w, http.StatusOK, map[string]int{"affected": n})
		})
	}
	action("drop", func(_ *http.Request, id string) bool { return s.DropSession(id) })
	action("close", func(r *http.Request, id string) bool { return s.CloseSession(id, qInt(r, "code")) })
	action("reconnect", func(_ *http.Request, id string) bool { return s.ReconnectSession(id) })
	action("invalidate", func(r *http.Request, id string) bool {
		return s.InvalidateSession(id, r.URL.Query().Get("resumable") == "true")
	})
	action("heartbeat", func(_ *http.Request, id string) bool { return s.RequestHeartbeat(id) })
	action("zombie", func(r *http.Request, id string) bool {
		return s.SetHeartbeatAck(id, r.URL.Query().Get("ack") == "true")
	})
	mux.HandleFunc("POST "+p+"guilds", func(w http.ResponseWriter, r *http.Request) {
		type guildOut struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		}
		var out []guildOut
		for _, gd := range s.AddGuilds(qInt(r, "n")) {
			out = append(out, guildOut{FormatID(gd.ID), gd.Name})
		}
		writeJSON(w, http.StatusOK, out)
	})
	guildAction := func(pattern string, f func(id uint64) bool) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
			if err != nil || !f(id) {
				writeError(w, http.StatusNotFound, 10004, "Unknown Guild")
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{})
		})
	}
	guildAction("DELETE "+p+"guilds/{id}", s.RemoveGuild)
	guildAction("POST "+p+"guilds/{id}/outage", func(id uint64) bool { return s.SetGuildOutage(id, true) })
	guildAction("POST "+p+"guilds/{id}/restore", func(id uint64) bool { return s.SetGuildOutage(id, false) })
	mux.HandleFunc("POST "+p+"guilds/{id}/members", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
		n, nerr := strconv.Atoi(r.URL.Query().Get("count"))
		if nerr != nil || n < 0 {
			writeError(w, http.StatusBadRequest, 50035, "count must be a non-negative integer")
			return
		}
		if err != nil || !s.SetGuildMembers(id, n) {
			writeError(w, http.StatusNotFound, 10004, "Unknown Guild")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{})
	})
	mux.HandleFunc("POST "+p+"dispatch", func(w http.ResponseWriter, r *http.Request) {
		var d json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
			writeError(w, http.StatusBadRequest, 50109, "The request body contains invalid JSON.")
			return
		}
		guild, _ := strconv.ParseUint(r.URL.Query().Get("guild"), 10, 64)
		writeJSON(w, http.StatusOK, map[string]string{"key": s.Dispatch(guild, r.URL.Query().Get("event"), d)})
	})
	mux.HandleFunc("POST "+p+"firehose", func(w http.ResponseWriter, r *http.Request) {
		var opts FirehoseOptions
		if err := json.NewDecoder(r.Body).Decode(&opts); err != nil {
			writeError(w, http.StatusBadRequest, 50109, "The request body contains invalid JSON.")
			return
		}
		stop := s.StartFirehose(opts)
		g.mu.Lock()
		g.nextHose++
		id := g.nextHose
		g.firehoses[id] = stop
		g.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]int{"id": id})
	})
	mux.HandleFunc("POST "+p+"firehose/stop", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		var stops []func()
		for id, stop := range g.firehoses {
			if !r.URL.Query().Has("id") || strconv.Itoa(id) == r.URL.Query().Get("id") {
				stops = append(stops, stop)
				delete(g.firehoses, id)
			}
		}
		g.mu.Unlock()
		for _, stop := range stops {
			stop()
		}
		writeJSON(w, http.StatusOK, map[string]int{"affected": len(stops)})
	})
}

func qInt(r *http.Request, key string) int {
	v, _ := strconv.Atoi(r.URL.Query().Get(key))
	return v
}
