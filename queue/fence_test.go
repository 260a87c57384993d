package queue

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func (e *env) setFence() uint64 {
	e.t.Helper()
	seq, err := e.q.SetFence(context.Background())
	if err != nil {
		e.t.Fatalf("SetFence: %v", err)
	}
	return seq
}

// storedFences lists the fences in the store.
func (e *env) storedFences() []uint64 {
	e.t.Helper()
	var out []uint64
	err := e.st.Scan([]byte(fencePrefix), nil, func(k, _ []byte) error {
		out = append(out, binary.BigEndian.Uint64(k[len(fencePrefix):]))
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// seqs is the sequences of what Read returns.
func seqs(t *testing.T, c *Consumer, shard int) []uint64 {
	t.Helper()
	recs, err := c.Read(shard, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, r := range recs {
		out = append(out, r.Seq)
	}
	return out
}

func TestFencePassesAtOnceWithNothingBeforeIt(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.consumer("bot")
	if seq := e.setFence(); seq != 0 {
		t.Fatalf("a fence on a queue that never held an event: %d, want 0", seq)
	}
	old := []Record{rec(0, 1)}
	e.append(old)
	c.Ack(0, old[0].Seq)
	if seq := e.setFence(); seq != old[0].Seq {
		t.Fatalf("SetFence = %d, want the last stored sequence %d", seq, old[0].Seq)
	}
	if f := c.Fence(); f != 0 {
		t.Errorf("a consumer with nothing before the fence stands at %d", f)
	}
	later := []Record{rec(1, 1)}
	e.append(later)
	if got := seqs(t, c, 1); !slices.Equal(got, []uint64{later[0].Seq}) {
		t.Fatalf("read %v after a fence with nothing before it, want %d", got, later[0].Seq)
	}
	e.flush()
	if f := e.storedFences(); len(f) != 0 {
		t.Errorf("fences stored %v; one every consumer passed at once needs none", f)
	}
}

func TestFenceHoldsLaterEventsUntilEarlierOnesAreAcknowledged(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.consumer("bot")
	before0, before1 := []Record{rec(0, 1), rec(0, 2)}, []Record{rec(1, 1)}
	e.append(before0)
	e.append(before1)
	fence := e.setFence()
	after1, after2 := []Record{rec(1, 2)}, []Record{rec(2, 1)} // shard 2 appears after the fence
	e.append(after1)
	e.append(after2)

	if got := seqs(t, c, 2); len(got) != 0 {
		t.Fatalf("shard 2 read %v while shards 0 and 1 hold events before the fence %d", got, fence)
	}
	if got := seqs(t, c, 1); !slices.Equal(got, []uint64{before1[0].Seq}) {
		t.Fatalf("shard 1 read %v, want only its event before the fence (%d)", got, before1[0].Seq)
	}
	c.Ack(1, before1[0].Seq)
	if got := seqs(t, c, 1); len(got) != 0 {
		t.Fatalf("shard 1 read %v after the fence while shard 0 still holds events before it", got)
	}

	// Next waits at the fence and returns once the last event before it is acknowledged.
	got := make(chan []Record, 1)
	go func() {
		recs, _ := c.Next(context.Background(), 2, 10)
		got <- recs
	}()
	if got := seqs(t, c, 0); !slices.Equal(got, []uint64{before0[0].Seq, before0[1].Seq}) {
		t.Fatalf("shard 0 read %v", got)
	}
	c.Ack(0, before0[0].Seq)
	select {
	case recs := <-got:
		t.Fatalf("Next returned %v with an event of shard 0 before the fence unacknowledged", recs)
	case <-time.After(50 * time.Millisecond):
	}
	c.Ack(0, before0[1].Seq)
	select {
	case recs := <-got:
		if len(recs) != 1 || recs[0].Seq != after2[0].Seq {
			t.Fatalf("Next returned %v, want shard 2's event %d", recs, after2[0].Seq)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still waits after every event before the fence was acknowledged")
	}
	if got := seqs(t, c, 1); !slices.Equal(got, []uint64{after1[0].Seq}) {
		t.Fatalf("shard 1 read %v after the fence was passed", got)
	}
	if f := c.Fence(); f != 0 {
		t.Errorf("consumer still stands at fence %d", f)
	}
}

// Each consumer passes a fence on its own: the bot may be past it while the cache still is not.
func TestFenceIsPerConsumer(t *testing.T) {
	e := newEnv(t, Options{})
	bot, cache := e.consumer("bot"), e.consumer("cache")
	before := []Record{rec(0, 1)}
	e.append(before)
	fence := e.setFence()
	after := []Record{rec(1, 1)}
	e.append(after)

	bot.Ack(0, before[0].Seq)
	if got := seqs(t, bot, 1); !slices.Equal(got, []uint64{after[0].Seq}) {
		t.Fatalf("the bot, past the fence, read %v", got)
	}
	if got := seqs(t, cache, 1); len(got) != 0 {
		t.Fatalf("the cache read %v while its shard 0 holds an event before the fence", got)
	}
	if bot.Fence() != 0 || cache.Fence() != fence {
		t.Fatalf("fences: bot at %d, cache at %d; want 0 and %d", bot.Fence(), cache.Fence(), fence)
	}
	cache.Ack(0, before[0].Seq)
	if got := seqs(t, cache, 1); !slices.Equal(got, []uint64{after[0].Seq}) {
		t.Fatalf("the cache, past the fence, read %v", got)
	}
}

// Fences are passed one after the other, in order.
func TestFencesArePassedInOrder(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.consumer("bot")
	a := []Record{rec(0, 1)}
	e.append(a)
	first := e.setFence()
	b := []Record{rec(1, 1)}
	e.append(b)
	second := e.setFence()
	x := []Record{rec(2, 1)}
	e.append(x)
	if got := seqs(t, c, 1); len(got) != 0 || c.Fence() != first {
		t.Fatalf("read %v between the fences before passing the first (consumer at %d)", got, c.Fence())
	}
	c.Ack(0, a[0].Seq)
	if c.Fence() != second {
		t.Fatalf("after the first fence the consumer stands at %d, want %d", c.Fence(), second)
	}
	if got := seqs(t, c, 2); len(got) != 0 {
		t.Fatalf("read %v after the second fence before passing it", got)
	}
	if got := seqs(t, c, 1); !slices.Equal(got, []uint64{b[0].Seq}) {
		t.Fatalf("read %v between the fences, want %d", got, b[0].Seq)
	}
	c.Ack(1, b[0].Seq)
	if got := seqs(t, c, 2); !slices.Equal(got, []uint64{x[0].Seq}) {
		t.Fatalf("read %v after both fences were passed", got)
	}
}

// A fence is stored: after a restart the events before it still go first, and once every consumer has
// passed it, it is deleted.
func TestFenceHoldsAcrossARestart(t *testing.T) {
	e := newEnv(t, Options{})
	e.consumer("bot")
	e.consumer("cache")
	before := []Record{rec(0, 1)}
	e.append(before)
	fence := e.setFence()
	after := []Record{rec(1, 1)}
	e.append(after)
	e.flush()
	if f := e.storedFences(); !slices.Equal(f, []uint64{fence}) {
		t.Fatalf("stored fences %v, want %d", f, fence)
	}

	e.reopen()
	bot, cache := e.consumer("bot"), e.consumer("cache")
	if got := seqs(t, bot, 1); len(got) != 0 {
		t.Fatalf("after a restart the bot read %v ahead of an event before the fence", got)
	}
	bot.Ack(0, before[0].Seq)
	cache.Ack(0, before[0].Seq)
	if got := seqs(t, cache, 1); !slices.Equal(got, []uint64{after[0].Seq}) {
		t.Fatalf("read %v after passing the fence", got)
	}
	e.flush()
	if f := e.storedFences(); len(f) != 0 {
		t.Errorf("fences %v still stored after every consumer passed them", f)
	}
	e.reopen()
	if got := seqs(t, e.consumer("bot"), 1); !slices.Equal(got, []uint64{after[0].Seq}) {
		t.Fatalf("after another restart read %v", got)
	}
}

// Events the bound drops were never acknowledged, yet hold nobody back once gone.
func TestFenceIsPassedWhenTheBoundDropsTheEventsBeforeIt(t *testing.T) {
	e := newEnv(t, Options{MaxEvents: 3})
	c := e.consumer("bot")
	e.append([]Record{rec(0, 1), rec(0, 2)})
	e.setFence()
	after := []Record{rec(1, 1), rec(1, 2), rec(1, 3)}
	e.append(after)
	e.flush() // 5 stored, 3 allowed: shard 0's two go
	if got := seqs(t, c, 1); !slices.Equal(got, []uint64{after[0].Seq, after[1].Seq, after[2].Seq}) {
		t.Fatalf("read %v once the events before the fence were dropped", got)
	}
}

// Under concurrent appends, fences and readers, no consumer reads an event after a fence before it has
// acknowledged every event before that fence.
func TestFenceOrderUnderConcurrency(t *testing.T) {
	e := newEnv(t, Options{CacheBytes: 64 << 10}) // a small cache: some reads go to the store
	const shards, perShard = 8, 300
	names := []string{"bot", "cache"}
	var cons []*Consumer
	for _, n := range names {
		cons = append(cons, e.consumer(n))
	}
	type step struct {
		read bool
		seq  uint64
	}
	logs := make([][]step, len(cons))
	var logMu sync.Mutex
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var readers sync.WaitGroup
	received := make([]int, len(cons))
	for i, c := range cons {
		for shard := range shards {
			readers.Go(func() {
				for {
					recs, err := c.Next(ctx, shard, 1+rand.IntN(20))
					if err != nil {
						return
					}
					logMu.Lock()
					for _, r := range recs {
						logs[i] = append(logs[i], step{read: true, seq: r.Seq})
					}
					logMu.Unlock()
					if rand.IntN(4) == 0 {
						time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
					}
					// Logged before the Ack, so that a read it lets through is always logged after it.
					logMu.Lock()
					for _, r := range recs {
						logs[i] = append(logs[i], step{seq: r.Seq})
					}
					received[i] += len(recs)
					logMu.Unlock()
					c.Ack(shard, recs[len(recs)-1].Seq)
				}
			})
		}
	}
	var writers sync.WaitGroup
	for shard := range shards {
		writers.Go(func() {
			for n := range perShard {
				if err := e.q.Append(ctx, []Record{rec(shard, n)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var fences []uint64
	writers.Go(func() {
		for range 20 {
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
			seq, err := e.q.SetFence(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			logMu.Lock()
			fences = append(fences, seq)
			logMu.Unlock()
		}
	})
	writers.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for {
		logMu.Lock()
		done := received[0] == shards*perShard && received[1] == shards*perShard
		logMu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %v of %d each", received, shards*perShard)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	readers.Wait()
	for i, log := range logs {
		for _, f := range fences {
			// Every event at or before f (each is read once in the end) is acknowledged before the first
			// read of one after f.
			unacked := map[uint64]bool{}
			for _, s := range log {
				if s.read && s.seq <= f {
					unacked[s.seq] = true
				}
			}
			for _, s := range log {
				if s.read && s.seq > f {
					if len(unacked) > 0 {
						t.Fatalf("%s read %d after fence %d with %d events before it unacknowledged", names[i], s.seq, f, len(unacked))
					}
					break
				}
				if !s.read {
					delete(unacked, s.seq)
				}
			}
		}
	}
	t.Logf("%d fences, %d events read by each of %d consumers", len(fences), shards*perShard, len(cons))
}
