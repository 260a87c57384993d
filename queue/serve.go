package queue

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// Serve runs step for the consumer's shards, each on a goroutine of its own that lives only while the
// shard may have events to read: step reads (Read) and handles one batch of the shard, and returns
// false when Read gave it nothing, which ends the shard's goroutine. An append to the shard starts it
// again, and so does the consumer passing a fence (every shard, since the fence held them all). A shard
// with nothing to read costs no goroutine: 1,000 idle shards parked in Next held about 8 KiB of stack
// each (issue #15).
//
// At most one step runs per shard at a time, so a shard's events are handled in order; a step that
// retries (the bot is down) keeps its shard's goroutine. Serve returns when ctx ends (nil) or the queue
// closes (ErrClosed), once every step has returned; the ctx given to step ends first.
//
// One Serve at a time per consumer: a second one returns an error.
func (c *Consumer) Serve(ctx context.Context, step func(ctx context.Context, shard int) (more bool)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sv := &server{ctx: ctx, step: step, shards: map[int]*shardWorker{}}
	wake := sv.wake
	if !c.serving.CompareAndSwap(nil, &wake) {
		return fmt.Errorf("queue: consumer %q is already served", c.name)
	}
	defer c.serving.Store(nil)
	defer sv.stop() // runs after the cancel below
	// What was stored before the subscription is not announced: every shard is looked at once.
	ids, _ := c.Shards()
	for _, id := range ids {
		sv.wake(id)
	}
	var err error
	select {
	case <-ctx.Done():
	case <-c.Done():
		err = ErrClosed
	}
	cancel()
	return err
}

// server runs the steps of one Serve.
type server struct {
	ctx  context.Context
	step func(ctx context.Context, shard int) bool

	mu      sync.Mutex
	shards  map[int]*shardWorker
	stopped bool
	wg      sync.WaitGroup
}

// shardWorker says whether a shard's goroutine runs (running) and whether the shard was woken since that
// goroutine last started reading (again). A wake sets again, then starts a goroutine unless one runs;
// a goroutine that found nothing clears running, then looks at again: a wake that came between its
// empty read and its exit found running still set, and so the goroutine reads once more instead.
type shardWorker struct {
	running, again atomic.Bool
}

// wake says that the shard may have events to read. It does not block: the committer calls it.
func (sv *server) wake(shard int) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	w := sv.shards[shard]
	if w == nil {
		w = &shardWorker{}
		sv.shards[shard] = w
	}
	w.again.Store(true)
	if sv.stopped || !w.running.CompareAndSwap(false, true) {
		return
	}
	sv.wg.Go(func() { sv.run(shard, w) })
}

func (sv *server) run(shard int, w *shardWorker) {
	for sv.ctx.Err() == nil {
		w.again.Store(false) // before the read: a wake from now on is seen below
		if sv.step(sv.ctx, shard) {
			continue
		}
		w.running.Store(false)
		if !w.again.Load() || !w.running.CompareAndSwap(false, true) {
			return
		}
	}
}

// stop starts no more goroutines and waits for those running.
func (sv *server) stop() {
	sv.mu.Lock()
	sv.stopped = true
	sv.mu.Unlock()
	sv.wg.Wait()
}

// wakeServer tells the consumer's Serve, if one runs, that the shard may have events for it.
func (c *Consumer) wakeServer(shard int) {
	if fn := c.serving.Load(); fn != nil {
		(*fn)(shard)
	}
}

// wakeServerAll wakes every shard of the consumer's Serve: it passed a fence, which held them all.
func (c *Consumer) wakeServerAll() {
	fn := c.serving.Load()
	if fn == nil {
		return
	}
	ids, _ := c.q.Shards()
	for _, id := range ids {
		(*fn)(id)
	}
}
