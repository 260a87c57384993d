package cache

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/queue"
)

// followBatch is how many of a shard's events are applied (and committed) together.
const followBatch = 256

// Follow applies the events of a queue consumer (the cache's own, next to the bot's delivery) until ctx
// ends or the queue closes: each shard's events in order, acknowledged once they are stored. A restarted
// cache resumes from the consumer's persisted position; events applied again after a crash change
// nothing.
func (c *Cache) Follow(ctx context.Context, con *queue.Consumer) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := map[int]bool{}
	for {
		ids, changed := con.Shards()
		for _, shard := range ids {
			if !started[shard] {
				started[shard] = true
				wg.Go(func() { c.followShard(ctx, con, shard) })
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-con.Done():
			return nil
		}
	}
}

func (c *Cache) followShard(ctx context.Context, con *queue.Consumer, shard int) {
	backoff := 100 * time.Millisecond
	payloads := make([][]byte, 0, followBatch)
	for {
		recs, err := con.Next(ctx, shard, followBatch)
		if err == nil && len(recs) > 0 {
			payloads = payloads[:0]
			for _, r := range recs {
				payloads = append(payloads, r.Payload)
			}
			err = c.Apply(payloads...)
			if err == nil {
				con.Ack(shard, recs[len(recs)-1].Seq)
				backoff = 100 * time.Millisecond
				continue
			}
		}
		if ctx.Err() != nil || errors.Is(err, queue.ErrClosed) {
			return
		}
		// The store failed: nothing was acknowledged, so the same events are read and applied again.
		c.log.Error("applying queued events to the cache failed; retrying", zap.Int("shard", shard),
			zap.Duration("after", backoff), zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}
