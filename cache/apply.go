package cache

import (
	"bytes"
	"strconv"
)

// handler applies one event's d to the batch.
type handler func(c *Cache, b *batch, d []byte) error

// handlers are the events the cache applies. Presence and message events are skipped unless enabled.
var handlers = map[string]handler{
	"READY":                 (*Cache).ready,
	"GUILD_CREATE":          (*Cache).guildCreate,
	"GUILD_UPDATE":          (*Cache).guildUpdate,
	"GUILD_DELETE":          (*Cache).guildDelete,
	"CHANNEL_CREATE":        (*Cache).channelUpsert,
	"CHANNEL_UPDATE":        (*Cache).channelUpsert,
	"CHANNEL_DELETE":        (*Cache).channelDelete,
	"THREAD_CREATE":         (*Cache).channelUpsert,
	"THREAD_UPDATE":         (*Cache).channelUpsert,
	"THREAD_DELETE":         (*Cache).channelDelete,
	"THREAD_LIST_SYNC":      (*Cache).threadListSync,
	"GUILD_ROLE_CREATE":     (*Cache).roleUpsert,
	"GUILD_ROLE_UPDATE":     (*Cache).roleUpsert,
	"GUILD_ROLE_DELETE":     (*Cache).roleDelete,
	"GUILD_MEMBER_ADD":      (*Cache).memberAdd,
	"GUILD_MEMBER_UPDATE":   (*Cache).memberUpdate,
	"GUILD_MEMBER_REMOVE":   (*Cache).memberRemove,
	"GUILD_MEMBERS_CHUNK":   (*Cache).membersChunk,
	"GUILD_EMOJIS_UPDATE":   (*Cache).emojisUpdate,
	"GUILD_STICKERS_UPDATE": (*Cache).stickersUpdate,
	"USER_UPDATE":           (*Cache).userUpdate,
	"VOICE_STATE_UPDATE":    (*Cache).voiceStateUpdate,
	"PRESENCE_UPDATE":       (*Cache).presenceUpdate,
	"MESSAGE_CREATE":        (*Cache).messageCreate,
	"MESSAGE_UPDATE":        (*Cache).messageUpdate,
	"MESSAGE_DELETE":        (*Cache).messageDelete,
	"MESSAGE_DELETE_BULK":   (*Cache).messageDeleteBulk,
}

// Thread channel types (announcement, public and private threads).
func isThreadType(t int) bool { return t == 10 || t == 11 || t == 12 }

func (c *Cache) guildID(d []byte) (uint64, error) {
	g, ok := idField(d, "guild_id")
	if !ok {
		return 0, missing("guild_id")
	}
	return g, nil
}

// ---- guilds ----

func (c *Cache) ready(b *batch, d []byte) error {
	var user, guilds []byte
	if err := eachField(d, func(k, v []byte) error {
		switch string(k) {
		case "user":
			user = v
		case "guilds":
			guilds = v
		}
		return nil
	}); err != nil {
		return err
	}
	if user != nil {
		if _, err := c.putUser(b, user); err != nil {
			return err
		}
	}
	// Guilds the cache already holds keep their data until their GUILD_CREATE, which follows READY.
	return eachElem(guilds, func(g []byte) error {
		id, ok := idField(g, "id")
		if !ok {
			return missing("guild id")
		}
		has, err := b.tx().Has(guildKey(id))
		if err != nil || has {
			return err
		}
		return c.putGuild(b, id, []byte{stateUnavailable, '{', '}'})
	})
}

// putGuild stores a guild's own record (state byte + fields), counting it and its availability.
func (c *Cache) putGuild(b *batch, id uint64, v []byte) error {
	old, err := b.get(guildKey(id))
	if err != nil {
		return err
	}
	return c.putGuildOver(b, id, old, v)
}

// putGuildOver is putGuild when the caller has just read the stored record, old (nil: none).
func (c *Cache) putGuildOver(b *batch, id uint64, old, v []byte) error {
	k := guildKey(id)
	wasDown := old != nil && old[0] == stateUnavailable
	switch {
	case old == nil:
		b.count(cGuilds, 1)
	case bytes.Equal(old, v):
		return nil
	}
	if err := b.set(k, v); err != nil {
		return err
	}
	switch down := v[0] == stateUnavailable; {
	case down && !wasDown:
		b.count(cUnavailableGuilds, 1)
		c.outages[id] = true
		return b.set(outageKey(id), nil)
	case !down && wasDown:
		b.count(cUnavailableGuilds, -1)
		delete(c.outages, id)
		return b.del(outageKey(id))
	}
	return nil
}

