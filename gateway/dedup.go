package gateway

import (
	"time"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/internal/eventmatch"
	"github.com/ddhq/dd/internal/rawjson"
)

// A reshard's bookkeeping of event identity is internal/eventmatch's (shared with cluster mode's switch
// across processes); these are its names in this package.

// eventKey identifies an event across sessions: a hash of its type and raw data.
func eventKey(payload []byte) uint64 { return eventmatch.Key(payload) }

// window remembers the keys of events the old set handled, with when, for a bounded time.
type window struct{ w *eventmatch.Window }

// newWindow keeps keys for keep, and at most max of them.
func newWindow(keep time.Duration, max int) *window {
	return &window{eventmatch.NewWindow(keep, max)}
}

// record notes that an event was handled.
func (w *window) record(payload []byte) { w.w.Record(payload) }

// matcher returns the multiset of keys recorded since since.
func (w *window) matcher(since time.Time) *matcher { return &matcher{w.w.Matcher(since)} }

// matcher is a multiset of events the old set handled. Each seen consumes one match, so an event that
// truly happened twice is delivered twice.
type matcher struct{ m *eventmatch.Matcher }

// seen reports whether the old set already handled this event (and consumes that match).
func (m *matcher) seen(payload []byte) bool { return m.m.Seen(payload) }

// has reports whether the old set handled this event, without consuming the match.
func (m *matcher) has(payload []byte) bool { return m.m.Has(payload) }

// remaining is how many of the old set's events the new set has not matched yet.
func (m *matcher) remaining() int { return m.m.Remaining() }

// tail holds a shard's most recent events, for hold time.
type tail[E any] struct{ t *eventmatch.Tail[E] }

// newTail keeps events for hold, and at most max of them.
func newTail[E any](hold time.Duration, max int) *tail[E] {
	return &tail[E]{eventmatch.NewTail[E](hold, max)}
}

func (t *tail[E]) add(ev E) { t.t.Add(ev) }

// newest calls fn with the held events from the newest back, until it returns false.
func (t *tail[E]) newest(fn func(E) bool) { t.t.Newest(fn) }

// take returns the held events in order, the time the oldest was added (now when none), and empties
// the tail.
func (t *tail[E]) take() ([]E, time.Time) { return t.t.Take() }

// guildShard returns the shard of num that receives an event: its guild's, or 0 for events without a
// guild (direct messages).
func guildShard(payload []byte, num int) int {
	g, ok := rawjson.Snowflake(rawjson.Field(rawjson.Field(payload, "d"), "guild_id"))
	if !ok {
		return 0
	}
	return discord.ShardForGuild(g, num)
}
