package discordsim

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The route table: every REST route the simulator serves, with its bucket. Limits are close to what
// Discord answers for a normal bot; where Discord's are unknown or vary, the choice is noted.

// Message-delete bucket boundaries by the message's age, as observed on Discord.
const (
	deleteRecentAge = 10 * time.Second
	deleteOldAge    = 14 * 24 * time.Hour
)

// interactionResponseWindow is how long after its creation an interaction may get its first response.
const interactionResponseWindow = 3 * time.Second

// maxWebhooksPerChannel is Discord's cap (error 30007).
const maxWebhooksPerChannel = 15

type restRoute struct {
	method  string
	pattern string
	key     string // method + " " + pattern
	segs    []string
	params  []string // names of the {param} segments, in order
	idx     int
	auth    bool // needs "Authorization: Bot <token>"
	global  bool // counts towards the global limit
	buckets []*bucketDef
	// pick chooses among buckets per request (message delete); nil means buckets[0].
	pick   func(c *restReq) *bucketDef
	shared *sharedDef // per-resource limit shared by every client, keyed by sharedResource
	// sharedResource names the resource of the shared limit (0: none for this request).
	sharedResource func(c *restReq) uint64
	handle         func(c *restReq)
}

// restRoutePattern groups the routes that share a path, so that a known path with another method is a 405.
type restRoutePattern struct {
	segs   []string
	routes []*restRoute
}

type restRouteTable struct {
	routes   []*restRoute
	patterns []*restRoutePattern
	buckets  map[string]*bucketDef // by name
	shared   map[string]*sharedDef // by route key
}

type restRouteOpt func(*restRoute)

// publicRoute marks routes that need no bot token and are exempt from the global limit (webhooks
// with a token, interaction callbacks).
func publicRoute(r *restRoute) { r.auth, r.global = false, false }

func withSharedLimit(limit int, window time.Duration, resource func(c *restReq) uint64) restRouteOpt {
	return func(r *restRoute) {
		d := &sharedDef{}
		d.limit.Store(int64(limit))
		d.window.Store(int64(window))
		r.shared, r.sharedResource = d, resource
	}
}

func withBucketPicker(f func(c *restReq) *bucketDef) restRouteOpt {
	return func(r *restRoute) { r.pick = f }
}

