package discordsim

import (
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Gateway intents (API v10). validIntents is every documented bit: IDENTIFY with any other bit closes
// with 4013.
const (
	IntentGuilds                      = 1 << 0
	IntentGuildMembers                = 1 << 1 // privileged
	IntentGuildModeration             = 1 << 2
	IntentGuildExpressions            = 1 << 3
	IntentGuildIntegrations           = 1 << 4
	IntentGuildWebhooks               = 1 << 5
	IntentGuildInvites                = 1 << 6
	IntentGuildVoiceStates            = 1 << 7
	IntentGuildPresences              = 1 << 8 // privileged
	IntentGuildMessages               = 1 << 9
	IntentGuildMessageReactions       = 1 << 10
	IntentGuildMessageTyping          = 1 << 11
	IntentDirectMessages              = 1 << 12
	IntentDirectMessageReactions      = 1 << 13
	IntentDirectMessageTyping         = 1 << 14
	IntentMessageContent              = 1 << 15 // privileged
	IntentGuildScheduledEvents        = 1 << 16
	IntentAutoModerationConfiguration = 1 << 20
	IntentAutoModerationExecution     = 1 << 21
	IntentGuildMessagePolls           = 1 << 24
	IntentDirectMessagePolls          = 1 << 25

	privilegedIntents = IntentGuildMembers | IntentGuildPresences | IntentMessageContent
	validIntents      = 1<<17 - 1 | IntentAutoModerationConfiguration | IntentAutoModerationExecution |
		IntentGuildMessagePolls | IntentDirectMessagePolls
)

// eventIntent is the intent a session needs to receive an event; 0 means every session gets it.
// inGuild distinguishes guild events from direct-message ones.
func eventIntent(name string, inGuild bool) int {
	pick := func(guild, dm int) int {
		if inGuild {
			return guild
		}
		return dm
	}
	switch name {
	case "GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE", "GUILD_ROLE_CREATE", "GUILD_ROLE_UPDATE",
		"GUILD_ROLE_DELETE", "CHANNEL_CREATE", "CHANNEL_UPDATE", "CHANNEL_DELETE", "THREAD_CREATE",
		"THREAD_UPDATE", "THREAD_DELETE", "THREAD_LIST_SYNC", "THREAD_MEMBER_UPDATE", "THREAD_MEMBERS_UPDATE",
		"STAGE_INSTANCE_CREATE", "STAGE_INSTANCE_UPDATE", "STAGE_INSTANCE_DELETE":
		return IntentGuilds
	case "CHANNEL_PINS_UPDATE":
		return pick(IntentGuilds, IntentDirectMessages)
	case "GUILD_MEMBER_ADD", "GUILD_MEMBER_UPDATE", "GUILD_MEMBER_REMOVE":
		return IntentGuildMembers
	case "GUILD_AUDIT_LOG_ENTRY_CREATE", "GUILD_BAN_ADD", "GUILD_BAN_REMOVE":
		return IntentGuildModeration
	case "GUILD_EMOJIS_UPDATE", "GUILD_STICKERS_UPDATE", "GUILD_SOUNDBOARD_SOUND_CREATE",
		"GUILD_SOUNDBOARD_SOUND_UPDATE", "GUILD_SOUNDBOARD_SOUND_DELETE", "GUILD_SOUNDBOARD_SOUNDS_UPDATE":
		return IntentGuildExpressions
	case "GUILD_INTEGRATIONS_UPDATE", "INTEGRATION_CREATE", "INTEGRATION_UPDATE", "INTEGRATION_DELETE":
		return IntentGuildIntegrations
	case "WEBHOOKS_UPDATE":
		return IntentGuildWebhooks
	case "INVITE_CREATE", "INVITE_DELETE":
		return IntentGuildInvites
	case "VOICE_STATE_UPDATE", "VOICE_CHANNEL_EFFECT_SEND":
		return IntentGuildVoiceStates
	case "PRESENCE_UPDATE":
		return IntentGuildPresences
	case "MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE", "MESSAGE_DELETE_BULK":
		return pick(IntentGuildMessages, IntentDirectMessages)
	case "MESSAGE_REACTION_ADD", "MESSAGE_REACTION_REMOVE", "MESSAGE_REACTION_REMOVE_ALL",
		"MESSAGE_REACTION_REMOVE_EMOJI":
		return pick(IntentGuildMessageReactions, IntentDirectMessageReactions)
	case "TYPING_START":
		return pick(IntentGuildMessageTyping, IntentDirectMessageTyping)
	case "GUILD_SCHEDULED_EVENT_CREATE", "GUILD_SCHEDULED_EVENT_UPDATE", "GUILD_SCHEDULED_EVENT_DELETE",
		"GUILD_SCHEDULED_EVENT_USER_ADD", "GUILD_SCHEDULED_EVENT_USER_REMOVE":
		return IntentGuildScheduledEvents
	case "AUTO_MODERATION_RULE_CREATE", "AUTO_MODERATION_RULE_UPDATE", "AUTO_MODERATION_RULE_DELETE":
		return IntentAutoModerationConfiguration
	case "AUTO_MODERATION_ACTION_EXECUTION":
		return IntentAutoModerationExecution
	case "MESSAGE_POLL_VOTE_ADD", "MESSAGE_POLL_VOTE_REMOVE":
		return pick(IntentGuildMessagePolls, IntentDirectMessagePolls)
	}
	return 0
}

// gwEvent is one dispatch, marshalled once and shared by every session that receives it (a session's
// replay log holds pointers to it, so a resume re-sends the same bytes). The firehose's events are not
// marshalled: they write their d at each send (gen), the same bytes each time.
type gwEvent struct {
	n       uint64 // the event key is "evt-<n>"
	name    string
	guildID uint64 // 0: not routed by guild (DM: shard 0)
	intent  int    // eventIntent(name, guildID != 0)
	at      int64  // unix nanos when created: the replay log drops entries older than ResumeWindow
	data    []byte // the JSON of d
	// render, when set, makes d on each write instead of data: a GUILD_MEMBERS_CHUNK of 1,000 members is
	// generated from member indices, so a session's replay log does not hold its bytes.
	render func() []byte
	// gen, when set, writes d on each write instead of data, for the session (a firehose event; it strips
	// messages itself).
	gen firehoseData

	// Messages reach sessions without MESSAGE_CONTENT with content, embeds, attachments, components and
	// poll emptied, unless the bot wrote the message or is mentioned in it.
	stripContent bool
	stripOnce    sync.Once
	stripped     []byte
	exempt       []uint64
}

func eventKey(n uint64) string { return "evt-" + strconv.FormatUint(n, 10) }

// payloadFor returns the d this session receives.
func (e *gwEvent) payloadFor(s *session) []byte {
	if e.gen != nil {
		return e.gen.appendFor(nil, s)
	}
	if e.render != nil {
		return e.render()
	}
	if !e.stripContent || s.intents&IntentMessageContent != 0 {
		return e.data
	}
	e.stripOnce.Do(func() { e.stripped, e.exempt = stripMessageJSON(e.data) })
	for _, id := range e.exempt {
		if id == s.botID {
			return e.data
		}
	}
	return e.stripped
}

// appendPayloadFor appends the d this session receives.
func (e *gwEvent) appendPayloadFor(b []byte, s *session) []byte {
	if e.gen != nil {
		return e.gen.appendFor(b, s)
	}
	return append(b, e.payloadFor(s)...)
}

// stripMessageJSON empties the content fields of a message object given as JSON, as Discord does for
// apps without the MESSAGE_CONTENT intent, and returns the author and mentioned user IDs (exempt).
func stripMessageJSON(data []byte) ([]byte, []uint64) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return data, nil
	}
	var exempt []uint64
	var author struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(m["author"], &author) == nil {
		if id, err := strconv.ParseUint(author.ID, 10, 64); err == nil {
			exempt = append(exempt, id)
		}
	}
	var mentions []struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(m["mentions"], &mentions) == nil {
		for _, u := range mentions {
			if id, err := strconv.ParseUint(u.ID, 10, 64); err == nil {
				exempt = append(exempt, id)
			}
		}
	}
	empty := map[string]json.RawMessage{"content": json.RawMessage(`""`), "embeds": json.RawMessage(`[]`),
		"attachments": json.RawMessage(`[]`), "components": json.RawMessage(`[]`)}
	for k, v := range empty {
		if _, ok := m[k]; ok {
			m[k] = v
		}
	}
	delete(m, "poll")
	out, err := json.Marshal(m)
	if err != nil {
		return data, exempt
	}
	return out, exempt
}

