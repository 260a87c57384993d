package discordsim

// REQUEST_GUILD_MEMBERS (op 8) and its answers: GUILD_MEMBERS_CHUNK dispatches of at most 1,000 members,
// or a RATE_LIMITED dispatch. A guild's members are derived from its ID and MemberCount (member i is
// user MemberUserID(ID, i), and the requesting bot is one more member), so a guild of 100,000 members
// costs nothing until asked, and a chunk is rendered from a range of member indices when it is written:
// a session's replay log holds no member bytes.
//
// What Discord documents, and the simulator does:
//   - d: guild_id (one guild), query (case-insensitive prefix of the username) with limit, or user_ids (a
//     snowflake or a list of them), presences, nonce. Neither query nor user_ids, query without limit, or
//     a field of the wrong type: close 4002, as for any payload Discord cannot decode.
//   - query "" with limit 0 asks for every member and needs the GUILD_MEMBERS intent; a request for every
//     member is limited to one per guild per session per MemberRequestWindow (Discord: 30 s since
//     2025-08-14); a request past it gets the dispatch RATE_LIMITED {opcode: 8, retry_after: seconds,
//     meta: {guild_id, nonce}} instead of chunks. Other requests are not limited beyond the connection's
//     120 sends per 60 s.
//   - a non-empty query answers at most 100 members (limit 0 or over 100 means 100); user_ids answers at
//     most 100 members and lists the IDs that are not members in not_found (present, maybe empty, in
//     the answer to user_ids only).
//   - presences: true without GUILD_PRESENCES is taken as false (no presences field).
//   - nonce: a string of up to 32 bytes is echoed in every chunk and in RATE_LIMITED; any other nonce is
//     ignored.
//   - every chunk has chunk_index and chunk_count; a request that matches nobody gets one empty chunk.
//
// Choices where the documentation is silent (observed behaviour where there is some):
//   - every member without GUILD_MEMBERS: no answer at all (libraries report a timeout; Discord does not
//     close the connection). The same for a guild that is unknown, in an outage, or not on the session's
//     shard.
//   - query "" with a limit above 0 needs GUILD_MEMBERS too (the documentation says query '' with any
//     limit) and answers the first limit members, in chunks, without the rate limit.
//   - user_ids past the 100th are neither answered nor listed in not_found; repeated IDs count once;
//     user_ids wins over query when both are present.
//   - members come in member order: the bot first, then member 0, 1, ...; the online members (whose
//     presences a request with presences gets) are the bot and the first 100 members.

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

const (
	// memberChunkSize is the most members one GUILD_MEMBERS_CHUNK holds.
	memberChunkSize = 1000
	// memberQueryMax is the most members a query or user_ids request answers.
	memberQueryMax = 100
	// memberNonceMax is the longest nonce (bytes) that is echoed.
	memberNonceMax = 32
)

// memberRequest is a decoded op 8.
type memberRequest struct {
	guildID   uint64
	query     string
	hasQuery  bool
	limit     int
	userIDs   []uint64 // nil: a query
	presences bool
	nonce     string // "" when absent or ignored
}

// everyMember says whether the request asks for the whole member list (the rate-limited kind).
func (r memberRequest) everyMember() bool { return r.userIDs == nil && r.query == "" && r.limit == 0 }

// onRequestMembers handles op 8.
func (c *gwConn) onRequestMembers(d json.RawMessage) {
	sess := c.sess.Load()
	if sess == nil {
		c.closeWith(4003, "not authenticated")
		return
	}
	req, reason := parseMemberRequest(d)
	if reason != "" {
		c.decodeError(reason)
		return
	}
	c.g.requestMembers(sess, req)
}

