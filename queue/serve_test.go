package queue

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/testkit"
)

// serve runs c.Serve with step until the test ends.
func serve(t *testing.T, c *Consumer, step func(ctx context.Context, shard int) bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, step) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after its context was cancelled")
		}
	})
}

// An event appended after the shard's step read nothing, but before its goroutine ended, must not wait
// for another append: the wake found the goroutine still running, so the goroutine reads once more.
func TestServeReadsAnAppendThatRacesItsExit(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.consumer("bot")
	e.append([]Record{rec(1, 0)})
	var handled atomic.Int64
	var raced atomic.Bool
	serve(t, c, func(ctx context.Context, shard int) bool {
		recs, err := c.Read(shard, 10)
		if err != nil {
			t.Errorf("Read: %v", err)
			return false
		}
		if len(recs) == 0 {
			if raced.CompareAndSwap(false, true) {
				// Returns once committed and announced: the wake comes before this step returns.
				e.append([]Record{rec(1, 1)})
			}
			return false
		}
		handled.Add(int64(len(recs)))
		c.Ack(shard, recs[len(recs)-1].Seq)
		return true
	})
	testkit.Eventually(t, 10*time.Second, "both events handled, the second appended between an empty read and the exit", func() bool {
		return handled.Load() == 2
	})
}

// A shard held by a fence has no goroutine; passing the fence (an Ack on another shard) starts it.
func TestServeWakesShardsHeldByAFenceWhenItPasses(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.consumer("bot")
	e.append([]Record{rec(1, 0)})
	if _, err := e.q.SetFence(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.append([]Record{rec(2, 0)})
	release := make(chan struct{})
	var heldEmpty, handled2 atomic.Int64
	serve(t, c, func(ctx context.Context, shard int) bool {
		recs, err := c.Read(shard, 10)
		if err != nil || len(recs) == 0 {
			if shard == 2 {
				heldEmpty.Add(1)
			}
			return false
		}
		if shard == 1 {
			select {
			case <-release:
			case <-ctx.Done():
				return false
			}
		} else {
			handled2.Add(int64(len(recs)))
		}
		c.Ack(shard, recs[len(recs)-1].Seq)
		return true
	})
	testkit.Eventually(t, 10*time.Second, "shard 2 read nothing behind the fence", func() bool { return heldEmpty.Load() > 0 })
	if n := handled2.Load(); n != 0 {
		t.Fatalf("shard 2 handled %d events before shard 1 acknowledged the event before the fence", n)
	}
	close(release)
	testkit.Eventually(t, 10*time.Second, "shard 2's event handled once shard 1 passed the fence", func() bool { return handled2.Load() == 1 })
}

func TestServeRunsOnceAtATimePerConsumer(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.consumer("bot")
	started := make(chan struct{})
	var once sync.Once
	serve(t, c, func(ctx context.Context, shard int) bool {
		once.Do(func() { close(started) })
		return false
	})
	e.append([]Record{rec(1, 0)})
	<-started
	if err := c.Serve(context.Background(), func(context.Context, int) bool { return false }); err == nil {
		t.Fatal("a second Serve of the same consumer returned nil, want an error")
	}
}
