package queue

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ddhq/dd/store"
)

// Consumer reads the queue from its own position in each shard (delivery to the bot is one, the cache
// another). An event is deleted once every registered consumer has acknowledged it, so register every
// consumer before any of them acknowledges: one registered later starts from what is still stored, and
// is held only by the fences (see SetFence) that some consumer has not passed yet.
type Consumer struct {
	q     *Queue
	name  string
	idx   int
	acked prometheus.Counter

	fenceAt atomic.Uint64 // the fence it stands at (see SetFence); 0 when none
	fence   consumerFence // guarded by q.fenceMu

	serving atomic.Pointer[func(shard int)] // the running Serve's wake, nil when none
}

// Consumer registers (or returns the already registered) consumer called name, resuming from its
// persisted positions.
func (q *Queue) Consumer(name string) (*Consumer, error) {
	if name == "" || len(name) > 255 {
		return nil, fmt.Errorf("queue: consumer name %q must be 1 to 255 bytes", name)
	}
	c, added := q.addConsumer(name)
	if added {
		q.fenceMu.Lock()
		q.advanceFence(c)
		q.fenceMu.Unlock()
	}
	return c, nil
}

func (q *Queue) addConsumer(name string) (c *Consumer, added bool) {
	q.shardsMu.Lock()
	defer q.shardsMu.Unlock()
	for _, c := range q.consumers {
		if c.name == name {
			return c, false
		}
	}
	c = &Consumer{q: q, name: name, idx: len(q.consumers), acked: q.m.acked.WithLabelValues(name)}
	c.fence.passed = make(chan struct{})
	for id, s := range q.shards {
		p := q.savedPos[name][id]
		s.mu.Lock()
		cp := consumerPos{pos: p, persisted: p}
		switch {
		case s.count == 0 || p >= s.tail:
		case p < s.head:
			cp.unacked = s.count
		default:
			cp.unacked = q.countRange(s, p+1, s.tail, s.count)
		}
		s.cons = append(s.cons, cp)
		s.mu.Unlock()
	}
	q.consumers = append(q.consumers, c)
	return c, true
}

// Name is the consumer's name.
func (c *Consumer) Name() string { return c.name }

// Shards returns the shards the queue has seen and a channel closed when another one appears.
func (c *Consumer) Shards() (ids []int, changed <-chan struct{}) { return c.q.Shards() }

// Done is closed when the queue starts closing; Next then returns ErrClosed.
func (c *Consumer) Done() <-chan struct{} { return c.q.closing }

// Read returns up to max of the shard's next unacknowledged events, in order, without waiting. Until
// they are acknowledged, Read returns them again. Their payloads are shared: do not modify them. Behind
// a fence (SetFence) it returns none of the events after it until the consumer has passed it.
func (c *Consumer) Read(shard, max int) ([]Record, error) {
	recs, _, err := c.read(shard, max)
	return recs, err
}

