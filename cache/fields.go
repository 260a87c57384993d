package cache

import (
	"bytes"
	"fmt"
)

// Fields lists, per kind of object, the top-level fields the cache keeps (the "desired properties"):
// a big bot stores only what it reads. Names are Discord's JSON field names; "*" keeps every field.
// Ids are always kept, and so are the fields the cache needs to place an object (a channel's type and
// parent_id). A nil list takes DefaultFields' list; an empty one keeps ids only.
type Fields struct {
	Guild      []string
	Channel    []string // channels and threads
	Role       []string
	Member     []string // the member's user is kept as a user (User fields)
	User       []string
	Emoji      []string
	Sticker    []string
	VoiceState []string
	Presence   []string
	Message    []string
}

// DefaultFields keeps what common bots read: names, permissions and their overwrites, roles, nicknames,
// avatars, join dates, timeouts; not what changes often and is rarely read (a channel's last_message_id)
// nor what is large and rarely read (a guild's discovery splash, an emoji's creator).
func DefaultFields() Fields {
	return Fields{
		Guild: []string{"name", "icon", "banner", "splash", "description", "owner_id", "features", "member_count",
			"large", "joined_at", "preferred_locale", "premium_tier", "premium_subscription_count",
			"verification_level", "default_message_notifications", "explicit_content_filter", "mfa_level",
			"nsfw_level", "afk_channel_id", "afk_timeout", "system_channel_id", "system_channel_flags",
			"rules_channel_id", "public_updates_channel_id", "vanity_url_code", "max_members"},
		Channel: []string{"name", "position", "permission_overwrites", "topic", "nsfw", "rate_limit_per_user",
			"bitrate", "user_limit", "rtc_region", "flags", "owner_id", "thread_metadata", "member_count",
			"message_count", "available_tags", "applied_tags", "default_auto_archive_duration"},
		Role: []string{"name", "color", "colors", "hoist", "icon", "unicode_emoji", "position", "permissions",
			"managed", "mentionable", "flags", "tags"},
		Member: []string{"nick", "avatar", "roles", "joined_at", "premium_since", "communication_disabled_until",
			"pending", "flags"},
		User:       []string{"username", "discriminator", "global_name", "avatar", "bot", "public_flags"},
		Emoji:      []string{"name", "roles", "require_colons", "managed", "animated", "available"},
		Sticker:    []string{"name", "description", "tags", "type", "format_type", "available", "guild_id"},
		VoiceState: []string{"channel_id", "session_id", "deaf", "mute", "self_deaf", "self_mute", "self_stream", "self_video", "suppress", "request_to_speak_timestamp"},
		Presence:   []string{"status", "activities", "client_status"},
		Message: []string{"author", "content", "timestamp", "edited_timestamp", "tts", "mention_everyone",
			"mentions", "mention_roles", "attachments", "embeds", "pinned", "type", "flags", "webhook_id",
			"message_reference", "components", "sticker_items"},
	}
}

// withDefaults fills nil lists from DefaultFields.
func (f Fields) withDefaults() Fields {
	d := DefaultFields()
	for _, p := range []struct{ got, def *[]string }{
		{&f.Guild, &d.Guild}, {&f.Channel, &d.Channel}, {&f.Role, &d.Role}, {&f.Member, &d.Member},
		{&f.User, &d.User}, {&f.Emoji, &d.Emoji}, {&f.Sticker, &d.Sticker}, {&f.VoiceState, &d.VoiceState},
		{&f.Presence, &d.Presence}, {&f.Message, &d.Message},
	} {
		if *p.got == nil {
			*p.got = *p.def
		}
	}
	return f
}

// fieldSet is one kind's compiled field list.
type fieldSet struct {
	all  bool
	keep map[string]bool
	// never are fields the cache stores elsewhere or derives from the key (ids, a guild's members).
	never map[string]bool
	// nullable are fields Discord sends even when null: they are stored as null. Other nulls are optional
	// fields Discord may leave out, and the cache leaves them out to save space.
	nullable map[string]bool
}

func newFieldSet(kind string, names []string, always, never, nullable []string) (*fieldSet, error) {
	f := &fieldSet{keep: map[string]bool{}, never: set(never), nullable: set(nullable)}
	for _, n := range names {
		if n == "*" {
			f.all = true
			continue
		}
		if n == "" || !isFieldName(n) {
			return nil, fmt.Errorf("cache: %s fields: %q is not a field name", kind, n)
		}
		f.keep[n] = true
	}
	for _, n := range always {
		f.keep[n] = true
	}
	return f, nil
}

