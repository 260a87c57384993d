package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/ddhq/dd/discord"
)

// The bounds of store.memory_limit: under 64 MiB Badger's memtables would take too few events per
// commit (the queue's group commit and the cache's batches are split to fit them); past 64 GiB the number is surely a typo (memtables stop growing at 32 MB; only the block cache would).
const (
	MinStoreMemory = 64 << 20
	MaxStoreMemory = 64 << 30
)

// validate checks values whose type was right but whose meaning is not. Every message names the key.
func (c *Config) validate(role Role) error {
	var problems []error
	bad := func(key, format string, args ...any) {
		problems = append(problems, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		bad("log.format", "%q is not one of json, console", c.Log.Format)
	}

	c.checkSecrets(bad)

	needsToken := role.Runs(RoleRest) || role.Runs(RoleGateway)
	switch tok := c.Discord.Token; {
	case tok == "" && needsToken:
		bad("discord.token", "required for --role=%s (set it in the file or as DD_DISCORD__TOKEN)", role)
	case strings.HasPrefix(strings.ToLower(tok), "bot "):
		bad("discord.token", `give the token without the "Bot " prefix`)
	case strings.ContainsAny(tok, " \t\r\n"):
		bad("discord.token", "contains white space")
	}
	if err := checkURL(c.Discord.APIURL, false); err != nil {
		bad("discord.api_url", "%v", err)
	}
	if c.Discord.APIVersion < 6 || c.Discord.APIVersion > 10 {
		bad("discord.api_version", "%d is not a Discord API version (6 to 10; 10 is current)", c.Discord.APIVersion)
	}

	if strings.TrimSpace(c.Store.Path) == "" {
		bad("store.path", "must name a directory")
	}
	if m := c.Store.MemoryLimit; m < MinStoreMemory || m > MaxStoreMemory {
		bad("store.memory_limit", "must be from %d (64 MiB) to %d (64 GiB) bytes, got %d", int64(MinStoreMemory),
			int64(MaxStoreMemory), m)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be positive, got %s", c.ShutdownTimeout)
	}

	listeners := []struct {
		name string
		l    Listener
		used bool
	}{
		{"rest", c.Rest.Listener, role.Runs(RoleRest)},
		{"gateway", c.Gateway.Listener, role.Runs(RoleGateway)},
		{"cache", c.Cache.Listener, role.Runs(RoleCache)},
	}
	for _, l := range listeners {
		loopback, err := checkListen(l.l.Listen)
		if err != nil {
			bad(l.name+".listen", "%v", err)
		}
		if err := checkURL(l.l.URL, true); err != nil {
			bad(l.name+".url", "%v", err)
		}
		if l.l.MaxConnections < 1 {
			bad(l.name+".max_connections", "must be at least 1, got %d", l.l.MaxConnections)
		}
		if l.used && err == nil && !loopback && l.l.Secret == "" {
			bad(l.name+".secret", "empty while %s.listen (%s) is reachable from other machines; set secret or %s.secret",
				l.name, l.l.Listen, l.name)
		}
	}

	c.validateRest(bad)
	c.validateCluster(role, bad)

	g := c.Gateway
	if g.TotalShards < 0 {
		bad("gateway.total_shards", "must be 0 (Discord's recommendation) or positive, got %d", g.TotalShards)
	}
	if g.FirstShard < 0 {
		bad("gateway.first_shard", "must not be negative, got %d", g.FirstShard)
	}
	if g.LastShard < -1 {
		bad("gateway.last_shard", "must be -1 (the last shard) or a shard id, got %d", g.LastShard)
	}
	if g.LastShard >= 0 && g.LastShard < g.FirstShard {
		bad("gateway.last_shard", "%d is before gateway.first_shard %d", g.LastShard, g.FirstShard)
	}
	if g.TotalShards > 0 && g.LastShard >= g.TotalShards {
		bad("gateway.last_shard", "%d is not below gateway.total_shards %d", g.LastShard, g.TotalShards)
	}
	if g.TotalShards > 0 && g.FirstShard >= g.TotalShards {
		bad("gateway.first_shard", "%d is not below gateway.total_shards %d", g.FirstShard, g.TotalShards)
	}
	if g.Clusters < 1 {
		bad("gateway.clusters", "must be at least 1, got %d", g.Clusters)
	} else if g.ClusterID < 0 || g.ClusterID >= g.Clusters {
		bad("gateway.cluster_id", "%d is not below gateway.clusters %d", g.ClusterID, g.Clusters)
	}
	if g.Clusters > 1 && g.TotalShards > 0 && g.TotalShards%g.Clusters != 0 {
		bad("gateway.total_shards", "%d is not a multiple of gateway.clusters %d (each process takes the shards whose id modulo clusters is its cluster_id)", g.TotalShards, g.Clusters)
	}
	if g.Clusters > 1 && (g.FirstShard != 0 || g.LastShard != -1) {
		bad("gateway.clusters", "set either clusters and cluster_id, or first_shard and last_shard, not both")
	}
	switch g.Compress {
	case "zstd-stream", "zlib-stream", "none":
	default:
		bad("gateway.compress", "%q is not one of zstd-stream, zlib-stream, none", g.Compress)
	}
	if g.ReshardPercentage < 1 || g.ReshardPercentage > 100 {
		bad("gateway.reshard_percentage", "must be between 1 and 100, got %d", g.ReshardPercentage)
	}
	if g.ReshardIdentifyReserve < 0 {
		bad("gateway.reshard_identify_reserve", "must not be negative, got %d", g.ReshardIdentifyReserve)
	}
	if g.ReshardCheckInterval <= 0 {
		bad("gateway.reshard_check_interval", "must be positive, got %s", g.ReshardCheckInterval)
	}

	if g.LargeThreshold < 50 || g.LargeThreshold > 250 {
		bad("gateway.large_threshold", "must be between 50 and 250 (Discord's range), got %d", g.LargeThreshold)
	}
	if g.LoadingGuildEvent != "" && strings.ToUpper(g.LoadingGuildEvent) != g.LoadingGuildEvent {
		bad("gateway.loading_guild_event", "%q: event names are upper case, like GUILD_LOADED_DD", g.LoadingGuildEvent)
	}
	if c.Events.BatchMax < 1 || c.Events.BatchMax > 10000 {
		bad("events.batch_max", "must be between 1 and 10000, got %d", c.Events.BatchMax)
	}
	for _, name := range c.Events.Drop {
		if name == "READY" || name == "RESUMED" || strings.ToUpper(name) != name {
			bad("events.drop", "%q: give upper-case event names (READY and RESUMED cannot be dropped)", name)
		}
	}
	switch c.Events.Sink {
	case "http":
	case "redis":
		if err := checkRedisURL(c.Events.RedisURL); err != nil {
			bad("events.redis_url", "%v", err)
		}
	default:
		bad("events.sink", "%q: want \"http\" (POST to events.urls) or \"redis\" (streams at events.redis_url)", c.Events.Sink)
	}
	// In cluster mode an empty list means dd does not deliver: the bot reads the stream itself.
	if role.Runs(RoleGateway) && c.Events.Sink == "http" && len(c.Events.URLs) == 0 && c.Cluster.NATSURL == "" {
		bad("events.urls", "needs at least one URL for --role=%s (only in cluster mode may it be empty: the bot then reads the stream)", role)
	}
	for i, u := range c.Events.URLs {
		if err := checkURL(u, false); err != nil {
			bad("events.urls", "entry %d: %v", i, err)
		}
	}
	if c.Events.MaxQueueEvents < 1 {
		bad("events.max_queue_events", "must be at least 1, got %d", c.Events.MaxQueueEvents)
	}
	c.validateCache(bad)
	return errors.Join(problems...)
}

// checkListen checks a host:port and says whether it is a loopback address.
func checkListen(addr string) (loopback bool, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("%q is not host:port (for example \"127.0.0.1:8000\" or \":8000\")", addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return false, fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	if host == "localhost" {
		return true, nil
	}
	if host == "" {
		return false, nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		// A host name: dd resolves it when listening; treat it as reachable from outside.
		return false, nil
	}
	return ip.IsLoopback(), nil
}

// parseURL parses s, its error never showing the password: url.Parse's quotes the URL whole, so only its
// reason is kept.
func parseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s is not a URL: %v", quoteURL(s), err)
	}
	return u, nil
}