// endOutage marks a guild in an outage available again when an event of it arrives: Discord sends none
// for a guild in an outage, and the gateway drops the GUILD_CREATE that ends one when it already knew
// the guild (gateway.drop_known_guild_creates). A guild known only from READY stays as it is until its
// GUILD_CREATE: there is nothing to serve.
func (c *Cache) endOutage(b *batch, g uint64) error {
	old, err := b.get(guildKey(g))
	if err != nil {
		return err
	}
	if old == nil {
		delete(c.outages, g)
		return nil
	}
	if old[0] != stateUnavailable || len(old) <= 3 {
		return nil
	}
	return c.putGuild(b, g, append([]byte{stateAvailable}, old[1:]...))
}

// guildLists are the arrays of a guild object that the cache keeps as objects of their own.
type guildLists struct {
	channels, threads, roles, members, emojis, stickers, voiceStates, presences []byte
}

func readGuild(d []byte) (id uint64, unavailable bool, l guildLists, err error) {
	err = eachField(d, func(k, v []byte) error {
		switch string(k) {
		case "id":
			id, _ = parseID(v)
		case "unavailable":
			unavailable = isTrue(v)
		case "channels":
			l.channels = v
		case "threads":
			l.threads = v
		case "roles":
			l.roles = v
		case "members":
			l.members = v
		case "emojis":
			l.emojis = v
		case "stickers":
			l.stickers = v
		case "voice_states":
			l.voiceStates = v
		case "presences":
			l.presences = v
		}
		return nil
	})
	if err == nil && id == 0 {
		err = missing("guild id")
	}
	return id, unavailable, l, err
}

// guildCreate stores the whole guild. Its channels, threads, roles, emojis, stickers, voice states and
// presences are complete lists and replace what the cache held; its members are only some of them (a
// large guild's members come in chunks) and are added to what it held.
func (c *Cache) guildCreate(b *batch, d []byte) error {
	id, unavailable, l, err := readGuild(d)
	if err != nil {
		return err
	}
	if unavailable {
		return c.markUnavailable(b, id)
	}
	v, err := c.fields.guild.compact([]byte{stateAvailable}, d)
	if err != nil {
		return err
	}
	if err := c.putGuild(b, id, v); err != nil {
		return err
	}
	if err := c.replaceGuildLists(b, id, l, true); err != nil {
		return err
	}
	if err := eachElem(l.members, func(m []byte) error {
		_, err := c.putMember(b, id, m, false)
		return err
	}); err != nil {
		return err
	}
	return c.noteGuildCreateMembers(b, id, d, l.members)
}

// replaceGuildLists stores the lists a guild object carries. GUILD_UPDATE carries roles, emojis and
// stickers but no channels: a list that is absent is left as it is.
func (c *Cache) replaceGuildLists(b *batch, g uint64, l guildLists, create bool) error {
	type list struct {
		arr  []byte
		kind byte
		put  func(obj []byte) (uint64, error)
	}
	channel := func(kind byte) func([]byte) (uint64, error) {
		return func(obj []byte) (uint64, error) { return c.putChannel(b, g, obj, kind) }
	}
	lists := []list{
		{l.roles, kindRole, func(obj []byte) (uint64, error) { return c.putObject(b, g, kindRole, obj, c.fields.role, "id") }},
		{l.emojis, kindEmoji, func(obj []byte) (uint64, error) { return c.putObject(b, g, kindEmoji, obj, c.fields.emoji, "id") }},
		{l.stickers, kindSticker, func(obj []byte) (uint64, error) {
			return c.putObject(b, g, kindSticker, obj, c.fields.sticker, "id")
		}},
	}
	if create {
		lists = append(lists,
			list{l.channels, kindChannel, channel(kindChannel)},
			list{l.threads, kindThread, channel(kindThread)},
			list{l.voiceStates, kindVoiceState, func(obj []byte) (uint64, error) {
				return c.putObject(b, g, kindVoiceState, obj, c.fields.voice, "user_id")
			}})
		if c.o.Presences {
			lists = append(lists, list{l.presences, kindPresence, func(obj []byte) (uint64, error) { return c.putPresence(b, g, obj) }})
		}
	}
	for _, li := range lists {
		if li.arr == nil {
			continue
		}
		keep := map[uint64]bool{}
		if err := eachElem(li.arr, func(obj []byte) error {
			id, err := li.put(obj)
			keep[id] = true
			return err
		}); err != nil {
			return err
		}
		if err := c.removeExcept(b, g, li.kind, keep); err != nil {
			return err
		}
	}
	return nil
}