// newEvent creates an event with the next key. d is marshalled here, once.
func (g *gatewayState) newEvent(name string, guildID uint64, data []byte) *gwEvent {
	e := &gwEvent{}
	g.initEvent(e, name, guildID, data, time.Now())
	return e
}

// initEvent makes e an event with the next key, created at now (for an event allocated with what it is
// made of).
func (g *gatewayState) initEvent(e *gwEvent, name string, guildID uint64, data []byte, now time.Time) {
	*e = gwEvent{n: g.eventSeq.Add(1), name: name, guildID: guildID, intent: eventIntent(name, guildID != 0),
		at: now.UnixNano(), data: data}
	e.stripContent = guildID != 0 && (name == "MESSAGE_CREATE" || name == "MESSAGE_UPDATE")
	g.eventsCreated.Add(1)
}

// Dispatch sends an event of a guild (guildID 0: a direct-message event, which goes to shard 0) to every
// live or resumable session whose shard holds the guild (judged with each session's own shard count)
// and whose intents allow it; sessions that are disconnected store it for their resume. It returns the
// event's unique key ("evt-<n>"): EventKeysSent maps each session's sequence numbers back to it. Events
// of unknown guilds or guilds in an outage are not sent (Discord sends nothing for them); Dispatch then
// returns "". d is marshalled once, with encoding/json.
func (s *Server) Dispatch(guildID uint64, eventName string, d any) string {
	if guildID != 0 {
		g, ok := s.world.guild(guildID)
		if !ok || g.Unavailable {
			return ""
		}
	}
	data, err := json.Marshal(d)
	if err != nil {
		panic("discordsim: Dispatch " + eventName + ": " + err.Error())
	}
	e := s.gw.newEvent(eventName, guildID, data)
	s.gw.deliver(e)
	return eventKey(e.n)
}

