// Package discordsim is a strict, in-process simulator of Discord's REST API and gateway.
//
// dd cannot reach Discord from its build and test machines, so every feature is tested against this
// simulator. It enforces Discord's documented limits (see shared/DISCORD-RULES.md) rather than being
// lenient: a test that passes here must not earn a 429, burn an identify or lose an event on Discord.
// It is not a general Discord emulator: it models what a bot's infrastructure touches (rate limits,
// sessions, sharding, events), not permissions or message content semantics.
//
// Everything under /_sim/ is the admin API that tests use to drive faults and read what the simulator saw.
package discordsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// DiscordEpoch is the first millisecond of 2015, the zero of Discord's snowflakes.
const DiscordEpoch = 1420070400000

// Config sets the simulator's world and limits. Zero values take Discord's real numbers (see Defaults),
// so a test only shortens what it needs to run in seconds.
type Config struct {
	// Tokens are the bot tokens (without "Bot ") the simulator accepts. Each is its own bot with its own
	// rate limits and session budget. Default: one token, "sim-token".
	Tokens []string

	// Guilds is how many guilds the bot is in; each has ChannelsPerGuild text channels and
	// MembersPerGuild members. Defaults 10, 3, 5.
	Guilds           int
	ChannelsPerGuild int
	MembersPerGuild  int

	// GuildsPerRecommendedShard drives /gateway/bot's "shards" (ceil(guilds / this)). Default 1000.
	GuildsPerRecommendedShard int
	// MaxGuildsPerShard: IDENTIFY for a shard holding more closes with 4011. Default 2500.
	MaxGuildsPerShard int

	// MaxConcurrency is session_start_limit.max_concurrency. Default 1.
	MaxConcurrency int
	// IdentifyWindow is the span in which each max_concurrency bucket allows one IDENTIFY. Default 5s.
	IdentifyWindow time.Duration
	// SessionStartTotal and SessionStartReset are the daily identify budget. Defaults 1000 and 24h.
	SessionStartTotal int
	SessionStartReset time.Duration

	// HeartbeatInterval is sent in HELLO. Default 41.25s.
	HeartbeatInterval time.Duration
	// ResumeWindow is how long a session stays resumable after its connection dropped. Default 3m.
	ResumeWindow time.Duration
	// SendLimit commands per SendWindow per connection, else close 4008. Defaults 120 and 60s.
	SendLimit  int
	SendWindow time.Duration

	// GlobalRateLimit is requests per second per token across all routes (interactions exempt). Default 50.
	GlobalRateLimit int
	// RESTLatency is added to every REST response, to model the round trip to Discord. Default 0.
	RESTLatency time.Duration
	// InvalidRequestLimit 401/403/429 (not shared-scope) per InvalidRequestWindow is the ban threshold.
	// Defaults 10000 and 10m.
	InvalidRequestLimit  int
	InvalidRequestWindow time.Duration

	// MemberRequestWindow: a session may ask for every member of a guild (REQUEST_GUILD_MEMBERS with
	// query "" and limit 0) once per guild per window; earlier requests get RATE_LIMITED. Default 30s.
	MemberRequestWindow time.Duration

	// PrivilegedIntents is the set of privileged intents (bits) the application has enabled in the
	// developer portal; asking for others closes with 4014. Default 0 (none enabled).
	PrivilegedIntents int

	// Behaviours of other Discord-compatible servers (Spacebar), for dd's tolerance tests; Discord does
	// neither. RequireUserAgent closes a websocket whose upgrade request has no User-Agent with 4002.
	// SequenceFromZero numbers a session's dispatches from 0 (READY has s: 0) instead of 1.
	RequireUserAgent bool
	SequenceFromZero bool
}

// Defaults returns c with every zero field set to Discord's real value.
func (c Config) Defaults() Config {
	setInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	setDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if len(c.Tokens) == 0 {
		c.Tokens = []string{"sim-token"}
	}
	setInt(&c.Guilds, 10)
	setInt(&c.ChannelsPerGuild, 3)
	setInt(&c.MembersPerGuild, 5)
	setInt(&c.GuildsPerRecommendedShard, 1000)
	setInt(&c.MaxGuildsPerShard, 2500)
	setInt(&c.MaxConcurrency, 1)
	setDur(&c.IdentifyWindow, 5*time.Second)
	setInt(&c.SessionStartTotal, 1000)
	setDur(&c.SessionStartReset, 24*time.Hour)
	setDur(&c.HeartbeatInterval, 41250*time.Millisecond)
	setDur(&c.ResumeWindow, 3*time.Minute)
	setInt(&c.SendLimit, 120)
	setDur(&c.SendWindow, 60*time.Second)
	setInt(&c.GlobalRateLimit, 50)
	setDur(&c.MemberRequestWindow, 30*time.Second)
	setInt(&c.InvalidRequestLimit, 10000)
	setDur(&c.InvalidRequestWindow, 10*time.Minute)
	return c
}

// Guild is one guild of the simulated world. Its channels, roles and members are derived from its ID.
type Guild struct {
	ID          uint64
	Name        string
	OwnerID     uint64
	Channels    []uint64 // text channels
	RoleIDs     []uint64 // RoleIDs[0] is @everyone, whose ID is the guild's
	MemberCount int      // members are users MemberUserID(ID, 0..MemberCount-1); the bot is one more
	// Unavailable guilds are in an outage: READY lists them, but no GUILD_CREATE is sent for them.
	Unavailable bool
}

