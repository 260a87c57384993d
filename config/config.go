// Package config loads and validates dd's configuration: built-in defaults, then a TOML file, then
// DD_-prefixed environment variables, then flags. Every problem is reported with the key it concerns,
// so an operator can fix a config without reading dd's code. It does not act on the config.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"

	"github.com/ddhq/dd/discord"
)

// Role is which part of dd a process runs.
type Role string

// The roles (README, "Running").
const (
	RoleRest    Role = "rest"
	RoleGateway Role = "gateway"
	RoleCache   Role = "cache"
	RoleAll     Role = "all"
)

// ParseRole checks a --role value.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleRest, RoleGateway, RoleCache, RoleAll:
		return r, nil
	}
	return "", fmt.Errorf("--role: %q is not one of rest, gateway, cache, all", s)
}

// Runs reports whether a process of role r runs part p.
func (r Role) Runs(p Role) bool { return r == p || r == RoleAll }

// Config is the validated configuration. Field comments give the defaults; keys.go is the source.
type Config struct {
	Secret          string        `koanf:"secret"`           // ""
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"` // 15s: bound on graceful shutdown
	Log             Log           `koanf:"log"`
	Discord         Discord       `koanf:"discord"`
	Store           Store         `koanf:"store"`
	Rest            Rest          `koanf:"rest"`
	Gateway         Gateway       `koanf:"gateway"`
	Events          Events        `koanf:"events"`
	Cache           Cache         `koanf:"cache"`
	Cluster         Cluster       `koanf:"cluster"`

	k *koanf.Koanf // the merged values, for printing the effective config
}

// Log configures zap.
type Log struct {
	Level  string `koanf:"level"`  // info: debug | info | warn | error
	Format string `koanf:"format"` // json: json | console
}

// Discord says how to reach Discord and as whom.
type Discord struct {
	Token      string `koanf:"token"`       // "": the bot token, without "Bot "
	APIURL     string `koanf:"api_url"`     // https://discord.com/api
	APIVersion int    `koanf:"api_version"` // 10
}

// Store is the Badger directory.
type Store struct {
	Path       string `koanf:"path"`        // data
	SyncWrites bool   `koanf:"sync_writes"` // false: fsync every commit (power-loss durability)
	// MemoryLimit is the memory budget of the roles that open the store, in bytes: Badger's memtables,
	// table builders and block cache are sized to fit it (store/memory.go), the queue's cache of recent
	// events takes a sixteenth, and four fifths of it are the floor of Go's soft memory limit (internal/memlimit) unless GOMEMLIMIT is set.
	// Default 160 MiB; from MinStoreMemory to MaxStoreMemory.
	MemoryLimit int64 `koanf:"memory_limit"`
}

// Listener is what every role's HTTP side has.
type Listener struct {
	Listen string `koanf:"listen"`
	URL    string `koanf:"url"`    // how other roles reach this one when split
	Secret string `koanf:"secret"` // falls back to the top-level secret
	// MaxConnections caps the listener's open connections; one past it gets a quick 503 (health checks
	// still answered) or is closed. Default 4096.
	MaxConnections int `koanf:"max_connections"`
}

