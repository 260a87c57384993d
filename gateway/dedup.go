package gateway

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/internal/rawjson"
)

// A reshard's bookkeeping of event identity. While a new shard set connects beside the old one, both
// receive every event; at the switch each must reach the queue once. The old set records what it
// handled (a window); the new set holds its recent events (a tail); at the switch the new set's events
// that the old set already handled are dropped (a matcher), and for a short while after, live events of
// the new set are checked too, for those the old set received first.
//
// Events are identified by their type and the raw bytes of their "d": Discord sends the same event to
// every session of the same intents with the same data, whatever the session's shard count.

var keySeed = maphash.MakeSeed()

// eventKey identifies an event across sessions: a hash of its type and raw data.
func eventKey(payload []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(keySeed)
	var t, d []byte
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

// window remembers the keys of events the old set handled, with when, for a bounded time.
type window struct {
	mu   sync.Mutex
	keep time.Duration
	max  int
	list []windowEntry // in arrival order
}

type windowEntry struct {
	key uint64
	at  time.Time
}

// newWindow keeps keys for keep, and at most max of them.
func newWindow(keep time.Duration, max int) *window { return &window{keep: keep, max: max} }

// record notes that an event was handled.
func (w *window) record(payload []byte) {
	k := eventKey(payload)
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, windowEntry{k, now})
	drop := 0
	for drop < len(w.list) && (len(w.list)-drop > w.max || now.Sub(w.list[drop].at) > w.keep) {
		drop++
	}
	if drop > 0 {
		w.list = append(w.list[:0], w.list[drop:]...)
	}
}

// matcher returns the multiset of keys recorded since since.
func (w *window) matcher(since time.Time) *matcher {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := &matcher{counts: map[uint64]int{}}
	for _, e := range w.list {
		if !e.at.Before(since) {
			m.counts[e.key]++
			m.left++
		}
	}
	return m
}

// matcher is a multiset of events the old set handled. Each seen consumes one match, so an event that
// truly happened twice is delivered twice.
type matcher struct {
	mu     sync.Mutex
	counts map[uint64]int
	left   int
}

// seen reports whether the old set already handled this event (and consumes that match).
func (m *matcher) seen(payload []byte) bool {
	k := eventKey(payload)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.counts[k] == 0 {
		return false
	}
	m.counts[k]--
	m.left--
	return true
}

// has reports whether the old set handled this event, without consuming the match.
func (m *matcher) has(payload []byte) bool {
	k := eventKey(payload)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[k] > 0
}

// remaining is how many of the old set's events the new set has not matched yet.
func (m *matcher) remaining() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.left
}

// tail holds a shard's most recent events, for hold time.
type tail[E any] struct {
	mu   sync.Mutex
	hold time.Duration
	max  int
	list []tailEntry[E]
}

type tailEntry[E any] struct {
	ev E
	at time.Time
}

// newTail keeps events for hold, and at most max of them.
func newTail[E any](hold time.Duration, max int) *tail[E] { return &tail[E]{hold: hold, max: max} }

func (t *tail[E]) add(ev E) {
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

// newest calls fn with the held events from the newest back, until it returns false.
func (t *tail[E]) newest(fn func(E) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := len(t.list) - 1; i >= 0; i-- {
		if !fn(t.list[i].ev) {
			return
		}
	}
}

// take returns the held events in order, the time the oldest was added (now when none), and empties
// the tail.
func (t *tail[E]) take() ([]E, time.Time) {
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

// guildShard returns the shard of num that receives an event: its guild's, or 0 for events without a
// guild (direct messages).
func guildShard(payload []byte, num int) int {
	g, ok := rawjson.Snowflake(rawjson.Field(rawjson.Field(payload, "d"), "guild_id"))
	if !ok {
		return 0
	}
	return discord.ShardForGuild(g, num)
}
