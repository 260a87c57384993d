package queue

import (
	"container/heap"
	"errors"
	"math"
	"slices"
	"sort"
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
	var seqs []uint64
	var next uint64
	if s.count > 0 && minPos >= s.head && room > 0 {
		seqs, next, err = q.seqsIn(s, s.head, minPos, room)
		if err != nil {
			return false, err
		}
	}
	meta := shardMeta{head: next, tail: s.tail, count: s.count - len(seqs)}
	if len(seqs) > 0 {
		for _, seq := range seqs {
			b.dels = append(b.dels, eventKey(s.id, seq))
		}
		b.sets = append(b.sets, KV{Key: shardMetaKey(s.id), Value: meta.encode()})
	}
	more = next != 0 && next <= minPos
	b.apply = append(b.apply, func() {
		s.mu.Lock()
		for i, cp := range snap[:min(len(snap), len(names))] {
			s.cons[i].persisted = cp.pos
		}
		if len(seqs) > 0 {
			s.count, s.head = meta.count, meta.head
			q.cacheDropThrough(s, seqs[len(seqs)-1])
		}
		s.mu.Unlock()
		q.total.Add(-int64(len(seqs)))
	})
	return more, nil
}

// seqsIn returns up to limit stored sequences of the shard in [from, to], and next, the first stored
// sequence after those returned (0 if none). It reads the cache when it covers the range, else the store.
// Committer only (or with s.mu held), so that memory and store agree.
func (q *Queue) seqsIn(s *shardLog, from, to uint64, limit int) (seqs []uint64, next uint64, err error) {
	if s.cacheFrom <= from {
		i := sort.Search(len(s.cache), func(i int) bool { return s.cache[i].Seq >= from })
		for ; i < len(s.cache); i++ {
			seq := s.cache[i].Seq
			if seq > to || len(seqs) == limit {
				return seqs, seq, nil
			}
			seqs = append(seqs, seq)
		}
		return seqs, 0, nil
	}
	err = q.scanKeys(shardPrefix(s.id), eventKey(s.id, from), func(k []byte) error {
		seq := seqOfKey(k)
		if seq > to || len(seqs) == limit {
			next = seq
			return store.ErrStopScan
		}
		seqs = append(seqs, seq)
		return nil
	})
	return seqs, next, err
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

// dropCursor walks one shard's stored sequences in order, for the merge in dropOldest.
type dropCursor struct {
	s       *shardLog
	buf     []uint64
	i       int
	dropped []uint64
}

func (c *dropCursor) cur() uint64 { return c.buf[c.i] }

type dropHeap []*dropCursor

func (h dropHeap) Len() int           { return len(h) }
func (h dropHeap) Less(i, j int) bool { return h[i].cur() < h[j].cur() }
func (h dropHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dropHeap) Push(x any)        { *h = append(*h, x.(*dropCursor)) }
func (h *dropHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// dropOldest deletes the k events with the lowest sequences, merging the shards' logs by their heads.
func (q *Queue) dropOldest(k int) (int, error) {
	q.shardsMu.RLock()
	var h dropHeap
	for _, s := range q.shards {
		if s.count > 0 {
			h = append(h, &dropCursor{s: s, buf: []uint64{s.head}})
		}
	}
	q.shardsMu.RUnlock()
	heap.Init(&h)
	var touched []*dropCursor
	dropped := 0
	fetch := min(k, 64)
	for dropped < k && h.Len() > 0 {
		c := h[0]
		seq := c.cur()
		if len(c.dropped) == 0 {
			touched = append(touched, c)
		}
		c.dropped = append(c.dropped, seq)
		dropped++
		c.i++
		if c.i == len(c.buf) {
			buf, _, err := q.seqsIn(c.s, seq+1, math.MaxUint64, fetch)
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
	for _, c := range touched {
		s, seqs := c.s, c.dropped
		var next uint64
		if c.i < len(c.buf) {
			next = c.cur()
		}
		meta := shardMeta{head: next, tail: s.tail, count: s.count - len(seqs)}
		for _, seq := range seqs {
			b.dels = append(b.dels, eventKey(s.id, seq))
		}
		b.sets = append(b.sets, KV{Key: shardMetaKey(s.id), Value: meta.encode()})
		b.apply = append(b.apply, func() {
			s.mu.Lock()
			s.count, s.head = meta.count, meta.head
			q.cacheDropThrough(s, seqs[len(seqs)-1])
			for i := range s.cons {
				cp := &s.cons[i]
				// Dropped events after a consumer's position were counted as unacknowledged.
				after := len(seqs) - sort.Search(len(seqs), func(j int) bool { return seqs[j] > cp.pos })
				cp.unacked -= after
				s.resync(cp)
				k := 0
				for k < len(cp.ahead) && cp.ahead[k].Seq <= seqs[len(seqs)-1] {
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
	q.m.dropped.Add(float64(dropped))
	q.drops.note(q.log, dropped, q.o.MaxEvents)
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
