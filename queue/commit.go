package queue

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/store"
)

// run is the committer: the one goroutine that writes the queue's keys. It commits what Append calls
// have left pending (group commit), and on every tick persists positions, deletes what all consumers
// acknowledged and enforces the bound.
func (q *Queue) run() {
	defer close(q.done)
	tick := time.NewTicker(q.o.FlushInterval)
	defer tick.Stop()
	for {
		var flush chan error
		var fence *fenceReq
		maintain, closing := false, false
		select {
		case <-q.wake:
		case r := <-q.fenceReq:
			fence = &r
		case <-tick.C:
			maintain = true
		case flush = <-q.flushReq:
			maintain = true
		case <-q.closing:
			maintain, closing = true, true
			q.pendMu.Lock()
			q.closed = true
			q.pendMu.Unlock()
		}
		q.commitPending()
		if fence != nil {
			seq, err := q.setFence()
			fence.reply <- fenceReply{seq: seq, err: err}
		}
		var err error
		// Over the bound, acknowledged events are deleted first: dropping them would count as a loss.
		if maintain || q.total.Load() > int64(q.o.MaxEvents) {
			err = q.maintain()
		}
		switch {
		case errors.Is(err, store.ErrDiskFull):
			// The store said so once in the log; retried on every tick until space is back.
		case err != nil:
			q.m.commitErrors.Inc()
			q.log.Error("queue maintenance failed; retrying on the next tick", zap.Error(err))
		}
		if flush != nil {
			flush <- err
		}
		if closing {
			q.closeErr = err
			return
		}
	}
}

// commitPending commits every pending Append, in batches bounded by size.
func (q *Queue) commitPending() {
	for {
		q.pendMu.Lock()
		n, records, bytes := 0, 0, 0
		for n < len(q.pending) && (n == 0 || (records < q.batchRecords && bytes < q.batchBytes)) {
			for _, r := range q.pending[n].recs {
				bytes += len(r.Payload) + recordHeader + eventKeyLen
			}
			records += len(q.pending[n].recs)
			n++
		}
		batch := q.pending[:n:n]
		q.pending = q.pending[n:]
		if len(q.pending) == 0 {
			q.pending = nil
		}
		q.pendMu.Unlock()
		if n == 0 {
			return
		}
		q.commitAppends(batch)
	}
}

// piece is part of an Append call committed in one transaction: the whole call, unless it had to be split.
type piece struct {
	req  *appendReq
	recs []Record
	also []KV
}

func (q *Queue) commitAppends(reqs []*appendReq) {
	pieces := make([]piece, 0, len(reqs))
	for _, r := range reqs {
		for i := range r.recs {
			r.recs[i].Seq = q.nextSeq
			q.nextSeq++
		}
		pieces = append(pieces, piece{req: r, recs: r.recs, also: r.also})
	}
	q.commitPieces(pieces)
	for _, r := range reqs {
		r.done <- r.err
	}
}

// commitPieces writes pieces in one transaction. When that fails it splits them: a batch too big for one
// transaction in halves, and a failing batch too, so that one bad call does not fail the others.
// Sequences of a failed commit are never reused; gaps are harmless.
func (q *Queue) commitPieces(ps []piece) {
	live := make([]piece, 0, len(ps))
	for _, p := range ps {
		if p.req.err == nil {
			live = append(live, p)
		}
	}
	if len(live) == 0 {
		return
	}
	start := time.Now()
	metas := q.appendMetas(live)
	var written map[int][]blockRef
	err := q.st.Update(func(w store.Writer) (err error) {
		written, err = writePieces(w, live, metas)
		return err
	})
	if err == nil {
		q.m.commitSeconds.Observe(time.Since(start).Seconds())
		q.applyAppended(live, written)
		return
	}
	tooBig := errors.Is(err, store.ErrTooBig)
	switch {
	case errors.Is(err, store.ErrDiskFull):
		// Every piece would be refused the same way: fail them all (their shards resume later).
		for _, p := range live {
			p.req.err = fmt.Errorf("queue: committing %d events: %w", len(p.recs), err)
		}
		return
	case len(live) > 1:
		mid := len(live) / 2
		q.commitPieces(live[:mid])
		q.commitPieces(live[mid:])
		return
	case tooBig && len(live[0].recs) > 1:
		p, mid := live[0], len(live[0].recs)/2
		q.commitPieces([]piece{{req: p.req, recs: p.recs[:mid]}, {req: p.req, recs: p.recs[mid:], also: p.also}})
		return
	}
	q.m.commitErrors.Inc()
	live[0].req.err = fmt.Errorf("queue: committing %d events: %w", len(live[0].recs), err)
}

// shardAppend sums up what one transaction appends to one shard.
type shardAppend struct {
	first, last uint64
	n           int
	meta        shardMeta // the shard's state after the transaction
}

// appendMetas computes each touched shard's state after the pieces are committed.
func (q *Queue) appendMetas(ps []piece) map[int]*shardAppend {
	out := map[int]*shardAppend{}
	for _, p := range ps {
		for _, r := range p.recs {
			a := out[r.Shard]
			if a == nil {
				a = &shardAppend{first: r.Seq}
				if s := q.shard(r.Shard); s != nil {
					// The committer is the only writer of these fields.
					a.meta = shardMeta{head: s.head, tail: s.tail, count: s.count}
				}
				if a.meta.count == 0 {
					a.meta.head = r.Seq
				}
				out[r.Shard] = a
			}
			a.last = r.Seq
			a.n++
			a.meta.tail = r.Seq
			a.meta.count++
		}
	}
	return out
}

