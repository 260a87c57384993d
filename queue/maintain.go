package queue

import (
	"container/heap"
	"errors"
	"math"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/store"
)

// maintain persists consumers' positions, deletes what every consumer acknowledged and enforces the
// bound. Committer only.
func (q *Queue) maintain() error {
	passed := q.takePassedFences()
	err := q.persistAcks()
	if err == nil {
		err = q.deleteFences(passed)
	} else if len(passed) > 0 {
		q.fenceMu.Lock()
		q.fencesPassed = append(q.fencesPassed, passed...)
		q.fenceMu.Unlock()
	}
	return errors.Join(err, q.enforceBound())
}

// maintBatch is one maintenance transaction, with the memory updates to apply once it is committed.
type maintBatch struct {
	sets  []KV
	dels  [][]byte
	apply []func()
}

func (b *maintBatch) ops() int { return len(b.sets) + len(b.dels) }

func (q *Queue) commitMaint(b *maintBatch) error {
	if b.ops() == 0 {
		return nil
	}
	start := time.Now()
	err := q.reclaim(func(w store.Writer) error {
		for _, kv := range b.sets {
			if err := w.Set(kv.Key, kv.Value); err != nil {
				return err
			}
		}
		for _, k := range b.dels {
			if err := w.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	q.m.commitSeconds.Observe(time.Since(start).Seconds())
	for _, f := range b.apply {
		f()
	}
	*b = maintBatch{}
	return nil
}

// persistAcks writes the positions of shards whose consumers acknowledged something and deletes the
// events every registered consumer has acknowledged. Without registered consumers nothing is deleted.
func (q *Queue) persistAcks() error {
	q.dirtyMu.Lock()
	work := make([]int, 0, len(q.dirty))
	for id := range q.dirty {
		work = append(work, id)
	}
	clear(q.dirty)
	q.dirtyMu.Unlock()
	slices.Sort(work)

	q.shardsMu.RLock()
	names := make([]string, len(q.consumers))
	for i, c := range q.consumers {
		names[i] = c.name
	}
	q.shardsMu.RUnlock()

	var b maintBatch
	for i := 0; i < len(work); {
		s := q.shard(work[i])
		if s == nil {
			i++
			continue
		}
		if q.maintOps-b.ops() < q.maintOps/8 {
			if err := q.commitMaint(&b); err != nil {
				q.requeueDirty(work)
				return err
			}
		}
		more, err := q.planAckDeletes(s, names, &b, q.maintOps-b.ops())
		if err != nil {
			q.requeueDirty(work)
			return err
		}
		if more {
			if err := q.commitMaint(&b); err != nil {
				q.requeueDirty(work)
				return err
			}
		}
		if !more {
			i++
		}
	}
	if err := q.commitMaint(&b); err != nil {
		q.requeueDirty(work)
		return err
	}
	return nil
}

func (q *Queue) requeueDirty(ids []int) {
	for _, id := range ids {
		q.markDirty(id)
	}
}

// planAckDeletes adds to b the shard's moved positions and the deletion of up to room events that all
// consumers acknowledged. more reports that the shard has more to delete once b is committed.
func (q *Queue) planAckDeletes(s *shardLog, names []string, b *maintBatch, room int) (more bool, err error) {
	s.mu.Lock()
	// Every registered consumer holds events back, even one registered since names was taken (its
	// position is persisted on a later round).
	snap := slices.Clone(s.cons)
	s.mu.Unlock()
	if len(snap) == 0 {
		return false, nil
	}
	minPos := uint64(math.MaxUint64)
	for i, cp := range snap {
		minPos = min(minPos, cp.pos)
		if i < len(names) && cp.pos != cp.persisted {
			b.sets = append(b.sets, KV{Key: consumerKey(names[i], s.id), Value: encodeUint64(cp.pos)})
		}
	}
	// Whole blocks go, once every consumer acknowledged their last event.
	var blocks []blockRef
	var next uint64
	if s.count > 0 && minPos >= s.head && room > 0 {
		blocks, next, err = q.blocksIn(s, s.head, minPos, room)
		if err != nil {
			return false, err
		}
	}
	n := 0
	for _, b := range blocks {
		n += b.n
	}
	meta := shardMeta{head: next, tail: s.tail, count: s.count - n}
	if len(blocks) > 0 {
		for _, bl := range blocks {
			b.dels = append(b.dels, bl.key)
		}
		b.sets = append(b.sets, KV{Key: shardMetaKey(s.id), Value: meta.encode()})
	}
	more = len(blocks) == room && next != 0
	b.apply = append(b.apply, func() {
		s.mu.Lock()
		for i, cp := range snap[:min(len(snap), len(names))] {
			s.cons[i].persisted = cp.pos
		}
		if len(blocks) > 0 {
			s.count, s.head = meta.count, meta.head
			q.cacheDropThrough(s, blocks[len(blocks)-1].last)
			forgetBlocksThrough(s, blocks[len(blocks)-1].last)
		}
		s.mu.Unlock()
		q.total.Add(-int64(n))
	})
	return more, nil
}

// enforceBound drops the oldest events overall (lowest sequences, whatever their shard) while more than
// MaxEvents are stored. Consumers positioned before a dropped event skip it.
func (q *Queue) enforceBound() error {
	for {
		excess := q.total.Load() - int64(q.o.MaxEvents)
		if excess <= 0 {
			return nil
		}
		n, err := q.dropOldest(int(min(excess, int64(q.maintOps))))
		if err != nil {
			return err
		}
		if n == 0 {
			return nil // memory says too many, the store has none: nothing more to do
		}
	}
}

// dropCursor walks one shard's stored blocks in order, for the merge in dropOldest.
type dropCursor struct {
	s       *shardLog
	buf     []blockRef
	i       int
	dropped []blockRef
}

func (c *dropCursor) cur() blockRef { return c.buf[c.i] }

type dropHeap []*dropCursor

func (h dropHeap) Len() int           { return len(h) }
func (h dropHeap) Less(i, j int) bool { return h[i].cur().first < h[j].cur().first }
func (h dropHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dropHeap) Push(x any)        { *h = append(*h, x.(*dropCursor)) }
func (h *dropHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// dropOldest deletes the oldest blocks, merging the shards' logs by their first events, until at least k
// events are gone (a block goes whole), and returns how many went.
func (q *Queue) dropOldest(k int) (int, error) {
	q.shardsMu.RLock()
	shards := make([]*shardLog, 0, len(q.shards))
	for _, s := range q.shards {
		if s.count > 0 {
			shards = append(shards, s)
		}
	}
	q.shardsMu.RUnlock()
	fetch := max(min(k, 64), 1)
	var h dropHeap
	for _, s := range shards {
		buf, _, err := q.blocksIn(s, s.head, math.MaxUint64, fetch)
		if err != nil {
			return 0, err
		}
		if len(buf) > 0 {
			h = append(h, &dropCursor{s: s, buf: buf})
		}
	}
	heap.Init(&h)
	var touched []*dropCursor
	dropped := 0
	for dropped < k && h.Len() > 0 {
		c := h[0]
		b := c.cur()
		if len(c.dropped) == 0 {
			touched = append(touched, c)
		}
		c.dropped = append(c.dropped, b)
		dropped += b.n
		c.i++
		if c.i == len(c.buf) {
			buf, _, err := q.blocksIn(c.s, b.last+1, math.MaxUint64, fetch)
			if err != nil {
				return 0, err
			}
			c.buf, c.i = buf, 0
		}
		if len(c.buf) == 0 {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	if dropped == 0 {
		return 0, nil
	}

	var b maintBatch
	lost := 0 // dropped before every consumer acknowledged them
	for _, c := range touched {
		s, blocks := c.s, c.dropped
		var next uint64
		if c.i < len(c.buf) {
			next = c.cur().first
		}
		n := 0
		for _, bl := range blocks {
			n += bl.n
			b.dels = append(b.dels, bl.key)
		}
		meta := shardMeta{head: next, tail: s.tail, count: s.count - n}
		b.sets = append(b.sets, KV{Key: shardMetaKey(s.id), Value: meta.encode()})
		last := blocks[len(blocks)-1].last
		// The sequences of a block a consumer stands inside, read while it is still stored.
		s.mu.Lock()
		positions := make([]uint64, len(s.cons))
		for i := range s.cons {
			positions[i] = s.cons[i].pos
		}
		s.mu.Unlock()
		inside := map[int][]uint64{}
		minPos := uint64(math.MaxUint64)
		for _, pos := range positions {
			minPos = min(minPos, pos)
		}
		for j, bl := range blocks {
			for _, pos := range positions {
				if bl.first <= pos && pos < bl.last && inside[j] == nil {
					seqs, err := q.blockSeqs(s.id, bl)
					if err != nil {
						return 0, err
					}
					inside[j] = seqs
				}
			}
			// What every consumer had acknowledged is not lost, though it was still stored.
			switch {
			case len(positions) == 0 || bl.first > minPos:
				lost += bl.n
			case inside[j] != nil:
				for _, seq := range inside[j] {
					if seq > minPos {
						lost++
					}
				}
			}
		}
		b.apply = append(b.apply, func() {
			s.mu.Lock()
			s.count, s.head = meta.count, meta.head
			q.cacheDropThrough(s, last)
			forgetBlocksThrough(s, last)
			for i := range s.cons {
				cp := &s.cons[i]
				// Dropped events after a consumer's position were counted as unacknowledged. A block
				// the consumer moved into since is left to resync (the count errs high).
				for j, bl := range blocks {
					switch {
					case bl.first > cp.pos:
						cp.unacked -= bl.n
					case inside[j] != nil:
						for _, seq := range inside[j] {
							if seq > cp.pos {
								cp.unacked--
							}
						}
					}
				}
				s.resync(cp)
				k := 0
				for k < len(cp.ahead) && cp.ahead[k].Seq <= last {
					k++
				}
				q.dropAhead(cp, k)
			}
			s.mu.Unlock()
		})
	}
	if err := q.commitMaint(&b); err != nil {
		return 0, err
	}
	q.total.Add(-int64(dropped))
	if lost > 0 {
		q.m.dropped.Add(float64(lost))
		q.drops.note(q.log, lost, q.o.MaxEvents)
	}
	q.recheckFences()
	return dropped, nil
}

// dropLog rate-limits the warning about dropped events: one line per 10 seconds with the count since the
// last line.
type dropLog struct {
	last    time.Time
	pending int
}

const dropLogEvery = 10 * time.Second

func (d *dropLog) note(log *zap.Logger, n, maxEvents int) {
	d.pending += n
	if time.Since(d.last) < dropLogEvery {
		return
	}
	log.Warn("event queue full: dropped the oldest events (is the bot down? raise events.max_queue_events to keep more)",
		zap.Int("dropped", d.pending), zap.Int("max_queue_events", maxEvents))
	d.last, d.pending = time.Now(), 0
}