// read is Read that also says, when it returns nothing because of a fence, which fence held it.
func (c *Consumer) read(shard, max int) (recs []Record, heldAt uint64, err error) {
	s := c.q.shard(shard)
	if s == nil || max <= 0 {
		return nil, 0, nil
	}
	s.mu.Lock()
	cp := &s.cons[c.idx]
	pos, tail := cp.pos, s.tail
	if s.count == 0 || pos >= tail {
		s.mu.Unlock()
		return nil, 0, nil
	}
	// Loaded under s.mu: a fence is set before any event after it is appended, so an event after the
	// fence seen in this shard's log comes with the fence (or with the consumer past it).
	if at := c.fenceAt.Load(); at != 0 && at < tail {
		heldAt, tail = at, at
		if pos >= tail {
			s.mu.Unlock()
			return nil, heldAt, nil
		}
	}
	if len(cp.ahead) > 0 && cp.aheadAfter <= pos {
		i := sort.Search(len(cp.ahead), func(i int) bool { return cp.ahead[i].Seq > pos })
		if i < len(cp.ahead) {
			j := sort.Search(len(cp.ahead), func(i int) bool { return cp.ahead[i].Seq > tail })
			if j == i {
				s.mu.Unlock()
				return nil, heldAt, nil
			}
			out := make([]Record, min(max, j-i))
			copy(out, cp.ahead[i:])
			c.q.dropAhead(cp, i+len(out))
			cp.aheadAfter = out[len(out)-1].Seq
			cp.lastRead.pos, cp.lastRead.to, cp.lastRead.n = pos, cp.aheadAfter, len(out)
			s.mu.Unlock()
			c.q.setIDs(out)
			return out, 0, nil
		}
		c.q.dropAhead(cp, len(cp.ahead))
	}
	if s.cacheFrom <= pos+1 {
		i := sort.Search(len(s.cache), func(i int) bool { return s.cache[i].Seq > pos })
		j := sort.Search(len(s.cache), func(i int) bool { return s.cache[i].Seq > tail })
		if j == i {
			s.mu.Unlock()
			return nil, heldAt, nil
		}
		out := make([]Record, min(max, j-i))
		copy(out, s.cache[i:])
		s.mu.Unlock()
		c.q.setIDs(out)
		return out, 0, nil
	}
	s.mu.Unlock()

	// Behind the cache: read the store, but not past the tail memory knows, so that Ack never has to
	// accept a sequence the queue has not accounted for yet (nor past the fence). Read ahead as far as
	// the queue's read-ahead budget has room.
	var out []Record
	bytes, aheadRoom := 0, min(readAheadBytes, int(int64(c.q.o.CacheBytes/2)-c.q.aheadBytes.Load()))
	full := func() bool { return len(out) >= max && (len(out) >= max+readAheadRecords || bytes >= aheadRoom) }
	err = c.q.st.Scan(shardPrefix(shard), eventKey(shard, pos+1), func(k, v []byte) error {
		b, err := parseBlockKey(k)
		if err != nil {
			return err
		}
		if b.first > tail || full() {
			return store.ErrStopScan
		}
		stop := false
		err = decodeBlock(shard, k, v, func(r Record) bool {
			if r.Seq <= pos {
				return true
			}
			if stop = r.Seq > tail || full(); stop {
				return false
			}
			out = append(out, r)
			if len(out) > max {
				bytes += len(r.Payload) + recordOverhead
			}
			return true
		})
		if err == nil && stop {
			err = store.ErrStopScan
		}
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("queue: reading shard %d after %d: %w", shard, pos, err)
	}
	if len(out) == 0 {
		return nil, heldAt, nil
	}
	var ahead []Record
	if len(out) > max {
		out, ahead = out[:max:max], out[max:]
	}
	s.mu.Lock()
	cp = &s.cons[c.idx]
	cp.lastRead.pos, cp.lastRead.to, cp.lastRead.n = pos, out[len(out)-1].Seq, len(out)
	c.q.dropAhead(cp, len(cp.ahead))
	c.q.setAhead(cp, ahead)
	cp.aheadAfter = out[len(out)-1].Seq
	s.mu.Unlock()
	c.q.setIDs(out)
	return out, 0, nil
}

// Next is Read that waits until the shard has an unacknowledged event it may read (behind a fence, until
// the consumer has passed it), ctx ends or the queue closes.
func (c *Consumer) Next(ctx context.Context, shard, max int) ([]Record, error) {
	for {
		// Take the channel before reading, so that an append between the two is not missed.
		changed := c.q.changedChan(shard)
		recs, heldAt, err := c.read(shard, max)
		if err != nil || len(recs) > 0 {
			return recs, err
		}
		var passed <-chan struct{} // nil, never ready, when no fence held the read
		if heldAt != 0 {
			at, ch := c.heldAt()
			if at != heldAt {
				continue // passed meanwhile
			}
			passed = ch
		}
		select {
		case <-passed:
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.q.closing:
			return nil, ErrClosed
		}
	}
}

// Ack acknowledges the shard's events up to and including seq. Positions only move forward; they are
// persisted within FlushInterval, so after a crash the last acknowledged events may be read again.
func (c *Consumer) Ack(shard int, seq uint64) {
	s := c.q.shard(shard)
	if s == nil {
		return
	}
	s.mu.Lock()
	cp := &s.cons[c.idx]
	seq = min(seq, s.tail) // never past what exists: that would skip events appended later
	if seq <= cp.pos {
		s.mu.Unlock()
		return
	}
	var n int
	if lr := cp.lastRead; lr.pos == cp.pos && lr.to == seq {
		n = lr.n
	} else {
		n = c.q.countRange(s, cp.pos+1, seq, 0) // unknown: take nothing off until resync knows
	}
	cp.pos = seq
	cp.unacked -= n
	s.resync(cp)
	s.mu.Unlock()
	c.q.markDirty(shard)
	c.acked.Add(float64(n))
	// Loaded after the position moved: see advanceFence.
	if c.fenceAt.Load() != 0 {
		c.q.fenceAcked(c, shard)
	}
}

// Position is the sequence the consumer has acknowledged the shard up to.
func (c *Consumer) Position(shard int) uint64 {
	s := c.q.shard(shard)
	if s == nil {
		return c.q.savedPosition(c.name, shard)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cons[c.idx].pos
}

// Depth is the number of stored events the consumer has not acknowledged.
func (c *Consumer) Depth() int {
	n := 0
	for _, d := range c.ShardDepths() {
		n += d
	}
	return n
}

// ShardDepths is Depth per shard.
func (c *Consumer) ShardDepths() map[int]int {
	c.q.shardsMu.RLock()
	defer c.q.shardsMu.RUnlock()
	out := make(map[int]int, len(c.q.shards))
	for id, s := range c.q.shards {
		s.mu.Lock()
		out[id] = s.cons[c.idx].unacked
		s.mu.Unlock()
	}
	return out
}

func (q *Queue) savedPosition(name string, shard int) uint64 {
	q.shardsMu.RLock()
	defer q.shardsMu.RUnlock()
	return q.savedPos[name][shard]
}

func (q *Queue) setIDs(recs []Record) {
	for i := range recs {
		recs[i].ID = eventID(q.instance, recs[i].Seq)
	}
}

// changedChan is closed when the shard gets new events (or appears, if it does not exist yet).
func (q *Queue) changedChan(shard int) <-chan struct{} {
	q.shardsMu.RLock()
	s := q.shards[shard]
	if s == nil {
		defer q.shardsMu.RUnlock()
		return q.shardsChanged
	}
	q.shardsMu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// countRange counts the shard's stored events in [from, to], for the depth gauges (a count errs high,
// never low). Called with s.mu held. It is
// exact when the committer is idle; a race with a commit is corrected by resync. When the store cannot be
// read it returns unknown, which the caller picks so that the depth errs high.
func (q *Queue) countRange(s *shardLog, from, to uint64, unknown int) int {
	if s.cacheFrom <= from {
		i := sort.Search(len(s.cache), func(i int) bool { return s.cache[i].Seq >= from })
		j := sort.Search(len(s.cache), func(i int) bool { return s.cache[i].Seq > to })
		return max(0, j-i)
	}
	n := 0
	err := q.scanKeys(shardPrefix(s.id), eventKey(s.id, from), func(k []byte) error {
		b, err := parseBlockKey(k)
		if err != nil {
			return err
		}
		if b.first > to {
			return store.ErrStopScan
		}
		if b.first >= from && b.last <= to {
			n += b.n
			return nil
		}
		seqs, err := q.blockSeqs(s.id, b) // a block across from or to: at most two
		for _, seq := range seqs {
			if seq >= from && seq <= to {
				n++
			}
		}
		return err
	})
	if err != nil && !errors.Is(err, store.ErrStopScan) {
		return unknown
	}
	return n
}

// resync snaps a consumer's unacked count to the exact value where it is known without counting.
func (s *shardLog) resync(cp *consumerPos) {
	switch {
	case s.count == 0 || cp.pos >= s.tail:
		cp.unacked = 0
	case cp.pos < s.head:
		cp.unacked = s.count
	default:
		cp.unacked = min(max(cp.unacked, 0), s.count)
	}
}

// Pending reports whether the shard holds an event at or before seq that the consumer has not
// acknowledged. Unlike Read it changes nothing, so any goroutine may ask about any shard (a fence asks
// about every shard while each shard's reader reads its own).
func (c *Consumer) Pending(shard int, seq uint64) (bool, error) {
	s := c.q.shard(shard)
	if s == nil {
		return false, nil
	}
	s.mu.Lock()
	pos, limit := s.cons[c.idx].pos, min(seq, s.tail)
	if s.count == 0 || pos >= limit {
		s.mu.Unlock()
		return false, nil
	}
	if s.cacheFrom <= pos+1 {
		i := sort.Search(len(s.cache), func(i int) bool { return s.cache[i].Seq > pos })
		pending := i < len(s.cache) && s.cache[i].Seq <= limit
		s.mu.Unlock()
		return pending, nil
	}
	s.mu.Unlock()
	pending := false
	err := c.q.scanKeys(shardPrefix(shard), eventKey(shard, pos+1), func(k []byte) error {
		b, err := parseBlockKey(k)
		if err != nil {
			return err
		}
		if b.first > pos {
			pending = b.first <= limit
			return store.ErrStopScan
		}
		// The block holds pos and what follows it: its first event after pos.
		seqs, err := c.q.blockSeqs(shard, b)
		for _, seq := range seqs {
			if seq > pos {
				pending = seq <= limit
				break
			}
		}
		if err != nil {
			return err
		}
		return store.ErrStopScan
	})
	return pending, err
}

// setAhead makes recs cp's read-ahead (which must be empty), counted in the queue's read-ahead bytes.
// Called with the shard's mu held.
func (q *Queue) setAhead(cp *consumerPos, recs []Record) {
	if len(recs) == 0 {
		return
	}
	n := 0
	for _, r := range recs {
		n += len(r.Payload) + recordOverhead
	}
	cp.ahead, cp.aheadBytes = recs, n
	q.aheadBytes.Add(int64(n))
}

// dropAhead removes the first k records of cp's read-ahead. Called with the shard's mu held.
func (q *Queue) dropAhead(cp *consumerPos, k int) {
	if k <= 0 {
		return
	}
	if k >= len(cp.ahead) {
		q.aheadBytes.Add(-int64(cp.aheadBytes))
		cp.ahead, cp.aheadBytes = nil, 0
		return
	}
	n := 0
	for _, r := range cp.ahead[:k] {
		n += len(r.Payload) + recordOverhead
	}
	clear(cp.ahead[:k]) // the payloads are not kept alive by the array
	cp.ahead, cp.aheadBytes = cp.ahead[k:], cp.aheadBytes-n
	q.aheadBytes.Add(-int64(n))
}