func newRESTRouteTable() *restRouteTable {
	t := &restRouteTable{buckets: map[string]*bucketDef{}, shared: map[string]*sharedDef{}}
	b := func(name string, major Major, limit int, window time.Duration) *bucketDef {
		d := newBucketDef(name, major, limit, window)
		t.buckets[name] = d
		return d
	}
	add := func(method, pattern string, h func(*restReq), buckets []*bucketDef, opts ...restRouteOpt) {
		r := &restRoute{method: method, pattern: pattern, key: method + " " + pattern, auth: true, global: true,
			buckets: buckets, handle: h, idx: len(t.routes)}
		r.segs = strings.Split(strings.TrimPrefix(pattern, "/"), "/")
		for _, s := range r.segs {
			if strings.HasPrefix(s, "{") {
				r.params = append(r.params, s[1:len(s)-1])
			}
		}
		for _, o := range opts {
			o(r)
		}
		if r.shared != nil {
			t.shared[r.key] = r.shared
		}
		t.routes = append(t.routes, r)
		for _, p := range t.patterns {
			if strings.Join(p.segs, "/") == strings.Join(r.segs, "/") {
				p.routes = append(p.routes, r)
				return
			}
		}
		t.patterns = append(t.patterns, &restRoutePattern{segs: r.segs, routes: []*restRoute{r}})
	}
	one := func(d *bucketDef) []*bucketDef { return []*bucketDef{d} }
	sec := time.Second

	add("GET", "/gateway", hGateway, nil, publicRoute)
	add("GET", "/gateway/bot", hGatewayBot, one(b("gateway-bot", MajorNone, 5, 5*sec)))

	add("GET", "/users/@me", hUserMe, one(b("user-me", MajorNone, 5, 5*sec)))
	add("POST", "/users/@me/channels", hCreateDM, one(b("dm-create", MajorNone, 5, 5*sec)))
	add("GET", "/users/{user_id}", hUser, one(b("user", MajorNone, 5, sec)))
	app := one(b("application", MajorNone, 5, 5*sec))
	add("GET", "/applications/@me", hApplication, app)
	add("GET", "/oauth2/applications/@me", hApplication, app)

	// Channels and messages.
	add("GET", "/channels/{channel_id}", hGetChannel, one(b("channel-get", MajorChannel, 5, sec)))
	add("PATCH", "/channels/{channel_id}", hModifyChannel, one(b("channel-modify", MajorChannel, 5, 10*sec)))
	add("POST", "/channels/{channel_id}/typing", hNoContent, one(b("typing", MajorChannel, 5, 5*sec)))
	add("GET", "/channels/{channel_id}/messages", hGetMessages, one(b("messages-get", MajorChannel, 5, 5*sec)))
	add("POST", "/channels/{channel_id}/messages", hCreateMessage, one(b("message-create", MajorChannel, 5, 5*sec)))
	add("POST", "/channels/{channel_id}/messages/bulk-delete", hBulkDelete, one(b("bulk-delete", MajorChannel, 1, sec)))
	msg := one(b("message", MajorChannel, 5, 5*sec))
	add("GET", "/channels/{channel_id}/messages/{message_id}", hGetMessage, msg)
	add("PATCH", "/channels/{channel_id}/messages/{message_id}", hEditMessage, msg)
	delRecent := b("message-delete-recent", MajorChannel, 5, sec)
	delRecent.when = "message younger than 10s"
	delMid := b("message-delete", MajorChannel, 3, 333*time.Millisecond)
	delMid.when = "message between 10s and 14 days old"
	delOld := b("message-delete-old", MajorChannel, 30, 4*sec)
	delOld.when = "message older than 14 days"
	add("DELETE", "/channels/{channel_id}/messages/{message_id}", hNoContent,
		[]*bucketDef{delRecent, delMid, delOld}, withBucketPicker(func(c *restReq) *bucketDef {
			switch age := snowflakeAge(c.id("message_id")); {
			case age < deleteRecentAge:
				return delRecent
			case age < deleteOldAge:
				return delMid
			default:
				return delOld
			}
		}))
	react := one(b("reactions", MajorChannel, 1, 250*time.Millisecond))
	add("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", hReaction, react)
	add("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", hReaction, react)
	add("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user_id}", hReaction, react)
	hooks := one(b("channel-webhooks", MajorChannel, 5, 5*sec))
	add("POST", "/channels/{channel_id}/webhooks", hCreateWebhook, hooks)
	add("GET", "/channels/{channel_id}/webhooks", hChannelWebhooks, hooks)

	// Guilds and members.
	add("GET", "/guilds/{guild_id}", hGetGuild, one(b("guild", MajorGuild, 5, sec)))
	add("GET", "/guilds/{guild_id}/channels", hGuildChannels, one(b("guild-channels", MajorGuild, 5, sec)))
	add("GET", "/guilds/{guild_id}/roles", hGuildRoles, one(b("guild-roles", MajorGuild, 5, sec)))
	add("GET", "/guilds/{guild_id}/members", hListMembers, one(b("members-list", MajorGuild, 10, 10*sec)))
	add("GET", "/guilds/{guild_id}/members/{user_id}", hGetMember, one(b("member-get", MajorGuild, 5, sec)))
	add("PATCH", "/guilds/{guild_id}/members/{user_id}", hModifyMember, one(b("member-modify", MajorGuild, 10, 10*sec)))
	roles := one(b("member-roles", MajorGuild, 10, 10*sec))
	add("PUT", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}", hMemberRole, roles)
	add("DELETE", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}", hMemberRole, roles)

	// Application commands; Discord's real PUT limit is stricter still for new command creations.
	add("GET", "/applications/{application_id}/commands", hGetCommands, one(b("commands-get", MajorNone, 5, 5*sec)))
	add("PUT", "/applications/{application_id}/commands", hPutCommands, one(b("commands-overwrite", MajorNone, 5, 20*sec)))
	add("GET", "/applications/{application_id}/guilds/{guild_id}/commands", hGetCommands,
		one(b("guild-commands-get", MajorGuild, 5, 5*sec)))
	add("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", hPutCommands,
		one(b("guild-commands-overwrite", MajorGuild, 5, 20*sec)))

	// Interactions and webhooks with a token: no bot auth, exempt from the global limit.
	add("POST", "/interactions/{interaction_id}/{interaction_token}/callback", hInteractionCallback,
		one(b("interaction-callback", MajorInteraction, 5, sec)), publicRoute)
	// Webhook executions are also limited per channel for everyone (30/min observed), a shared limit.
	add("POST", "/webhooks/{webhook_id}/{webhook_token}", hExecuteWebhook,
		one(b("webhook-execute", MajorWebhook, 5, 2*sec)), publicRoute,
		withSharedLimit(30, time.Minute, func(c *restReq) uint64 {
			if h, ok := c.rs.webhook(c.id("webhook_id")); ok {
				return h.channel
			}
			return 0
		}))
	hook := one(b("webhook", MajorWebhook, 5, 5*sec))
	add("GET", "/webhooks/{webhook_id}/{webhook_token}", hGetWebhook, hook, publicRoute)
	add("PATCH", "/webhooks/{webhook_id}/{webhook_token}", hModifyWebhook, hook, publicRoute)
	add("DELETE", "/webhooks/{webhook_id}/{webhook_token}", hDeleteWebhook, hook, publicRoute)
	hookMsg := one(b("webhook-message", MajorWebhook, 5, 5*sec))
	add("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_ref}", hWebhookMessage, hookMsg, publicRoute)
	add("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_ref}", hWebhookMessage, hookMsg, publicRoute)
	add("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_ref}", hWebhookMessage, hookMsg, publicRoute)
	return t
}

