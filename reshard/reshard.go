// Package reshard holds the bookkeeping of a zero-downtime reshard: while a new shard set connects beside
// the old one, both receive every event; at the switch each event must reach the bot exactly once. The
// old set records what it queued (a Window); the new set holds its recent events (a Tail); at the switch
// the new set's events that the old set already queued are dropped (a Matcher), and for a short while
// after, live events of the new set are checked too, for those the old set received first.
//
// Events are identified by their type and the raw bytes of their "d": Discord sends the same event to
// every session of the same intents with the same data, whatever the session's shard count. This package
// does not connect, queue or deliver anything (see package shard, queue and roles).
package reshard

import (
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/internal/rawjson"
)

var seed = maphash.MakeSeed()

// Key identifies an event across sessions: a hash of its type and raw data.
func Key(payload []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	var t []byte
	var d []byte
	_ = rawjson.EachField(payload, func(k, v []byte) bool {
		switch string(k) {
		case "t":
			t = v
		case "d":
			d = v
		}
		return true
	})
	h.Write(t)
	h.WriteByte(0)
	h.Write(d)
	return h.Sum64()
}

// Window remembers the keys of events the old set queued, with when, for a bounded time.
type Window struct {
	mu   sync.Mutex
	keep time.Duration
	max  int
	list []entry // in arrival order
}

type entry struct {
	key uint64
	at  time.Time
}

// NewWindow keeps keys for keep, and at most max of them.
func NewWindow(keep time.Duration, max int) *Window { return &Window{keep: keep, max: max} }

// Record notes that an event was queued.
func (w *Window) Record(payload []byte) {
	k := Key(payload)
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, entry{k, now})
	drop := 0
	for drop < len(w.list) && (len(w.list)-drop > w.max || now.Sub(w.list[drop].at) > w.keep) {
		drop++
	}
	if drop > 0 {
		w.list = append(w.list[:0], w.list[drop:]...)
	}
}

// Matcher returns the multiset of keys recorded since since.
func (w *Window) Matcher(since time.Time) *Matcher {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := &Matcher{counts: map[uint64]int{}}
	for _, e := range w.list {
		if !e.at.Before(since) {
			m.counts[e.key]++
			m.left++
		}
	}
	return m
}

// Matcher is a multiset of events the old set queued. Each Seen consumes one match, so an event that
// truly happened twice is delivered twice.
type Matcher struct {
	mu     sync.Mutex
	counts map[uint64]int
	left   int
}

// Seen reports whether the old set already queued this event (and consumes that match).
func (m *Matcher) Seen(payload []byte) bool {
	k := Key(payload)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.counts[k] == 0 {
		return false
	}
	m.counts[k]--
	m.left--
	return true
}

// Has reports whether the old set queued this event, without consuming the match.
func (m *Matcher) Has(payload []byte) bool {
	k := Key(payload)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[k] > 0
}

// Left is how many of the old set's events the new set has not matched yet.
func (m *Matcher) Left() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.left
}

// Tail holds a shard's most recent events, for hold time.
type Tail[E any] struct {
	mu   sync.Mutex
	hold time.Duration
	max  int
	list []tailEntry[E]
}

type tailEntry[E any] struct {
	ev E
	at time.Time
}

// NewTail keeps events for hold, and at most max of them.
func NewTail[E any](hold time.Duration, max int) *Tail[E] { return &Tail[E]{hold: hold, max: max} }

// Add appends an event.
func (t *Tail[E]) Add(ev E) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.list = append(t.list, tailEntry[E]{ev, now})
	drop := 0
	for drop < len(t.list) && (len(t.list)-drop > t.max || now.Sub(t.list[drop].at) > t.hold) {
		drop++
	}
	if drop > 0 {
		t.list = append(t.list[:0], t.list[drop:]...)
	}
}

// Newest calls fn with the held events from the newest back, until it returns false.
func (t *Tail[E]) Newest(fn func(E) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := len(t.list) - 1; i >= 0; i-- {
		if !fn(t.list[i].ev) {
			return
		}
	}
}

// Take returns the held events in order, the time the oldest was added (now when none), and empties
// the tail.
func (t *Tail[E]) Take() ([]E, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	since := time.Now()
	if len(t.list) > 0 {
		since = t.list[0].at
	}
	out := make([]E, len(t.list))
	for i, e := range t.list {
		out[i] = e.ev
	}
	t.list = nil
	return out, since
}

// GuildShard returns the shard of num that receives an event: its guild's ((guild_id >> 22) % num), or 0
// for events without a guild (direct messages).
func GuildShard(payload []byte, num int) int {
	g, ok := rawjson.Snowflake(rawjson.Field(rawjson.Field(payload, "d"), "guild_id"))
	if !ok {
		return 0
	}
	return discord.ShardForGuild(g, num)
}

// MaxShards bounds every shard count dd accepts: from the config, from Discord's recommendation, from a
// reshard request, from the rest role's stored target. Discord documents no maximum; the largest bots run
// some tens of millions of guilds, at Discord's recommended ~1,000 guilds a shard some tens of thousands
// of shards, so 65,536 (26 million guilds at the 2,500-a-shard minimum, 65 million at 1,000) leaves room
// while keeping a shard id list from a request to 512 KiB.
const MaxShards = 65536

// CheckCount says why total is not a shard count dd may run: outside 1..MaxShards, or, when
// maxConcurrency is above 1 (Discord's large-bot sharding), not a multiple of it. maxConcurrency 0 means
// unknown and skips that check. It allocates nothing, so it can vet a number from a request.
func CheckCount(total, maxConcurrency int) error {
	if total < 1 || total > MaxShards {
		return fmt.Errorf("total_shards must be at least 1 and at most %d, got %d", MaxShards, total)
	}
	if maxConcurrency > 1 && total%maxConcurrency != 0 {
		return fmt.Errorf("total_shards %d is not a multiple of max_concurrency %d (Discord's large-bot sharding requires it)", total, maxConcurrency)
	}
	return nil
}

// NewShardCount is the shard count a reshard moves to: Discord's recommendation, never fewer than the
// guilds need at 2500 a shard, and for large bots a multiple of max_concurrency (or of 16 past 100
// shards when max_concurrency is 1), as Discord's large-bot sharding requires.
func NewShardCount(recommended, guilds, maxConcurrency int) int {
	n := max(recommended, (guilds+discord.MaxGuildsPerShard-1)/discord.MaxGuildsPerShard, 1)
	step := 1
	switch {
	case maxConcurrency > 1:
		step = maxConcurrency
	case n > 100:
		step = 16
	}
	return (n + step - 1) / step * step
}

// Due reports whether a bot with guilds over total shards has reached percentage of their capacity.
func Due(guilds, total, percentage int) bool {
	return guilds*100 >= total*discord.MaxGuildsPerShard*percentage
}
