package identify

import (
	"context"
	"testing"
	"time"
)

func TestIdentifyLimiterSpacesEachBucketAndRunsBucketsInParallel(t *testing.T) {
	const window = 100 * time.Millisecond
	l := NewLocal(SessionStartLimit{Total: 100, Remaining: 100, ResetAfter: time.Hour, MaxConcurrency: 2}, window, 0, nil)
	ctx := context.Background()
	for _, id := range []int{0, 1} { // two buckets: both at once
		turn, err := l.Acquire(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if wait := time.Until(turn.NotBefore); wait > 0 {
			t.Fatalf("shard %d must wait %s; the first identify of a bucket goes at once", id, wait)
		}
		l.Sent(id, time.Now())
		turn.Release(true)
	}
	released := time.Now()
	turn, _ := l.Acquire(ctx, 2) // bucket 0 again: one window after its last answer
	turn.Release(true)
	if gap := turn.NotBefore.Sub(released); gap < window-time.Millisecond {
		t.Fatalf("second identify of bucket 0 may go %s after the first's answer, before the %s window", gap, window)
	}
}

// The only bound dd can see on an identify's arrival is its answer's receipt: however late the answer
// (a loaded machine, a slow network), the next identify of the bucket waits one window from it. An
// identify whose connection failed without an answer may still be on its way: the margin is added. One
// that never left costs nothing.
func TestIdentifyLimiterSpacesFromTheAnswer(t *testing.T) {
	const window, margin = 300 * time.Millisecond, 200 * time.Millisecond
	for _, tc := range []struct {
		name        string
		sent        bool
		answered    bool
		answerAfter time.Duration
		want        time.Duration // from the release to the next turn's NotBefore
	}{
		{"answer soon after the send", true, true, 20 * time.Millisecond, window},
		{"answer long after the send", true, true, 700 * time.Millisecond, window},
		{"no answer: the connection failed", true, false, 20 * time.Millisecond, window + margin},
		{"never sent", false, false, 20 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLocal(SessionStartLimit{Total: 100, Remaining: 100, ResetAfter: time.Hour, MaxConcurrency: 1}, window, margin, nil)
			turn, _ := l.Acquire(context.Background(), 0)
			if tc.sent {
				l.Sent(0, time.Now())
			}
			time.Sleep(tc.answerAfter)
			before := time.Now()
			turn.Release(tc.answered)
			after := time.Now()
			next, _ := l.Acquire(context.Background(), 0)
			next.Release(true)
			if tc.want == 0 {
				if next.NotBefore.After(after) {
					t.Fatalf("an identify that never left delays the next one to %s after the release", next.NotBefore.Sub(after))
				}
				return
			}
			if next.NotBefore.Before(before.Add(tc.want)) || next.NotBefore.After(after.Add(tc.want)) {
				t.Fatalf("next identify may go %s after the release; want %s", next.NotBefore.Sub(before), tc.want)
			}
		})
	}
}

func TestIdentifyLimiterHoldsTheSlotUntilReleased(t *testing.T) {
	l := NewLocal(SessionStartLimit{Total: 100, Remaining: 100, ResetAfter: time.Hour, MaxConcurrency: 1}, 10*time.Millisecond, 0, nil)
	first, _ := l.Acquire(context.Background(), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := l.Acquire(ctx, 1); err == nil {
		t.Fatal("a second identify got the bucket while the first had not reached READY")
	}
	first.Release(true)
	if r, err := l.Acquire(context.Background(), 1); err != nil {
		t.Fatal(err)
	} else {
		r.Release(true)
	}
}

// When the daily budget is spent, the limiter waits for its reset instead of spending an identify that
// Discord would punish by resetting the token.
func TestIdentifyLimiterWaitsForTheDailyBudgetReset(t *testing.T) {
	const reset = 300 * time.Millisecond
	l := NewLocal(SessionStartLimit{Total: 1000, Remaining: 1, ResetAfter: reset, MaxConcurrency: 4}, time.Millisecond, 0, nil)
	start := time.Now()
	r, _ := l.Acquire(context.Background(), 0)
	r.Release(true)
	if l.Remaining() != 0 {
		t.Fatalf("remaining %d after the last identify", l.Remaining())
	}
	r, err := l.Acquire(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	r.Release(true)
	if d := time.Since(start); d < reset {
		t.Fatalf("identified again after %s, before the budget reset at %s", d, reset)
	}
}