// match finds the route for a path (segments after /api[/vN]). It returns the pattern's routes when
// the path is known but the method is not (405), and nothing for an unknown path (404).
func (t *restRouteTable) match(method string, segs []string) (*restRoute, *restRoutePattern) {
	for _, p := range t.patterns {
		if len(p.segs) != len(segs) {
			continue
		}
		ok := true
		for i, s := range p.segs {
			if s[0] == '{' {
				if segs[i] == "" {
					ok = false
					break
				}
			} else if s != segs[i] {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		for _, r := range p.routes {
			if r.method == method {
				return r, p
			}
		}
		return nil, p
	}
	return nil, nil
}

func (t *restRouteTable) limits() []RouteLimit {
	var out []RouteLimit
	for _, r := range t.routes {
		base := RouteLimit{Route: r.key, Global: r.global}
		if r.shared != nil {
			base.SharedLimit, base.SharedWindow = int(r.shared.limit.Load()), time.Duration(r.shared.window.Load())
		}
		if len(r.buckets) == 0 {
			out = append(out, base)
			continue
		}
		for _, d := range r.buckets {
			l := base
			l.Bucket, l.Hash, l.Major, l.When = d.name, d.hash, d.major, d.when
			l.Limit, l.Window = int(d.limit.Load()), time.Duration(d.window.Load())
			out = append(out, l)
		}
	}
	return out
}

// DefaultRouteLimits is the simulator's rate-limit table before any SetRouteLimit.
func DefaultRouteLimits() []RouteLimit { return newRESTRouteTable().limits() }

// restReq is one request on its way through the REST side.
type restReq struct {
	rs    *restState
	w     http.ResponseWriter
	r     *http.Request
	rt    *restRoute
	body  *bodyReader
	vals  [6]string
	ids   [6]uint64
	tok   int    // bot token index, -1 when none
	guild uint64 // the guild of channel_id, 0 for a DM
}

func (c *restReq) param(name string) string {
	for i, p := range c.rt.params {
		if p == name {
			return c.vals[i]
		}
	}
	return ""
}

func (c *restReq) id(name string) uint64 {
	for i, p := range c.rt.params {
		if p == name {
			return c.ids[i]
		}
	}
	return 0
}

// parseParams reads the path parameters (already unescaped); those named *_id must be snowflakes.
func (c *restReq) parseParams(segs []string) bool {
	n := 0
	for i, s := range c.rt.segs {
		if s[0] != '{' {
			continue
		}
		v, name := segs[i], c.rt.params[n]
		c.vals[n] = v
		if strings.HasSuffix(name, "_id") || (name == "message_ref" && v != "@original") {
			id, err := strconv.ParseUint(v, 10, 64)
			if err != nil || id == 0 {
				writeFormError(c.w, name, "NUMBER_TYPE_COERCE", "Value \""+v+"\" is not snowflake.")
				return false
			}
			c.ids[n] = id
		}
		n++
	}
	return true
}

// major is the top-level resource of the bucket: the rest of the bucket key after the hash.
func (c *restReq) major(d *bucketDef) bucketKey {
	k := bucketKey{def: d}
	switch d.major {
	case MajorChannel:
		k.id = c.id("channel_id")
	case MajorGuild:
		k.id = c.id("guild_id")
	case MajorWebhook:
		k.id, k.tok = c.id("webhook_id"), c.param("webhook_token")
	case MajorInteraction:
		k.id, k.tok = c.id("interaction_id"), c.param("interaction_token")
	}
	return k
}

// exists answers 404 for unknown channels, guilds and messages named in the path. Messages are not
// stored: any message ID is accepted unless it cannot exist (minted in the future).
func (c *restReq) exists() bool {
	if ch := c.id("channel_id"); ch != 0 {
		g, ok := c.rs.s.world.channelGuild(ch)
		if !ok && !c.rs.isDM(ch) {
			writeError(c.w, http.StatusNotFound, 10003, "Unknown Channel")
			return false
		}
		c.guild = g
	}
	if g := c.id("guild_id"); g != 0 {
		if _, ok := c.rs.s.world.guild(g); !ok {
			writeError(c.w, http.StatusNotFound, 10004, "Unknown Guild")
			return false
		}
	}
	for _, name := range [...]string{"message_id", "message_ref"} {
		if m := c.id(name); m != 0 && snowflakeAge(m) < 0 {
			writeError(c.w, http.StatusNotFound, 10008, "Unknown Message")
			return false
		}
	}
	return true
}

func (c *restReq) author() simUser {
	if c.tok >= 0 {
		return botUser(c.tok)
	}
	return botUser(0)
}

func hNoContent(c *restReq) { c.w.WriteHeader(http.StatusNoContent) }

func hGateway(c *restReq) {
	writeJSON(c.w, http.StatusOK, map[string]string{"url": c.rs.s.GatewayURL()})
}

func hGatewayBot(c *restReq) {
	s := c.rs.s
	shards := int(math.Ceil(float64(s.world.count()) / float64(s.cfg.GuildsPerRecommendedShard)))
	writeJSON(c.w, http.StatusOK, struct {
		URL               string            `json:"url"`
		Shards            int               `json:"shards"`
		SessionStartLimit SessionStartLimit `json:"session_start_limit"`
	}{s.GatewayURL(), max(1, shards), s.gw.sessionStartLimit(c.tok)})
}

func hUserMe(c *restReq) { writeJSON(c.w, http.StatusOK, currentUser(c.tok)) }

func hUser(c *restReq) {
	id := c.id("user_id")
	if snowflakeAge(id) < 0 {
		writeError(c.w, http.StatusNotFound, 10013, "Unknown User")
		return
	}
	for i := range c.rs.s.cfg.Tokens {
		if id == BotUserID(i) {
			writeJSON(c.w, http.StatusOK, botUser(i))
			return
		}
	}
	writeJSON(c.w, http.StatusOK, plainUser(id))
}

func hApplication(c *restReq) {
	u := botUser(c.tok)
	writeJSON(c.w, http.StatusOK, simApplication{simPartialApplication: botApplication(c.tok, c.rs.s.cfg.PrivilegedIntents),
		Name: u.Username, Bot: u})
}

func hCreateDM(c *restReq) {
	var body struct {
		RecipientID json.Number `json:"recipient_id"`
	}
	if !c.readJSON(&body) {
		return
	}
	id, err := strconv.ParseUint(body.RecipientID.String(), 10, 64)
	if err != nil || id == 0 || snowflakeAge(id) < 0 {
		writeFormError(c.w, "recipient_id", "NUMBER_TYPE_COERCE", "Value \""+body.RecipientID.String()+"\" is not snowflake.")
		return
	}
	writeJSON(c.w, http.StatusOK, dmChannel(c.rs.dmFor(id), id))
}

func (c *restReq) channelObj() simChannel {
	ch := c.id("channel_id")
	if c.guild == 0 {
		return dmChannel(ch, c.rs.dmRecipient(ch))
	}
	g, _ := c.rs.s.world.guild(c.guild)
	return guildChannel(&g, ch, channelPosition(&g, ch))
}

func hGetChannel(c *restReq) { writeJSON(c.w, http.StatusOK, c.channelObj()) }

func hModifyChannel(c *restReq) {
	var body struct {
		Name  *string `json:"name"`
		Topic *string `json:"topic"`
	}
	if !c.readJSON(&body) {
		return
	}
	obj := c.channelObj()
	gc := obj.simGuildChannel
	if gc == nil { // a DM has no name or topic: it answers unchanged
		gc = &simGuildChannel{}
	}
	if body.Name != nil {
		if n := len([]rune(*body.Name)); n < 1 || n > 100 {
			writeFormError(c.w, "name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
			return
		}
		gc.Name = *body.Name
	}
	if body.Topic != nil {
		if len([]rune(*body.Topic)) > 1024 {
			writeFormError(c.w, "topic", "BASE_TYPE_MAX_LENGTH", "Must be 1024 or fewer in length.")
			return
		}
		gc.Topic = body.Topic
	}
	writeJSON(c.w, http.StatusOK, obj)
}

// queryInt reads an optional integer query parameter within [lo, hi]; it answers 50035 when invalid.
func (c *restReq) queryInt(name string, def, lo, hi int) (int, bool) {
	s := c.r.URL.Query().Get(name)
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		writeFormError(c.w, name, "NUMBER_TYPE_MAX", "Int value should be between "+strconv.Itoa(lo)+" and "+strconv.Itoa(hi)+".")
		return 0, false
	}
	return n, true
}

func (c *restReq) querySnowflake(name string) (uint64, bool) {
	s := c.r.URL.Query().Get(name)
	if s == "" {
		return 0, true
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		writeFormError(c.w, name, "NUMBER_TYPE_COERCE", "Value \""+s+"\" is not snowflake.")
		return 0, false
	}
	return id, true
}

// hGetMessages synthesises history, newest first: messages one millisecond apart before `before`
// (or now), or the oldest ones after `after` up to now.
func hGetMessages(c *restReq) {
	limit, ok := c.queryInt("limit", 50, 1, 100)
	if !ok {
		return
	}
	before, ok1 := c.querySnowflake("before")
	after, ok2 := c.querySnowflake("after")
	if !ok1 || !ok2 {
		return
	}
	ch := c.id("channel_id")
	nowID := Snowflake(time.Now().UnixMilli(), 0)
	if before == 0 {
		before = nowID + 1<<22
	}
	ids := make([]uint64, 0, limit)
	for i := uint64(1); len(ids) < limit; i++ {
		step := i << 22
		if after != 0 {
			if after+step >= before || after+step > nowID {
				break
			}
			ids = append(ids, after+step)
		} else {
			if before <= step {
				break
			}
			ids = append(ids, before-step)
		}
	}
	out := make([]simMessage, len(ids))
	for i, id := range ids {
		if after != 0 {
			i = len(ids) - 1 - i
		}
		out[i] = newMessage(id, ch, c.author())
	}
	writeJSON(c.w, http.StatusOK, out)
}

func (c *restReq) messageFrom(p *restPayload, id, ch uint64) simMessage {
	m := newMessage(id, ch, c.author())
	if p.Content != nil {
		m.Content = *p.Content
	}
	if p.Embeds != nil {
		m.Embeds = p.Embeds
	}
	if p.Components != nil {
		m.Components = p.Components
	}
	if p.files != nil {
		for i := range p.files {
			a := &p.files[i]
			a.URL = "https://cdn.discordapp.com/attachments/" + FormatID(ch) + "/" + a.ID + "/" + url.PathEscape(a.Filename)
			a.ProxyURL = "https://media.discordapp.net/attachments/" + FormatID(ch) + "/" + a.ID + "/" + url.PathEscape(a.Filename)
		}
		m.Attachments = p.files
	}
	m.TTS, m.Flags, m.Nonce = p.TTS, p.Flags, p.Nonce
	return m
}

func hCreateMessage(c *restReq) {
	var p restPayload
	if !c.readPayload(&p) || !c.validMessage(&p) {
		return
	}
	writeJSON(c.w, http.StatusOK, c.messageFrom(&p, c.rs.newID(), c.id("channel_id")))
}

func hGetMessage(c *restReq) {
	writeJSON(c.w, http.StatusOK, newMessage(c.id("message_id"), c.id("channel_id"), c.author()))
}

func hEditMessage(c *restReq) {
	var p restPayload
	if !c.readPayload(&p) {
		return
	}
	m := c.messageFrom(&p, c.id("message_id"), c.id("channel_id"))
	edited := discordTime(time.Now())
	m.EditedTimestamp = &edited
	writeJSON(c.w, http.StatusOK, m)
}

func hBulkDelete(c *restReq) {
	var body struct {
		Messages []json.Number `json:"messages"`
	}
	if !c.readJSON(&body) {
		return
	}
	if n := len(body.Messages); n < 2 || n > 100 {
		writeFormError(c.w, "messages", "BASE_TYPE_BAD_LENGTH", "Must be between 2 and 100 in length.")
		return
	}
	for _, s := range body.Messages {
		id, err := strconv.ParseUint(s.String(), 10, 64)
		if err != nil || id == 0 {
			writeFormError(c.w, "messages", "NUMBER_TYPE_COERCE", "Value \""+s.String()+"\" is not snowflake.")
			return
		}
		if snowflakeAge(id) >= deleteOldAge {
			writeError(c.w, http.StatusBadRequest, 50034, "You can only bulk delete messages that are under 14 days old.")
			return
		}
	}
	c.w.WriteHeader(http.StatusNoContent)
}

func hReaction(c *restReq) {
	e := c.param("emoji")
	if i := strings.LastIndexByte(e, ':'); i >= 0 {
		if _, err := strconv.ParseUint(e[i+1:], 10, 64); err != nil || i == 0 {
			writeError(c.w, http.StatusBadRequest, 10014, "Unknown Emoji")
			return
		}
	}
	c.w.WriteHeader(http.StatusNoContent)
}

func hGetGuild(c *restReq) {
	g, _ := c.rs.s.world.guild(c.id("guild_id"))
	obj := newGuild(&g)
	if c.r.URL.Query().Get("with_counts") == "true" {
		n, p := g.MemberCount, g.MemberCount/2
		obj.ApproximateMemberCount, obj.ApproximatePresenceCount = &n, &p
	}
	writeJSON(c.w, http.StatusOK, obj)
}

func hGuildChannels(c *restReq) {
	g, _ := c.rs.s.world.guild(c.id("guild_id"))
	out := make([]simChannel, len(g.Channels))
	for i, ch := range g.Channels {
		out[i] = guildChannel(&g, ch, i)
	}
	writeJSON(c.w, http.StatusOK, out)
}

func hGuildRoles(c *restReq) {
	g, _ := c.rs.s.world.guild(c.id("guild_id"))
	writeJSON(c.w, http.StatusOK, guildRoles(&g))
}

// memberOf returns the member object for a user of a guild: one of its MemberCount members, or a bot.
func (c *restReq) memberOf(g *Guild, u uint64) (simMember, bool) {
	for i := range c.rs.s.cfg.Tokens {
		if u == BotUserID(i) {
			return guildMember(g, botUser(i)), true
		}
	}
	if u <= g.ID {
		return simMember{}, false
	}
	d := u - g.ID - 1
	if d%4096 != 0 || d/4096 >= uint64(g.MemberCount) {
		return simMember{}, false
	}
	return guildMember(g, plainUser(u)), true
}

func (c *restReq) member() (Guild, simMember, bool) {
	g, _ := c.rs.s.world.guild(c.id("guild_id"))
	m, ok := c.memberOf(&g, c.id("user_id"))
	if !ok {
		writeError(c.w, http.StatusNotFound, 10007, "Unknown Member")
	}
	return g, m, ok
}

func hGetMember(c *restReq) {
	if _, m, ok := c.member(); ok {
		writeJSON(c.w, http.StatusOK, m)
	}
}

// gatewayIntentGuildMembers is the privileged intent that List Guild Members needs enabled.
const gatewayIntentGuildMembers = 1 << 1

// hListMembers lists the guild's members (not the bots) in user ID order, as Discord does. Like
// Discord, it needs the GUILD_MEMBERS privileged intent enabled for the application.
func hListMembers(c *restReq) {
	if c.rs.s.cfg.PrivilegedIntents&gatewayIntentGuildMembers == 0 {
		writeError(c.w, http.StatusForbidden, 50001, "Missing Access")
		return
	}
	limit, ok := c.queryInt("limit", 1, 1, 1000)
	if !ok {
		return
	}
	after, ok := c.querySnowflake("after")
	if !ok {
		return
	}
	g, _ := c.rs.s.world.guild(c.id("guild_id"))
	start := 0
	if after > g.ID {
		start = int((after-g.ID-1)/4096) + 1
	}
	out := make([]simMember, 0, min(limit, max(0, g.MemberCount-start)))
	for i := start; i < g.MemberCount && len(out) < limit; i++ {
		out = append(out, guildMember(&g, plainUser(MemberUserID(g.ID, i))))
	}
	writeJSON(c.w, http.StatusOK, out)
}

func hModifyMember(c *restReq) {
	var body struct {
		Nick  *string       `json:"nick"`
		Roles []json.Number `json:"roles"`
		Mute  *bool         `json:"mute"`
		Deaf  *bool         `json:"deaf"`
	}
	if !c.readJSON(&body) {
		return
	}
	_, m, ok := c.member()
	if !ok {
		return
	}
	if body.Nick != nil && len([]rune(*body.Nick)) > 32 {
		writeFormError(c.w, "nick", "BASE_TYPE_MAX_LENGTH", "Must be 32 or fewer in length.")
		return
	}
	m.Nick = body.Nick
	for _, r := range body.Roles {
		m.Roles = append(m.Roles, r.String())
	}
	if body.Mute != nil {
		m.Mute = *body.Mute
	}
	if body.Deaf != nil {
		m.Deaf = *body.Deaf
	}
	writeJSON(c.w, http.StatusOK, m)
}

func hMemberRole(c *restReq) {
	g, _, ok := c.member()
	if !ok {
		return
	}
	role := c.id("role_id")
	for _, r := range g.RoleIDs {
		if r == role {
			c.w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	writeError(c.w, http.StatusNotFound, 10011, "Unknown Role")
}

// ownApplication answers 403 unless the path names the calling bot's own application.
func (c *restReq) ownApplication() bool {
	if c.id("application_id") != BotUserID(c.tok) {
		writeError(c.w, http.StatusForbidden, 50001, "Missing Access")
		return false
	}
	return true
}

func hGetCommands(c *restReq) {
	if !c.ownApplication() {
		return
	}
	writeJSON(c.w, http.StatusOK, c.rs.commands(c.tok, c.id("guild_id")))
}

func hPutCommands(c *restReq) {
	if !c.ownApplication() {
		return
	}
	var cmds []map[string]any
	if !c.readJSON(&cmds) {
		return
	}
	if len(cmds) > 100 {
		writeFormError(c.w, "_root", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
		return
	}
	for i, cmd := range cmds {
		name, _ := cmd["name"].(string)
		typ, _ := cmd["type"].(float64)
		desc, _ := cmd["description"].(string)
		field := strconv.Itoa(i)
		if n := len([]rune(name)); n < 1 || n > 32 {
			writeFormError(c.w, field+".name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
			return
		}
		if (typ == 0 || typ == 1) && (len([]rune(desc)) < 1 || len([]rune(desc)) > 100) {
			writeFormError(c.w, field+".description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
			return
		}
	}
	writeJSON(c.w, http.StatusOK, c.rs.setCommands(c.tok, c.id("guild_id"), cmds))
}

func hInteractionCallback(c *restReq) {
	id := c.id("interaction_id")
	if age := snowflakeAge(id); age < 0 || age > interactionResponseWindow {
		writeError(c.w, http.StatusNotFound, 10062, "Unknown interaction")
		return
	}
	var body struct {
		Type *int            `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	files, ok := c.readBody(&body)
	if !ok {
		return
	}
	if body.Type == nil {
		writeFormError(c.w, "type", "BASE_TYPE_REQUIRED", "This field is required")
		return
	}
	switch *body.Type {
	case 1, 4, 5, 6, 7, 8, 9, 10, 12:
	default:
		writeFormError(c.w, "type", "ENUM_TYPE_COERCE", "Value \""+strconv.Itoa(*body.Type)+"\" is not a valid enum value.")
		return
	}
	if !c.rs.answerInteraction(id) {
		writeError(c.w, http.StatusBadRequest, 40060, "Interaction has already been acknowledged.")
		return
	}
	if c.r.URL.Query().Get("with_response") != "true" {
		c.w.WriteHeader(http.StatusNoContent)
		return
	}
	res := map[string]any{"type": *body.Type}
	if *body.Type == 4 {
		p := restPayload{files: files}
		if len(body.Data) > 0 && !c.decodeJSON(body.Data, &p, "data") {
			return
		}
		m := c.messageFrom(&p, c.rs.newID(), 0)
		m.Type = 20
		res["message"] = m
	}
	writeJSON(c.w, http.StatusOK, map[string]any{
		"interaction": map[string]any{"id": FormatID(id), "type": 2, "response_message_loading": *body.Type == 5},
		"resource":    res,
	})
}

// restWebhook is a webhook created through the simulator.
type restWebhook struct {
	id, channel, guild uint64
	token, name        string
	owner              int
}

// hookAuth resolves /webhooks/{webhook_id}/{webhook_token}: a webhook created here, or an application
// ID (interaction follow-ups, any token). It answers 404 10015 or 401 50027 otherwise.
func (c *restReq) hookAuth() (restWebhook, bool) {
	id, tok := c.id("webhook_id"), c.param("webhook_token")
	if h, ok := c.rs.webhook(id); ok {
		if !subtleEqual(h.token, tok) {
			writeError(c.w, http.StatusUnauthorized, 50027, "Invalid Webhook Token")
			return restWebhook{}, false
		}
		return h, true
	}
	for i := range c.rs.s.cfg.Tokens {
		if id == BotUserID(i) {
			return restWebhook{id: id, token: tok, name: botUser(i).Username, owner: i}, true
		}
	}
	c.rs.stats.unknownWebhook.Add(1)
	writeError(c.w, http.StatusNotFound, 10015, "Unknown Webhook")
	return restWebhook{}, false
}

func (h restWebhook) object(base string, withUser bool) simWebhook {
	o := simWebhook{ID: FormatID(h.id), Type: 1, GuildID: FormatID(h.guild), ChannelID: FormatID(h.channel), Name: h.name,
		ApplicationID: FormatID(BotUserID(h.owner)), Token: h.token, URL: base + "/webhooks/" + FormatID(h.id) + "/" + h.token}
	if withUser {
		u := botUser(h.owner)
		o.User = &u
	}
	return o
}

func hCreateWebhook(c *restReq) {
	if c.guild == 0 {
		writeError(c.w, http.StatusBadRequest, 50003, "Cannot execute action on a DM channel")
		return
	}
	var body struct {
		Name *string `json:"name"`
	}
	if !c.readJSON(&body) {
		return
	}
	if body.Name == nil {
		writeFormError(c.w, "name", "BASE_TYPE_REQUIRED", "This field is required")
		return
	}
	if n := len([]rune(*body.Name)); n < 1 || n > 80 {
		writeFormError(c.w, "name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 80 in length.")
		return
	}
	if l := strings.ToLower(*body.Name); strings.Contains(l, "clyde") || strings.Contains(l, "discord") {
		writeFormError(c.w, "name", "USERNAME_INVALID_CONTAINS", "Username cannot contain \"clyde\" or \"discord\"")
		return
	}
	var raw [51]byte
	_, _ = rand.Read(raw[:])
	h := restWebhook{id: c.rs.newID(), channel: c.id("channel_id"), guild: c.guild, name: *body.Name, owner: c.tok,
		token: base64.RawURLEncoding.EncodeToString(raw[:])}
	if !c.rs.addWebhook(h) {
		writeError(c.w, http.StatusBadRequest, 30007, "Maximum number of webhooks reached (15)")
		return
	}
	writeJSON(c.w, http.StatusOK, h.object(c.rs.s.APIURL(), true))
}

func hChannelWebhooks(c *restReq) {
	hooks := c.rs.channelWebhooks(c.id("channel_id"))
	out := make([]simWebhook, len(hooks))
	for i, h := range hooks {
		out[i] = h.object(c.rs.s.APIURL(), true)
	}
	writeJSON(c.w, http.StatusOK, out)
}

func hExecuteWebhook(c *restReq) {
	h, ok := c.hookAuth()
	if !ok {
		return
	}
	var p restPayload
	if !c.readPayload(&p) || !c.validMessage(&p) {
		return
	}
	if c.r.URL.Query().Get("wait") != "true" {
		c.w.WriteHeader(http.StatusNoContent)
		return
	}
	m := c.messageFrom(&p, c.rs.newID(), h.channel)
	m.Author = simUser{ID: FormatID(h.id), Username: h.name, Discriminator: "0000", Bot: true}
	if p.Username != "" {
		m.Author.Username = p.Username
	}
	m.WebhookID = FormatID(h.id)
	writeJSON(c.w, http.StatusOK, m)
}

func hGetWebhook(c *restReq) {
	if h, ok := c.hookAuth(); ok {
		writeJSON(c.w, http.StatusOK, h.object(c.rs.s.APIURL(), false))
	}
}

func hModifyWebhook(c *restReq) {
	h, ok := c.hookAuth()
	if !ok {
		return
	}
	var body struct {
		Name *string `json:"name"`
	}
	if !c.readJSON(&body) {
		return
	}
	if body.Name != nil {
		if n := len([]rune(*body.Name)); n < 1 || n > 80 {
			writeFormError(c.w, "name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 80 in length.")
			return
		}
		h.name = *body.Name
		c.rs.renameWebhook(h.id, h.name)
	}
	writeJSON(c.w, http.StatusOK, h.object(c.rs.s.APIURL(), false))
}

func hDeleteWebhook(c *restReq) {
	h, ok := c.hookAuth()
	if !ok {
		return
	}
	c.rs.deleteWebhook(h.id)
	c.w.WriteHeader(http.StatusNoContent)
}

func hWebhookMessage(c *restReq) {
	h, ok := c.hookAuth()
	if !ok {
		return
	}
	id := c.id("message_ref")
	if id == 0 { // @original: the interaction's first response
		id = Snowflake(time.Now().UnixMilli(), 0)
	}
	switch c.r.Method {
	case http.MethodDelete:
		c.w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodPatch:
		var p restPayload
		if !c.readPayload(&p) {
			return
		}
		m := c.messageFrom(&p, id, h.channel)
		m.WebhookID = FormatID(h.id)
		edited := discordTime(time.Now())
		m.EditedTimestamp = &edited
		writeJSON(c.w, http.StatusOK, m)
		return
	}
	m := newMessage(id, h.channel, c.author())
	m.WebhookID = FormatID(h.id)
	writeJSON(c.w, http.StatusOK, m)
}
