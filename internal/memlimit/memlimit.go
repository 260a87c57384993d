// Package memlimit keeps Go's soft memory limit at a floor (four fifths of store.memory_limit) that rises
// with what the process needs. The floor keeps the heap from doubling between collections while
// Badger's table builders swell under a firehose (issue #9); rising with the live heap and the runtime's
// other memory (goroutine stacks, above all: thousands of shards) keeps a process whose own needs pass
// the floor from being collected continuously, which a fixed limit below them does (3,000 shards with
// store.memory_limit at 64 MiB: 1.8 cores idle against 0.1).
package memlimit

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Headroom is how far above the live heap the limit stays once the process needs more than the floor:
// the next collection comes after the heap grew by half of what is live (Go's default, GOGC=100, waits
// for all of it).
const Headroom = 0.5

// For is the limit for a live heap of live bytes and other bytes of the runtime's memory that are not
// heap objects (stacks, the collector's metadata, the runtime's own): the floor, or other plus the live
// heap plus Headroom when that is higher.
func For(floor, live, other int64) int64 {
	return max(floor, other+live+int64(float64(live)*Headroom))
}

// The runtime's figures For reads: the limit counts all the memory the runtime has mapped and not
// released, of which the heap's objects, and its free and unused spans, grow and shrink with the heap.
var names = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
}

// Needs reads the live heap (as the last collection marked it) and the runtime's other memory.
func Needs() (live, other int64) {
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	metrics.Read(s)
	v := make([]int64, len(s))
	for i := range s {
		if s[i].Value.Kind() == metrics.KindUint64 {
			v[i] = int64(s[i].Value.Uint64())
		}
	}
	return v[0], max(0, v[1]-v[2]-v[3]-v[4]-v[5])
}

// Keep sets the limit from floor now and after every check (every interval) until ctx ends, then gives
// the runtime's earlier limit back. Reading the figures costs no collection.
func Keep(ctx context.Context, floor int64, interval time.Duration) {
	live, other := Needs()
	set := For(floor, live, other)
	before := debug.SetMemoryLimit(set)
	defer debug.SetMemoryLimit(before)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		live, other := Needs()
		if want := For(floor, live, other); want != set {
			debug.SetMemoryLimit(want)
			set = want
		}
	}
}