// Rest configures the rest role.
type Rest struct {
	Listener `koanf:",squash"`
	// SecretHeader, when set, is a header that may carry the secret instead of Authorization, so that
	// callers keep Authorization for their own token (OAuth2 Bearer calls). Default "".
	SecretHeader string `koanf:"secret_header"`
	// AllowAnyToken lets callers send "Authorization: Bot <their own token>"; each token gets its own
	// rate limits. Default false: only the configured token (or the secret) is accepted.
	AllowAnyToken bool `koanf:"allow_any_token"`
	// MaxBody is the largest request body accepted, in bytes. Default 100 MiB (above Discord's upload
	// limits).
	MaxBody int64 `koanf:"max_body"`
	// MaxWait bounds the time a request may wait in dd's queues; past it dd answers 504. Default 60s.
	MaxWait time.Duration `koanf:"max_wait"`
	// GlobalRateLimit is the per-token global limit in requests per second. Default 50 (Discord's).
	GlobalRateLimit int `koanf:"global_rate_limit"`
	// InvalidRequestLimit is how many 401/403/429 answers in 10 minutes dd allows before it refuses
	// requests itself (503) rather than earn Discord's ban at 10,000. Default 9500.
	InvalidRequestLimit int `koanf:"invalid_request_limit"`
	// MaxRetries bounds retries of shared-scope 429s, 502/503/504 and network errors. Default 3.
	MaxRetries int `koanf:"max_retries"`
	// UpstreamTimeout bounds the wait for Discord's response headers on one attempt. Default 60s.
	UpstreamTimeout time.Duration `koanf:"upstream_timeout"`
	// SpoolDir holds request bodies too large to keep in memory. Default "": the system temp directory.
	SpoolDir string `koanf:"spool_dir"`
}

// Cluster configures cluster mode on NATS JetStream (PRODUCT.md §7). An empty NATSURL is one machine.
type Cluster struct {
	// NATSURL lists the NATS servers, comma-separated ("nats://h1:4222,nats://h2:4222"); a password or
	// token in it is a secret (masked). Default "": cluster mode off.
	NATSURL string `koanf:"nats_url"`
	// Name prefixes every KV bucket, stream and subject, so several bots can share one NATS. Default "dd".
	Name string `koanf:"name"`
	// Instance names this process in the deployment. Default "": hostname + a random suffix.
	Instance string `koanf:"instance"`
	// AdvertiseURL is how other dd processes reach this process's listener (the rest role's, for
	// forwarding to the leader). Required for the rest role in cluster mode.
	AdvertiseURL string `koanf:"advertise_url"`
	// LeaseTTL: a process that stops renewing its leases for this long is presumed dead. Default 10s.
	LeaseTTL time.Duration `koanf:"lease_ttl"`
	// Replicas is how many NATS servers keep each bucket: 1 (one server) or 3 (a cluster). Default 1.
	Replicas int `koanf:"replicas"`
	// NATSCreds is a NATS credentials file (a user JWT and its NKey seed) to connect with. Default "".
	// A user and password, or a token, go in NATSURL.
	NATSCreds string `koanf:"nats_creds"`
	// NATSTLSCA is a PEM file of the CAs that sign the NATS servers' certificates, for tls:// URLs
	// whose servers the system's CAs do not vouch for. Default "".
	NATSTLSCA string `koanf:"nats_tls_ca"`
}

// Gateway configures the gateway role.
type Gateway struct {
	Listener               `koanf:",squash"`
	Intents                Intents       `koanf:"intents"`
	TotalShards            int           `koanf:"total_shards"` // 0: Discord's recommendation
	FirstShard             int           `koanf:"first_shard"`
	LastShard              int           `koanf:"last_shard"` // -1: total_shards - 1
	ClusterID              int           `koanf:"cluster_id"` // 0: this instance's index when shards are split evenly
	Clusters               int           `koanf:"clusters"`   // 1: how many gateway instances split total_shards
	Compress               string        `koanf:"compress"`   // zstd-stream | zlib-stream | none
	Reshard                bool          `koanf:"reshard"`
	ReshardPercentage      int           `koanf:"reshard_percentage"`
	ReshardCheckInterval   time.Duration `koanf:"reshard_check_interval"`
	ReshardIdentifyReserve int           `koanf:"reshard_identify_reserve"` // 50: identifies a reshard must leave unspent today
	LargeThreshold         int           `koanf:"large_threshold"`          // 50: IDENTIFY's large_threshold (50..250)
	DedupMessageUpdates    bool          `koanf:"dedup_message_updates"`    // true: drop MESSAGE_UPDATEs whose content did not change
	DropKnownGuildCreates  bool          `koanf:"drop_known_guild_creates"` // true: drop GUILD_CREATE for guilds the shard already had
	LoadingGuildEvent      string        `koanf:"loading_guild_event"`      // "": rename the initial GUILD_CREATE burst (e.g. GUILD_LOADED_DD)
}