// ShardFor returns the shard that receives a guild's events: (guild_id >> 22) % num_shards.
func ShardFor(guildID uint64, numShards int) int {
	return int((guildID >> 22) % uint64(numShards))
}

// Snowflake builds an ID from a unix time in milliseconds and a sequence number.
func Snowflake(unixMs int64, seq uint64) uint64 {
	return uint64(unixMs-DiscordEpoch)<<22 | (seq & 0xfff)
}

// FormatID renders a snowflake as Discord does in JSON: a decimal string.
func FormatID(id uint64) string { return strconv.FormatUint(id, 10) }

// MemberUserID is the user ID of member i of a guild.
func MemberUserID(guildID uint64, i int) uint64 { return guildID + uint64(i)*4096 + 1 }

// BotUserID is the simulated bot's own user ID for token index i.
func BotUserID(i int) uint64 { return Snowflake(DiscordEpoch+1000, uint64(i)) }

// world holds the guilds. Guild IDs have consecutive millisecond timestamps so that they spread
// evenly over shards, as real IDs do.
type world struct {
	mu       sync.RWMutex
	guilds   []*Guild
	byID     map[uint64]*Guild
	channels map[uint64]uint64 // channel ID -> guild ID
	nextMs   int64
	cfg      *Config
}

func newWorld(cfg *Config) *world {
	w := &world{byID: map[uint64]*Guild{}, channels: map[uint64]uint64{}, nextMs: 1600000000000, cfg: cfg}
	w.addGuilds(cfg.Guilds)
	return w
}

// addGuilds creates n guilds and returns them.
func (w *world) addGuilds(n int) []*Guild {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*Guild, 0, n)
	for i := 0; i < n; i++ {
		w.nextMs++
		id := Snowflake(w.nextMs, 0)
		g := &Guild{ID: id, Name: fmt.Sprintf("guild-%d", len(w.guilds)), OwnerID: MemberUserID(id, 0),
			MemberCount: w.cfg.MembersPerGuild, RoleIDs: []uint64{id, id + 1}}
		for c := 0; c < w.cfg.ChannelsPerGuild; c++ {
			ch := id + 16 + uint64(c)
			g.Channels = append(g.Channels, ch)
			w.channels[ch] = id
		}
		w.guilds = append(w.guilds, g)
		w.byID[id] = g
		out = append(out, g)
	}
	return out
}

// guild returns a copy of the guild with that ID.
func (w *world) guild(id uint64) (Guild, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	g, ok := w.byID[id]
	if !ok {
		return Guild{}, false
	}
	return *g, true
}

// channelGuild returns the guild a channel belongs to.
func (w *world) channelGuild(ch uint64) (uint64, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	g, ok := w.channels[ch]
	return g, ok
}

// shardGuilds returns copies of the guilds that live on shard id of num.
func (w *world) shardGuilds(id, num int) []Guild {
	w.mu.RLock()
	defer w.mu.RUnlock()
	var out []Guild
	for _, g := range w.guilds {
		if ShardFor(g.ID, num) == id {
			out = append(out, *g)
		}
	}
	return out
}

func (w *world) count() int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return len(w.guilds)
}

// Server is a running simulator: REST under /api/v{N}/, the gateway's websocket on /gateway, and the
// admin API under /_sim/.
type Server struct {
	cfg   Config
	world *world
	rest  *restState
	gw    *gatewayState

	mu       sync.Mutex
	listener net.Listener
	http     *http.Server
	baseURL  string
}

// New builds a simulator; call Start or Serve to run it.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg.Defaults()}
	s.world = newWorld(&s.cfg)
	s.rest = newRESTState(s)
	s.gw = newGatewayState(s)
	return s
}

// Config returns the effective configuration (defaults applied).
func (s *Server) Config() Config { return s.cfg }

// Guilds returns a copy of every guild.
func (s *Server) Guilds() []Guild {
	s.world.mu.RLock()
	defer s.world.mu.RUnlock()
	out := make([]Guild, len(s.world.guilds))
	for i, g := range s.world.guilds {
		out[i] = *g
	}
	return out
}

// Handler serves the whole simulator.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.registerREST(mux)
	s.registerGateway(mux)
	return mux
}

// Start listens on addr ("127.0.0.1:0" for a free port) and serves in the background.
func (s *Server) Start(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("discordsim: listen %s: %w", addr, err)
	}
	s.mu.Lock()
	s.listener = l
	s.baseURL = "http://" + l.Addr().String()
	s.http = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	srv := s.http
	s.mu.Unlock()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err)
		}
	}()
	return nil
}

// URL is the simulator's base URL, e.g. "http://127.0.0.1:41234". REST lives at URL()+"/api".
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.baseURL
}

// APIURL is what dd's discord.api_url should be set to.
func (s *Server) APIURL() string { return s.URL() + "/api" }

// GatewayURL is the websocket URL that /gateway/bot hands out.
func (s *Server) GatewayURL() string {
	u := s.URL()
	return "ws" + u[len("http"):] + "/gateway"
}

// Close stops serving and drops every gateway connection abruptly (as a network failure would:
// sessions stay resumable).
func (s *Server) Close() error {
	s.gw.closeAll()
	s.mu.Lock()
	srv := s.http
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return srv.Close()
	}
	return nil
}

// tokenIndex returns which configured bot a token (without "Bot ") belongs to, or -1.
func (s *Server) tokenIndex(token string) int {
	for i, t := range s.cfg.Tokens {
		if subtleEqual(t, token) {
			return i
		}
	}
	return -1
}
