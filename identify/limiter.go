package identify

import (
	"context"
	"time"
)

// Limiter paces IDENTIFY across shards: one identify per max_concurrency bucket (shard_id %
// max_concurrency) per window, and never past the daily session-start budget. An in-process and a remote
// (shared by several dd instances) limiter are interchangeable behind this interface.
type Limiter interface {
	// Acquire blocks until shardID holds its bucket's turn: the bucket's previous identify was answered
	// and the budget allows one more. A shard takes its turn before it connects, so that no connection
	// waits (its heartbeat ACKs unread) behind other shards; it then connects at once, reading while it
	// waits for the turn's NotBefore, so that the IDENTIFY leaves on time.
	Acquire(ctx context.Context, shardID int) (Turn, error)
	// Sent records that the IDENTIFY left.
	Sent(shardID int, at time.Time)
}

// Turn is one shard's permission to send IDENTIFY.
type Turn struct {
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

// Window is Discord's identify window: one IDENTIFY per max_concurrency bucket per 5 s.
const Window = 5 * time.Second

// Margin is the margin kept over an identify window: 5 % (250 ms of Discord's 5 s), and at least 50 ms,
// the receipt jitter seen on a loaded machine. Discord judges the identify's receipt, not our send.
func Margin(window time.Duration) time.Duration {
	return max(window/20, 50*time.Millisecond)
}
