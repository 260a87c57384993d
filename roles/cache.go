package roles

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/cache"
	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/store"
)

// maxEventsBody bounds a POST /events: a batch of GUILD_CREATEs of large guilds with presences runs to
// tens of megabytes.
const maxEventsBody = 256 << 20

// cacheRole serves the cache's HTTP API (README, "The cache role"). With --role=all the gateway feeds it
// in-process (see Run); alone, it takes events on POST /events from the gateway's cache feed.
type cacheRole struct {
	cache *cache.Cache
	log   *zap.Logger
	api   http.Handler
	// following is the gateway queue's cache consumer when fed in-process (--role=all), for readiness.
	following   depther
	storeHealth storeHealth
	st          *store.Store
}

type depther interface{ Depth() int }

func newCache(cfg *config.Config, st *store.Store, reg prometheus.Registerer, log *zap.Logger) (*cacheRole, error) {
	log = log.Named("cache")
	k := cfg.Cache
	c, err := cache.Open(st, cache.Options{
		Fields: cache.Fields{Guild: k.GuildFields, Channel: k.ChannelFields, Role: k.RoleFields, Member: k.MemberFields,
			User: k.UserFields, Emoji: k.EmojiFields, Sticker: k.StickerFields, VoiceState: k.VoiceStateFields,
			Presence: k.PresenceFields, Message: k.MessageFields},
		Presences: k.Presences, MessagesPerChannel: k.MessagesPerChannel, LoadingGuildEvent: cfg.Gateway.LoadingGuildEvent,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	r := &cacheRole{cache: c, log: log, st: st}
	r.api = requireSecret(k.Secret, r.routes())
	return r, nil
}

func (r *cacheRole) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.api.ServeHTTP(w, req) }

func (r *cacheRole) routes() http.Handler {
	mux := http.NewServeMux()
	c := r.cache
	one := func(what string, read func(id uint64) ([]byte, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			id, ok := pathID(w, req, "id")
			if ok {
				b, err := read(id)
				serveRead(w, b, err, func() string { return fmt.Sprintf("%s %d", what, id) })
			}
		}
	}
	inGuild := func(what, param string, read func(g, id uint64) ([]byte, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			g, ok := pathID(w, req, "id")
			if !ok {
				return
			}
			id, ok := pathID(w, req, param)
			if ok {
				b, err := read(g, id)
				serveRead(w, b, err, func() string { return fmt.Sprintf("%s %d of guild %d", what, id, g) })
			}
		}
	}
	mux.HandleFunc("GET /guilds/{id}", one("guild", c.Guild))
	mux.HandleFunc("GET /guilds/{id}/channels", one("guild", c.GuildChannels))
	mux.HandleFunc("GET /guilds/{id}/roles", one("guild", c.GuildRoles))
	mux.HandleFunc("GET /guilds/{id}/emojis", one("guild", c.GuildEmojis))
	mux.HandleFunc("GET /guilds/{id}/stickers", one("guild", c.GuildStickers))
	mux.HandleFunc("GET /guilds/{id}/members", r.handleMembers)
	mux.HandleFunc("GET /guilds/{id}/members/{user_id}", inGuild("member", "user_id", c.Member))
	mux.HandleFunc("GET /guilds/{id}/voice-states/{user_id}", inGuild("voice state of user", "user_id", c.VoiceState))
	mux.HandleFunc("GET /guilds/{id}/presences/{user_id}", inGuild("presence of user", "user_id", c.Presence))
	mux.HandleFunc("GET /channels/{id}", one("channel", c.Channel))
	mux.HandleFunc("GET /channels/{id}/messages/{message_id}", func(w http.ResponseWriter, req *http.Request) {
		ch, ok := pathID(w, req, "id")
		if !ok {
			return
		}
		id, ok := pathID(w, req, "message_id")
		if ok {
			b, err := c.Message(ch, id)
			serveRead(w, b, err, func() string { return fmt.Sprintf("message %d in channel %d", id, ch) })
		}
	})
	mux.HandleFunc("GET /users/{id}", one("user", c.User))
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, req *http.Request) { httpapi.WriteJSON(w, http.StatusOK, c.Stats()) })
	mux.HandleFunc("POST /events", r.handleEvents)
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no cache endpoint %s %s", req.Method, req.URL.Path))
	})
	return mux
}

// pathID reads a snowflake from the path, answering 400 when it is not one.
func pathID(w http.ResponseWriter, req *http.Request, name string) (uint64, bool) {
	id, err := strconv.ParseUint(req.PathValue(name), 10, 64)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, fmt.Sprintf("%s %q is not a snowflake", name, req.PathValue(name)))
		return 0, false
	}
	return id, true
}

// serveRead answers with the JSON a read returned, 404 for what the cache does not hold (named by what,
// which is only called then).
func serveRead(w http.ResponseWriter, b []byte, err error, what func() string) {
	switch {
	case errors.Is(err, cache.ErrNotFound):
		httpapi.WriteError(w, http.StatusNotFound, "the cache does not hold "+what())
	case err != nil:
		httpapi.WriteError(w, http.StatusInternalServerError, "reading the cache: "+err.Error())
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	}
}

// membersCompleteHeader says on GET /guilds/{id}/members whether the cache holds the guild's every member.
const membersCompleteHeader = "X-DD-Members-Complete"

// handleMembers pages through a guild's members as Discord's list does: limit 1..1000 (default 1),
// after a user id.
func (r *cacheRole) handleMembers(w http.ResponseWriter, req *http.Request) {
	g, ok := pathID(w, req, "id")
	if !ok {
		return
	}
	q := req.URL.Query()
	limit := 1
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > cache.MaxMembersPage {
			httpapi.WriteError(w, http.StatusBadRequest, fmt.Sprintf("limit must be between 1 and %d, got %q", cache.MaxMembersPage, s))
			return
		}
		limit = n
	}
	var after uint64
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, fmt.Sprintf("after %q is not a snowflake", s))
			return
		}
		after = n
	}
	// Whether the pages hold every member (README, "The cache role"), read before the page: a list that
	// was complete then holds every member in the page too (nothing but GUILD_MEMBER_REMOVE removes one).
	complete, cerr := r.cache.MembersComplete(g)
	b, err := r.cache.GuildMembers(g, after, limit)
	if err == nil && cerr == nil {
		w.Header().Set(membersCompleteHeader, strconv.FormatBool(complete))
	}
	serveRead(w, b, err, func() string { return fmt.Sprintf("guild %d", g) })
}

// handleEvents applies events sent by the gateway's cache feed (one envelope or an array of them) and
// answers 2xx only once they are stored, so that the gateway retries what was not.
func (r *cacheRole) handleEvents(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxEventsBody))
	if err != nil {
		httpapi.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes or unreadable: %v", maxEventsBody, err))
		return
	}
	// Checked whole before anything is applied: the envelope's decoder does not look inside payloads.
	if !json.Valid(body) {
		httpapi.WriteError(w, http.StatusBadRequest, `body must be {"shardId":N,"payload":{...}} or an array of them: not valid JSON`)
		return
	}
	envs, err := httpapi.DecodeEnvelopes(body)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, `body must be {"shardId":N,"payload":{...}} or an array of them: `+err.Error())
		return
	}
	payloads := make([][]byte, len(envs))
	for n, e := range envs {
		payloads[n] = e.Payload
	}
	err = r.cache.Apply(payloads...)
	r.storeHealth.observe(err)
	if err != nil {
		r.log.Error("applying posted events failed", zap.Int("events", len(payloads)), zap.Error(err))
		httpapi.WriteError(w, http.StatusServiceUnavailable, "events not stored, send them again: "+err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
