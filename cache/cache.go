// Package cache keeps what Discord's gateway says about guilds, channels, threads, roles, members, users,
// emojis, stickers and voice states (presences and messages when asked) in dd's store, and reads it back
// as Discord-shaped JSON: the objects a bot would otherwise ask Discord's REST API for. It survives
// restarts (it is on disk and answers at once) and keeps only the fields configured per kind (Fields), so
// a big bot stores only what it reads.
//
// It applies gateway dispatch payloads handed to Apply, read from a queue consumer by Follow, or posted
// to its HTTP API (Handler, which the cache role serves behind its secret). It does not listen or
// authenticate (the role does), does not talk to Discord (it never fetches what it lacks) and is not a
// source of truth: it holds what the gateway said last.
package cache

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/store"
)

// ErrNotFound is returned by reads for what the cache does not hold.
var ErrNotFound = errors.New("cache: not found")

// Store is what the cache needs from dd's store; *store.Store implements it.
type Store interface {
	View(fn func(r store.Reader) error) error
	Begin() store.Txn
}

// Options configure Open. Zero values take the defaults given.
type Options struct {
	// Fields are the fields kept per kind. Default DefaultFields().
	Fields Fields
	// Presences keeps members' presences (PRESENCE_UPDATE, and those in GUILD_CREATE and member chunks).
	// Default false: presences are the largest and busiest part of the gateway's traffic.
	Presences bool
	// MessagesPerChannel keeps the newest messages of each channel, up to this many. Default 0: no
	// messages.
	MessagesPerChannel int
	// LoadingGuildEvent is the name the gateway gives the GUILD_CREATEs that follow READY
	// (gateway.loading_guild_event); they are applied as GUILD_CREATE. Default "": none.
	LoadingGuildEvent string
	Logger            *zap.Logger
	// Registerer receives the cache's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Cache applies gateway events to the store and reads them back. Its methods are safe for concurrent
// use; events are applied one batch at a time, reads never wait for them.
type Cache struct {
	st     Store
	o      Options
	fields *kindFields
	shapes map[string]*shape // what each event must hold to be applied (validate.go)
	log    *zap.Logger
	m      *metrics

	applyMu sync.Mutex // one writer: counting what it adds and removes needs a stable view
	b       batch      // under applyMu
	// outages are the guilds stored as unavailable (under applyMu), so that an event of one can end its
	// outage without a lookup per event.
	outages map[uint64]bool
	counts  [nCounters]atomic.Int64
}

// Open loads the cache's counters from st and prepares it.
func Open(st Store, o Options) (*Cache, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.MessagesPerChannel < 0 {
		return nil, fmt.Errorf("cache: MessagesPerChannel must not be negative, got %d", o.MessagesPerChannel)
	}
	fields, err := compileFields(o.Fields)
	if err != nil {
		return nil, err
	}
	c := &Cache{st: st, o: o, fields: fields, shapes: eventShapes(o), log: o.Logger, outages: map[uint64]bool{}}
	c.b.c = c
	if err := c.loadCounters(); err != nil {
		return nil, err
	}
	if err := c.loadOutages(); err != nil {
		return nil, err
	}
	if c.m, err = newMetrics(c, o.Registerer); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cache) loadCounters() error {
	return c.st.View(func(r store.Reader) error {
		v, err := r.Get([]byte(countersKey))
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("cache: reading counters: %w", err)
		}
		for i := range c.counts {
			n, used := varint(v)
			if used <= 0 {
				break // counters added by a later version start at zero
			}
			c.counts[i].Store(n)
			v = v[used:]
		}
		return nil
	})
}

func (c *Cache) loadOutages() error {
	return c.st.View(func(r store.Reader) error {
		return r.Scan([]byte(outagePrefix), nil, true, func(k, _ []byte) error {
			c.outages[keyID(k)] = true
			return nil
		})
	})
}

// Stats counts the objects the cache holds, per kind.
type Stats struct {
	Guilds            int64 `json:"guilds"`
	UnavailableGuilds int64 `json:"unavailable_guilds"`
	Channels          int64 `json:"channels"`
	Threads           int64 `json:"threads"`
	Roles             int64 `json:"roles"`
	Members           int64 `json:"members"`
	Users             int64 `json:"users"`
	Emojis            int64 `json:"emojis"`
	Stickers          int64 `json:"stickers"`
	VoiceStates       int64 `json:"voice_states"`
	Presences         int64 `json:"presences"`
	Messages          int64 `json:"messages"`
}

