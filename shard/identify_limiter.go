package shard

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/ctxsleep"
)

// IdentifyLimiter paces IDENTIFY across shards: one identify per max_concurrency bucket
// (shard_id % max_concurrency) per window, and never past the daily session-start budget. An in-process
// and a remote (shared by several dd instances) limiter are interchangeable behind this interface.
type IdentifyLimiter interface {
	// Acquire blocks until shardID holds its bucket's turn: the bucket's previous identify was answered
	// and the budget allows one more. A shard takes its turn before it connects, so that no connection
	// waits (its heartbeat ACKs unread) behind other shards; it then connects at once, reading while it
	// waits for the turn's NotBefore, so that the IDENTIFY leaves on time.
	Acquire(ctx context.Context, shardID int) (IdentifyTurn, error)
	// Sent records that the IDENTIFY left.
	Sent(shardID int, at time.Time)
}

// IdentifyTurn is one shard's permission to send IDENTIFY.
type IdentifyTurn struct {
	// NotBefore is when the IDENTIFY may leave, one window after the bucket's previous one arrived.
	NotBefore time.Time
	// Release gives the turn back, exactly once: answered=true when Discord answered the IDENTIFY
	// (READY, op 9 or a close frame), false when the connection failed without an answer or the IDENTIFY
	// never left. The bucket's next turn waits for it.
	Release func(answered bool)
}

// SessionStartLimit is Discord's identify budget from /gateway/bot.
type SessionStartLimit struct {
	Total          int           `json:"total"`
	Remaining      int           `json:"remaining"`
	ResetAfter     time.Duration `json:"-"`
	MaxConcurrency int           `json:"max_concurrency"`
}

// LocalIdentifyLimiter is the in-process IdentifyLimiter.
type LocalIdentifyLimiter struct {
	window time.Duration
	margin time.Duration
	log    *zap.Logger

	mu        sync.Mutex
	buckets   []*identifyBucket
	remaining int
	resetAt   time.Time
}

// identifyBucket is one max_concurrency bucket. Discord spaces identifies by their arrival, which dd
// cannot see, only bound: the last one arrived before its answer (READY, op 9 or a close frame) came
// back, however loaded the machine or the network. arrivedBy is that bound, the release of an answered
// identify. An identify that left and got no answer (the connection dropped) may still be on its way: its
// bound is the release plus the margin.
type identifyBucket struct {
	slot      chan struct{} // holds one token while free
	sent      bool          // the holder's IDENTIFY left
	arrivedBy time.Time
}

// NewLocalIdentifyLimiter builds a limiter for a bot's limits. window is Discord's 5 s; margin is how much
// longer an identify that got no answer may take to reach Discord after its connection failed.
func NewLocalIdentifyLimiter(limit SessionStartLimit, window, margin time.Duration, log *zap.Logger) *LocalIdentifyLimiter {
	if limit.MaxConcurrency < 1 {
		limit.MaxConcurrency = 1
	}
	if log == nil {
		log = zap.NewNop()
	}
	l := &LocalIdentifyLimiter{window: window, margin: margin, log: log, remaining: limit.Remaining,
		resetAt: time.Now().Add(limit.ResetAfter)}
	for i := 0; i < limit.MaxConcurrency; i++ {
		b := &identifyBucket{slot: make(chan struct{}, 1)}
		b.slot <- struct{}{}
		l.buckets = append(l.buckets, b)
	}
	return l
}

// Acquire implements IdentifyLimiter.
func (l *LocalIdentifyLimiter) Acquire(ctx context.Context, shardID int) (IdentifyTurn, error) {
	b := l.buckets[shardID%len(l.buckets)]
	select {
	case <-b.slot:
	case <-ctx.Done():
		return IdentifyTurn{}, ctx.Err()
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
			return IdentifyTurn{}, err
		}
	}
	l.mu.Lock()
	notBefore := b.arrivedBy.Add(l.window)
	l.mu.Unlock()
	var once sync.Once
	return IdentifyTurn{NotBefore: notBefore, Release: func(answered bool) { once.Do(func() { release(answered) }) }}, nil
}

// Sent implements IdentifyLimiter. Only the holder of the bucket's slot calls it.
func (l *LocalIdentifyLimiter) Sent(shardID int, _ time.Time) {
	l.mu.Lock()
	l.buckets[shardID%len(l.buckets)].sent = true
	l.mu.Unlock()
}

// Update replaces the budget with fresh numbers from /gateway/bot.
func (l *LocalIdentifyLimiter) Update(limit SessionStartLimit) {
	l.mu.Lock()
	l.remaining = limit.Remaining
	l.resetAt = time.Now().Add(limit.ResetAfter)
	l.mu.Unlock()
}

// Remaining is the identify budget left as dd counts it.
func (l *LocalIdentifyLimiter) Remaining() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.remaining
}

func (l *LocalIdentifyLimiter) String() string {
	return fmt.Sprintf("identify limiter: %d buckets, window %s", len(l.buckets), l.window)
}
