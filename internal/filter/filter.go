// Package filter decides which gateway dispatches are queued for the bot, and keeps the little state
// that needs: the guilds of each shard (for routing and /status), which guilds are still loading after
// READY, and recent message contents (to recognise embed-unfurl MESSAGE_UPDATEs). It sits between a
// shard and the queue, as a shard's OnDispatch hook; it neither stores nor delivers events.
package filter

import (
	"bytes"
	"encoding/json"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddhq/dd/internal/rawjson"
)

// Rules are what a deployment asks of the filter (events.drop and the gateway's dedup keys); the gateway
// pipeline and cluster mode take them as their Filter.
type Rules struct {
	// Drop lists event names never queued (events.drop).
	Drop []string
	// DedupMessageUpdates drops a MESSAGE_UPDATE whose content and edit time did not change: Discord sends
	// those when it unfurls a link's embed.
	DedupMessageUpdates bool
	// DropKnownGuildCreates drops GUILD_CREATE for a guild its shard already had available (a duplicate
	// after a resume). The GUILD_CREATE that ends an outage is kept: it tells the bot the guild is back,
	// and carries what changed meanwhile (the cache needs it).
	DropKnownGuildCreates bool
	// LoadingGuildEvent, when set, renames the GUILD_CREATEs of the burst that follows READY (the guilds
	// READY listed), so the bot can tell "loaded at start" from "joined" (Discordeno's GUILD_LOADED_DD).
	LoadingGuildEvent string
}

// Options configure a Filter.
type Options struct {
	Rules
	// DropLoadingBurst drops each shard's first READY and the GUILD_CREATEs that follow it: a shard set
	// that takes over from another (a reshard) brings the bot nothing new there. A later READY (a new
	// session after an invalid one, long after the switch) and its burst are kept: the bot and the cache
	// missed what happened meanwhile, and the burst carries it.
	DropLoadingBurst bool
	// MessageMemory bounds the messages remembered for dedup (default 100,000), each for MessageTTL
	// (default 15 minutes).
	MessageMemory int
	MessageTTL    time.Duration
}

// Filter is safe for concurrent use by many shards.
type Filter struct {
	o    Options
	drop map[string]bool

	mu     sync.Mutex
	shards map[int]*shardGuilds

	msgMu sync.Mutex
	msgs  map[uint64]msgEntry
	order []msgOrder // FIFO of insertions, for eviction by age and count
	seed  maphash.Seed

	dropped atomic.Int64
}

type shardGuilds struct {
	guilds  map[uint64]bool // id -> available
	loading map[uint64]bool
	version uint64 // counts changes of the set of guilds (not of their availability)
	readies int    // READYs seen on the shard
	// dropBurst: the loading burst under way is the first READY's, dropped (Options.DropLoadingBurst).
	dropBurst bool
}

type msgEntry struct {
	hash uint64
	at   time.Time
}

type msgOrder struct {
	id uint64
	at time.Time
}

// New builds a Filter.
func New(o Options) *Filter {
	if o.MessageMemory == 0 {
		o.MessageMemory = 100_000
	}
	if o.MessageTTL == 0 {
		o.MessageTTL = 15 * time.Minute
	}
	f := &Filter{o: o, drop: map[string]bool{}, shards: map[int]*shardGuilds{}, msgs: map[uint64]msgEntry{},
		seed: maphash.MakeSeed()}
	for _, n := range o.Drop {
		f.drop[n] = true
	}
	return f
}

// Keep decides whether a dispatch of type t on shard is queued. It may return a replacement payload
// (the renamed loading GUILD_CREATE); otherwise it returns raw.
func (f *Filter) Keep(shard int, t string, raw []byte) (keep bool, out []byte) {
	switch t {
	case "READY":
		if f.onReady(shard, raw) {
			return false, nil
		}
	case "GUILD_CREATE":
		return f.onGuildCreate(shard, raw)
	case "GUILD_DELETE":
		f.onGuildDelete(shard, raw)
	case "MESSAGE_CREATE":
		if f.o.DedupMessageUpdates {
			f.rememberMessage(raw)
		}
	case "MESSAGE_UPDATE":
		if f.o.DedupMessageUpdates && !f.messageChanged(raw) {
			f.dropped.Add(1)
			return false, nil
		}
	}
	if f.drop[t] {
		f.dropped.Add(1)
		return false, nil
	}
	return true, raw
}

// Dropped counts the events the filter kept from the queue.
func (f *Filter) Dropped() int64 { return f.dropped.Load() }