// Stats returns the counts, kept as the cache changes (it does not scan).
func (c *Cache) Stats() Stats {
	n := func(i int) int64 { return c.counts[i].Load() }
	return Stats{Guilds: n(cGuilds), UnavailableGuilds: n(cUnavailableGuilds), Channels: n(cChannels),
		Threads: n(cThreads), Roles: n(cRoles), Members: n(cMembers), Users: n(cUsers), Emojis: n(cEmojis),
		Stickers: n(cStickers), VoiceStates: n(cVoiceStates), Presences: n(cPresences), Messages: n(cMessages)}
}

// Apply applies gateway dispatch payloads ({"op":0,"t":...,"d":...}), in order, and returns once they
// are stored. Payloads it cannot read, or of events it does not keep, are skipped (and counted); an error
// means the store failed and nothing after the last commit is kept: apply the same payloads again.
func (c *Cache) Apply(payloads ...[]byte) error {
	start := time.Now()
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	for _, p := range payloads {
		if err := c.applyOne(p); err != nil {
			c.b.discard()
			// What was staged is gone: read the outages back as they are stored.
			c.outages = map[uint64]bool{}
			if lerr := c.loadOutages(); lerr != nil {
				c.log.Error("reloading guild outages", zap.Error(lerr))
			}
			return err
		}
	}
	if err := c.b.commit(); err != nil {
		return err
	}
	c.m.applySeconds.Observe(time.Since(start).Seconds())
	return nil
}

// errNotKept stops the scan of a payload whose t names an event the cache does not keep.
var errNotKept = errors.New("an event the cache does not keep")

// applyOne applies one payload; only store errors are returned. An event the cache does not keep costs
// the scan up to its t, which Discord sends before d: most of a firehose (messages, typing, reactions
// with the defaults) is skipped without reading d.
func (c *Cache) applyOne(payload []byte) error {
	var name string
	var d []byte
	err := eachField(payload, func(k, v []byte) error {
		switch string(k) {
		case "t":
			name, _ = unquote(v)
			if name != "" && name == c.o.LoadingGuildEvent {
				name = "GUILD_CREATE"
			}
			if name != "" && (handlers[name] == nil || !c.keeps(name)) {
				return errNotKept
			}
		case "d":
			d = v
		}
		return nil
	})
	if errors.Is(err, errNotKept) {
		c.m.notCached.Inc()
		return nil
	}
	if err != nil || name == "" || d == nil {
		c.m.skipped.WithLabelValues("malformed").Inc()
		return nil
	}
	h := handlers[name]
	if h == nil || !c.keeps(name) {
		c.m.notCached.Inc()
		return nil
	}
	// All or nothing: an event is checked whole before any of it is written.
	if err := c.shapes[name].check(d, "d"); err != nil {
		c.m.skipped.WithLabelValues("malformed").Inc()
		c.log.Warn("skipping an event the cache cannot read; nothing of it was applied", zap.String("event", name), zap.Error(err))
		return nil
	}
	if len(c.outages) > 0 && name != "GUILD_CREATE" && name != "GUILD_DELETE" && name != "READY" {
		if g, ok := idField(d, "guild_id"); ok && c.outages[g] {
			if err := c.endOutage(&c.b, g); err != nil {
				return err
			}
		}
	}
	err = h(c, &c.b, d)
	var bad *badEvent
	switch {
	case errors.As(err, &bad) || errors.Is(err, errSyntax):
		// The check above should have refused it: what the handler wrote before it failed stays.
		c.m.skipped.WithLabelValues("malformed").Inc()
		c.log.Error("an event passed the cache's check but its handler could not read it; it may be partly applied",
			zap.String("event", name), zap.Error(err))
		return nil
	case err != nil:
		return err
	}
	c.m.applied.WithLabelValues(name).Inc()
	return nil
}

// keeps says whether events of this name are kept: presences and messages only when enabled.
func (c *Cache) keeps(name string) bool {
	switch name {
	case "PRESENCE_UPDATE":
		return c.o.Presences
	case "MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE", "MESSAGE_DELETE_BULK":
		return c.o.MessagesPerChannel > 0
	}
	return true
}

// badEvent is an event without what the cache needs (a GUILD_MEMBER_ADD without guild_id).
type badEvent struct{ msg string }

func (e *badEvent) Error() string { return e.msg }

func missing(what string) error { return &badEvent{msg: "missing or invalid " + what} }
