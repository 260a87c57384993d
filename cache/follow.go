package cache

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/queue"
)

// followBatch is how many of a shard's events are applied (and committed) together.
const followBatch = 256

// Follow applies the events of a queue consumer (the cache's own, next to the bot's delivery) until ctx
// ends or the queue closes: each shard's events in order, acknowledged once they are stored, by a worker
// that runs only while the shard has events (queue.Consumer.Serve). A restarted cache resumes from the
// consumer's persisted position; events applied again after a crash change nothing.
func (c *Cache) Follow(ctx context.Context, con *queue.Consumer) error {
	err := con.Serve(ctx, func(ctx context.Context, shard int) bool { return c.applyNext(ctx, con, shard) })
	if errors.Is(err, queue.ErrClosed) {
		return nil
	}
	return err
}

// applyNext applies the shard's next events, retrying until they are stored; false when there are none.
func (c *Cache) applyNext(ctx context.Context, con *queue.Consumer, shard int) (more bool) {
	backoff := 100 * time.Millisecond
	for {
		recs, err := con.Read(shard, followBatch)
		if err == nil && len(recs) == 0 {
			return false
		}
		if err == nil {
			payloads := make([][]byte, len(recs))
			for i, r := range recs {
				payloads[i] = r.Payload
			}
			if err = c.Apply(payloads...); err == nil {
				con.Ack(shard, recs[len(recs)-1].Seq)
				return true
			}
		}
		// The store failed: nothing was acknowledged, so the same events are read and applied again.
		c.log.Error("applying queued events to the cache failed; retrying", zap.Int("shard", shard),
			zap.Duration("after", backoff), zap.Error(err))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}
