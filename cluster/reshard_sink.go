package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddhq/dd/internal/eventmatch"
	"github.com/ddhq/dd/shard"
)

// reshardSink is the sink of a reshard's new shards in this process: held, each shard keeps its events
// in a tail in memory and writes its session to the KV (until the switch begins), so that a takeover
// RESUMEs; at the switch (goLive) it publishes its tail less what the old shards published, and from
// then on publishes through the EventSink, dropping for a short while what the old shards published
// first.
type reshardSink struct {
	sink      *EventSink
	floor     uint64      // the stream's last sequence when the reshard began
	switching atomic.Bool // the switch began: no session writes, no trimming
	done      atomic.Bool // the reshard is over: a new holding publishes from the start

	mu     sync.Mutex
	shards map[int]*heldShard // the current holding of each shard here
}

// heldShard is one holding of a new shard.
type heldShard struct {
	rs    *reshardSink
	id    int
	lease *Lease
	// resumed: the holding began from a stored session, or resumed since. Discord's replay then brings
	// events sent a while ago, which the old shards may have published long before they arrived here:
	// the read-back starts where the reshard began.
	resumed bool

	mu         sync.Mutex
	live       bool
	evs        []heldEvent
	sess       shard.Session
	hasSess    bool
	match      *eventmatch.Matcher
	matchUntil time.Time
}

type heldEvent struct {
	ev shard.Event
	at time.Time
}

func newReshardSink(sink *EventSink, floor uint64) *reshardSink {
	return &reshardSink{sink: sink, floor: floor, shards: map[int]*heldShard{}}
}

// sinkFor is RunnerConfig.SinkFor.
func (rs *reshardSink) sinkFor(id int, lease *Lease, resumed bool) shard.Sink {
	if rs.done.Load() {
		return rs.sink.Fenced(lease)
	}
	h := &heldShard{rs: rs, id: id, lease: lease, resumed: resumed}
	rs.mu.Lock()
	rs.shards[id] = h
	rs.mu.Unlock()
	return h
}

// holding is the current holding of shard id here (nil: none, or its lease ended).
func (rs *reshardSink) holding(id int) *heldShard {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	h := rs.shards[id]
	if h == nil || !h.lease.Valid() {
		return nil
	}
	return h
}

// Dispatch implements shard.Sink.
func (h *heldShard) Dispatch(ctx context.Context, evs []shard.Event, sess shard.Session) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.live {
		if h.match != nil && time.Now().After(h.matchUntil) {
			h.match = nil
		}
		if h.match != nil {
			kept := make([]shard.Event, 0, len(evs))
			for _, ev := range evs {
				if !ev.Dropped && h.match.Seen(ev.Raw) {
					continue // the old shards published it first
				}
				kept = append(kept, ev)
			}
			evs = kept
		}
		return h.rs.sink.dispatch(ctx, evs, sess, h.lease.Valid)
	}
	if !h.lease.Valid() {
		return fmt.Errorf("shard %d/%d: %w", sess.ShardID, sess.NumShards, ErrNotHeld)
	}
	now := time.Now()
	for _, ev := range evs {
		if ev.Type == "RESUMED" {
			h.resumed = true
		}
		if !ev.Dropped {
			h.evs = append(h.evs, heldEvent{ev, now})
		}
	}
	h.sess, h.hasSess = sess, true
	switching := h.rs.switching.Load()
	if !switching {
		drop := 0
		for drop < len(h.evs) && (len(h.evs)-drop > reshardTailMax || now.Sub(h.evs[drop].at) > reshardTailHold) {
			drop++
		}
		if drop > 0 {
			h.evs = append(h.evs[:0], h.evs[drop:]...)
		}
		// The session goes to the KV so that a takeover resumes; from the switch on it stays where it is,
		// so that a takeover resumes from before the old shards stopped and Discord replays what only
		// this tail holds.
		if err := h.rs.sink.sessions.save(ctx, sess, h.lease.Valid); err != nil {
			return err
		}
		h.rs.sink.saveGuilds(ctx, sess, h.lease.Valid)
	}
	return nil
}

// markers returns, for each old shard of oldTotal in olds, the key of the newest held event of its
// guilds that every session gets alike (absent when the tail holds none).
func (h *heldShard) markers(oldTotal int, olds []int) map[int]uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[int]uint64{}
	want := map[int]bool{}
	for _, a := range olds {
		want[a] = true
	}
	for i := len(h.evs) - 1; i >= 0 && len(out) < len(want); i-- {
		switch h.evs[i].ev.Type {
		case "READY", "RESUMED", "GUILD_CREATE":
			continue // this session's own: the old shards never get it
		}
		a := guildShardOf(h.evs[i].ev.Raw, oldTotal)
		if _, done := out[a]; want[a] && !done {
			out[a] = eventmatch.Key(h.evs[i].ev.Raw)
		}
	}
	return out
}

// isLive reports whether the holding publishes.
func (h *heldShard) isLive() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.live
}

// goLive publishes the tail less what match (built by build from the sequence sampled before the
// oldest held event, or from from when not 0) matched, and turns the holding live. The shard's dispatches wait meanwhile.
func (h *heldShard) goLive(ctx context.Context, build func(since time.Time, from uint64) (*eventmatch.Matcher, error)) (held, published, matchedLater int, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.live {
		return 0, 0, 0, nil
	}
	if !h.hasSess {
		return 0, 0, 0, fmt.Errorf("shard %d has no session yet", h.id)
	}
	since := time.Now()
	if len(h.evs) > 0 {
		since = h.evs[0].at
	}
	from := uint64(0) // the sample before since
	if h.resumed {
		from = h.rs.floor
	}
	m, err := build(since, from)
	if err != nil {
		return 0, 0, 0, err
	}
	kept := make([]shard.Event, 0, len(h.evs))
	for _, he := range h.evs {
		if !m.Seen(he.ev.Raw) {
			kept = append(kept, he.ev)
		}
	}
	for attempt := 0; ; attempt++ {
		if err = h.rs.sink.dispatch(ctx, kept, h.sess, h.lease.Valid); err == nil {
			break
		}
		if !h.lease.Valid() || ctx.Err() != nil || attempt == 10 {
			return len(h.evs), 0, 0, err
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	held = len(h.evs)
	h.live, h.evs = true, nil
	h.match, h.matchUntil = m, time.Now().Add(reshardLateMatch)
	return held, len(kept), m.Remaining(), nil
}