// deliver appends e to every session it is routed to.
func (g *gatewayState) deliver(e *gwEvent) {
	rt := g.routes.Load()
	for num, shards := range rt.byNum {
		shard := 0
		if e.guildID != 0 {
			shard = ShardFor(e.guildID, num)
		}
		for _, sess := range shards[shard] {
			if e.intent != 0 && sess.intents&e.intent == 0 {
				continue
			}
			sess.push(e)
		}
	}
}

// deliverEach sends a per-session variant of one event (GUILD_CREATE depends on the session's intents
// and large_threshold) to the sessions holding guildID. The variants share one key.
func (g *gatewayState) deliverEach(name string, guildID uint64, build func(*session) []byte) string {
	proto := g.newEvent(name, guildID, nil)
	rt := g.routes.Load()
	for num, shards := range rt.byNum {
		for _, sess := range shards[ShardFor(guildID, num)] {
			if proto.intent != 0 && sess.intents&proto.intent == 0 {
				continue
			}
			e := &gwEvent{n: proto.n, name: name, guildID: guildID, intent: proto.intent, at: proto.at,
				data: build(sess)}
			sess.push(e)
		}
	}
	return eventKey(proto.n)
}

// ---- GUILD_CREATE and READY ----

// gwGuildCreate is the guild object with what only GUILD_CREATE carries.
type gwGuildCreate struct {
	simGuild
	JoinedAt             string       `json:"joined_at"`
	Large                bool         `json:"large"`
	Unavailable          bool         `json:"unavailable"`
	MemberCount          int          `json:"member_count"`
	VoiceStates          []string     `json:"voice_states"`
	Members              []simMember  `json:"members"`
	Channels             []simChannel `json:"channels"`
	Threads              []string     `json:"threads"`
	Presences            []string     `json:"presences"`
	StageInstances       []string     `json:"stage_instances"`
	GuildScheduledEvents []string     `json:"guild_scheduled_events"`
	SoundboardSounds     []string     `json:"soundboard_sounds"`
	Lazy                 bool         `json:"lazy"`
}

