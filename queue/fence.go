package queue

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"go.uber.org/zap"

	"github.com/ddhq/dd/store"
)

// An ordering fence splits the queue in two across every shard: what was stored before it and what is
// appended after. Each consumer reads nothing appended after the fence, on any shard, until it has
// acknowledged everything stored before it, on every shard. A reshard sets one at its switch: a guild's
// events then come from another shard, and must not overtake that guild's earlier events still queued
// on its old shard, for the bot's delivery as for the cache.
//
// Each consumer passes a fence on its own (the cache and the bot advance independently), one fence at a
// time in order. A fence is stored, so that a restart before every consumer has passed it keeps the
// order: the old shards' events are still queued after a restart, and the sequences, global and
// increasing across restarts, still say which side of the fence each event is on. Whether a consumer
// has passed a fence is not stored: it is its acknowledged positions, which are.

const fencePrefix = "q/f/" // + seq (8 bytes BE) -> nothing

func fenceKey(seq uint64) []byte { return binary.BigEndian.AppendUint64([]byte(fencePrefix), seq) }

// consumerFence is where a consumer stands in the queue's fences. Guarded by Queue.fenceMu, except at,
// which Read loads without it.
type consumerFence struct {
	// blocking holds the shards with an unacknowledged event at or before at.
	blocking map[int]struct{}
	// passedTo is the last fence passed.
	passedTo uint64
	// passed is closed and replaced whenever at changes.
	passed chan struct{}
}

// fenceReq asks the committer for a fence after what it has committed.
type fenceReq struct {
	reply chan fenceReply
}

type fenceReply struct {
	seq uint64
	err error
}

