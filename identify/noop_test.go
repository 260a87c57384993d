package identify

import (
	"context"
	"testing"
	"time"
)

// An embedder that paces identifies itself gets every turn at once, for every shard of a bucket.
func TestNoopGrantsAtOnce(t *testing.T) {
	var l Limiter = Noop{}
	for id := 0; id < 3; id++ { // max_concurrency would put these in one bucket
		start := time.Now()
		turn, err := l.Acquire(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Fatalf("shard %d waited %s for a no-op turn", id, d)
		}
		if wait := time.Until(turn.NotBefore); wait > 0 {
			t.Fatalf("shard %d must wait %s before identifying; a no-op turn allows it now", id, wait)
		}
		l.Sent(id, time.Now())
		// Holding the turn blocks no one, and releasing it twice is harmless.
		turn.Release(true)
		turn.Release(false)
	}
}

func TestNoopHonoursAnEndedContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (Noop{}).Acquire(ctx, 0); err == nil {
		t.Fatal("a no-op limiter granted a turn to a caller that had left")
	}
}
