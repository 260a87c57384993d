package discordsim

import (
	"strconv"
	"time"
)

// The firehose's events keep the few numbers their d is made of, and write d into the connection
// writer's buffer each time they are sent (a resume re-sends the same bytes: nothing is read from the
// clock then). Held for a session's replay (up to ReplayLimit events each), an event is about 250 bytes
// rather than its JSON and its variant without content, about 1.5 KB, which at 50,000 events/s grew the
// simulator to a gigabyte. The JSON is encoding/json's for the simulator's object types, byte for byte
// (gateway_firehose_json_test.go compares them).

// firehoseData writes the d a session receives.
type firehoseData interface {
	appendFor(b []byte, s *session) []byte
}

// Kinds of fhMessage.
const (
	fhCreate uint8 = iota // MESSAGE_CREATE
	fhUnfurl              // MESSAGE_UPDATE: same content, a link embed added
	fhEdit                // MESSAGE_UPDATE: content edited
)

// fhMessage is a firehose message's MESSAGE_CREATE or MESSAGE_UPDATE.
type fhMessage struct {
	id, channel, guild, author uint64
	created                    uint64 // the MESSAGE_CREATE's event number: content "firehose message evt-<created>"
	n                          uint64 // this event's number: the unfurled URL's, or the edit's mark
	edited                     int64  // fhEdit: unix nanos of edited_timestamp
	kind                       uint8
}

// appendFor: sessions without MESSAGE_CONTENT get content and embeds emptied, unless the bot wrote the
// message (no firehose message mentions anyone).
func (p *fhMessage) appendFor(b []byte, s *session) []byte {
	return p.appendD(b, s.intents&IntentMessageContent != 0 || p.author == s.botID)
}

