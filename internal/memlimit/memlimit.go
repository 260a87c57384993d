// Package memlimit keeps Go's soft memory limit at a floor (four fifths of store.memory_limit) that rises
// with the live heap. The floor keeps the heap from doubling between collections while Badger's table
// builders swell under a firehose (issue #9); rising with the live heap keeps a process whose own needs
// pass the floor (thousands of shards at ~50-100 KB each) from being collected continuously, which a fixed
// limit below the live heap would do.
package memlimit

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Headroom is how far above the live heap the limit stays when the live heap passes the floor: the next
// collection comes after the heap grew by half of what is live (Go's default, GOGC=100, waits for all of it).
const Headroom = 0.5

// For is the limit for a live heap of live bytes: the floor, or the live heap plus Headroom when that is
// higher.
func For(floor, live int64) int64 {
	return max(floor, live+int64(float64(live)*Headroom))
}

const liveMetric = "/gc/heap/live:bytes"

// Keep sets the limit from floor now and after every check (every interval) until ctx ends, then gives
// the runtime's earlier limit back. It reads the live heap the last collection marked, so it costs no
// collection of its own.
func Keep(ctx context.Context, floor int64, interval time.Duration) {
	before := debug.SetMemoryLimit(For(floor, 0))
	defer debug.SetMemoryLimit(before)
	sample := []metrics.Sample{{Name: liveMetric}}
	t := time.NewTicker(interval)
	defer t.Stop()
	set := For(floor, 0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			continue
		}
		if want := For(floor, int64(sample[0].Value.Uint64())); want != set {
			debug.SetMemoryLimit(want)
			set = want
		}
	}
}