// checkURL checks an http(s) URL; empty is allowed where optional.
func checkURL(s string, optional bool) error {
	if s == "" {
		if optional {
			return nil
		}
		return errors.New("must not be empty")
	}
	u, err := parseURL(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%s: scheme must be http or https", quoteURL(s))
	}
	if u.Host == "" {
		return fmt.Errorf("%s has no host", quoteURL(s))
	}
	return nil
}

// checkRedisURL checks events.redis_url as go-redis reads it: redis:// or rediss://, a host, and a
// database number as its path when there is one. Like checkURL, it never shows the password.
func checkRedisURL(s string) error {
	if s == "" {
		return errors.New(`must be set when events.sink is "redis" (for example "redis://:password@127.0.0.1:6379/0")`)
	}
	u, err := parseURL(s)
	if err != nil {
		return err
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("%s: scheme must be redis or rediss (TLS)", quoteURL(s))
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%s has no host", quoteURL(s))
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return fmt.Errorf("%s: the path must be a database number, got %q", quoteURL(s), db)
		}
	}
	return nil
}

// validateRest checks the [rest] keys beyond their types.
func (c *Config) validateRest(bad func(key, format string, args ...any)) {
	r := c.Rest
	if h := r.SecretHeader; h != "" {
		switch {
		case !isHeaderName(h):
			bad("rest.secret_header", "%q is not a valid HTTP header name", h)
		case strings.EqualFold(h, "Authorization"):
			bad("rest.secret_header", `"Authorization" is already where the secret goes; leave secret_header empty or name another header`)
		}
	}
	if r.MaxBody < 1<<20 {
		bad("rest.max_body", "must be at least 1048576 (1 MiB), got %d", r.MaxBody)
	}
	if r.MaxWait <= 0 {
		bad("rest.max_wait", "must be positive, got %s", r.MaxWait)
	}
	if r.GlobalRateLimit < 1 {
		bad("rest.global_rate_limit", "must be at least 1 request per second, got %d", r.GlobalRateLimit)
	}
	if r.InvalidRequestLimit < 1 || r.InvalidRequestLimit > 10000 {
		bad("rest.invalid_request_limit", "must be between 1 and 10000 (Discord bans at 10,000 per 10 minutes), got %d", r.InvalidRequestLimit)
	}
	if r.MaxRetries < 0 || r.MaxRetries > 100 {
		bad("rest.max_retries", "must be between 0 and 100, got %d", r.MaxRetries)
	}
	if r.UpstreamTimeout <= 0 {
		bad("rest.upstream_timeout", "must be positive, got %s", r.UpstreamTimeout)
	}
}

