package cache

import "encoding/binary"

// Key layout. Everything lives under "c/", so the store is shared with the queue ("q/") and sessions.
// Ids are 8 bytes big-endian, so that a prefix scan returns a guild's members in user id order (the order
// of Discord's member list, which "after" pages through).
//
//	c/g/<guild>                       guild: a state byte (stateAvailable, stateUnavailable) + JSON
//	c/g/<guild><kind><id>             a guild's channel, thread, role, member, emoji, sticker, voice
//	                                  state (id: the user) or presence (id: the user)
//	c/g/<guild>M<channel><message>    a message (guild 0 holds direct-message channels)
//	c/x/<channel>                     which guild a channel or thread is in: <guild><kind>
//	c/u/<user>                        user
//	c/o/<guild>                       a guild in an outage (or known only from READY), empty value
//	c/n                               the counters of Stats
//
// A guild and everything under it is one key range, so removing a guild is one range deletion. Values are
// the kept fields as JSON, without the object's own id (it is in the key and added back when served).
const (
	guildPrefix   = "c/g/"
	channelPrefix = "c/x/"
	userPrefix    = "c/u/"
	outagePrefix  = "c/o/"
	countersKey   = "c/n"

	guildKeyLen = len(guildPrefix) + 8
	subKeyLen   = guildKeyLen + 1 + 8
)

// Sub-object kinds, the byte after the guild id.
const (
	kindChannel    byte = 'c'
	kindThread     byte = 't'
	kindRole       byte = 'r'
	kindMember     byte = 'm'
	kindEmoji      byte = 'e'
	kindSticker    byte = 's'
	kindVoiceState byte = 'v'
	kindPresence   byte = 'p'
	kindMessage    byte = 'M'
)

// Guild state bytes.
const (
	stateAvailable   byte = 'a'
	stateUnavailable byte = 'u'
)

func guildKey(g uint64) []byte {
	k := make([]byte, guildKeyLen, subKeyLen)
	copy(k, guildPrefix)
	binary.BigEndian.PutUint64(k[len(guildPrefix):], g)
	return k
}

// kindPrefix is the prefix of a guild's objects of one kind.
func kindPrefix(g uint64, kind byte) []byte {
	return append(guildKey(g), kind)
}

func subKey(g uint64, kind byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(kindPrefix(g, kind), id)
}

func messagePrefix(g, channel uint64) []byte { return subKey(g, kindMessage, channel) }

func messageKey(g, channel, msg uint64) []byte {
	return binary.BigEndian.AppendUint64(messagePrefix(g, channel), msg)
}

func channelKey(ch uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(channelPrefix), ch)
}

func outageKey(g uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(outagePrefix), g)
}

func userKey(u uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(userPrefix), u)
}

// channelRef is the value of a channel's index entry.
func channelRef(g uint64, kind byte) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 9), g), kind)
}

// keyID reads the id that ends a key.
func keyID(k []byte) uint64 { return binary.BigEndian.Uint64(k[len(k)-8:]) }

// keyGuild reads the guild id of a key under guildPrefix.
func keyGuild(k []byte) uint64 { return binary.BigEndian.Uint64(k[len(guildPrefix):guildKeyLen]) }

// Counters of Stats, by index.
const (
	cGuilds = iota
	cUnavailableGuilds
	cChannels
	cThreads
	cRoles
	cMembers
	cUsers
	cEmojis
	cStickers
	cVoiceStates
	cPresences
	cMessages
	nCounters
)

var counterNames = [nCounters]string{"guilds", "unavailable_guilds", "channels", "threads", "roles", "members",
	"users", "emojis", "stickers", "voice_states", "presences", "messages"}

// kindCounter is the counter of a sub-object kind.
func kindCounter(kind byte) int {
	switch kind {
	case kindChannel:
		return cChannels
	case kindThread:
		return cThreads
	case kindRole:
		return cRoles
	case kindMember:
		return cMembers
	case kindEmoji:
		return cEmojis
	case kindSticker:
		return cStickers
	case kindVoiceState:
		return cVoiceStates
	case kindPresence:
		return cPresences
	case kindMessage:
		return cMessages
	}
	return -1
}