// SetFence puts an ordering fence after every event stored so far and every Append still pending, and
// returns its sequence (0 when the queue has never held an event, and no fence is needed). From then on
// each consumer's Read and Next hold back, on every shard, the events appended after the fence until
// that consumer has acknowledged every event before it, on every shard. A consumer with nothing
// unacknowledged before the fence passes it at once.
//
// The fence is stored; if storing it fails, the error is returned and the fence still holds until dd
// stops.
func (q *Queue) SetFence(ctx context.Context) (uint64, error) {
	req := fenceReq{reply: make(chan fenceReply, 1)}
	select {
	case q.fenceReq <- req:
	case <-q.done:
		return 0, ErrClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case r := <-req.reply:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// setFence puts a fence after everything committed (committer only, after commitPending: every event
// at or before the fence is then in its shard's log, and every later one will be after it).
func (q *Queue) setFence() (uint64, error) {
	seq := q.nextSeq - 1
	if seq == 0 {
		return 0, nil
	}
	q.fenceMu.Lock()
	defer q.fenceMu.Unlock()
	if len(q.fences) > 0 && q.fences[len(q.fences)-1] >= seq {
		return seq, nil // nothing was appended since the last fence
	}
	q.fences = append(q.fences, seq)
	for _, c := range q.fenceConsumers() {
		if c.fenceAt.Load() == 0 {
			q.advanceFence(c)
		}
	}
	q.pruneFences()
	if !slices.Contains(q.fences, seq) {
		return seq, nil // every consumer passed it at once: nothing to keep
	}
	if err := q.reclaim(func(w store.Writer) error { return w.Set(fenceKey(seq), nil) }); err != nil {
		return seq, fmt.Errorf("queue: storing the fence at %d: %w", seq, err)
	}
	return seq, nil
}

// fenceConsumers returns the registered consumers (a copy).
func (q *Queue) fenceConsumers() []*Consumer {
	q.shardsMu.RLock()
	defer q.shardsMu.RUnlock()
	return slices.Clone(q.consumers)
}

// loadFences reads the stored fences (at Open).
func (q *Queue) loadFences() error {
	return q.st.Scan([]byte(fencePrefix), nil, func(k, _ []byte) error {
		if len(k) != len(fencePrefix)+8 {
			return fmt.Errorf("queue: malformed fence key %x", k)
		}
		q.fences = append(q.fences, binary.BigEndian.Uint64(k[len(fencePrefix):]))
		return nil
	})
}

// advanceFence moves c past every fence it has passed, to the lowest one it has not (at 0 when none
// is left), and finds which shards hold it there. Called with fenceMu held. at is stored before the
// shards are asked, so that an Ack racing with the question sees it and asks again (fenceAcked), and so
// that a Read that sees an event appended after the fence sees the fence too.
func (q *Queue) advanceFence(c *Consumer) {
	f := &c.fence
	for {
		at := c.fenceAt.Load()
		if at != 0 {
			for id := range f.blocking {
				if pending, err := c.Pending(id, at); err == nil && !pending {
					delete(f.blocking, id)
				}
			}
			if len(f.blocking) > 0 {
				return
			}
			f.passedTo = at
		}
		next := uint64(0)
		if i, _ := slices.BinarySearch(q.fences, f.passedTo+1); i < len(q.fences) {
			next = q.fences[i]
		}
		if next != at {
			c.fenceAt.Store(next)
			close(f.passed)
			f.passed = make(chan struct{})
			if at != 0 {
				c.wakeServerAll() // passed a fence: every shard may read what it held
			}
		}
		if next == 0 {
			return
		}
		ids, _ := q.Shards()
		f.blocking = map[int]struct{}{}
		for _, id := range ids {
			// A shard the store cannot read counts as holding the fence; it is asked again on its next Ack.
			if pending, err := c.Pending(id, next); err != nil || pending {
				f.blocking[id] = struct{}{}
			}
		}
		if len(f.blocking) > 0 {
			q.log.Debug("consumer holds later events behind a fence", zap.String("consumer", c.name),
				zap.Uint64("fence", next), zap.Int("shards_before_it", len(f.blocking)))
		}
	}
}

// pruneFences forgets the fences every consumer has passed, and has the committer delete them from the
// store once the positions that passed them are stored. Called with fenceMu held.
func (q *Queue) pruneFences() {
	low := uint64(math.MaxUint64)
	for _, c := range q.fenceConsumers() {
		if at := c.fenceAt.Load(); at != 0 {
			low = min(low, at)
		}
	}
	i := 0
	for i < len(q.fences) && q.fences[i] < low {
		i++
	}
	if i > 0 {
		q.fencesPassed = append(q.fencesPassed, q.fences[:i]...)
		q.fences = slices.Delete(q.fences, 0, i)
	}
}

// fenceAcked is told that c acknowledged events of shard while it stands at a fence: when that was the
// shard's last event before the fence and no other shard holds it, c passes the fence.
func (q *Queue) fenceAcked(c *Consumer, shard int) {
	q.fenceMu.Lock()
	defer q.fenceMu.Unlock()
	if _, ok := c.fence.blocking[shard]; !ok {
		return
	}
	q.advanceFence(c)
	q.pruneFences()
}

// recheckFences asks again which shards hold each consumer's fence: events dropped by the bound were
// never acknowledged, yet no longer hold anyone back. Committer only. It does not prune: the bound may
// drop events before every consumer is registered, and a fence must wait for those registered later.
func (q *Queue) recheckFences() {
	q.fenceMu.Lock()
	defer q.fenceMu.Unlock()
	if len(q.fences) == 0 {
		return
	}
	for _, c := range q.fenceConsumers() {
		q.advanceFence(c)
	}
}

// takePassedFences returns the fences every consumer has passed, to delete from the store. The committer
// takes them before it persists positions, and deletes them only once those are stored: after a crash the
// positions that passed a fence are then never older than its absence.
func (q *Queue) takePassedFences() []uint64 {
	q.fenceMu.Lock()
	defer q.fenceMu.Unlock()
	out := q.fencesPassed
	q.fencesPassed = nil
	return out
}

// deleteFences deletes passed fences from the store, or gives them back to be deleted on a later round.
func (q *Queue) deleteFences(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	err := q.reclaim(func(w store.Writer) error {
		for _, seq := range seqs {
			if err := w.Delete(fenceKey(seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		q.fenceMu.Lock()
		q.fencesPassed = append(q.fencesPassed, seqs...)
		q.fenceMu.Unlock()
	}
	return err
}

// heldAt returns the fence c stands at and a channel closed when that changes, read together so that a
// waiter cannot miss the change.
func (c *Consumer) heldAt() (uint64, <-chan struct{}) {
	c.q.fenceMu.Lock()
	defer c.q.fenceMu.Unlock()
	return c.fenceAt.Load(), c.fence.passed
}

// Fence is the fence the consumer stands at: it reads no event after that sequence until it has
// acknowledged every event before it. 0 when it is behind no fence.
func (c *Consumer) Fence() uint64 { return c.fenceAt.Load() }