// gwMaxMembersInCreate is how many members of a large guild are "online": GUILD_CREATE lists them (with
// GUILD_PRESENCES), and presence requests of REQUEST_GUILD_MEMBERS answer for them. Discord lists only
// members who are online, have a role or a nickname, or are in voice; the rest come from
// REQUEST_GUILD_MEMBERS.
const gwMaxMembersInCreate = 100

// gwMembersOnlyBot: past this many members GUILD_CREATE lists only the bot (and members in voice), even
// with GUILD_PRESENCES, as Discord documents.
const gwMembersOnlyBot = 75000

// guildMemberCount counts the simulated members plus the bot itself.
func guildMemberCount(g *Guild) int { return g.MemberCount + 1 }

// memberOnline says whether member i of a guild is online: the first gwMaxMembersInCreate are.
func memberOnline(i int) bool { return i < gwMaxMembersInCreate }

// buildGuildCreate renders a guild as GUILD_CREATE sends it to this session. The members list holds
// the bot, and with GUILD_PRESENCES every member of a guild that is not large, the online members of a
// large one, and nobody else past gwMembersOnlyBot members (without GUILD_PRESENCES Discord sends only
// the bot's own member and members in voice). Channels omit guild_id, as in GUILD_CREATE.
func buildGuildCreate(g *Guild, s *session) []byte {
	gc := gwGuildCreate{simGuild: newGuild(g), JoinedAt: guildJoinedAt(g), MemberCount: guildMemberCount(g),
		VoiceStates: []string{}, Threads: []string{}, Presences: []string{}, StageInstances: []string{},
		GuildScheduledEvents: []string{}, SoundboardSounds: []string{}, Lazy: true}
	gc.Large = gc.MemberCount > s.largeThreshold
	gc.Channels = make([]simChannel, len(g.Channels))
	for i, ch := range g.Channels {
		gc.Channels[i] = guildChannel(g, ch, i)
		gc.Channels[i].GuildID = ""
	}
	gc.Members = append(gc.Members, guildMember(g, botUser(s.tokenIdx)))
	if s.intents&IntentGuildPresences != 0 && gc.MemberCount <= gwMembersOnlyBot {
		for i := 0; i < g.MemberCount && (!gc.Large || memberOnline(i)); i++ {
			gc.Members = append(gc.Members, guildMember(g, plainUser(MemberUserID(g.ID, i))))
		}
	}
	return mustMarshal(gc)
}

type gwReady struct {
	V                int                   `json:"v"`
	User             simCurrentUser        `json:"user"`
	Guilds           []simUnavailableGuild `json:"guilds"`
	SessionID        string                `json:"session_id"`
	ResumeGatewayURL string                `json:"resume_gateway_url"`
	Shard            [2]int                `json:"shard"`
	Application      simPartialApplication `json:"application"`
	SessionType      string                `json:"session_type"`
	PrivateChannels  []string              `json:"private_channels"`
	Relationships    []string              `json:"relationships"`
	Presences        []string              `json:"presences"`
	GuildJoinReqs    []string              `json:"guild_join_requests"`
	GeoRTCRegions    []string              `json:"geo_ordered_rtc_regions"`
	UserSettings     struct{}              `json:"user_settings"`
	Trace            []string              `json:"_trace"`
}

var gwTrace = []string{`["gateway-sim",{"micros":0}]`}

