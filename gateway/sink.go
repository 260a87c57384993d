package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddhq/dd/internal/filter"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/shard"
)

// sink is a shard set's shard.Sink. Live, it queues events with the session and the shard's guild list,
// and while a reshard runs it records what it handled (queued, or dropped by the filter) in a window.
// Held (a reshard's new set), it keeps only a short tail of each shard's events and their sessions, in
// memory. Retired, it drops everything (the new set delivers).
//
// Its mode, tails and window change only under the switch lock of the Gateway it belongs to (see
// switcher): Dispatch holds that lock for reading.
type sink struct {
	sw *switcher

	// Each shard's guilds are stored with its events when they change (see guildsRecord).
	guilds   *filter.Filter
	total    int
	guildMu  sync.Mutex
	guildVer map[int]uint64 // the version of each shard's guilds last stored

	mode     sinkMode
	window   *window // while a reshard runs: what this (live) set handled
	tails    map[int]*tail[shard.Event]
	sessions map[int]shard.Session
	tailMu   sync.Mutex // guards tails and sessions in held mode (Dispatch holds the switch lock only for reading)

	matcher    atomic.Pointer[matcher] // after going live: drop what the old set queued
	matchUntil atomic.Int64            // unix nanoseconds
}

type sinkMode int

const (
	sinkLive sinkMode = iota
	sinkHeld
	sinkRetired
)

// How long a reshard keeps its bookkeeping: the new set's recent events, the old set's queued events,
// and the time after the switch during which late duplicates are still caught.
const (
	reshardTailHold   = 20 * time.Second
	reshardTailMax    = 200_000
	reshardWindowKeep = 60 * time.Second
	reshardWindowMax  = 2_000_000
	reshardLateMatch  = 10 * time.Second
)

func (s *sink) Dispatch(ctx context.Context, evs []shard.Event, sess shard.Session) error {
	s.sw.mu.RLock()
	defer s.sw.mu.RUnlock()
	switch s.mode {
	case sinkRetired:
		return nil
	case sinkHeld:
		s.tailMu.Lock()
		defer s.tailMu.Unlock()
		t := s.tails[sess.ShardID]
		if t == nil {
			t = newTail[shard.Event](reshardTailHold, reshardTailMax)
			s.tails[sess.ShardID] = t
		}
		for _, ev := range evs {
			if !ev.Dropped {
				t.add(ev)
			}
		}
		s.sessions[sess.ShardID] = sess
		return nil
	}
	m := s.matcher.Load()
	if m != nil && time.Now().UnixNano() > s.matchUntil.Load() {
		s.matcher.Store(nil)
		m = nil
	}
	recs := make([]queue.Record, 0, len(evs))
	for _, ev := range evs {
		if ev.Dropped || (m != nil && m.seen(ev.Raw)) {
			continue
		}
		recs = append(recs, queue.Record{Shard: sess.ShardID, Payload: ev.Raw})
	}
	if err := s.append(ctx, sess, recs); err != nil {
		return err
	}
	// What this set handled, queued or deliberately dropped: a new set does the same with its copies.
	if w := s.window; w != nil {
		for _, ev := range evs {
			w.record(ev.Raw)
		}
	}
	return nil
}

// append queues a shard's events with its session, and its guild list when that changed, in one commit.
func (s *sink) append(ctx context.Context, sess shard.Session, recs []queue.Record) error {
	k, v := shard.SessionRecord(sess)
	kvs := []queue.KV{{Key: k, Value: v}}
	gkv, gver, gchanged := s.guildsRecord(sess.ShardID)
	if gchanged {
		kvs = append(kvs, gkv)
	}
	err := s.sw.q.Append(ctx, recs, kvs...)
	if s.sw.appended != nil && ctx.Err() == nil {
		s.sw.appended(err)
	}
	if err != nil {
		return err
	}
	if gchanged {
		s.storedGuilds(sess.ShardID, gver)
	}
	return nil
}

// guildsRecord returns shard's guild ids to store when they changed since last stored; the set
// changes on READY, on joining and on leaving a guild, so it is rarely written.
func (s *sink) guildsRecord(shard int) (queue.KV, uint64, bool) {
	if s.guilds == nil {
		return queue.KV{}, 0, false
	}
	s.guildMu.Lock()
	ver := s.guildVer[shard]
	s.guildMu.Unlock()
	ids, now, changed := s.guilds.GuildsChanged(shard, ver)
	if !changed {
		return queue.KV{}, 0, false
	}
	return queue.KV{Key: guildsKey(s.total, shard), Value: encodeGuilds(ids)}, now, true
}

func (s *sink) storedGuilds(shard int, ver uint64) {
	s.guildMu.Lock()
	if s.guildVer == nil {
		s.guildVer = map[int]uint64{}
	}
	s.guildVer[shard] = max(s.guildVer[shard], ver)
	s.guildMu.Unlock()
}

// markers returns, for each pair of an old shard y (of oldTotal) and a new shard x that share guilds
// (need[x] holds those y), the newest event x holds of a guild of y, and how many pairs have none yet.
// Once the old set has handled the marker of (y, x), old shard y has read everything sent to it before
// that event, which was sent after x's session began: so every event of those guilds that reached only
// the old set (sent before x existed) is handled, and x has everything sent after. A pair without a
// marker has no such proof: the old shard may still hold unread events that only it received.
func (s *sink) markers(oldTotal int, need map[int]map[int]bool) (out [][]byte, missing int) {
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	for x, ys := range need {
		t := s.tails[x]
		for y := range ys {
			var newest []byte
			if t != nil {
				t.newest(func(ev shard.Event) bool {
					if guildShard(ev.Raw, oldTotal) == y {
						newest = ev.Raw
						return false
					}
					return true
				})
			}
			if newest == nil {
				missing++
				continue
			}
			out = append(out, newest)
		}
	}
	return out, missing
}