// Intents is the gateway intents bit set.
type Intents int

// Events configures delivery of gateway events to the bot.
type Events struct {
	URLs           []string `koanf:"urls"`
	Secret         string   `koanf:"secret"`
	MaxQueueEvents int      `koanf:"max_queue_events"`
	BatchMax       int      `koanf:"batch_max"` // 1: events per POST; above 1 the body is a JSON array
	Drop           []string `koanf:"drop"`      // event names never queued
	// Sink is where the bot's events go: "http" (POST to URLs, the default) or "redis" (streams at
	// RedisURL, in @discordjs/brokers' layout).
	Sink        string `koanf:"sink"`
	RedisURL    string `koanf:"redis_url"`    // redis:// or rediss://, password and db included; sink "redis"
	RedisPrefix string `koanf:"redis_prefix"` // before every stream name; default ""
}

// Cache configures the cache role.
type Cache struct {
	Listener `koanf:",squash"`
	// BatchMax is the most events per POST /events when the gateway feeds a separate cache role
	// (cache.url). Default 100.
	BatchMax int `koanf:"batch_max"`
	// Presences keeps members' presences. Default false: they are most of a big bot's gateway traffic.
	Presences bool `koanf:"presences"`
	// MessagesPerChannel keeps the newest messages of each channel, up to this many. Default 0: none.
	MessagesPerChannel int `koanf:"messages_per_channel"`
	// RequestMembers makes the gateway ask for the members of every guild whose GUILD_CREATE lists only
	// some of them (op 8): "off" (default; "none" too), "all" (in the order the guilds load),
	// "small-first" (the guilds with the fewest members first). Needs the GuildMembers intent.
	RequestMembers string `koanf:"request_members"`
	// RequestMembersPerMinute is how many of those requests a shard sends per 60 s at most, of Discord's
	// 120 sends per connection. Default 60, leaving the rest to heartbeats and the bot's own commands.
	RequestMembersPerMinute int `koanf:"request_members_per_minute"`
	// The fields kept per kind of object (the "desired properties"); ids are always kept, "*" keeps
	// every field. Defaults: what common bots read (see config.example.toml).
	GuildFields      []string `koanf:"guild_fields"`
	ChannelFields    []string `koanf:"channel_fields"`
	RoleFields       []string `koanf:"role_fields"`
	MemberFields     []string `koanf:"member_fields"`
	UserFields       []string `koanf:"user_fields"`
	EmojiFields      []string `koanf:"emoji_fields"`
	StickerFields    []string `koanf:"sticker_fields"`
	VoiceStateFields []string `koanf:"voice_state_fields"`
	PresenceFields   []string `koanf:"presence_fields"`
	MessageFields    []string `koanf:"message_fields"`
}

// Source says where Load reads from.
type Source struct {
	// File is the TOML file. With FileRequired false a missing file is not an error (the default
	// dd.toml in the working directory is optional; one named with --config is not).
	File         string
	FileRequired bool
	// Environ is the environment as "K=V" strings; nil means os.Environ().
	Environ []string
	// Role decides which keys are required (the token for roles that talk to Discord).
	Role Role
}