func (p *fhMessage) appendD(b []byte, full bool) []byte {
	var tsBuf [32]byte
	ts := appendDiscordTime(tsBuf[:0], snowflakeTime(p.id))
	b = append(b, `{"id":`...)
	b = appendIDString(b, p.id)
	b = append(b, `,"type":0,"channel_id":`...)
	b = appendIDString(b, p.channel)
	b = append(b, `,"guild_id":`...)
	b = appendIDString(b, p.guild)
	b = append(b, `,"author":`...)
	b = appendPlainUser(b, p.author)
	b = append(b, `,"member":{`...)
	b = appendPartialMemberFields(b, ts)
	b = append(b, `},"content":"`...)
	if full {
		b = append(b, "firehose message evt-"...)
		b = strconv.AppendUint(b, p.created, 10)
		if p.kind == fhEdit {
			b = append(b, " (edited evt-"...)
			b = strconv.AppendUint(b, p.n, 10)
			b = append(b, ')')
		}
	}
	b = append(b, `","timestamp":"`...)
	b = append(b, ts...)
	b = append(b, `","edited_timestamp":`...)
	if p.kind == fhEdit {
		b = append(b, '"')
		b = appendDiscordTime(b, time.Unix(0, p.edited))
		b = append(b, '"')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"tts":false,"mention_everyone":false,"mentions":[],"mention_roles":[],"attachments":[],"embeds":[`...)
	if full && p.kind == fhUnfurl {
		b = append(b, `{"type":"link","url":"https://example.com/evt-`...)
		b = strconv.AppendUint(b, p.n, 10)
		b = append(b, `","title":"Example","description":"unfurled link"}`...)
	}
	b = append(b, `],"components":[],"pinned":false,"flags":0`...)
	if p.kind == fhCreate {
		b = append(b, `,"nonce":"evt-`...)
		b = strconv.AppendUint(b, p.created, 10)
		b = append(b, '"')
	}
	return append(b, '}')
}

// fhMemberAdd is a GUILD_MEMBER_ADD of a new user.
type fhMemberAdd struct {
	user, guild uint64
	joined      int64 // unix nanos
}

func (p *fhMemberAdd) appendFor(b []byte, _ *session) []byte {
	b = append(b, '{')
	b = appendMemberWithUser(b, p.user, time.Unix(0, p.joined))
	b = append(b, `,"guild_id":`...)
	b = appendIDString(b, p.guild)
	return append(b, '}')
}

// fhTyping is a TYPING_START of a guild member.
type fhTyping struct {
	channel, guild, user uint64
	at                   int64 // unix seconds
}

func (p *fhTyping) appendFor(b []byte, _ *session) []byte {
	b = append(b, `{"channel_id":`...)
	b = appendIDString(b, p.channel)
	b = append(b, `,"guild_id":`...)
	b = appendIDString(b, p.guild)
	b = append(b, `,"user_id":`...)
	b = appendIDString(b, p.user)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, p.at, 10)
	b = append(b, `,"member":{`...)
	b = appendMemberWithUser(b, p.user, guildJoinTime(p.guild))
	return append(b, "}}"...)
}

// fhReaction is a MESSAGE_REACTION_ADD (👍) of a member to a firehose message.
type fhReaction struct {
	user, channel, message, guild, author uint64
}

func (p *fhReaction) appendFor(b []byte, _ *session) []byte {
	b = append(b, `{"user_id":`...)
	b = appendIDString(b, p.user)
	b = append(b, `,"channel_id":`...)
	b = appendIDString(b, p.channel)
	b = append(b, `,"message_id":`...)
	b = appendIDString(b, p.message)
	b = append(b, `,"guild_id":`...)
	b = appendIDString(b, p.guild)
	b = append(b, `,"member":{`...)
	b = appendMemberWithUser(b, p.user, snowflakeTime(p.message))
	b = append(b, `},"emoji":{"id":null,"name":"👍"},"message_author_id":`...)
	b = appendIDString(b, p.author)
	return append(b, `,"burst":false,"burst_colors":[],"type":0}`...)
}

// guildJoinTime is when the members of a simulated guild joined (guildJoinedAt).
func guildJoinTime(guild uint64) time.Time { return snowflakeTime(guild).Add(24 * time.Hour) }

func appendIDString(b []byte, id uint64) []byte {
	b = append(b, '"')
	b = strconv.AppendUint(b, id, 10)
	return append(b, '"')
}

// appendPlainUser appends plainUser(id).
func appendPlainUser(b []byte, id uint64) []byte {
	b = append(b, `{"id":`...)
	b = appendIDString(b, id)
	b = append(b, `,"username":"user-`...)
	b = strconv.AppendUint(b, id, 10)
	return append(b, `","discriminator":"0","global_name":null,"avatar":null,"public_flags":0}`...)
}

// appendPartialMemberFields appends partialMember(joinedAt)'s fields (joinedAt written as it is).
func appendPartialMemberFields(b, joinedAt []byte) []byte {
	b = append(b, `"nick":null,"avatar":null,"roles":[],"joined_at":"`...)
	b = append(b, joinedAt...)
	return append(b, `","premium_since":null,"deaf":false,"mute":false,"flags":0,"pending":false,"communication_disabled_until":null`...)
}

// appendMemberWithUser appends newMember(plainUser(user), discordTime(joined))'s fields.
func appendMemberWithUser(b []byte, user uint64, joined time.Time) []byte {
	b = append(b, `"user":`...)
	b = appendPlainUser(b, user)
	b = append(b, ',')
	var tsBuf [32]byte
	return appendPartialMemberFields(b, appendDiscordTime(tsBuf[:0], joined))
}

// appendDiscordTime appends discordTime(t) (2006-01-02T15:04:05.000000+00:00, in UTC) without
// time.Format's layout parsing.
func appendDiscordTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	hour, minute, sec := t.Clock()
	if year < 0 || year > 9999 {
		return append(b, t.Format("2006-01-02T15:04:05.000000+00:00")...)
	}
	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, minute, 2)
	b = append(b, ':')
	b = appendDigits(b, sec, 2)
	b = append(b, '.')
	b = appendDigits(b, t.Nanosecond()/1000, 6)
	return append(b, "+00:00"...)
}

// appendDigits appends v (0 ≤ v < 10^n) in n digits, zero-padded.
func appendDigits(b []byte, v, n int) []byte {
	var buf [8]byte
	for i := n - 1; i >= 0; i-- {
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, buf[:n]...)
}
