package discordsim

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Hand-written JSON for the firehose's events: the same bytes encoding/json writes for these types
// (field order, omitempty, null for nil, HTML-safe escaping; gateway_json_test.go compares them on random
// values), without reflection. encoding/json was a third of the simulator's CPU under a firehose.
// Anything unusual (a string needing escapes, a non-empty attachment list) is handed to encoding/json.

// appendJSONString appends s as encoding/json does: quoted, with <, >, & and U+2028/U+2029 escaped and
// invalid UTF-8 replaced. Strings without any of that (the usual case) are copied as they are.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if jsonPlain[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			return appendMarshal(b, s)
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			return appendMarshal(b, s)
		}
		i += size
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// jsonPlain: the ASCII bytes encoding/json writes as they are in a string.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

func appendMarshal(b []byte, v any) []byte { return append(b, mustMarshal(v)...) }

func appendNullableString(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendJSONString(b, *s)
}

func appendIDString(b []byte, id uint64) []byte {
	b = append(b, '"')
	b = strconv.AppendUint(b, id, 10)
	return append(b, '"')
}

// appendStrings appends a []string (null when nil).
func appendStrings(b []byte, list []string) []byte {
	if list == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendRawList appends a []json.RawMessage (null when nil); each element goes through encoding/json,
// which compacts and escapes it, unless it is already what that would give.
func appendRawList(b []byte, list []json.RawMessage) []byte {
	if list == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, r := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendRaw(b, r)
	}
	return append(b, ']')
}

// appendRaw appends a json.RawMessage as encoding/json would: as it is if it is valid JSON holding no
// byte that compacting or escaping would change (whitespace outside strings, <, >, &, non-ASCII), else
// through encoding/json (which panics in mustMarshal on invalid JSON, as marshalling the event did).
func appendRaw(b []byte, r json.RawMessage) []byte {
	if r == nil {
		return append(b, "null"...)
	}
	if len(r) == 0 {
		return appendMarshal(b, r)
	}
	inString := false
	for i := 0; i < len(r); i++ {
		c := r[i]
		switch {
		case c == '<' || c == '>' || c == '&' || c >= utf8.RuneSelf || c <= ' ' && !inString:
			return appendMarshal(b, r)
		case c == '"':
			inString = !inString
		case c == '\\' && inString:
			i++ // the escaped byte (a quote does not end the string)
		}
	}
	if !json.Valid(r) {
		return appendMarshal(b, r)
	}
	return append(b, r...)
}

func appendBool(b []byte, v bool) []byte { return strconv.AppendBool(b, v) }

// spliceJSON returns a copy of the object data (written by these appenders) with the values of fields
// replaced: each field's key is found at the object's top level (a key's bytes ,"key": cannot occur inside
// a string, whose quotes are escaped; the nested objects of the firehose's messages have no such key), its
// value must be exactly old, and becomes repl. It panics if a field is not there as expected.
func spliceJSON(data []byte, fields ...spliceField) []byte {
	out := make([]byte, 0, len(data))
	rest := data
	for _, f := range fields {
		k := bytes.Index(rest, []byte(`,"`+f.key+`":`))
		if k < 0 {
			panic("discordsim: spliceJSON: no field " + f.key)
		}
		k += len(f.key) + 4
		if !bytes.HasPrefix(rest[k:], f.old) {
			panic("discordsim: spliceJSON: field " + f.key + " is not " + string(f.old))
		}
		out = append(out, rest[:k]...)
		out = append(out, f.repl...)
		rest = rest[k+len(f.old):]
	}
	return append(out, rest...)
}

// spliceField is a field for spliceJSON, in the order of the object's fields.
type spliceField struct {
	key  string
	old  []byte
	repl string
}

// appendUser appends a simUser object.
func appendUser(b []byte, u *simUser) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, u.ID)
	b = append(b, `,"username":`...)
	b = appendJSONString(b, u.Username)
	b = append(b, `,"discriminator":`...)
	b = appendJSONString(b, u.Discriminator)
	b = append(b, `,"global_name":`...)
	b = appendNullableString(b, u.GlobalName)
	b = append(b, `,"avatar":`...)
	b = appendNullableString(b, u.Avatar)
	if u.Bot {
		b = append(b, `,"bot":true`...)
	}
	b = append(b, `,"public_flags":`...)
	b = strconv.AppendInt(b, int64(u.PublicFlags), 10)
	return append(b, '}')
}

// appendMemberFields appends a simMember's fields, without the braces (gwMemberAdd embeds them).
func appendMemberFields(b []byte, m *simMember) []byte {
	if m.User != nil {
		b = append(b, `"user":`...)
		b = appendUser(b, m.User)
		b = append(b, ',')
	}
	b = append(b, `"nick":`...)
	b = appendNullableString(b, m.Nick)
	b = append(b, `,"avatar":`...)
	b = appendNullableString(b, m.Avatar)
	b = append(b, `,"roles":`...)
	b = appendStrings(b, m.Roles)
	b = append(b, `,"joined_at":`...)
	b = appendJSONString(b, m.JoinedAt)
	b = append(b, `,"premium_since":`...)
	b = appendNullableString(b, m.PremiumSince)
	b = append(b, `,"deaf":`...)
	b = appendBool(b, m.Deaf)
	b = append(b, `,"mute":`...)
	b = appendBool(b, m.Mute)
	b = append(b, `,"flags":`...)
	b = strconv.AppendInt(b, int64(m.Flags), 10)
	b = append(b, `,"pending":`...)
	b = appendBool(b, m.Pending)
	b = append(b, `,"communication_disabled_until":`...)
	return appendNullableString(b, m.CommunicationDisabledUntil)
}

