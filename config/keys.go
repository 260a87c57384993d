package config

import "time"

// kind is the type a key's value must have in the TOML file or the environment.
type kind int

const (
	kindString kind = iota
	kindInt
	kindBool
	kindDuration
	kindStrings
	kindIntents // a list of intent names, or one integer
)

func (k kind) String() string {
	return [...]string{"a string", "an integer", "true or false", `a duration such as "30s" or "8h"`,
		"a list of strings", "a list of intent names or an integer"}[k]
}

// keySpec describes one config key. The table below is the single source of truth for which keys
// exist, their defaults and their types; config.example.toml is tested against it.
type keySpec struct {
	path   string
	kind   kind
	def    any
	secret bool // masked when printed, never echoed in errors, at least MinSecretLength characters
}

// keys lists every config key with its default. Defaults use the types the TOML parser produces
// (int64, string, bool, []any), so a default and a file value travel the same road.
var keys = []keySpec{
	{path: "secret", kind: kindString, def: "", secret: true},

	{path: "log.level", kind: kindString, def: "info"},
	{path: "log.format", kind: kindString, def: "json"},

	{path: "discord.token", kind: kindString, def: "", secret: true},
	{path: "discord.api_url", kind: kindString, def: "https://discord.com/api"},
	{path: "discord.api_version", kind: kindInt, def: int64(10)},

	{path: "store.path", kind: kindString, def: "data"},
	{path: "store.sync_writes", kind: kindBool, def: false},
	{path: "store.memory_limit", kind: kindInt, def: int64(160 << 20)},

	{path: "rest.listen", kind: kindString, def: "127.0.0.1:8000"},
	{path: "rest.url", kind: kindString, def: ""},
	{path: "rest.secret", kind: kindString, def: "", secret: true},
	{path: "rest.secret_header", kind: kindString, def: ""},
	{path: "rest.allow_any_token", kind: kindBool, def: false},
	{path: "rest.max_body", kind: kindInt, def: int64(100 << 20)},
	{path: "rest.max_wait", kind: kindDuration, def: "60s"},
	{path: "rest.global_rate_limit", kind: kindInt, def: int64(50)},
	{path: "rest.invalid_request_limit", kind: kindInt, def: int64(9500)},
	{path: "rest.max_retries", kind: kindInt, def: int64(3)},
	{path: "rest.upstream_timeout", kind: kindDuration, def: "60s"},
	{path: "rest.spool_dir", kind: kindString, def: ""},
	{path: "rest.max_connections", kind: kindInt, def: int64(4096)},

	{path: "gateway.listen", kind: kindString, def: "127.0.0.1:8001"},
	{path: "gateway.url", kind: kindString, def: ""},
	{path: "gateway.secret", kind: kindString, def: "", secret: true},
	{path: "gateway.max_connections", kind: kindInt, def: int64(4096)},
	{path: "gateway.intents", kind: kindIntents, def: []any{"Guilds", "GuildMessages"}},
	{path: "gateway.total_shards", kind: kindInt, def: int64(0)},
	{path: "gateway.first_shard", kind: kindInt, def: int64(0)},
	{path: "gateway.last_shard", kind: kindInt, def: int64(-1)},
	{path: "gateway.cluster_id", kind: kindInt, def: int64(0)},
	{path: "gateway.clusters", kind: kindInt, def: int64(1)},
	{path: "gateway.compress", kind: kindString, def: "zstd-stream"},
	{path: "gateway.reshard", kind: kindBool, def: true},
	{path: "gateway.reshard_percentage", kind: kindInt, def: int64(80)},
	{path: "gateway.reshard_check_interval", kind: kindDuration, def: "8h"},
	{path: "gateway.reshard_identify_reserve", kind: kindInt, def: int64(50)},
	{path: "gateway.large_threshold", kind: kindInt, def: int64(50)},
	{path: "gateway.dedup_message_updates", kind: kindBool, def: true},
	{path: "gateway.drop_known_guild_creates", kind: kindBool, def: true},
	{path: "gateway.loading_guild_event", kind: kindString, def: ""},

	{path: "events.urls", kind: kindStrings, def: []any{"http://127.0.0.1:9000/"}},
	{path: "events.secret", kind: kindString, def: "", secret: true},
	{path: "events.max_queue_events", kind: kindInt, def: int64(10000000)},
	{path: "events.batch_max", kind: kindInt, def: int64(1)},
	{path: "events.drop", kind: kindStrings, def: []any{}},
	{path: "events.sink", kind: kindString, def: "http"},
	{path: "events.redis_url", kind: kindString, def: ""},
	{path: "events.redis_prefix", kind: kindString, def: ""},

	{path: "cache.listen", kind: kindString, def: "127.0.0.1:8002"},
	{path: "cache.url", kind: kindString, def: ""},
	{path: "cache.secret", kind: kindString, def: "", secret: true},
	{path: "cache.max_connections", kind: kindInt, def: int64(4096)},
	{path: "cache.batch_max", kind: kindInt, def: int64(100)},
	{path: "cache.presences", kind: kindBool, def: false},
	{path: "cache.messages_per_channel", kind: kindInt, def: int64(0)},
	{path: "cache.request_members", kind: kindString, def: "off"},
	{path: "cache.request_members_per_minute", kind: kindInt, def: int64(60)},
	// The desired fields per kind: the defaults are the cache package's DefaultFields (a roles test
	// checks they agree).
	{path: "cache.guild_fields", kind: kindStrings, def: strs("name", "icon", "banner", "splash", "description",
		"owner_id", "features", "member_count", "large", "joined_at", "preferred_locale", "premium_tier",
		"premium_subscription_count", "verification_level", "default_message_notifications",
		"explicit_content_filter", "mfa_level", "nsfw_level", "afk_channel_id", "afk_timeout", "system_channel_id",
		"system_channel_flags", "rules_channel_id", "public_updates_channel_id", "vanity_url_code", "max_members")},
	{path: "cache.channel_fields", kind: kindStrings, def: strs("name", "position", "permission_overwrites", "topic",
		"nsfw", "rate_limit_per_user", "bitrate", "user_limit", "rtc_region", "flags", "owner_id", "thread_metadata",
		"member_count", "message_count", "available_tags", "applied_tags", "default_auto_archive_duration")},
	{path: "cache.role_fields", kind: kindStrings, def: strs("name", "color", "colors", "hoist", "icon", "unicode_emoji",
		"position", "permissions", "managed", "mentionable", "flags", "tags")},
	{path: "cache.member_fields", kind: kindStrings, def: strs("nick", "avatar", "roles", "joined_at", "premium_since",
		"communication_disabled_until", "pending", "flags")},
	{path: "cache.user_fields", kind: kindStrings, def: strs("username", "discriminator", "global_name", "avatar", "bot",
		"public_flags")},
	{path: "cache.emoji_fields", kind: kindStrings, def: strs("name", "roles", "require_colons", "managed", "animated",
		"available")},
	{path: "cache.sticker_fields", kind: kindStrings, def: strs("name", "description", "tags", "type", "format_type",
		"available", "guild_id")},
	{path: "cache.voice_state_fields", kind: kindStrings, def: strs("channel_id", "session_id", "deaf", "mute",
		"self_deaf", "self_mute", "self_stream", "self_video", "suppress", "request_to_speak_timestamp")},
	{path: "cache.presence_fields", kind: kindStrings, def: strs("status", "activities", "client_status")},
	{path: "cache.message_fields", kind: kindStrings, def: strs("author", "content", "timestamp", "edited_timestamp",
		"tts", "mention_everyone", "mentions", "mention_roles", "attachments", "embeds", "pinned", "type", "flags",
		"webhook_id", "message_reference", "components", "sticker_items")},

	{path: "cluster.nats_url", kind: kindString, def: ""},
	{path: "cluster.name", kind: kindString, def: "dd"},
	{path: "cluster.instance", kind: kindString, def: ""},
	{path: "cluster.advertise_url", kind: kindString, def: ""},
	{path: "cluster.lease_ttl", kind: kindDuration, def: "10s"},
	{path: "cluster.replicas", kind: kindInt, def: int64(1)},
	{path: "cluster.nats_creds", kind: kindString, def: ""},
	{path: "cluster.nats_tls_ca", kind: kindString, def: ""},

	{path: "shutdown_timeout", kind: kindDuration, def: "15s"},
}

// strs is a list default in the type the TOML parser produces.
func strs(s ...string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

var keyIndex = func() map[string]*keySpec {
	m := make(map[string]*keySpec, len(keys))
	for i := range keys {
		m[keys[i].path] = &keys[i]
	}
	return m
}()

// defaultDuration is what a duration key's default parses to (used where code needs it without a Config).
func defaultDuration(path string) time.Duration {
	d, _ := time.ParseDuration(keyIndex[path].def.(string))
	return d
}
