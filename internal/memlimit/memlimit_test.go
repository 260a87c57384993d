package memlimit

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/testkit"
)

func TestForIsTheFloorUntilTheProcessNeedsMore(t *testing.T) {
	const floor = 128 << 20
	for _, c := range []struct{ live, other, want int64 }{
		{0, 0, floor},
		{64 << 20, 10 << 20, floor},
		{80 << 20, 8 << 20, floor},       // 8 + 80 × 1.5 = 128 MiB: still the floor
		{80 << 20, 9 << 20, 129 << 20},   // past it: the other memory, the live heap and half again
		{40 << 20, 120 << 20, 180 << 20}, // thousands of shards' stacks: never a limit under them
		{300 << 20, 100 << 20, 550 << 20},
	} {
		if got := For(floor, c.live, c.other); got != c.want {
			t.Errorf("For(%d MiB floor, %d MiB live, %d MiB other) = %d MiB, want %d MiB", floor>>20, c.live>>20, c.other>>20, got>>20, c.want>>20)
		}
	}
}

// sink keeps what the test allocates reachable.
var sink [][]byte

// TestKeepRaisesTheLimitAboveALiveHeapPastTheFloor: a live heap of ~48 MiB against a 16 MiB floor (a
// gateway whose shards need more than store.memory_limit allows for) gets a limit above it, so the
// collector does not run continuously; when the heap is freed the limit falls back to the floor, and
// when Keep ends the runtime's earlier limit is back.
func TestKeepRaisesTheLimitAboveALiveHeapPastTheFloor(t *testing.T) {
	const floor = 24 << 20
	before := debug.SetMemoryLimit(-1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Keep(ctx, floor, 10*time.Millisecond); close(done) }()

	current := func() int64 { return debug.SetMemoryLimit(-1) }
	testkit.Eventually(t, 5*time.Second, "the floor set", func() bool { return current() == floor })
	for range 48 {
		sink = append(sink, make([]byte, 1<<20))
	}
	runtime.GC()
	testkit.Eventually(t, 5*time.Second, "the limit above the live heap", func() bool { return current() >= 48<<20*3/2 })
	sink = nil
	runtime.GC()
	runtime.GC()
	testkit.Eventually(t, 5*time.Second, "the limit back at the floor", func() bool { return current() == floor })
	cancel()
	<-done
	if got := current(); got != before {
		t.Errorf("after Keep the limit is %d, want the earlier %d", got, before)
	}
}