// buildReady renders READY. resumeURL is built from the Host the client connected to, so a client
// behind a proxy resumes through the same proxy.
func (g *gatewayState) buildReady(s *session, guilds []Guild, resumeURL string) []byte {
	r := gwReady{V: 10, User: currentUser(s.tokenIdx), SessionID: s.id,
		ResumeGatewayURL: resumeURL, Shard: [2]int{s.shard, s.num},
		Application: botApplication(s.tokenIdx, g.s.cfg.PrivilegedIntents),
		SessionType: "normal", PrivateChannels: []string{}, Relationships: []string{}, Presences: []string{},
		GuildJoinReqs: []string{}, GeoRTCRegions: []string{"sim"}, Trace: gwTrace}
	r.Guilds = make([]simUnavailableGuild, len(guilds))
	for i, gd := range guilds {
		r.Guilds[i] = simUnavailableGuild{ID: FormatID(gd.ID), Unavailable: true}
	}
	return mustMarshal(r)
}

// ---- firehose ----

// FirehoseOptions shapes the synthetic traffic of StartFirehose.
type FirehoseOptions struct {
	// Rate is events per second across all guilds. Default 1000. Ignored with MaxSpeed.
	Rate float64 `json:"rate"`
	// MaxSpeed generates as fast as the simulator can, pausing only while connections have more than
	// FirehoseBacklog messages queued (so a slow reader cannot make the simulator grow without bound).
	MaxSpeed bool `json:"max_speed"`
	// Total stops the firehose after this many events; 0 means until stopped.
	Total int64 `json:"total"`
	// Guilds restricts the traffic to these guilds; empty means every available guild (re-read every
	// 100ms, so added guilds join and guilds in an outage leave).
	Guilds []uint64 `json:"guilds,omitempty"`
	// Weights of each event kind; all zero means 60/15/5/10/10.
	MessageCreate int `json:"message_create,omitempty"`
	MessageUpdate int `json:"message_update,omitempty"`
	MemberAdd     int `json:"member_add,omitempty"`
	TypingStart   int `json:"typing_start,omitempty"`
	ReactionAdd   int `json:"reaction_add,omitempty"`
	// Done, if set, is closed when the firehose ends (Total reached or stopped). One channel per
	// firehose.
	Done chan struct{} `json:"-"`
}

// FirehoseBacklog is the number of queued outgoing messages (summed over all connections) above which
// a MaxSpeed firehose waits.
const FirehoseBacklog = 20000

type firehoseGuild struct {
	id       uint64
	channels []uint64
	members  int
}

// firehose generates events; one goroutine each.
type firehose struct {
	g      *gatewayState
	opts   FirehoseOptions
	guilds []firehoseGuild
	loaded time.Time
	rnd    uint64
	recent [64]recentMessage // messages created lately, for updates and reactions
	nRec   int
	now    time.Time // when the event being made is made
}

type recentMessage struct {
	id, channel, guild, author uint64
	created                    uint64 // its MESSAGE_CREATE's event number
}

// StartFirehose generates a mix of guild events (MESSAGE_CREATE with unique IDs and content,
// MESSAGE_UPDATE of recent messages, some with unchanged content and an added embed as link unfurls do,
// GUILD_MEMBER_ADD, TYPING_START, MESSAGE_REACTION_ADD) across the guilds, each through the same path
// as Dispatch. A MESSAGE_CREATE carries its event key in nonce. stop ends it and waits for it to exit;
// calling stop more than once is fine.
func (s *Server) StartFirehose(opts FirehoseOptions) (stop func()) {
	if opts.Rate <= 0 {
		opts.Rate = 1000
	}
	if opts.MessageCreate+opts.MessageUpdate+opts.MemberAdd+opts.TypingStart+opts.ReactionAdd <= 0 {
		opts.MessageCreate, opts.MessageUpdate, opts.MemberAdd, opts.TypingStart, opts.ReactionAdd = 60, 15, 5, 10, 10
	}
	f := &firehose{g: s.gw, opts: opts, rnd: uint64(time.Now().UnixNano()) | 1}
	quit := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		if opts.Done != nil {
			defer close(opts.Done)
		}
		f.run(quit)
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-exited
	}
}