// parseMemberRequest decodes op 8's d; a non-empty reason is why it cannot be decoded (close 4002).
func parseMemberRequest(d json.RawMessage) (req memberRequest, reason string) {
	obj, ok := decodeObject(d)
	if !ok {
		return req, "request guild members: d must be an object"
	}
	if req.guildID, ok = jsonSnowflake(obj["guild_id"]); !ok {
		return req, "request guild members: guild_id must be a snowflake"
	}
	if raw, ok := obj["query"]; ok {
		if json.Unmarshal(raw, &req.query) != nil { // null is taken as ""
			return req, "request guild members: query must be a string"
		}
		req.hasQuery = true
	}
	if raw, ok := obj["limit"]; ok && !isNull(raw) {
		n, ok := jsonInt(raw)
		if !ok || n < 0 {
			return req, "request guild members: limit must be a non-negative integer"
		}
		req.limit = int(min(n, 1<<30))
	} else if req.hasQuery {
		return req, "request guild members: limit is required with query"
	}
	if raw, ok := obj["user_ids"]; ok && !isNull(raw) {
		req.userIDs = []uint64{}
		if id, ok := jsonSnowflake(raw); ok {
			req.userIDs = append(req.userIDs, id)
		} else {
			var list []json.RawMessage
			if json.Unmarshal(raw, &list) != nil {
				return req, "request guild members: user_ids must be a snowflake or an array of snowflakes"
			}
			for _, v := range list {
				id, ok := jsonSnowflake(v)
				if !ok {
					return req, "request guild members: user_ids must be a snowflake or an array of snowflakes"
				}
				req.userIDs = append(req.userIDs, id)
			}
		}
	}
	if !req.hasQuery && req.userIDs == nil {
		return req, "request guild members: one of query or user_ids is required"
	}
	if raw, ok := obj["presences"]; ok && !isNull(raw) {
		if json.Unmarshal(raw, &req.presences) != nil {
			return req, "request guild members: presences must be a boolean"
		}
	}
	var nonce string
	if json.Unmarshal(obj["nonce"], &nonce) == nil && len(nonce) <= memberNonceMax {
		req.nonce = nonce
	}
	return req, ""
}

// jsonSnowflake reads an ID sent as a string of digits or as a number.
func jsonSnowflake(raw json.RawMessage) (uint64, bool) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		s = strings.TrimSpace(string(raw))
	}
	id, err := strconv.ParseUint(s, 10, 64)
	return id, err == nil
}

// requestMembers answers a decoded op 8 on the session that sent it.
func (g *gatewayState) requestMembers(sess *session, req memberRequest) {
	g.bump(func(st *GatewayStats) { st.MemberRequests++ })
	gd, ok := g.s.world.guild(req.guildID)
	if !ok || gd.Unavailable || ShardFor(gd.ID, sess.num) != sess.shard ||
		req.userIDs == nil && req.query == "" && sess.intents&IntentGuildMembers == 0 {
		g.bump(func(st *GatewayStats) { st.MemberRequestsIgnored++ })
		return
	}
	if sess.intents&IntentGuildPresences == 0 {
		req.presences = false
	}
	now := time.Now()
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if req.everyMember() {
		window := g.s.cfg.MemberRequestWindow
		if last, ok := sess.memberReqs[gd.ID]; ok && now.Sub(last) < window {
			e := g.newEvent("RATE_LIMITED", 0, rateLimitedJSON(gd.ID, req.nonce, window-now.Sub(last)))
			sess.pushLocked(e)
			g.bump(func(st *GatewayStats) { st.MemberRateLimited++ })
			return
		}
		if sess.memberReqs == nil {
			sess.memberReqs = map[uint64]time.Time{}
		}
		sess.memberReqs[gd.ID] = now
	}
	chunks := planMemberChunks(&gd, sess.tokenIdx, req)
	tmpl := newMemberTemplate(&gd, sess.tokenIdx)
	for _, ch := range chunks {
		// guildID 0: the answer goes to this session only, never routed to the guild's other sessions.
		e := g.newEvent("GUILD_MEMBERS_CHUNK", 0, nil)
		e.render = func() []byte { return ch.render(tmpl) }
		sess.pushLocked(e)
	}
	g.bump(func(st *GatewayStats) { st.MemberChunks += int64(len(chunks)) })
}