// isHeaderName reports whether s is an HTTP header field name (an RFC 9110 token).
func isHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return s != ""
}

// validateCache checks the [cache] keys beyond their types.
func (c *Config) validateCache(bad func(key, format string, args ...any)) {
	k := c.Cache
	if k.BatchMax < 1 || k.BatchMax > 10000 {
		bad("cache.batch_max", "must be between 1 and 10000, got %d", k.BatchMax)
	}
	if k.MessagesPerChannel < 0 || k.MessagesPerChannel > 10000 {
		bad("cache.messages_per_channel", "must be between 0 (no messages) and 10000, got %d", k.MessagesPerChannel)
	}
	switch k.RequestMembers {
	case "off", "none":
	case "all", "small-first":
		// Discord answers a request for every member only with the GuildMembers intent, and without it
		// says nothing at all: every request would time out, forever.
		if c.Gateway.Intents&Intents(discord.IntentGuildMembers) == 0 {
			bad("cache.request_members", "%q needs the GuildMembers intent, which gateway.intents lacks: Discord never answers "+
				"a request for every member without it (add GuildMembers to gateway.intents and enable it in the developer "+
				"portal, or set cache.request_members = \"off\")", k.RequestMembers)
		}
	default:
		bad("cache.request_members", "%q is not one of off, all, small-first", k.RequestMembers)
	}
	if k.RequestMembersPerMinute < 1 || k.RequestMembersPerMinute > 100 {
		bad("cache.request_members_per_minute", "must be between 1 and 100 (of Discord's 120 sends per shard per minute, "+
			"the rest kept for heartbeats and the bot's own commands), got %d", k.RequestMembersPerMinute)
	}
	for _, f := range []struct {
		key  string
		list []string
	}{
		{"cache.guild_fields", k.GuildFields}, {"cache.channel_fields", k.ChannelFields}, {"cache.role_fields", k.RoleFields},
		{"cache.member_fields", k.MemberFields}, {"cache.user_fields", k.UserFields}, {"cache.emoji_fields", k.EmojiFields},
		{"cache.sticker_fields", k.StickerFields}, {"cache.voice_state_fields", k.VoiceStateFields},
		{"cache.presence_fields", k.PresenceFields}, {"cache.message_fields", k.MessageFields},
	} {
		for _, name := range f.list {
			if name != "*" && !isFieldName(name) {
				bad(f.key, "%q is not a Discord field name (lower case and underscores, like \"joined_at\"; \"*\" keeps every field)", name)
			}
		}
	}
}

// isFieldName reports whether s looks like a field of Discord's JSON (snake_case).
func isFieldName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return s != ""
}
