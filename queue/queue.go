// Package queue is dd's durable event log: the gateway's dispatch events, partitioned by shard, kept on
// disk until every consumer (delivery to the bot, the cache) has acknowledged them, so a bot that is down
// or restarting loses nothing. Appends from many shards are group-committed by one goroutine; the log is
// bounded (the oldest events overall are dropped past MaxEvents, and counted).
//
// It is not a delivery mechanism (see package delivery) and does not parse payloads: it stores the bytes
// the gateway sent and gives them back in order. Delivery is at-least-once: a consumer's position is
// persisted lazily, so after a crash some events are read again, never skipped.
package queue

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/store"
)

// ErrClosed is returned by calls on a closed queue.
var ErrClosed = errors.New("queue: closed")

// Store is what the queue needs from dd's store; *store.Store implements it.
type Store interface {
	Get(key []byte) ([]byte, error)
	Update(fn func(w store.Writer) error) error
	Scan(prefix, from []byte, fn func(key, value []byte) error) error
}

// A Store may also scan keys without their values (*store.Store does): finding what to delete, counting
// and checking for an event then read no payloads.
type keyScanner interface {
	ScanKeys(prefix, from []byte, fn func(key []byte) error) error
}

// scanKeys is Store.Scan for callers that need only the keys.
func (q *Queue) scanKeys(prefix, from []byte, fn func(key []byte) error) error {
	if ks, ok := q.st.(keyScanner); ok {
		return ks.ScanKeys(prefix, from, fn)
	}
	return q.st.Scan(prefix, from, func(k, _ []byte) error { return fn(k) })
}

// A Store may also watch its disk (*store.Store does). Then Append waits while the store refuses new
// data for lack of space (store.ErrDiskFull), and the queue's deletions and positions, which free space
// or stay tiny, go through Reclaim, which the store allows further into its reserve.
type diskStore interface {
	Reclaim(fn func(w store.Writer) error) error
	DiskFull() (full bool, changed <-chan struct{})
	DiskErr() error
	MaxTxn() (bytes, count int)
}