func (f *firehose) run(quit chan struct{}) {
	var sent int64
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if f.opts.Total > 0 && sent >= f.opts.Total {
			return
		}
		var want int64
		if f.opts.MaxSpeed {
			for f.g.pending.Load() > FirehoseBacklog {
				select {
				case <-quit:
					return
				case <-time.After(200 * time.Microsecond):
				}
			}
			want = sent + 256
		} else {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			want = int64(time.Since(start).Seconds() * f.opts.Rate)
		}
		if f.opts.Total > 0 && want > f.opts.Total {
			want = f.opts.Total
		}
		for sent < want {
			if !f.emit() {
				// No guild to send to: wait for one rather than spin.
				select {
				case <-quit:
					return
				case <-time.After(10 * time.Millisecond):
				}
				break
			}
			sent++
		}
		select {
		case <-quit:
			return
		default:
		}
	}
}

func (f *firehose) rand() uint64 {
	f.rnd ^= f.rnd << 13
	f.rnd ^= f.rnd >> 7
	f.rnd ^= f.rnd << 17
	return f.rnd
}

func (f *firehose) refreshGuilds() {
	if f.now.Sub(f.loaded) < 100*time.Millisecond && f.guilds != nil {
		return
	}
	f.loaded = f.now
	f.guilds = f.guilds[:0]
	want := map[uint64]bool{}
	for _, id := range f.opts.Guilds {
		want[id] = true
	}
	w := f.g.s.world
	w.mu.RLock()
	for _, g := range w.guilds {
		if g.Unavailable || len(g.Channels) == 0 || (len(want) > 0 && !want[g.ID]) {
			continue
		}
		f.guilds = append(f.guilds, firehoseGuild{id: g.ID, channels: g.Channels, members: g.MemberCount})
	}
	w.mu.RUnlock()
}

// emit sends one event; false if there is no guild to send it to.
func (f *firehose) emit() bool {
	e := f.next()
	if e == nil {
		return false
	}
	f.g.deliver(e)
	return true
}

// next makes the next event; nil if there is no guild to send it to.
func (f *firehose) next() *gwEvent {
	f.now = time.Now() // one clock reading for everything the event says of the time
	f.refreshGuilds()
	if len(f.guilds) == 0 {
		return nil
	}
	o := f.opts
	total := uint64(o.MessageCreate + o.MessageUpdate + o.MemberAdd + o.TypingStart + o.ReactionAdd)
	r := int(f.rand() % total)
	switch {
	case r < o.MessageCreate || f.nRec == 0 && r < o.MessageCreate+o.MessageUpdate:
		return f.messageCreate()
	case r < o.MessageCreate+o.MessageUpdate:
		return f.messageUpdate()
	case r < o.MessageCreate+o.MessageUpdate+o.MemberAdd:
		return f.memberAdd()
	case r < o.MessageCreate+o.MessageUpdate+o.MemberAdd+o.TypingStart:
		return f.typingStart()
	default:
		if f.nRec == 0 {
			return f.messageCreate()
		}
		return f.reactionAdd()
	}
}

func (f *firehose) pickAuthor() (firehoseGuild, uint64, uint64) {
	gd := f.guilds[f.rand()%uint64(len(f.guilds))]
	ch := gd.channels[f.rand()%uint64(len(gd.channels))]
	members := gd.members
	if members < 1 {
		members = 1
	}
	return gd, ch, MemberUserID(gd.id, int(f.rand()%uint64(members)))
}

// uniqueID makes a snowflake for a new object: the current millisecond and a per-server counter, so
// IDs are unique and increase, as Discord's do.
func (g *gatewayState) uniqueID(now time.Time) uint64 {
	return Snowflake(now.UnixMilli(), 0) | g.idSeq.Add(1)&(1<<22-1)
}

// The firehose's events, each allocated with the numbers its d is made of (gateway_firehose_json.go).
type (
	fhMessageEvent struct {
		gwEvent
		p fhMessage
	}
	fhMemberAddEvent struct {
		gwEvent
		p fhMemberAdd
	}
	fhTypingEvent struct {
		gwEvent
		p fhTyping
	}
	fhReactionEvent struct {
		gwEvent
		p fhReaction
	}
)