// removeExcept removes a guild's objects of one kind that are not in keep.
func (c *Cache) removeExcept(b *batch, g uint64, kind byte, keep map[uint64]bool) error {
	var stale []uint64
	if err := b.scanKind(g, kind, true, func(id uint64, _ []byte) error {
		if !keep[id] {
			stale = append(stale, id)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, id := range stale {
		if err := c.removeSub(b, g, kind, id); err != nil {
			return err
		}
	}
	return nil
}

// removeSub removes one of a guild's objects and what hangs off it (a channel's index entry and
// messages).
func (c *Cache) removeSub(b *batch, g uint64, kind byte, id uint64) error {
	if _, err := b.remove(subKey(g, kind, id), kindCounter(kind)); err != nil {
		return err
	}
	if kind == kindChannel || kind == kindThread {
		if _, err := b.remove(channelKey(id), -1); err != nil {
			return err
		}
		return b.removeRange(messagePrefix(g, id))
	}
	return nil
}

func (c *Cache) guildUpdate(b *batch, d []byte) error {
	id, _, l, err := readGuild(d)
	if err != nil {
		return err
	}
	old, err := b.get(guildKey(id))
	if err != nil {
		return err
	}
	var v []byte
	if old == nil {
		v, err = c.fields.guild.compact([]byte{stateAvailable}, d)
	} else {
		// GUILD_UPDATE lacks what only GUILD_CREATE carries (joined_at, member_count, large): keep it.
		v, err = c.fields.guild.merge([]byte{old[0]}, old[1:], d)
	}
	if err != nil {
		return err
	}
	if err := c.putGuild(b, id, v); err != nil {
		return err
	}
	return c.replaceGuildLists(b, id, l, false)
}

// guildDelete keeps a guild in an outage (unavailable: true), marked; a guild the bot left or was
// removed from goes, with everything under it.
func (c *Cache) guildDelete(b *batch, d []byte) error {
	id, unavailable, _, err := readGuild(d)
	if err != nil {
		return err
	}
	if unavailable {
		return c.markUnavailable(b, id)
	}
	return b.removeRange(guildKey(id))
}

func (c *Cache) markUnavailable(b *batch, id uint64) error {
	old, err := b.get(guildKey(id))
	if err != nil {
		return err
	}
	if old == nil {
		return c.putGuild(b, id, []byte{stateUnavailable, '{', '}'})
	}
	v := append([]byte{stateUnavailable}, old[1:]...)
	return c.putGuild(b, id, v)
}

// adjustMemberCount follows joins and leaves in the guild's member_count, as Discord's own count does.
func (c *Cache) adjustMemberCount(b *batch, g uint64, delta int) error {
	if !c.fields.guild.keeps([]byte("member_count")) {
		return nil
	}
	old, err := b.get(guildKey(g))
	if err != nil || old == nil {
		return err
	}
	cur, ok := field(old[1:], "member_count")
	if !ok {
		return nil
	}
	n, err := strconv.Atoi(string(cur))
	if err != nil {
		return nil
	}
	patch := strconv.AppendInt([]byte(`{"member_count":`), int64(max(n+delta, 0)), 10)
	patch = append(patch, '}')
	v, err := c.fields.guild.merge([]byte{old[0]}, old[1:], patch)
	if err != nil {
		return err
	}
	return c.putGuildOver(b, g, old, v)
}

// ---- channels and threads ----

// putChannel stores a channel or thread of guild g (0 for a direct-message channel) and its index entry.
// kind 0 decides from the channel's type.
func (c *Cache) putChannel(b *batch, g uint64, obj []byte, kind byte) (uint64, error) {
	id, ok := idField(obj, "id")
	if !ok {
		return 0, missing("channel id")
	}
	if kind == 0 {
		kind = kindChannel
		if t, ok := field(obj, "type"); ok {
			if n, err := strconv.Atoi(string(t)); err == nil && isThreadType(n) {
				kind = kindThread
			}
		}
	}
	v, err := c.fields.channel.compact(nil, obj)
	if err != nil {
		return id, err
	}
	if _, err := b.put(subKey(g, kind, id), v, kindCounter(kind)); err != nil {
		return id, err
	}
	_, err = b.put(channelKey(id), channelRef(g, kind), -1)
	return id, err
}

func (c *Cache) channelUpsert(b *batch, d []byte) error {
	g, _ := idField(d, "guild_id") // absent: a direct-message channel, kept under guild 0
	_, err := c.putChannel(b, g, d, 0)
	return err
}

func (c *Cache) channelDelete(b *batch, d []byte) error {
	id, ok := idField(d, "id")
	if !ok {
		return missing("channel id")
	}
	g, _ := idField(d, "guild_id")
	for _, kind := range []byte{kindChannel, kindThread} {
		if err := c.removeSub(b, g, kind, id); err != nil {
			return err
		}
	}
	// Threads go with their parent channel.
	return c.removeThreads(b, g, func(parent uint64) bool { return parent == id }, nil)
}

// removeThreads removes the guild's threads whose parent matches, except those in keep.
func (c *Cache) removeThreads(b *batch, g uint64, parentMatches func(uint64) bool, keep map[uint64]bool) error {
	var stale []uint64
	if err := b.scanKind(g, kindThread, false, func(id uint64, v []byte) error {
		if keep[id] {
			return nil
		}
		parent, _ := idField(v, "parent_id")
		if parentMatches(parent) {
			stale = append(stale, id)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, id := range stale {
		if err := c.removeSub(b, g, kindThread, id); err != nil {
			return err
		}
	}
	return nil
}

// threadListSync replaces the active threads of the listed parent channels (or of the whole guild).
func (c *Cache) threadListSync(b *batch, d []byte) error {
	g, err := c.guildID(d)
	if err != nil {
		return err
	}
	var parents map[uint64]bool
	if ids, ok := field(d, "channel_ids"); ok && !isNull(ids) {
		parents = map[uint64]bool{}
		if err := eachElem(ids, func(v []byte) error {
			id, _ := parseID(v)
			parents[id] = true
			return nil
		}); err != nil {
			return err
		}
	}
	keep := map[uint64]bool{}
	threads, _ := field(d, "threads")
	if err := eachElem(threads, func(t []byte) error {
		id, err := c.putChannel(b, g, t, kindThread)
		keep[id] = true
		return err
	}); err != nil {
		return err
	}
	return c.removeThreads(b, g, func(parent uint64) bool { return parents == nil || parents[parent] }, keep)
}

// ---- roles, emojis, stickers, voice states ----

// putObject stores one of a guild's objects whose id is at idName.
func (c *Cache) putObject(b *batch, g uint64, kind byte, obj []byte, fs *fieldSet, idName string) (uint64, error) {
	id, ok := idField(obj, idName)
	if !ok {
		return 0, missing(idName)
	}
	v, err := fs.compact(nil, obj)
	if err != nil {
		return id, err
	}
	_, err = b.put(subKey(g, kind, id), v, kindCounter(kind))
	return id, err
}

func (c *Cache) roleUpsert(b *batch, d []byte) error {
	g, err := c.guildID(d)
	if err != nil {
		return err
	}
	role, ok := field(d, "role")
	if !ok {
		return missing("role")
	}
	_, err = c.putObject(b, g, kindRole, role, c.fields.role, "id")
	return err
}

func (c *Cache) roleDelete(b *batch, d []byte) error {
	g, err := c.guildID(d)
	if err != nil {
		return err
	}
	id, ok := idField(d, "role_id")
	if !ok {
		return missing("role_id")
	}
	_, err = b.remove(subKey(g, kindRole, id), cRoles)
	return err
}

func (c *Cache) emojisUpdate(b *batch, d []byte) error {
	g, err := c.guildID(d)
	if err != nil {
		return err
	}
	emojis, _ := field(d, "emojis")
	if emojis == nil {
		return missing("emojis")
	}
	return c.replaceGuildLists(b, g, guildLists{emojis: emojis}, false)
}

func (c *Cache) stickersUpdate(b *batch, d []byte) error {
	g, err := c.guildID(d)
	if err != nil {
		return err
	}
	stickers, _ := field(d, "stickers")
	if stickers == nil {
		return missing("stickers")
	}
	return c.replaceGuildLists(b, g, guildLists{stickers: stickers}, false)
}

func (c *Cache) voiceStateUpdate(b *batch, d []byte) error {
	g, ok := idField(d, "guild_id")
	if !ok {
		return nil // a direct-message call: no guild to keep it in
	}
	user, ok := idField(d, "user_id")
	if !ok {
		return missing("user_id")
	}
	if m, ok := field(d, "member"); ok && !isNull(m) {
		if _, err := c.putMember(b, g, m, true); err != nil {
			return err
		}
	}
	if ch, ok := field(d, "channel_id"); !ok || isNull(ch) {
		_, err := b.remove(subKey(g, kindVoiceState, user), cVoiceStates)
		return err
	}
	_, err := c.putObject(b, g, kindVoiceState, d, c.fields.voice, "user_id")
	return err
}

// ---- members, users, presences ----

// putUser stores a whole user object and returns its id.
func (c *Cache) putUser(b *batch, u []byte) (uint64, error) {
	id, ok := idField(u, "id")
	if !ok {
		return 0, missing("user id")
	}
	v, err := c.fields.user.compact(nil, u)
	if err != nil {
		return id, err
	}
	_, err = b.put(userKey(id), v, cUsers)
	return id, err
}

// patchUser updates a user from a partial user object (a presence's), creating it if unknown.
func (c *Cache) patchUser(b *batch, id uint64, u []byte) error {
	k := userKey(id)
	old, err := b.get(k)
	if err != nil {
		return err
	}
	var v []byte
	if old == nil {
		v, err = c.fields.user.compact(nil, u)
	} else {
		v, err = c.fields.user.merge(nil, old, u)
	}
	if err != nil {
		return err
	}
	_, err = b.put(k, v, cUsers)
	return err
}

// putMember stores a member of guild g and its user. With merge, fields the member object lacks keep
// their stored values (GUILD_MEMBER_UPDATE and voice states may leave some out). It reports whether the
// member is new.
func (c *Cache) putMember(b *batch, g uint64, m []byte, merge bool) (bool, error) {
	u, ok := field(m, "user")
	if !ok || isNull(u) {
		return false, missing("member user")
	}
	uid, err := c.putUser(b, u)
	if err != nil {
		return false, err
	}
	k := subKey(g, kindMember, uid)
	var v []byte
	if merge {
		old, err := b.get(k)
		if err != nil {
			return false, err
		}
		if old != nil {
			if v, err = c.fields.member.merge(nil, old, m); err != nil {
				return false, err
			}
			_, err = b.put(k, v, cMembers)
			return false, err
		}
	}
	if v, err = c.fields.member.compact(nil, m); err != nil {
		return false, err
	}
	return b.put(k, v, cMembers)
}

func (c *Cache) memberAdd(b *batch, d []byte) error {
	g, err := c.guildID(d)
	if err != nil {
		return err
	}
	if _, err := c.putMember(b, g, d, false); err != nil {
		return err
	}
	return c.adjustMemberCount(b, g, 1)
}

func (c *Cache) memberUpdate(b *batch, d []byte) error {
	g, err := c.guildID(d)
	if err != nil {
		return err
	}
	_, err = c.putMember(b, g, d, true)
	return err
}

func (c *Cache) memberRemove(b *batch, d []byte) error {
	g, err := c.guildID(d)
	if err != nil {
		return err
	}
	u, _ := field(d, "user")
	uid, ok := idField(u, "id")
	if !ok {
		return missing("user id")
	}
	if _, err := b.remove(subKey(g, kindMember, uid), cMembers); err != nil {
		return err
	}
	if _, err := b.remove(subKey(g, kindPresence, uid), cPresences); err != nil {
		return err
	}
	// The user stays: it may be in other guilds, and Discord does not say when it is in none.
	return c.adjustMemberCount(b, g, -1)
}

func (c *Cache) membersChunk(b *batch, d []byte) error {
	g, err := c.guildID(d)
	if err != nil {
		return err
	}
	var members, presences []byte
	if err := eachField(d, func(k, v []byte) error {
		switch string(k) {
		case "members":
			members = v
		case "presences":
			presences = v
		}
		return nil
	}); err != nil {
		return err
	}
	if err := eachElem(members, func(m []byte) error {
		_, err := c.putMember(b, g, m, false)
		return err
	}); err != nil {
		return err
	}
	if err := c.noteChunk(b, g, d); err != nil {
		return err
	}
	if !c.o.Presences {
		return nil
	}
	return eachElem(presences, func(p []byte) error {
		_, err := c.putPresence(b, g, p)
		return err
	})
}

func (c *Cache) userUpdate(b *batch, d []byte) error {
	_, err := c.putUser(b, d)
	return err
}

// putPresence stores a member's presence (an offline member's is removed) and the user fields it
// carries.
func (c *Cache) putPresence(b *batch, g uint64, p []byte) (uint64, error) {
	u, _ := field(p, "user")
	uid, ok := idField(u, "id")
	if !ok {
		return 0, missing("presence user id")
	}
	// A presence's user has only its id, unless something about the user changed.
	if n := countFields(u); n > 1 {
		if err := c.patchUser(b, uid, u); err != nil {
			return uid, err
		}
	}
	if st, _ := field(p, "status"); string(st) == `"offline"` {
		_, err := b.remove(subKey(g, kindPresence, uid), cPresences)
		return uid, err
	}
	v, err := c.fields.presence.compact(nil, p)
	if err != nil {
		return uid, err
	}
	_, err = b.put(subKey(g, kindPresence, uid), v, cPresences)
	return uid, err
}

func countFields(obj []byte) int {
	n := 0
	_ = eachField(obj, func(_, _ []byte) error { n++; return nil })
	return n
}

func (c *Cache) presenceUpdate(b *batch, d []byte) error {
	if !c.o.Presences {
		return nil
	}
	g, err := c.guildID(d)
	if err != nil {
		return err
	}
	_, err = c.putPresence(b, g, d)
	return err
}

// ---- messages ----

// messageIDs reads a message event's ids; guild 0 for a direct message.
func messageIDs(d []byte) (g, ch, id uint64, err error) {
	var okCh, okID bool
	err = eachField(d, func(k, v []byte) error {
		switch string(k) {
		case "guild_id":
			g, _ = parseID(v)
		case "channel_id":
			ch, okCh = parseID(v)
		case "id":
			id, okID = parseID(v)
		}
		return nil
	})
	if err == nil && (!okCh || !okID) {
		err = missing("message id or channel_id")
	}
	return g, ch, id, err
}

func (c *Cache) messageCreate(b *batch, d []byte) error {
	if c.o.MessagesPerChannel <= 0 {
		return nil
	}
	g, ch, id, err := messageIDs(d)
	if err != nil {
		return err
	}
	return c.putMessage(b, g, ch, id, d, nil)
}

// putMessage stores a message (merged into old when given) and trims the channel to the newest
// MessagesPerChannel.
func (c *Cache) putMessage(b *batch, g, ch, id uint64, d, old []byte) error {
	var v []byte
	var err error
	if old != nil {
		v, err = c.fields.message.merge(nil, old, d)
	} else {
		v, err = c.fields.message.compact(nil, d)
	}
	if err != nil {
		return err
	}
	added, err := b.put(messageKey(g, ch, id), v, cMessages)
	if err != nil {
		return err
	}
	// A webhook's author is not a user.
	if _, webhook := field(d, "webhook_id"); !webhook {
		if a, ok := field(d, "author"); ok && countFields(a) > 1 {
			if _, err := c.putUser(b, a); err != nil {
				return err
			}
		}
	}
	if !added {
		return nil
	}
	var keys [][]byte
	if err := b.tx().Scan(messagePrefix(g, ch), nil, true, func(k, _ []byte) error {
		keys = append(keys, bytes.Clone(k))
		return nil
	}); err != nil {
		return err
	}
	for i := 0; i < len(keys)-c.o.MessagesPerChannel; i++ {
		if _, err := b.remove(keys[i], cMessages); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cache) messageUpdate(b *batch, d []byte) error {
	if c.o.MessagesPerChannel <= 0 {
		return nil
	}
	g, ch, id, err := messageIDs(d)
	if err != nil {
		return err
	}
	old, err := b.get(messageKey(g, ch, id))
	if err != nil {
		return err
	}
	if old == nil {
		if _, full := field(d, "author"); !full {
			return nil // a partial update of a message the cache does not hold
		}
	}
	return c.putMessage(b, g, ch, id, d, old)
}

func (c *Cache) messageDelete(b *batch, d []byte) error {
	if c.o.MessagesPerChannel <= 0 {
		return nil
	}
	g, ch, id, err := messageIDs(d)
	if err != nil {
		return err
	}
	_, err = b.remove(messageKey(g, ch, id), cMessages)
	return err
}

func (c *Cache) messageDeleteBulk(b *batch, d []byte) error {
	if c.o.MessagesPerChannel <= 0 {
		return nil
	}
	g, _ := idField(d, "guild_id")
	ch, ok := idField(d, "channel_id")
	if !ok {
		return missing("channel_id")
	}
	ids, _ := field(d, "ids")
	return eachElem(ids, func(v []byte) error {
		id, ok := parseID(v)
		if !ok {
			return missing("message id")
		}
		_, err := b.remove(messageKey(g, ch, id), cMessages)
		return err
	})
}