// Load reads, merges and validates the configuration. The error lists every problem found, each
// naming its key.
func Load(src Source) (*Config, error) {
	k := koanf.New(".")
	defaults := make(map[string]any, len(keys))
	for _, s := range keys {
		defaults[s.path] = s.def
	}
	if err := k.Load(confmap.Provider(defaults, "."), nil); err != nil {
		return nil, err
	}

	var problems []error
	if src.File != "" {
		_, statErr := os.Stat(src.File)
		switch {
		case statErr == nil:
			fk := koanf.New(".")
			if err := fk.Load(file.Provider(src.File), toml.Parser()); err != nil {
				return nil, fmt.Errorf("config: %s: %w", src.File, err)
			}
			problems = append(problems, checkFileKeys(fk, src.File)...)
			if err := k.Merge(fk); err != nil {
				return nil, err
			}
		case src.FileRequired || !errors.Is(statErr, os.ErrNotExist):
			return nil, fmt.Errorf("config: %w", statErr)
		}
	}

	environ := src.Environ
	if environ == nil {
		environ = os.Environ()
	}
	ek := koanf.New(".")
	var envProblems []error
	err := ek.Load(env.Provider(".", env.Opt{
		Prefix:        "DD_",
		EnvironFunc:   func() []string { return environ },
		TransformFunc: func(name, v string) (string, any) { return envValue(name, v, &envProblems) },
	}), nil)
	if err != nil {
		return nil, err
	}
	problems = append(problems, envProblems...)
	if err := k.Merge(ek); err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}

	cfg := &Config{k: k}
	dc := &mapstructure.DecoderConfig{
		TagName:    "koanf",
		Result:     cfg,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(durationHook, intentsHook),
		ErrorUnset: false,
	}
	if err := k.UnmarshalWithConf("", cfg, koanf.UnmarshalConf{DecoderConfig: dc}); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg.applyFallbacks()
	if err := cfg.validate(src.Role); err != nil {
		return nil, err
	}
	return cfg, nil
}

// checkFileKeys reports unknown keys and values of the wrong type in the file.
func checkFileKeys(fk *koanf.Koanf, name string) []error {
	var problems []error
	for _, key := range fk.Keys() {
		spec, ok := keyIndex[key]
		if !ok {
			problems = append(problems, fmt.Errorf("config: %s: unknown key %q%s", name, key, suggest(key)))
			continue
		}
		if err := checkKind(spec, fk.Get(key)); err != nil {
			problems = append(problems, fmt.Errorf("config: %s: %s: %w", name, key, err))
		}
	}
	return problems
}

// suggest names a known key that looks like a misspelt one.
func suggest(key string) string {
	section, leaf, _ := strings.Cut(key, ".")
	best := ""
	for _, s := range keys {
		ss, sl, _ := strings.Cut(s.path, ".")
		if s.path == key {
			continue
		}
		if (ss == section && editDistance(sl, leaf) <= 2) || editDistance(s.path, key) <= 2 {
			best = s.path
			break
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// checkKind checks a file value against its key's type.
func checkKind(spec *keySpec, v any) error {
	bad := func() error {
		if spec.secret {
			// The value of a secret key is never echoed, even when it is of the wrong type.
			return fmt.Errorf("want %s, got %T (value not shown: the key holds a secret)", spec.kind, v)
		}
		return fmt.Errorf("want %s, got %T %#v", spec.kind, v, maskValue(v))
	}
	switch spec.kind {
	case kindString:
		if _, ok := v.(string); !ok {
			return bad()
		}
	case kindInt:
		if _, ok := v.(int64); !ok {
			return bad()
		}
	case kindBool:
		if _, ok := v.(bool); !ok {
			return bad()
		}
	case kindDuration:
		s, ok := v.(string)
		if !ok {
			return bad()
		}
		if _, err := time.ParseDuration(s); err != nil {
			return fmt.Errorf("%q is not a duration (use units: \"500ms\", \"30s\", \"8h\")", s)
		}
	case kindStrings:
		if _, ok := stringList(v); !ok {
			return bad()
		}
	case kindIntents:
		names, ok := stringList(v)
		if n, isInt := v.(int64); isInt {
			names, ok = []string{strconv.FormatInt(n, 10)}, true
		}
		if !ok {
			return bad()
		}
		if _, err := discord.ParseIntents(names); err != nil {
			return err
		}
	}
	return nil
}

func stringList(v any) ([]string, bool) {
	list, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// envValue maps DD_SECTION__KEY to section.key and converts the value to the key's type. Variables
// that name no key are ignored: other tools (Datadog's agent) use the DD_ prefix too.
func envValue(name, v string, problems *[]error) (string, any) {
	key := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "DD_"), "__", "."))
	spec, ok := keyIndex[key]
	if !ok {
		return "", nil
	}
	fail := func(err error) (string, any) {
		*problems = append(*problems, fmt.Errorf("config: environment %s (%s): %w", name, key, err))
		return "", nil
	}
	switch spec.kind {
	case kindInt:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return fail(fmt.Errorf("want an integer, got %q", v))
		}
		return key, n
	case kindBool:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fail(fmt.Errorf("want true or false, got %q", v))
		}
		return key, b
	case kindDuration:
		if _, err := time.ParseDuration(strings.TrimSpace(v)); err != nil {
			return fail(fmt.Errorf("%q is not a duration (use units: \"30s\", \"8h\")", v))
		}
		return key, strings.TrimSpace(v)
	case kindStrings, kindIntents:
		list := []any{}
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				list = append(list, part)
			}
		}
		if err := checkKind(spec, list); err != nil {
			return fail(err)
		}
		return key, list
	}
	return key, v
}