// Options configure Open. Zero values take the defaults given.
type Options struct {
	// MaxEvents bounds the events stored (events.max_queue_events). Past it the oldest events overall are
	// dropped. Default 10,000,000.
	MaxEvents int
	// CacheBytes bounds the memory kept for the newest events of each shard, so that consumers that keep
	// up read from memory instead of the store; what consumers behind it read ahead from the store is
	// bounded by half as much, all shards and consumers together. Default: a sixteenth of the store's
	// memory budget (store.memory_limit) when the store has one, else 64 MiB.
	CacheBytes int
	// FlushInterval is how long consumers' positions and the deletion of acknowledged events may lag.
	// Default 100ms.
	FlushInterval time.Duration
	// DiskFullWait is how long Append waits for space while the store's disk is full before it fails
	// with store.ErrDiskFull (the shard then drops its connection and resumes later; Discord replays).
	// Long enough that a shard does not reconnect in a loop, shorter than a gateway heartbeat interval
	// (41 s) so that the shard's own zombie check does not fire first. Default 30s.
	DiskFullWait time.Duration
	Logger       *zap.Logger
	// Registerer receives the queue's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

const (
	defaultMaxEvents     = 10_000_000
	defaultCacheBytes    = 64 << 20
	defaultFlushInterval = 100 * time.Millisecond
	defaultDiskFullWait  = 30 * time.Second

	// A commit gathers at most this much (or half of what the store takes in one transaction, when it
	// says); more waits for the next one. Badger refuses transactions larger than 15% of a memtable
	// (4.8 MB with the store's options on a large disk, less on a small one).
	maxBatchBytes   = 2 << 20
	maxBatchRecords = 4096
	// Deletions are written in transactions of at most this many operations (or half of what the store
	// takes in one transaction, when it says).
	maxMaintenanceOps = 4096
	// A consumer reading the store reads this much ahead of what it asked for (per shard), while the
	// read-ahead of every consumer and shard together stays under half of CacheBytes.
	readAheadRecords = 256
	readAheadBytes   = 64 << 10
	// A shard keeps at most this many records in memory, and the bounds of at most this many blocks.
	maxCachedPerShard = 1024
	// recordOverhead is what a cached record costs beyond its payload.
	recordOverhead = 96
)

// Queue is the durable, ordered, bounded event log. Its methods are safe for concurrent use.
type Queue struct {
	st   Store
	disk diskStore // st, when it watches its disk
	o    Options
	// batch bounds of one commit, and the operations of one maintenance transaction
	batchBytes, batchRecords, maintOps int
	log                                *zap.Logger
	instance                           string
	m                                  *metrics

	// shardsMu guards the shards map, the consumers list and savedPos. Lock order: shardsMu, then a
	// shardLog's mu.
	shardsMu      sync.RWMutex
	shards        map[int]*shardLog
	shardsChanged chan struct{} // closed and replaced when a shard appears
	consumers     []*Consumer
	savedPos      map[string]map[int]uint64 // positions found at Open

	pendMu  sync.Mutex
	pending []*appendReq
	closed  bool

	dirtyMu sync.Mutex
	dirty   map[int]struct{} // shards whose consumer positions moved

	// Ordering fences (fence.go). Lock order: fenceMu, then shardsMu, then a shardLog's mu.
	fenceMu      sync.Mutex
	fences       []uint64 // ascending: fences some consumer has not passed
	fencesPassed []uint64 // passed by every consumer, to delete from the store
	fenceReq     chan fenceReq

	wake      chan struct{}
	noWait    chan struct{} // closed by StopWaitingForDisk
	noWaitOne sync.Once
	flushReq  chan chan error
	closing   chan struct{}
	done      chan struct{}
	closeErr  error
	closeMu   sync.Once

	total      atomic.Int64 // events stored
	aheadBytes atomic.Int64 // what consumers have read ahead (consumerPos.ahead), all shards together

	// Owned by the committer goroutine.
	nextSeq    uint64
	cacheBytes int
	drops      dropLog
}

// shardLog is the in-memory view of one shard's log. The committer is its only writer (under mu), so the
// committer may read the fields it owns without mu.
type shardLog struct {
	id int

	mu        sync.Mutex
	count     int    // events stored
	head      uint64 // lowest stored seq, when count > 0
	tail      uint64 // highest seq ever stored
	cache     []Record
	cacheFrom uint64        // the cache holds every stored record with Seq >= cacheFrom
	cons      []consumerPos // by consumer index
	changed   chan struct{} // closed and replaced when records are appended

	// The committer's record of the shard's stored blocks (block.go), so that finding what to delete
	// reads no keys while it covers the range: every stored block whose first event is at or after
	// blocksFrom, oldest first. Committer only.
	blocks     []blockRef
	blocksFrom uint64
}

// consumerPos is one consumer's position in one shard.
type consumerPos struct {
	pos       uint64 // acknowledged up to and including this seq
	persisted uint64 // what the store holds
	unacked   int    // stored records after pos (for Depth)
	// lastRead is what the last read from the store returned: events in (pos, to], n of them. Acking
	// exactly that then needs no second scan to count them.
	lastRead struct {
		pos, to uint64
		n       int
	}
	// ahead holds the stored events that followed aheadAfter when the consumer last read the store,
	// beyond what it asked for: a consumer behind the cache then costs one store scan per
	// readAheadRecords events instead of one per Read.
	ahead      []Record
	aheadAfter uint64
	aheadBytes int // ahead's share of Queue.aheadBytes
}

type appendReq struct {
	recs []Record
	also []KV
	done chan error
	err  error
}

// Open loads the queue's state from st (a fast read of per-shard summaries and positions, not of the
// events) and starts its committer. Close it before closing st.
func Open(st Store, o Options) (*Queue, error) {
	if o.MaxEvents <= 0 {
		o.MaxEvents = defaultMaxEvents
	}
	if m, ok := st.(interface{ MemoryLimit() int64 }); ok && o.CacheBytes <= 0 {
		o.CacheBytes = int(m.MemoryLimit() / 16)
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = defaultCacheBytes
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = defaultFlushInterval
	}
	if o.DiskFullWait <= 0 {
		o.DiskFullWait = defaultDiskFullWait
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	q := &Queue{
		st:            st,
		o:             o,
		batchBytes:    maxBatchBytes,
		batchRecords:  maxBatchRecords,
		maintOps:      maxMaintenanceOps,
		log:           o.Logger.Named("queue"),
		shards:        map[int]*shardLog{},
		shardsChanged: make(chan struct{}),
		savedPos:      map[string]map[int]uint64{},
		dirty:         map[int]struct{}{},
		wake:          make(chan struct{}, 1),
		noWait:        make(chan struct{}),
		flushReq:      make(chan chan error),
		fenceReq:      make(chan fenceReq),
		closing:       make(chan struct{}),
		done:          make(chan struct{}),
		nextSeq:       1,
	}
	if d, ok := st.(diskStore); ok {
		q.disk = d
		b, n := d.MaxTxn()
		q.batchBytes, q.batchRecords = max(min(maxBatchBytes, b/2), 1), max(min(maxBatchRecords, n/3), 1)
		q.maintOps = max(min(maxMaintenanceOps, n/2), 16)
	}
	if err := q.load(); err != nil {
		return nil, err
	}
	m, err := newMetrics(q, o.Registerer)
	if err != nil {
		return nil, err
	}
	q.m = m
	q.log.Info("queue opened", zap.String("instance", q.instance), zap.Int("shards", len(q.shards)),
		zap.Int64("events", q.total.Load()), zap.Uint64("next_seq", q.nextSeq), zap.Uint64s("fences", q.fences))
	go q.run()
	return q, nil
}

func (q *Queue) load() error {
	inst, err := q.st.Get([]byte(instanceKey))
	switch {
	case errors.Is(err, store.ErrNotFound):
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("queue: instance id: %w", err)
		}
		inst = []byte(hex.EncodeToString(b[:]))
		if err := q.reclaim(func(w store.Writer) error { return w.Set([]byte(instanceKey), inst) }); err != nil {
			return fmt.Errorf("queue: saving instance id: %w", err)
		}
	case err != nil:
		return fmt.Errorf("queue: reading instance id: %w", err)
	}
	q.instance = string(inst)

	b, err := q.st.Get([]byte(seqKey))
	switch {
	case err == nil:
		last, err := decodeUint64(b)
		if err != nil {
			return fmt.Errorf("queue: %s: %w", seqKey, err)
		}
		q.nextSeq = last + 1
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("queue: reading %s: %w", seqKey, err)
	}

	err = q.st.Scan([]byte(shardMetaPrefix), nil, func(k, v []byte) error {
		if len(k) != len(shardMetaPrefix)+4 {
			return fmt.Errorf("queue: malformed shard key %x", k)
		}
		meta, err := decodeShardMeta(v)
		if err != nil {
			return err
		}
		id := int(binary.BigEndian.Uint32(k[len(shardMetaPrefix):]))
		s := newShardLog(id)
		s.head, s.tail, s.count = meta.head, meta.tail, meta.count
		s.cacheFrom, s.blocksFrom = meta.tail+1, meta.tail+1
		q.shards[id] = s
		q.total.Add(int64(meta.count))
		q.nextSeq = max(q.nextSeq, meta.tail+1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("queue: loading shards: %w", err)
	}

	err = q.st.Scan([]byte(consumerPrefix), nil, func(k, v []byte) error {
		name, shard, ok := parseConsumerKey(k)
		pos, err := decodeUint64(v)
		if !ok || err != nil {
			return fmt.Errorf("queue: malformed consumer position %x", k)
		}
		if q.savedPos[name] == nil {
			q.savedPos[name] = map[int]uint64{}
		}
		q.savedPos[name][shard] = pos
		return nil
	})
	if err != nil {
		return fmt.Errorf("queue: loading consumer positions: %w", err)
	}
	if err := q.loadFences(); err != nil {
		return fmt.Errorf("queue: loading fences: %w", err)
	}
	return nil
}

func newShardLog(id int) *shardLog {
	return &shardLog{id: id, cacheFrom: 1, blocksFrom: 1, changed: make(chan struct{})}
}

// Append stores recs and the key/values also in one atomic commit, and returns once they are committed.
// Calls from many goroutines are committed together by one writer, each call's records in order and
// calls in arrival order (a later call's write to the same key wins). It sets Seq (and Time when zero)
// in recs.
//
// The shard persists its session's last sequence in also, so that it never gets ahead of the stored
// events. Only a call too large for one transaction is split (its records first, also with the last
// part); if a part fails, the error is returned and the parts before it stay committed.
//
// Payloads and also's keys and values must not be changed afterwards (the queue keeps payloads in
// memory). If ctx ends first Append returns ctx.Err(), and the records may or may not be committed.
//
// While the store's disk is full, Append waits for space, up to Options.DiskFullWait, then returns an
// error wrapping store.ErrDiskFull without committing anything.
func (q *Queue) Append(ctx context.Context, recs []Record, also ...KV) error {
	if len(recs) == 0 && len(also) == 0 {
		return nil
	}
	if err := q.waitForDisk(ctx); err != nil {
		return err
	}
	now := time.Now()
	own := slices.Clone(recs)
	for i := range own {
		if own[i].Shard < 0 || uint64(own[i].Shard) > math.MaxUint32 {
			return fmt.Errorf("queue: shard %d out of range", own[i].Shard)
		}
		if own[i].Time.IsZero() {
			own[i].Time = now
		}
	}
	for _, kv := range also {
		if len(kv.Key) >= len(keyPrefix) && string(kv.Key[:len(keyPrefix)]) == keyPrefix {
			return fmt.Errorf("queue: key %q is inside the queue's own prefix %q", kv.Key, keyPrefix)
		}
	}
	req := &appendReq{recs: own, also: also, done: make(chan error, 1)}
	q.pendMu.Lock()
	if q.closed {
		q.pendMu.Unlock()
		return ErrClosed
	}
	q.pending = append(q.pending, req)
	q.pendMu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	select {
	case err := <-req.done:
		for i := range recs {
			recs[i].Seq, recs[i].Time = own[i].Seq, own[i].Time
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitForDisk returns nil at once while the store takes writes; while its disk is full it waits for
// space, up to DiskFullWait.
func (q *Queue) waitForDisk(ctx context.Context) error {
	if q.disk == nil {
		return nil
	}
	full, changed := q.disk.DiskFull()
	if !full {
		return nil
	}
	select {
	case <-q.noWait:
		return q.diskFullErr()
	default:
	}
	q.m.diskFullWaits.Inc()
	t := time.NewTimer(q.o.DiskFullWait)
	defer t.Stop()
	for full {
		select {
		case <-changed:
		case <-t.C:
			return q.diskFullErr()
		case <-ctx.Done():
			return ctx.Err()
		case <-q.closing:
			return ErrClosed
		case <-q.noWait:
			return q.diskFullErr()
		}
		full, changed = q.disk.DiskFull()
	}
	return nil
}

// StopWaitingForDisk makes Appends stop waiting for disk space: those waiting fail at once with
// store.ErrDiskFull, and later ones do not wait. A shutting-down gateway calls it: a shard persists its
// last events with a context that is never cancelled, and a full disk would hold its shutdown.
func (q *Queue) StopWaitingForDisk() { q.noWaitOne.Do(func() { close(q.noWait) }) }

func (q *Queue) diskFullErr() error {
	if err := q.disk.DiskErr(); err != nil {
		return fmt.Errorf("queue: %w: %v", store.ErrDiskFull, err)
	}
	return fmt.Errorf("queue: %w", store.ErrDiskFull)
}

// reclaim writes what frees space or stays tiny: through the store's Reclaim when it has one.
func (q *Queue) reclaim(fn func(w store.Writer) error) error {
	if q.disk != nil {
		return q.disk.Reclaim(fn)
	}
	return q.st.Update(fn)
}

// Flush commits pending appends, persists consumers' positions and deletes what every consumer has
// acknowledged, then returns.
func (q *Queue) Flush(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case q.flushReq <- reply:
	case <-q.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close commits pending appends and positions and stops the committer. Later Appends fail with ErrClosed.
// It does not close the store.
func (q *Queue) Close() error {
	q.closeMu.Do(func() { close(q.closing) })
	<-q.done
	return q.closeErr
}

// EventID is the stable id of the event with sequence seq (the X-DD-Event-Id header).
func (q *Queue) EventID(seq uint64) string { return eventID(q.instance, seq) }

// Depth is the number of events stored (not yet acknowledged by every consumer).
func (q *Queue) Depth() int { return int(q.total.Load()) }

// ShardDepths is the number of events stored per shard.
func (q *Queue) ShardDepths() map[int]int {
	q.shardsMu.RLock()
	defer q.shardsMu.RUnlock()
	out := make(map[int]int, len(q.shards))
	for id, s := range q.shards {
		s.mu.Lock()
		out[id] = s.count
		s.mu.Unlock()
	}
	return out
}

// Shards returns the shards the queue has seen, sorted, and a channel closed when another one appears.
func (q *Queue) Shards() (ids []int, changed <-chan struct{}) {
	q.shardsMu.RLock()
	defer q.shardsMu.RUnlock()
	ids = make([]int, 0, len(q.shards))
	for id := range q.shards {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, q.shardsChanged
}

func (q *Queue) shard(id int) *shardLog {
	q.shardsMu.RLock()
	defer q.shardsMu.RUnlock()
	return q.shards[id]
}

// shardForAppend returns the shard's log, creating it (committer only).
func (q *Queue) shardForAppend(id int) *shardLog {
	if s := q.shard(id); s != nil {
		return s
	}
	q.shardsMu.Lock()
	defer q.shardsMu.Unlock()
	s := newShardLog(id)
	for _, c := range q.consumers {
		p := q.savedPos[c.name][id]
		s.cons = append(s.cons, consumerPos{pos: p, persisted: p})
	}
	q.shards[id] = s
	close(q.shardsChanged)
	q.shardsChanged = make(chan struct{})
	return s
}

func (q *Queue) markDirty(shard int) {
	q.dirtyMu.Lock()
	q.dirty[shard] = struct{}{}
	q.dirtyMu.Unlock()
}
