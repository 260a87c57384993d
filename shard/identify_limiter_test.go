package shard

import (
	"context"
	"testing"
	"time"
)

func TestIdentifyLimiterSpacesEachBucketAndRunsBucketsInParallel(t *testing.T) {
	const window = 100 * time.Millisecond
	l := NewLocalIdentifyLimiter(SessionStartLimit{Total: 100, Remaining: 100, ResetAfter: time.Hour, MaxConcurrency: 2}, window, 0, nil)
	ctx := context.Background()
	start := time.Now()
	for _, id := range []int{0, 1} { // two buckets: both at once
		release, err := l.Acquire(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		l.Sent(id, time.Now())
		release()
	}
	if d := time.Since(start); d > window/2 {
		t.Fatalf("two buckets took %s; they should not wait for each other", d)
	}
	release, _ := l.Acquire(ctx, 2) // bucket 0 again: one window after its last send
	release()
	if d := time.Since(start); d < window {
		t.Fatalf("second identify of bucket 0 after %s, before the %s window", d, window)
	}
}

// An identify arrived by the time its answer came back: the next one of the bucket waits one window from
// that answer when it is sooner than send + margin, and from send + margin when the answer is later.
func TestIdentifyLimiterSpacesFromTheAnswerOrTheMargin(t *testing.T) {
	const window, margin = 300 * time.Millisecond, 400 * time.Millisecond
	for _, tc := range []struct {
		name        string
		answerAfter time.Duration
	}{{"answer sooner than the margin", 50 * time.Millisecond}, {"answer later than the margin", 500 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLocalIdentifyLimiter(SessionStartLimit{Total: 100, Remaining: 100, ResetAfter: time.Hour, MaxConcurrency: 1}, window, margin, nil)
			release, _ := l.Acquire(context.Background(), 0)
			sent := time.Now()
			l.Sent(0, sent)
			time.Sleep(tc.answerAfter)
			answered := time.Now()
			release()
			r, _ := l.Acquire(context.Background(), 0)
			r()
			arrivedBy := min(answered.Sub(sent), margin)
			got := time.Since(sent)
			if got < arrivedBy+window {
				t.Fatalf("next identify %s after the send, before %s + the %s window", got, arrivedBy, window)
			}
			// Not a performance figure: it tells which bound was used (in the first case the other is 350 ms
			// further).
			if got > arrivedBy+window+300*time.Millisecond {
				t.Fatalf("next identify %s after the send; want about %s (the earlier of answer and send + margin, plus the window)",
					got, arrivedBy+window)
			}
		})
	}
}

func TestIdentifyLimiterHoldsTheSlotUntilReleased(t *testing.T) {
	l := NewLocalIdentifyLimiter(SessionStartLimit{Total: 100, Remaining: 100, ResetAfter: time.Hour, MaxConcurrency: 1}, 10*time.Millisecond, 0, nil)
	release, _ := l.Acquire(context.Background(), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := l.Acquire(ctx, 1); err == nil {
		t.Fatal("a second identify got the bucket while the first had not reached READY")
	}
	release()
	if r, err := l.Acquire(context.Background(), 1); err != nil {
		t.Fatal(err)
	} else {
		r()
	}
}

// When the daily budget is spent, the limiter waits for its reset instead of spending an identify that
// Discord would punish by resetting the token.
func TestIdentifyLimiterWaitsForTheDailyBudgetReset(t *testing.T) {
	const reset = 300 * time.Millisecond
	l := NewLocalIdentifyLimiter(SessionStartLimit{Total: 1000, Remaining: 1, ResetAfter: reset, MaxConcurrency: 4}, time.Millisecond, 0, nil)
	start := time.Now()
	r, _ := l.Acquire(context.Background(), 0)
	r()
	if l.Remaining() != 0 {
		t.Fatalf("remaining %d after the last identify", l.Remaining())
	}
	r, err := l.Acquire(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	r()
	if d := time.Since(start); d < reset {
		t.Fatalf("identified again after %s, before the budget reset at %s", d, reset)
	}
}
