package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/filter"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/shard"
)

// switcher owns the lock every sink of one Gateway dispatches under, and the moves that change sinks
// under it: a reshard's window on the running set, and the switch itself (handOver), which retires the
// old set's sink and brings the new one live in one step, so that no Dispatch of either runs between.
type switcher struct {
	mu       sync.RWMutex // Dispatch holds it for reading; the moves below take it
	q        Queue
	appended func(error) // Config.Appended
	log      *zap.Logger
}

// newSink builds a sink of this switcher. A held sink (a reshard's new set) queues nothing until the
// switch.
func (sw *switcher) newSink(held bool, guilds *filter.Filter, total int) *sink {
	s := &sink{sw: sw, guilds: guilds, total: total}
	if held {
		s.mode = sinkHeld
		s.tails, s.sessions = map[int]*tail[shard.Event]{}, map[int]shard.Session{}
	}
	return s
}

// record starts (or stops, with nil) remembering what s handles.
func (sw *switcher) record(s *sink, w *window) {
	sw.mu.Lock()
	s.window = w
	sw.mu.Unlock()
}

// handledAll reports whether s's window holds every marker (see sink.markers).
func (sw *switcher) handledAll(s *sink, markers [][]byte) bool {
	sw.mu.RLock()
	w := s.window
	sw.mu.RUnlock()
	if w == nil {
		return false
	}
	m := w.matcher(time.Now().Add(-reshardWindowKeep))
	for _, mk := range markers {
		if !m.has(mk) {
			return false
		}
	}
	return true
}

// handOver is the switch: the queue takes next's events from now on, and old's no more. old's appends
// wait (not drop) while it runs, so a failed switch loses nothing.
func (sw *switcher) handOver(ctx context.Context, old, next *sink) error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	// A guild's events move to another shard here. The fence makes every consumer of the queue (the
	// bot's delivery, the cache) take everything queued so far, on every shard (the old set's events, and
	// those queued before a restart), before anything the new set queues. A failed switch leaves it: it
	// then only holds the old set's later events behind its earlier ones for a moment.
	if _, err := sw.q.SetFence(ctx); err != nil {
		sw.log.Error("the switch's ordering fence is not stored: a restart before every consumer has passed it "+
			"could let a guild's later events overtake earlier ones", zap.Error(err))
	}
	if err := sw.goLive(ctx, next, old.window); err != nil {
		return err
	}
	old.mode = sinkRetired
	return nil
}

// goLive queues s's held tail, less what the old set handled (its window), with each shard's session,
// and from then on s queues directly (dropping, for a short while, events the old set handled first).
// The caller holds sw.mu.
func (sw *switcher) goLive(ctx context.Context, s *sink, handled *window) error {
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	type held struct {
		evs   []shard.Event
		since time.Time
	}
	byShard := map[int]held{}
	oldest := time.Now()
	for id, t := range s.tails {
		evs, since := t.take()
		byShard[id] = held{evs, since}
		if since.Before(oldest) {
			oldest = since
		}
	}
	if handled == nil {
		handled = newWindow(0, 0)
	}
	// A little before the oldest held event: the old set may have received it slightly earlier.
	m := handled.matcher(oldest.Add(-2 * time.Second))
	ids := make([]int, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	nHeld, queued := 0, 0
	oldQueued := m.remaining()
	for _, id := range ids {
		var recs []queue.Record
		for _, ev := range byShard[id].evs {
			nHeld++
			if !m.seen(ev.Raw) {
				recs = append(recs, queue.Record{Shard: id, Payload: ev.Raw})
			}
		}
		queued += len(recs)
		if err := s.append(ctx, s.sessions[id], recs); err != nil {
			return fmt.Errorf("queueing shard %d's events at the switch: %w", id, err)
		}
	}
	sw.log.Info("switch: the new shards' held events, less those the old shards queued, are queued",
		zap.Int("held", nHeld), zap.Int("old_queued_meanwhile", oldQueued), zap.Int("queued_now", queued),
		zap.Int("old_not_yet_seen_by_new", m.remaining()))
	s.matcher.Store(m)
	s.matchUntil.Store(time.Now().Add(reshardLateMatch).UnixNano())
	s.mode, s.tails, s.sessions = sinkLive, nil, nil
	return nil
}