// rateLimitedJSON is RATE_LIMITED's d for op 8: retry_after in seconds, rounded up to the millisecond.
func rateLimitedJSON(guildID uint64, nonce string, wait time.Duration) []byte {
	ms := (wait + time.Millisecond - 1) / time.Millisecond
	b := []byte(`{"opcode":8,"retry_after":`)
	b = strconv.AppendFloat(b, float64(ms)/1000, 'f', -1, 64)
	b = append(b, `,"meta":{"guild_id":"`...)
	b = strconv.AppendUint(b, guildID, 10)
	b = append(b, '"')
	if nonce != "" {
		b = append(b, `,"nonce":`...)
		b = append(b, mustMarshal(nonce)...)
	}
	return append(b, `}}`...)
}

// memberChunk is one GUILD_MEMBERS_CHUNK, described by member indices rather than members: -1 is the
// bot, i >= 0 is member i. Either idx lists them, or they are bot (if set) then lo..hi-1.
type memberChunk struct {
	guildID      uint64
	bot          bool
	lo, hi       int
	idx          []int
	index, count int
	notFound     []uint64
	presences    bool
	nonce        string
}

// planMemberChunks decides which members answer a request and splits them into chunks.
func planMemberChunks(gd *Guild, tokenIdx int, req memberRequest) []memberChunk {
	bot := botUser(tokenIdx)
	botID := BotUserID(tokenIdx)
	base := memberChunk{guildID: gd.ID, presences: req.presences, nonce: req.nonce}
	var picked []int // for query and user_ids
	switch {
	case req.userIDs != nil:
		base.notFound = []uint64{}
		seen := map[uint64]bool{}
		for _, id := range req.userIDs {
			if seen[id] {
				continue
			}
			if len(seen) == memberQueryMax {
				break
			}
			seen[id] = true
			if i, ok := memberIndex(gd, botID, id); ok {
				picked = append(picked, i)
			} else {
				base.notFound = append(base.notFound, id)
			}
		}
	case req.query != "":
		limit := req.limit
		if limit == 0 || limit > memberQueryMax {
			limit = memberQueryMax
		}
		picked = queryMembers(gd, bot.Username, strings.ToLower(req.query), limit)
	default:
		// Every member, or the first limit of them: the bot, then members 0, 1, ...
		total := guildMemberCount(gd)
		if req.limit > 0 {
			total = min(total, req.limit)
		}
		count := max(1, (total+memberChunkSize-1)/memberChunkSize)
		out := make([]memberChunk, count)
		for k := range out {
			ch := base
			ch.index, ch.count = k, count
			first, end := k*memberChunkSize, min((k+1)*memberChunkSize, total) // positions; 0 is the bot
			if first == 0 && end > 0 {
				ch.bot = true
				first = 1
			}
			ch.lo, ch.hi = first-1, end-1
			out[k] = ch
		}
		return out
	}
	ch := base
	ch.idx, ch.count = picked, 1
	if ch.idx == nil {
		ch.idx = []int{}
	}
	return []memberChunk{ch}
}

// memberIndex finds which member of the guild a user is: -1 for the bot.
func memberIndex(gd *Guild, botID, id uint64) (int, bool) {
	if id == botID {
		return -1, true
	}
	if id <= gd.ID {
		return 0, false
	}
	d := id - gd.ID - 1
	if d%4096 != 0 || d/4096 >= uint64(gd.MemberCount) {
		return 0, false
	}
	return int(d / 4096), true
}

// queryMembers returns up to limit members whose username starts with q (lower case). Members are named
// "user-<id>", so most queries are decided without looking at each member.
func queryMembers(gd *Guild, botName, q string, limit int) []int {
	var out []int
	if strings.HasPrefix(strings.ToLower(botName), q) {
		out = append(out, -1)
	}
	const prefix = "user-"
	if !strings.HasPrefix(q, prefix) && !strings.HasPrefix(prefix, q) {
		return out
	}
	var buf []byte
	for i := 0; i < gd.MemberCount && len(out) < limit; i++ {
		buf = append(append(buf[:0], prefix...), FormatID(MemberUserID(gd.ID, i))...)
		if len(buf) >= len(q) && string(buf[:len(q)]) == q {
			out = append(out, i)
		}
	}
	return out
}