// GuildCount is how many guilds shard holds (available or in an outage).
func (f *Filter) GuildCount(shard int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sg := f.shards[shard]; sg != nil {
		return len(sg.guilds)
	}
	return 0
}

// Loading is how many guilds of shard have not had their GUILD_CREATE since READY.
func (f *Filter) Loading(shard int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sg := f.shards[shard]; sg != nil {
		return len(sg.loading)
	}
	return 0
}

// TotalGuilds sums GuildCount over every shard.
func (f *Filter) TotalGuilds() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, sg := range f.shards {
		n += len(sg.guilds)
	}
	return n
}

type guildRef struct {
	ID          snowflake `json:"id"`
	Unavailable bool      `json:"unavailable"`
}

// guildOf reads d.id and d.unavailable without decoding the (possibly huge) guild object.
func guildOf(raw []byte) (id uint64, unavailable, ok bool) {
	d := rawjson.Field(raw, "d")
	_ = rawjson.EachField(d, func(k, v []byte) bool {
		switch string(k) {
		case "id":
			id, ok = rawjson.Snowflake(v)
		case "unavailable":
			unavailable = string(v) == "true"
		}
		return true
	})
	return id, unavailable, ok
}

// onReady starts the shard's guild list from READY; drop says the READY is the shard's first and
// DropLoadingBurst is set.
func (f *Filter) onReady(shard int, raw []byte) (drop bool) {
	var p struct {
		D struct {
			Guilds []guildRef `json:"guilds"`
		} `json:"d"`
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.shards[shard]
	first := old == nil || old.readies == 0
	if json.Unmarshal(raw, &p) != nil {
		if old != nil {
			old.readies++
		}
		return f.o.DropLoadingBurst && first
	}
	sg := &shardGuilds{guilds: make(map[uint64]bool, len(p.D.Guilds)), loading: make(map[uint64]bool, len(p.D.Guilds)),
		dropBurst: f.o.DropLoadingBurst && first}
	for _, g := range p.D.Guilds {
		sg.guilds[uint64(g.ID)] = false
		sg.loading[uint64(g.ID)] = true
	}
	if old != nil {
		sg.version, sg.readies = old.version, old.readies
	}
	sg.version++
	sg.readies++
	f.shards[shard] = sg
	return sg.dropBurst
}

func (f *Filter) onGuildCreate(shard int, raw []byte) (bool, []byte) {
	id, _, ok := guildOf(raw)
	if !ok {
		return true, raw
	}
	f.mu.Lock()
	sg := f.shards[shard]
	if sg == nil {
		sg = &shardGuilds{guilds: map[uint64]bool{}, loading: map[uint64]bool{}}
		f.shards[shard] = sg
	}
	available, known := sg.guilds[id]
	loading := sg.loading[id]
	delete(sg.loading, id)
	sg.guilds[id] = true
	if !known {
		sg.version++
	}
	dropBurst := sg.dropBurst
	f.mu.Unlock()
	switch {
	case loading && dropBurst:
		return false, nil
	case loading && f.o.LoadingGuildEvent != "":
		return true, renameEvent(raw, "GUILD_CREATE", f.o.LoadingGuildEvent)
	case loading:
		return true, raw
	case known && available && f.o.DropKnownGuildCreates:
		f.dropped.Add(1)
		return false, nil
	}
	if f.drop["GUILD_CREATE"] {
		f.dropped.Add(1)
		return false, nil
	}
	return true, raw
}

func (f *Filter) onGuildDelete(shard int, raw []byte) {
	id, unavailable, ok := guildOf(raw)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	sg := f.shards[shard]
	if sg == nil {
		return
	}
	if unavailable {
		sg.guilds[id] = false // an outage: still ours
		return
	}
	if _, known := sg.guilds[id]; known {
		sg.version++
	}
	delete(sg.guilds, id)
	delete(sg.loading, id)
}

// GuildsChanged returns shard's guild ids when its set changed since version (a value it returned
// before, or 0), with the set's current version. A shard's guilds are learnt from READY and
// GUILD_CREATE; a shard that resumed after a restart has neither, so its owner keeps the set (see
// Restore).
func (f *Filter) GuildsChanged(shard int, version uint64) (ids []uint64, now uint64, changed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sg := f.shards[shard]
	if sg == nil || sg.version == version {
		return nil, version, false
	}
	ids = make([]uint64, 0, len(sg.guilds))
	for id := range sg.guilds {
		ids = append(ids, id)
	}
	return ids, sg.version, true
}

// Restore gives shard the guilds it held before a restart, when it has learnt none since. They count
// as the shard's (GuildCount, TotalGuilds) but not as available: the next GUILD_CREATE of each is kept,
// as it would be without them.
func (f *Filter) Restore(shard int, ids []uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shards[shard] != nil {
		return
	}
	sg := &shardGuilds{guilds: make(map[uint64]bool, len(ids)), loading: map[uint64]bool{}}
	for _, id := range ids {
		sg.guilds[id] = false
	}
	f.shards[shard] = sg
}

// renameEvent replaces the "t" of a payload. Only the first "t":"<old>" is replaced, and payloads are
// Discord's compact JSON, so the field is found without re-encoding the (large) guild object.
func renameEvent(raw []byte, old, name string) []byte {
	for _, pat := range [][]byte{[]byte(`"t":"` + old + `"`), []byte(`"t": "` + old + `"`)} {
		if i := bytes.Index(raw, pat); i >= 0 {
			out := make([]byte, 0, len(raw)+len(name)-len(old))
			out = append(out, raw[:i]...)
			out = append(out, `"t":"`+name+`"`...)
			return append(out, raw[i+len(pat):]...)
		}
	}
	return raw
}

// messageFields are what dedup compares: the raw JSON of content and edited_timestamp (Discord encodes the
// same text the same way, so equal raw bytes mean equal values).
type messageFields struct {
	id         uint64
	content    []byte // nil when absent
	editedTime []byte
}

func messageOf(raw []byte) (m messageFields, ok bool) {
	_ = rawjson.EachField(rawjson.Field(raw, "d"), func(k, v []byte) bool {
		switch string(k) {
		case "id":
			m.id, ok = rawjson.Snowflake(v)
		case "content":
			m.content = v
		case "edited_timestamp":
			m.editedTime = v
		}
		return true
	})
	return m, ok && m.id != 0
}

func (f *Filter) contentHash(m *messageFields) uint64 {
	var h maphash.Hash
	h.SetSeed(f.seed)
	h.Write(m.content)
	h.WriteByte(0)
	if string(m.editedTime) != "null" {
		h.Write(m.editedTime)
	}
	return h.Sum64()
}

func (f *Filter) rememberMessage(raw []byte) {
	if m, ok := messageOf(raw); ok {
		f.remember(m.id, f.contentHash(&m))
	}
}

// messageChanged reports whether a MESSAGE_UPDATE changes what dd last saw of the message. An update of a
// message dd never saw (older than its memory, or from before a restart) counts as a change.
func (f *Filter) messageChanged(raw []byte) bool {
	m, ok := messageOf(raw)
	if !ok {
		return true
	}
	if m.content == nil {
		// Partial updates without content change nothing a bot reads from the content.
		f.msgMu.Lock()
		_, seen := f.msgs[m.id]
		f.msgMu.Unlock()
		return !seen
	}
	h := f.contentHash(&m)
	f.msgMu.Lock()
	prev, seen := f.msgs[m.id]
	f.msgMu.Unlock()
	if seen && prev.hash == h && time.Since(prev.at) < f.o.MessageTTL {
		return false
	}
	f.remember(m.id, h)
	return true
}

func (f *Filter) remember(id, hash uint64) {
	now := time.Now()
	f.msgMu.Lock()
	defer f.msgMu.Unlock()
	f.msgs[id] = msgEntry{hash: hash, at: now}
	f.order = append(f.order, msgOrder{id: id, at: now})
	// Evict by age and by count, oldest first; an id re-remembered later keeps its newer entry.
	for len(f.order) > 0 && (len(f.msgs) > f.o.MessageMemory || now.Sub(f.order[0].at) > f.o.MessageTTL) {
		old := f.order[0]
		f.order = f.order[1:]
		if e, ok := f.msgs[old.id]; ok && !e.at.After(old.at) {
			delete(f.msgs, old.id)
		}
	}
	if cap(f.order) > 4*f.o.MessageMemory && len(f.order) < f.o.MessageMemory {
		f.order = append([]msgOrder(nil), f.order...)
	}
}

// MessagesRemembered is how many messages the dedup memory holds.
func (f *Filter) MessagesRemembered() int {
	f.msgMu.Lock()
	defer f.msgMu.Unlock()
	return len(f.msgs)
}

// snowflake decodes Discord's string IDs.
type snowflake uint64

func (s *snowflake) UnmarshalJSON(b []byte) error {
	b = bytes.Trim(b, `"`)
	if len(b) == 0 || string(b) == "null" {
		*s = 0
		return nil
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	*s = snowflake(n)
	return err
}