var durationHook = mapstructure.StringToTimeDurationHookFunc()

var intentsType = reflect.TypeOf(Intents(0))

func intentsHook(from, to reflect.Type, data any) (any, error) {
	if to != intentsType {
		return data, nil
	}
	switch v := data.(type) {
	case int64:
		names := []string{strconv.FormatInt(v, 10)}
		n, err := discord.ParseIntents(names)
		return Intents(n), err
	case []any:
		names, ok := stringList(v)
		if !ok {
			return nil, fmt.Errorf("gateway.intents: want names or an integer")
		}
		n, err := discord.ParseIntents(names)
		if err != nil {
			return nil, fmt.Errorf("gateway.intents: %w", err)
		}
		return Intents(n), nil
	}
	return data, nil
}

// applyFallbacks fills per-role secrets from the top-level one.
func (c *Config) applyFallbacks() {
	for _, s := range []*string{&c.Rest.Secret, &c.Gateway.Secret, &c.Cache.Secret, &c.Events.Secret} {
		if *s == "" {
			*s = c.Secret
		}
	}
}

// Secrets returns every non-empty secret value, so that logging can redact them: the secret keys and
// the password of every URL in the config (events.urls, discord.api_url, ...), as written and decoded.
func (c *Config) Secrets() []string {
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, s := range []string{c.Discord.Token, c.Secret, c.Rest.Secret, c.Gateway.Secret, c.Cache.Secret, c.Events.Secret} {
		add(s)
	}
	all := c.k.All()
	paths := make([]string, 0, len(all))
	for p := range all {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		eachString(all[p], func(s string) {
			for _, pw := range urlPasswords(s) {
				add(pw)
			}
		})
	}
	return out
}

// Effective renders the merged configuration as TOML, every secret masked, and every URL's password
// too (http://bot:xxxxx@host).
func (c *Config) Effective() string {
	all := c.k.All()
	flat := make(map[string]any, len(all))
	for key, v := range all {
		if spec := keyIndex[key]; spec != nil && spec.secret {
			if s, _ := v.(string); s != "" {
				v = "********"
			}
		}
		flat[key] = maskValue(v)
	}
	out := koanf.New(".")
	_ = out.Load(confmap.Provider(flat, "."), nil)
	b, err := out.Marshal(toml.Parser())
	if err != nil {
		return fmt.Sprintf("# cannot render config: %v\n", err)
	}
	return string(b)
}

// Keys lists every config key path, sorted (for documentation tests).
func Keys() []string {
	out := make([]string, 0, len(keys))
	for _, s := range keys {
		out = append(out, s.path)
	}
	sort.Strings(out)
	return out
}