func (f *firehose) messageCreate() *gwEvent {
	gd, ch, author := f.pickAuthor()
	g := f.g
	id := g.uniqueID(f.now)
	ev := &fhMessageEvent{}
	g.initEvent(&ev.gwEvent, "MESSAGE_CREATE", gd.id, nil, f.now)
	ev.p = fhMessage{kind: fhCreate, id: id, channel: ch, guild: gd.id, author: author, created: ev.n, n: ev.n}
	ev.gen = &ev.p
	f.recent[f.nRec%len(f.recent)] = recentMessage{id: id, channel: ch, guild: gd.id, author: author, created: ev.n}
	f.nRec++
	return &ev.gwEvent
}

func (f *firehose) pickRecent() recentMessage {
	n := f.nRec
	if n > len(f.recent) {
		n = len(f.recent)
	}
	return f.recent[f.rand()%uint64(n)]
}

func (f *firehose) messageUpdate() *gwEvent {
	rm := f.pickRecent()
	ev := &fhMessageEvent{}
	f.g.initEvent(&ev.gwEvent, "MESSAGE_UPDATE", rm.guild, nil, f.now)
	ev.p = fhMessage{kind: fhUnfurl, id: rm.id, channel: rm.channel, guild: rm.guild, author: rm.author,
		created: rm.created, n: ev.n}
	if f.rand()%2 != 0 {
		// Edited; else a link unfurl: same content, an embed added, not an edit.
		ev.p.kind, ev.p.edited = fhEdit, f.now.UnixNano()
	}
	ev.gen = &ev.p
	return &ev.gwEvent
}

func (f *firehose) memberAdd() *gwEvent {
	gd := f.guilds[f.rand()%uint64(len(f.guilds))]
	ev := &fhMemberAddEvent{p: fhMemberAdd{user: f.g.uniqueID(f.now), guild: gd.id, joined: f.now.UnixNano()}}
	f.g.initEvent(&ev.gwEvent, "GUILD_MEMBER_ADD", gd.id, nil, f.now)
	ev.gen = &ev.p
	return &ev.gwEvent
}

func (f *firehose) typingStart() *gwEvent {
	gd, ch, author := f.pickAuthor()
	ev := &fhTypingEvent{p: fhTyping{channel: ch, guild: gd.id, user: author, at: f.now.Unix()}}
	f.g.initEvent(&ev.gwEvent, "TYPING_START", gd.id, nil, f.now)
	ev.gen = &ev.p
	return &ev.gwEvent
}

func (f *firehose) reactionAdd() *gwEvent {
	rm := f.pickRecent()
	members := 1
	for _, x := range f.guilds {
		if x.id == rm.guild {
			members = max(x.members, 1)
		}
	}
	user := MemberUserID(rm.guild, int(f.rand()%uint64(members)))
	ev := &fhReactionEvent{p: fhReaction{user: user, channel: rm.channel, message: rm.id, guild: rm.guild,
		author: rm.author}}
	f.g.initEvent(&ev.gwEvent, "MESSAGE_REACTION_ADD", rm.guild, nil, f.now)
	ev.gen = &ev.p
	return &ev.gwEvent
}

// guildMessage is a message of a guild channel as the gateway's message events carry it: with the
// guild's ID and the author's member (without its user; here it joined as it wrote the message).
func guildMessage(id, channel, guild, author uint64) simMessage {
	m := newMessage(id, channel, plainUser(author))
	m.GuildID = FormatID(guild)
	member := partialMember(m.Timestamp)
	m.Member = &member
	return m
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// counters used by the event path (fields of gatewayState, kept here with the code that bumps them).
type eventCounters struct {
	eventSeq      atomic.Uint64 // last event key number
	idSeq         atomic.Uint64 // unique-ID counter
	eventsCreated atomic.Int64
	dispatched    atomic.Int64 // event × session deliveries
	pending       atomic.Int64 // messages queued on connections, not yet written
	heartbeats    atomic.Int64
}
