// Package eventmatch is a reshard's bookkeeping of event identity, shared by the one-machine switch
// (package gateway) and the switch across processes (package cluster). While a new shard set connects
// beside the old one, both receive every event; at the switch each must reach the bot once. The old set's
// events make a multiset of keys (a Window in one process, or read back from the stream across
// processes); the new set holds its recent events (a Tail); at the switch the new set's events that the
// old set already handled are dropped (a Matcher), and for a short while after, live events of the new
// set are checked too, for those the old set received first.
//
// Events are identified by their type and the raw bytes of their "d": Discord sends the same event to
// every session of the same intents with the same data, whatever the session's shard count. The key is
// the same in every process (xxhash, no seed), so that one process can match what another published.
package eventmatch

import (
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/ddhq/dd/internal/rawjson"
)

// Key identifies a gateway payload across sessions and processes: a hash of its "t" and raw "d".
func Key(payload []byte) uint64 {
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
	h := xxhash.New()
	_, _ = h.Write(t)
	_, _ = h.Write([]byte{0})
	_, _ = h.Write(d)
	return h.Sum64()
}

// Window remembers the keys of events the old set handled, with when, for a bounded time.
type Window struct {
	mu   sync.Mutex
	keep time.Duration
	max  int
	list []windowEntry // in arrival order
}

type windowEntry struct {
	key uint64
	at  time.Time
}

// NewWindow keeps keys for keep, and at most max of them.
func NewWindow(keep time.Duration, max int) *Window { return &Window{keep: keep, max: max} }

// Record notes that an event was handled.
func (w *Window) Record(payload []byte) {
	k := Key(payload)
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

// Matcher returns the multiset of keys recorded since since.
func (w *Window) Matcher(since time.Time) *Matcher {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := NewMatcher()
	for _, e := range w.list {
		if !e.at.Before(since) {
			m.AddKey(e.key)
		}
	}
	return m
}

// Matcher is a multiset of events the old set handled. Each Seen consumes one match, so an event that
// truly happened twice is delivered twice.
type Matcher struct {
	mu     sync.Mutex
	counts map[uint64]int
	left   int
}

// NewMatcher is an empty multiset.
func NewMatcher() *Matcher { return &Matcher{counts: map[uint64]int{}} }

// Add puts a payload the old set handled in the multiset.
func (m *Matcher) Add(payload []byte) { m.AddKey(Key(payload)) }

// AddKey puts a key (Key's) in the multiset.
func (m *Matcher) AddKey(k uint64) {
	m.mu.Lock()
	m.counts[k]++
	m.left++
	m.mu.Unlock()
}

// Seen reports whether the old set already handled this event (and consumes that match).
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

// Has reports whether the old set handled this event, without consuming the match.
func (m *Matcher) Has(payload []byte) bool { return m.HasKey(Key(payload)) }

// HasKey is Has for a key.
func (m *Matcher) HasKey(k uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[k] > 0
}

// Remaining is how many of the old set's events the new set has not matched yet.
func (m *Matcher) Remaining() int {
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

// Add holds ev, dropping what is older than the hold or past the bound.
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

// Len is how many events the tail holds.
func (t *Tail[E]) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.list)
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
