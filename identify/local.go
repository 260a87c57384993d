package identify

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/ctxsleep"
)

// Local is the in-process Limiter.
type Local struct {
	window time.Duration
	margin time.Duration
	log    *zap.Logger

	mu        sync.Mutex
	buckets   []*bucket
	remaining int
	resetAt   time.Time
}

var _ Limiter = (*Local)(nil)

// bucket is one max_concurrency bucket. Discord spaces identifies by their arrival, which dd
// cannot see, only bound: the last one arrived before its answer (READY, op 9 or a close frame) came
// back, however loaded the machine or the network. arrivedBy is that bound, the release of an answered
// identify. An identify that left and got no answer (the connection dropped) may still be on its way: its
// bound is the release plus the margin.
type bucket struct {
	slot      chan struct{} // holds one token while free
	sent      bool          // the holder's IDENTIFY left
	arrivedBy time.Time
}

// NewLocal builds a limiter for a bot's limits. window is Discord's 5 s; margin is how much
// longer an identify that got no answer may take to reach Discord after its connection failed.
func NewLocal(limit SessionStartLimit, window, margin time.Duration, log *zap.Logger) *Local {
	if limit.MaxConcurrency < 1 {
		limit.MaxConcurrency = 1
	}
	if log == nil {
		log = zap.NewNop()
	}
	l := &Local{window: window, margin: margin, log: log, remaining: limit.Remaining,
		resetAt: time.Now().Add(limit.ResetAfter)}
	for i := 0; i < limit.MaxConcurrency; i++ {
		b := &bucket{slot: make(chan struct{}, 1)}
		b.slot <- struct{}{}
		l.buckets = append(l.buckets, b)
	}
	return l
}

// Acquire implements Limiter.
func (l *Local) Acquire(ctx context.Context, shardID int) (Turn, error) {
	b := l.buckets[shardID%len(l.buckets)]
	select {
	case <-b.slot:
	case <-ctx.Done():
		return Turn{}, ctx.Err()
	}
	release := func(answered bool) {
		l.mu.Lock()
		if b.sent {
			b.arrivedBy = time.Now()
			if !answered {
				b.arrivedBy = b.arrivedBy.Add(l.margin)
			}
			b.sent = false
		}
		l.mu.Unlock()
		b.slot <- struct{}{}
	}
	// The daily budget: wait for its reset rather than burn the last identify (running out resets the
	// bot's token).
	for {
		l.mu.Lock()
		if time.Now().After(l.resetAt) && l.remaining <= 0 {
			l.log.Info("session start budget reset time passed; identifying again")
			l.remaining = 1
		}
		if l.remaining > 0 {
			l.remaining--
			l.mu.Unlock()
			break
		}
		until := time.Until(l.resetAt)
		l.mu.Unlock()
		l.log.Warn("daily identify budget (session_start_limit) is spent; waiting for its reset instead of burning the token",
			zap.Int("shard", shardID), zap.Duration("reset_after", until))
		if err := ctxsleep.Sleep(ctx, until+time.Second); err != nil {
			release(false)
			return Turn{}, err
		}
	}
	l.mu.Lock()
	notBefore := b.arrivedBy.Add(l.window)
	l.mu.Unlock()
	var once sync.Once
	return Turn{NotBefore: notBefore, Release: func(answered bool) { once.Do(func() { release(answered) }) }}, nil
}

// Sent implements Limiter. Only the holder of the bucket's slot calls it.
func (l *Local) Sent(shardID int, _ time.Time) {
	l.mu.Lock()
	l.buckets[shardID%len(l.buckets)].sent = true
	l.mu.Unlock()
}

// Update replaces the budget with fresh numbers from /gateway/bot.
func (l *Local) Update(limit SessionStartLimit) {
	l.mu.Lock()
	l.remaining = limit.Remaining
	l.resetAt = time.Now().Add(limit.ResetAfter)
	l.mu.Unlock()
}

// Remaining is the identify budget left as dd counts it.
func (l *Local) Remaining() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.remaining
}

func (l *Local) String() string {
	return fmt.Sprintf("identify limiter: %d buckets, window %s", len(l.buckets), l.window)
}