// writePieces stores the pieces' records, each shard's in blocks, and returns the blocks by shard.
func writePieces(w store.Writer, ps []piece, metas map[int]*shardAppend) (map[int][]blockRef, error) {
	var last uint64
	// Each shard's records go in blocks (block.go), in sequence order: the pieces' order.
	open := map[int][]*Record{}
	openBytes := map[int]int{}
	written := map[int][]blockRef{}
	var order []int
	var scratch []byte
	writeBlock := func(shard int) error {
		recs := open[shard]
		open[shard], openBytes[shard] = recs[:0], 0
		b := blockRef{first: recs[0].Seq, last: recs[len(recs)-1].Seq, n: len(recs)}
		b.key = blockKey(shard, b.first, b.last, b.n)
		var v []byte
		v, scratch = encodeBlock(recs, scratch)
		written[shard] = append(written[shard], b)
		return w.Set(b.key, v)
	}
	for _, p := range ps {
		for i := range p.recs {
			r := &p.recs[i]
			if _, ok := open[r.Shard]; !ok {
				order = append(order, r.Shard)
			}
			open[r.Shard] = append(open[r.Shard], r)
			openBytes[r.Shard] += len(r.Payload)
			if len(open[r.Shard]) == blockMaxRecords || openBytes[r.Shard] >= blockMaxBytes {
				if err := writeBlock(r.Shard); err != nil {
					return nil, err
				}
			}
			last = r.Seq
		}
	}
	for _, shard := range order {
		if len(open[shard]) > 0 {
			if err := writeBlock(shard); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range ps {
		for _, kv := range p.also {
			var err error
			if kv.Value == nil {
				err = w.Delete(kv.Key)
			} else {
				err = w.Set(kv.Key, kv.Value)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	for shard, a := range metas {
		if err := w.Set(shardMetaKey(shard), a.meta.encode()); err != nil {
			return nil, err
		}
	}
	if last != 0 {
		return written, w.Set([]byte(seqKey), encodeUint64(last))
	}
	return written, nil
}

// applyAppended brings memory in line with a committed append transaction and wakes readers.
func (q *Queue) applyAppended(ps []piece, written map[int][]blockRef) {
	byShard := map[int][]*Record{}
	var order []int
	total := 0
	for _, p := range ps {
		for i := range p.recs {
			r := &p.recs[i]
			if _, ok := byShard[r.Shard]; !ok {
				order = append(order, r.Shard)
			}
			byShard[r.Shard] = append(byShard[r.Shard], r)
			total++
		}
	}
	for _, id := range order {
		recs := byShard[id]
		s := q.shardForAppend(id)
		s.mu.Lock()
		if s.count == 0 {
			s.head = recs[0].Seq
		}
		s.tail = recs[len(recs)-1].Seq
		s.count += len(recs)
		for _, r := range recs {
			q.cacheAdd(s, r)
		}
		s.blocks = append(s.blocks, written[id]...)
		if over := len(s.blocks) - maxCachedPerShard; over > 0 {
			clear(s.blocks[:over])
			s.blocks = s.blocks[over:]
			s.blocksFrom = s.blocks[0].first
		}
		for i := range s.cons {
			s.cons[i].unacked += len(recs)
		}
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
	// After the tails moved: a Serve's step woken now reads what was just appended.
	for _, c := range q.fenceConsumers() {
		for _, id := range order {
			c.wakeServer(id)
		}
	}
	q.total.Add(int64(total))
	q.m.appended.Add(float64(total))
	q.m.batchEvents.Observe(float64(total))
}

// cacheAdd keeps r in the shard's cache when the memory budget allows, evicting the shard's oldest
// records first. The cache must stay a complete suffix of the shard's log, so a record that does not fit
// empties it. Called with s.mu held, by the committer.
func (q *Queue) cacheAdd(s *shardLog, r *Record) {
	size := len(r.Payload) + recordOverhead
	for len(s.cache) > 0 && (q.cacheBytes+size > q.o.CacheBytes || len(s.cache) >= maxCachedPerShard) {
		q.cacheEvictFront(s)
	}
	if q.cacheBytes+size > q.o.CacheBytes {
		s.cacheFrom = r.Seq + 1
		return
	}
	s.cache = append(s.cache, *r)
	q.cacheBytes += size
}

func (q *Queue) cacheEvictFront(s *shardLog) {
	q.cacheBytes -= len(s.cache[0].Payload) + recordOverhead
	s.cacheFrom = s.cache[0].Seq + 1
	s.cache[0] = Record{}
	s.cache = s.cache[1:]
	if len(s.cache) == 0 {
		s.cache = nil
	}
}

// cacheDropThrough removes records with Seq <= seq (deleted from the store). Called with s.mu held.
func (q *Queue) cacheDropThrough(s *shardLog, seq uint64) {
	for len(s.cache) > 0 && s.cache[0].Seq <= seq {
		from := s.cacheFrom
		q.cacheEvictFront(s)
		s.cacheFrom = from // still true: the cache holds every stored record from there
	}
}