func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func isFieldName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func (f *fieldSet) keeps(name []byte) bool {
	return !f.never[string(name)] && (f.all || f.keep[string(name)])
}

// stores says whether a kept field's value is written (nulls of optional fields are not).
func (f *fieldSet) stores(name, val []byte) bool {
	return !isNull(val) || f.nullable[string(name)]
}

// compact appends obj's kept fields to dst as a JSON object.
func (f *fieldSet) compact(dst, obj []byte) ([]byte, error) {
	dst = append(dst, '{')
	first := true
	err := eachField(obj, func(k, v []byte) error {
		if !f.keeps(k) || !f.stores(k, v) {
			return nil
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendField(dst, k, v)
		return nil
	})
	return append(dst, '}'), err
}

func appendField(dst, k, v []byte) []byte {
	dst = append(dst, '"')
	dst = append(dst, k...)
	dst = append(dst, '"', ':')
	return append(dst, v...)
}

// merge appends to dst the stored object old updated with patch's kept fields: a field in patch replaces
// the stored one (null removes an optional field), the others stay. For partial updates (a member's
// GUILD_MEMBER_UPDATE, a MESSAGE_UPDATE, a GUILD_UPDATE that lacks what only GUILD_CREATE carries).
func (f *fieldSet) merge(dst, old, patch []byte) ([]byte, error) {
	type kv struct{ k, v []byte }
	var upd []kv
	if err := eachField(patch, func(k, v []byte) error {
		if f.keeps(k) {
			upd = append(upd, kv{k, v})
		}
		return nil
	}); err != nil {
		return dst, err
	}
	dst = append(dst, '{')
	first := true
	add := func(k, v []byte) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendField(dst, k, v)
	}
	err := eachField(old, func(k, v []byte) error {
		for _, u := range upd {
			if bytes.Equal(u.k, k) {
				return nil
			}
		}
		add(k, v)
		return nil
	})
	if err != nil {
		return dst, err
	}
	for _, u := range upd {
		if f.stores(u.k, u.v) {
			add(u.k, u.v)
		}
	}
	return append(dst, '}'), nil
}

// kindFields are the compiled field sets of every kind.
type kindFields struct {
	guild, channel, role, member, user, emoji, sticker, voice, presence, message *fieldSet
}

func compileFields(f Fields) (*kindFields, error) {
	f = f.withDefaults()
	var kf kindFields
	for _, k := range []struct {
		name                   string
		dst                    **fieldSet
		names                  []string
		always, never, nullble []string
	}{
		{"guild", &kf.guild, f.Guild, nil,
			[]string{"id", "unavailable", "channels", "threads", "roles", "members", "emojis", "stickers", "voice_states", "presences"},
			[]string{"icon", "splash", "discovery_splash", "afk_channel_id", "application_id", "system_channel_id",
				"rules_channel_id", "vanity_url_code", "description", "banner", "public_updates_channel_id", "safety_alerts_channel_id"}},
		{"channel", &kf.channel, f.Channel, []string{"type", "parent_id"}, []string{"id", "guild_id"}, nil},
		{"role", &kf.role, f.Role, nil, []string{"id"}, nil},
		{"member", &kf.member, f.Member, nil, []string{"user", "guild_id"}, nil},
		{"user", &kf.user, f.User, nil, []string{"id"}, []string{"avatar", "global_name"}},
		{"emoji", &kf.emoji, f.Emoji, nil, []string{"id"}, []string{"name"}},
		{"sticker", &kf.sticker, f.Sticker, nil, []string{"id"}, []string{"description"}},
		{"voice state", &kf.voice, f.VoiceState, nil, []string{"guild_id", "user_id", "member"},
			[]string{"channel_id", "request_to_speak_timestamp"}},
		{"presence", &kf.presence, f.Presence, nil, []string{"user", "guild_id"}, nil},
		{"message", &kf.message, f.Message, nil, []string{"id", "channel_id", "guild_id"}, []string{"edited_timestamp"}},
	} {
		fs, err := newFieldSet(k.name, k.names, k.always, k.never, k.nullble)
		if err != nil {
			return nil, err
		}
		*k.dst = fs
	}
	return &kf, nil
}
