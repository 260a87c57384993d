package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/httpapi"
)

// The cache's HTTP API (README, "The cache role"): reads by id as Discord-shaped JSON, GET /stats, and
// POST /events for a cache fed by a gateway in another process. It does not check who asks (the caller
// wraps it in its secret check) and does not listen (the role's server does).

// DefaultMaxEventsBody bounds a POST /events: a batch of GUILD_CREATEs of large guilds with presences
// runs to tens of megabytes.
const DefaultMaxEventsBody = 256 << 20

// ReadyLag is how many events a cache that follows a queue may have left to apply and still be ready.
const ReadyLag = 10_000

// MembersCompleteHeader says on GET /guilds/{id}/members whether the cache holds the guild's every member.
const MembersCompleteHeader = "X-DD-Members-Complete"

// HandlerOptions configure NewHandler. Zero values take the defaults given.
type HandlerOptions struct {
	// MaxEventsBody bounds a POST /events. Default DefaultMaxEventsBody.
	MaxEventsBody int64
	// Disk, when set, says why the store does not take writes (*store.Store's DiskErr), for Ready.
	Disk interface{ DiskErr() error }
	// Following is the queue consumer the cache follows in-process (Follow), for Ready: the cache is not
	// ready while more than ReadyLag events wait in it. Nil when events are posted.
	Following interface{ Depth() int }
	// Logger says when posted events could not be stored. Default: the cache's.
	Logger *zap.Logger
}

// Handler serves the cache's HTTP API.
type Handler struct {
	c   *Cache
	o   HandlerOptions
	mux *http.ServeMux
	// applyErr is why the last POST /events was not stored; nil once one was.
	applyErr atomic.Pointer[error]
}

// NewHandler builds the HTTP API of c.
func NewHandler(c *Cache, o HandlerOptions) *Handler {
	if o.MaxEventsBody <= 0 {
		o.MaxEventsBody = DefaultMaxEventsBody
	}
	if o.Logger == nil {
		o.Logger = c.log
	}
	h := &Handler{c: c, o: o, mux: http.NewServeMux()}
	h.routes()
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Ready says why the cache is not ready (for /readyz): the last posted events could not be stored, the
// store does not take writes, or it is more than ReadyLag events behind the queue it follows.
func (h *Handler) Ready() error {
	if p := h.applyErr.Load(); p != nil {
		return fmt.Errorf("the last events could not be stored: %w", *p)
	}
	if h.o.Disk != nil {
		if err := h.o.Disk.DiskErr(); err != nil {
			return fmt.Errorf("the store does not take events: %w", err)
		}
	}
	if q := h.o.Following; q != nil {
		if n := q.Depth(); n > ReadyLag {
			return fmt.Errorf("the cache is %d events behind the gateway (ready under %d)", n, ReadyLag)
		}
	}
	return nil
}

func (h *Handler) routes() {
	c, mux := h.c, h.mux
	one := func(what string, read func(id uint64) ([]byte, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if id, ok := pathID(w, r, "id"); ok {
				b, err := read(id)
				serveRead(w, b, err, func() string { return fmt.Sprintf("%s %d", what, id) })
			}
		}
	}
	// two reads an object within another: a guild's member, a channel's message.
	two := func(what, param, of string, read func(outer, id uint64) ([]byte, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			outer, ok := pathID(w, r, "id")
			if !ok {
				return
			}
			if id, ok := pathID(w, r, param); ok {
				b, err := read(outer, id)
				serveRead(w, b, err, func() string { return fmt.Sprintf("%s %d %s %d", what, id, of, outer) })
			}
		}
	}
	mux.HandleFunc("GET /guilds/{id}", one("guild", c.Guild))
	mux.HandleFunc("GET /guilds/{id}/channels", one("guild", c.GuildChannels))
	mux.HandleFunc("GET /guilds/{id}/roles", one("guild", c.GuildRoles))
	mux.HandleFunc("GET /guilds/{id}/emojis", one("guild", c.GuildEmojis))
	mux.HandleFunc("GET /guilds/{id}/stickers", one("guild", c.GuildStickers))
	mux.HandleFunc("GET /guilds/{id}/members", h.handleMembers)
	mux.HandleFunc("GET /guilds/{id}/members/{user_id}", two("member", "user_id", "of guild", c.Member))
	mux.HandleFunc("GET /guilds/{id}/voice-states/{user_id}", two("voice state of user", "user_id", "of guild", c.VoiceState))
	mux.HandleFunc("GET /guilds/{id}/presences/{user_id}", two("presence of user", "user_id", "of guild", c.Presence))
	mux.HandleFunc("GET /channels/{id}", one("channel", c.Channel))
	mux.HandleFunc("GET /channels/{id}/messages/{message_id}", two("message", "message_id", "in channel", c.Message))
	mux.HandleFunc("GET /users/{id}", one("user", c.User))
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) { httpapi.WriteJSON(w, http.StatusOK, c.Stats()) })
	mux.HandleFunc("POST /events", h.handleEvents)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no cache endpoint %s %s", r.Method, r.URL.Path))
	})
}

// pathID reads a snowflake from the path, answering 400 when it is not one.
func pathID(w http.ResponseWriter, r *http.Request, name string) (uint64, bool) {
	id, err := strconv.ParseUint(r.PathValue(name), 10, 64)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, fmt.Sprintf("%s %q is not a snowflake", name, r.PathValue(name)))
		return 0, false
	}
	return id, true
}

// serveRead answers with the JSON a read returned, 404 for what the cache does not hold (named by what,
// which is only called then).
func serveRead(w http.ResponseWriter, b []byte, err error, what func() string) {
	switch {
	case errors.Is(err, ErrNotFound):
		httpapi.WriteError(w, http.StatusNotFound, "the cache does not hold "+what())
	case err != nil:
		httpapi.WriteError(w, http.StatusInternalServerError, "reading the cache: "+err.Error())
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	}
}

// handleMembers pages through a guild's members as Discord's list does: limit 1..MaxMembersPage
// (default 1), after a user id.
func (h *Handler) handleMembers(w http.ResponseWriter, r *http.Request) {
	g, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	q := r.URL.Query()
	limit := 1
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxMembersPage {
			httpapi.WriteError(w, http.StatusBadRequest, fmt.Sprintf("limit must be between 1 and %d, got %q", MaxMembersPage, s))
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
	complete, cerr := h.c.MembersComplete(g)
	b, err := h.c.GuildMembers(g, after, limit)
	if err == nil && cerr == nil {
		w.Header().Set(MembersCompleteHeader, strconv.FormatBool(complete))
	}
	serveRead(w, b, err, func() string { return fmt.Sprintf("guild %d", g) })
}

// handleEvents applies events sent by a gateway's cache feed (one envelope or an array of them) and
// answers 2xx only once they are stored, so that the gateway retries what was not.
func (h *Handler) handleEvents(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.o.MaxEventsBody))
	if err != nil {
		httpapi.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes or unreadable: %v", h.o.MaxEventsBody, err))
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
	if err = h.c.Apply(payloads...); err != nil {
		h.applyErr.Store(&err)
		h.o.Logger.Error("applying posted events failed", zap.Int("events", len(payloads)), zap.Error(err))
		httpapi.WriteError(w, http.StatusServiceUnavailable, "events not stored, send them again: "+err.Error())
		return
	}
	if h.applyErr.Load() != nil {
		h.applyErr.Store(nil)
	}
	w.WriteHeader(http.StatusNoContent)
}
