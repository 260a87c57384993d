package delivery

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/queue"
)

// What every sink of the queue (HTTP to the bot, Redis) does alike around its own round trip.

// nextBatch reads a shard's next events (up to max), hands them to send, which retries until they are
// taken, and acknowledges them once it did, observing their age. False when there are none, or when
// send gave up (ctx ended): then nothing is acknowledged and the events are sent again on the next start.
func nextBatch(ctx context.Context, c *queue.Consumer, shard, max int, retryRead time.Duration, log *zap.Logger,
	age prometheus.Histogram, send func([]queue.Record) bool) (more bool) {
	recs, err := c.Read(shard, max)
	if err != nil {
		// The store failed to read: nothing is acknowledged, so waiting and reading again is safe.
		log.Error("reading the event queue failed; retrying", zap.Int("shard", shard), zap.Error(err))
		return ctxsleep.Sleep(ctx, retryRead) == nil
	}
	if len(recs) == 0 || !send(recs) {
		return false
	}
	c.Ack(shard, recs[len(recs)-1].Seq)
	now := time.Now()
	for _, r := range recs {
		age.Observe(now.Sub(r.Time).Seconds())
	}
	return true
}

// inFlight takes one of slots for a round trip, counted by gauge, until release; it fails only when ctx
// ends first.
func inFlight(ctx context.Context, slots chan struct{}, gauge prometheus.Gauge) (release func(), err error) {
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	gauge.Inc()
	return func() { gauge.Dec(); <-slots }, nil
}

// backoff is the wait before retry number attempt+1: doubling from lo, capped at hi, with jitter between
// half and all of it so that shards do not retry in lockstep.
func backoff(lo, hi time.Duration, attempt int) time.Duration {
	b := hi
	if attempt < 30 {
		b = min(hi, lo<<attempt)
	}
	return b/2 + rand.N(b/2+1)
}

// register registers a sink's metrics with reg (nil: none).
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