// memberTemplate renders a guild's members fast: every simulated member is the same JSON but for its
// user ID (twice: id and username), so the object guildMember builds is cut around a placeholder ID.
type memberTemplate struct {
	parts [3][]byte // before the ID, between the two IDs, after the second
	bot   []byte    // the bot's member object
	botID string
}

const templateID = 987654321987654321

func newMemberTemplate(gd *Guild, tokenIdx int) *memberTemplate {
	full := mustMarshal(guildMember(gd, plainUser(templateID)))
	cut := strings.Split(string(full), FormatID(templateID))
	if len(cut) != 3 {
		panic("discordsim: member template: the user ID appears " + strconv.Itoa(len(cut)-1) + " times")
	}
	return &memberTemplate{parts: [3][]byte{[]byte(cut[0]), []byte(cut[1]), []byte(cut[2])},
		bot: mustMarshal(guildMember(gd, botUser(tokenIdx))), botID: FormatID(BotUserID(tokenIdx))}
}

func (t *memberTemplate) appendMember(b []byte, guildID uint64, i int) []byte {
	if i < 0 {
		return append(b, t.bot...)
	}
	id := MemberUserID(guildID, i)
	b = append(b, t.parts[0]...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, t.parts[1]...)
	b = strconv.AppendUint(b, id, 10)
	return append(b, t.parts[2]...)
}

// render makes the chunk's d.
func (ch *memberChunk) render(t *memberTemplate) []byte {
	n := len(ch.idx)
	if ch.idx == nil {
		n = ch.hi - ch.lo
		if ch.bot {
			n++
		}
	}
	b := make([]byte, 0, 64+n*(len(t.parts[0])+len(t.parts[1])+len(t.parts[2])+40))
	b = append(b, `{"guild_id":"`...)
	b = strconv.AppendUint(b, ch.guildID, 10)
	b = append(b, `","members":[`...)
	var online []int
	each := func(i int) {
		if b[len(b)-1] != '[' {
			b = append(b, ',')
		}
		b = t.appendMember(b, ch.guildID, i)
		if ch.presences && (i < 0 || memberOnline(i)) {
			online = append(online, i)
		}
	}
	if ch.idx != nil {
		for _, i := range ch.idx {
			each(i)
		}
	} else {
		if ch.bot {
			each(-1)
		}
		for i := ch.lo; i < ch.hi; i++ {
			each(i)
		}
	}
	b = append(b, `],"chunk_index":`...)
	b = strconv.AppendInt(b, int64(ch.index), 10)
	b = append(b, `,"chunk_count":`...)
	b = strconv.AppendInt(b, int64(ch.count), 10)
	if ch.notFound != nil {
		b = append(b, `,"not_found":[`...)
		for k, id := range ch.notFound {
			if k > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = strconv.AppendUint(b, id, 10)
			b = append(b, '"')
		}
		b = append(b, ']')
	}
	if ch.presences {
		b = append(b, `,"presences":[`...)
		for k, i := range online {
			if k > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"user":{"id":"`...)
			if i < 0 {
				b = append(b, t.botID...)
			} else {
				b = strconv.AppendUint(b, MemberUserID(ch.guildID, i), 10)
			}
			b = append(b, `"},"guild_id":"`...)
			b = strconv.AppendUint(b, ch.guildID, 10)
			b = append(b, `","status":"online","activities":[],"client_status":{"desktop":"online"}}`...)
		}
		b = append(b, ']')
	}
	if ch.nonce != "" {
		b = append(b, `,"nonce":`...)
		b = append(b, mustMarshal(ch.nonce)...)
	}
	return append(b, '}')
}

// SetGuildMembers sets how many members a guild has besides the bot (users MemberUserID(id, 0..n-1));
// false if the guild is unknown or n is negative. No event is sent: it changes what later GUILD_CREATEs,
// member requests and REST calls see. A guild costs no memory per member, so n may be in the millions.
func (s *Server) SetGuildMembers(id uint64, n int) bool {
	if n < 0 {
		return false
	}
	w := s.world
	w.mu.Lock()
	defer w.mu.Unlock()
	g, ok := w.byID[id]
	if ok {
		g.MemberCount = n
	}
	return ok
}