func appendMember(b []byte, m *simMember) []byte {
	b = append(b, '{')
	b = appendMemberFields(b, m)
	return append(b, '}')
}

// appendMessage appends a simMessage object.
func appendMessage(b []byte, m *simMessage) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, m.ID)
	b = append(b, `,"type":`...)
	b = strconv.AppendInt(b, int64(m.Type), 10)
	b = append(b, `,"channel_id":`...)
	b = appendJSONString(b, m.ChannelID)
	if m.GuildID != "" {
		b = append(b, `,"guild_id":`...)
		b = appendJSONString(b, m.GuildID)
	}
	b = append(b, `,"author":`...)
	b = appendUser(b, &m.Author)
	if m.Member != nil {
		b = append(b, `,"member":`...)
		b = appendMember(b, m.Member)
	}
	b = append(b, `,"content":`...)
	b = appendJSONString(b, m.Content)
	b = append(b, `,"timestamp":`...)
	b = appendJSONString(b, m.Timestamp)
	b = append(b, `,"edited_timestamp":`...)
	b = appendNullableString(b, m.EditedTimestamp)
	b = append(b, `,"tts":`...)
	b = appendBool(b, m.TTS)
	b = append(b, `,"mention_everyone":`...)
	b = appendBool(b, m.MentionEveryone)
	b = append(b, `,"mentions":`...)
	if m.Mentions == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range m.Mentions {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendUser(b, &m.Mentions[i])
		}
		b = append(b, ']')
	}
	b = append(b, `,"mention_roles":`...)
	b = appendStrings(b, m.MentionRoles)
	b = append(b, `,"attachments":`...)
	switch {
	case m.Attachments == nil:
		b = append(b, "null"...)
	case len(m.Attachments) == 0:
		b = append(b, "[]"...)
	default:
		b = appendMarshal(b, m.Attachments)
	}
	b = append(b, `,"embeds":`...)
	b = appendRawList(b, m.Embeds)
	b = append(b, `,"components":`...)
	b = appendRawList(b, m.Components)
	b = append(b, `,"pinned":`...)
	b = appendBool(b, m.Pinned)
	b = append(b, `,"flags":`...)
	b = strconv.AppendInt(b, int64(m.Flags), 10)
	if len(m.Nonce) > 0 {
		b = append(b, `,"nonce":`...)
		b = appendRaw(b, m.Nonce)
	}
	if m.WebhookID != "" {
		b = append(b, `,"webhook_id":`...)
		b = appendJSONString(b, m.WebhookID)
	}
	if m.ApplicationID != "" {
		b = append(b, `,"application_id":`...)
		b = appendJSONString(b, m.ApplicationID)
	}
	return append(b, '}')
}

// appendEmbed appends a simEmbed object.
func appendEmbed(b []byte, e *simEmbed) []byte {
	b = append(b, `{"type":`...)
	b = appendJSONString(b, e.Type)
	b = append(b, `,"url":`...)
	b = appendJSONString(b, e.URL)
	b = append(b, `,"title":`...)
	b = appendJSONString(b, e.Title)
	b = append(b, `,"description":`...)
	b = appendJSONString(b, e.Description)
	return append(b, '}')
}

func appendMemberAdd(b []byte, m *gwMemberAdd) []byte {
	b = append(b, '{')
	b = appendMemberFields(b, &m.simMember)
	b = append(b, `,"guild_id":`...)
	b = appendJSONString(b, m.GuildID)
	return append(b, '}')
}

func appendTyping(b []byte, t *gwTyping) []byte {
	b = append(b, `{"channel_id":`...)
	b = appendJSONString(b, t.ChannelID)
	b = append(b, `,"guild_id":`...)
	b = appendJSONString(b, t.GuildID)
	b = append(b, `,"user_id":`...)
	b = appendJSONString(b, t.UserID)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, t.Timestamp, 10)
	b = append(b, `,"member":`...)
	b = appendMember(b, &t.Member)
	return append(b, '}')
}

func appendReactionAdd(b []byte, r *gwReactionAdd) []byte {
	b = append(b, `{"user_id":`...)
	b = appendJSONString(b, r.UserID)
	b = append(b, `,"channel_id":`...)
	b = appendJSONString(b, r.ChannelID)
	b = append(b, `,"message_id":`...)
	b = appendJSONString(b, r.MessageID)
	b = append(b, `,"guild_id":`...)
	b = appendJSONString(b, r.GuildID)
	b = append(b, `,"member":`...)
	b = appendMember(b, &r.Member)
	b = append(b, `,"emoji":{"id":`...)
	b = appendNullableString(b, r.Emoji.ID)
	b = append(b, `,"name":`...)
	b = appendJSONString(b, r.Emoji.Name)
	b = append(b, `},"message_author_id":`...)
	b = appendJSONString(b, r.MessageAuthorID)
	b = append(b, `,"burst":`...)
	b = appendBool(b, r.Burst)
	b = append(b, `,"burst_colors":`...)
	b = appendStrings(b, r.BurstColors)
	b = append(b, `,"type":`...)
	b = strconv.AppendInt(b, int64(r.Type), 10)
	return append(b, '}')
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
