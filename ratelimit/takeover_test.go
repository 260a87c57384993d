package ratelimit

import (
	"context"
	"testing"
	"time"
)

// A cluster's new leader may follow a leader that spent the whole global budget in its last second: after
// TakeOver nothing of the token goes for a global window (plus the transit margin), then the full budget
// does, and the buckets it knew are learned again as on first sight (one request first).
func TestTakeOverStartsWithTheGlobalBudgetSpentAndBucketsUnknown(t *testing.T) {
	h := newHarness(t, Options{GlobalRate: 3, GlobalMargin: 50 * time.Millisecond})
	ctx := context.Background()
	// Learn the message bucket: 5 per window.
	h.answer(ctx, msgRoute, 200, 5, 4, h.clock.Now().Add(5*time.Second), "msg")
	h.clock.Advance(2 * time.Second)

	h.l.TakeOver("Bot tok")
	ps := h.acquireEach(ctx, msgRoute, 4)
	if n := granted(ps); n != 0 {
		t.Fatalf("right after TakeOver: %d granted, want 0 (the last second's global budget counts as spent)", n)
	}
	h.clock.Advance(globalWindow + 50*time.Millisecond - time.Millisecond)
	if n := granted(ps); n != 0 {
		t.Fatalf("just before a window plus margin: %d granted, want 0", n)
	}
	h.clock.Advance(time.Millisecond)
	if n := granted(ps); n != 1 {
		t.Fatalf("after a window: %d granted, want 1 (the bucket is unknown again: one learning request first)", n)
	}
	first := doneOnes(ps)[0]
	first.tk.Done(Response{Status: 200, Header: h.headers(5, 4, h.clock.Now().Add(5*time.Second), "msg")})
	if n := granted(ps); n != 3 {
		t.Fatalf("after the learning answer: %d granted, want 3 (the global budget of 3 per second)", n)
	}
	// Another token is not affected.
	o := h.acquireAs(ctx, "Bot other", msgRoute)
	if n := granted([]*pendingAcquire{o}); n != 1 {
		t.Fatal("another token waited: TakeOver must concern only its identity")
	}
}

func TestTakeOverAllCoversTokensSeenLater(t *testing.T) {
	h := newHarness(t, Options{GlobalRate: 3, GlobalMargin: 50 * time.Millisecond})
	ctx := context.Background()
	h.l.TakeOverAll()
	h.clock.Advance(500 * time.Millisecond)
	p := h.acquireAs(ctx, "Bot new", Route{Key: "GET /x", Global: true})
	if n := granted([]*pendingAcquire{p}); n != 0 {
		t.Fatal("a token first seen half a second after TakeOverAll was granted at once; want it to wait for the window")
	}
	h.clock.Advance(600 * time.Millisecond)
	if n := granted([]*pendingAcquire{p}); n != 1 {
		t.Fatal("not granted a window after TakeOverAll")
	}
	h.clock.Advance(2 * time.Second)
	q := h.acquireAs(ctx, "Bot later", Route{Key: "GET /x", Global: true})
	if n := granted([]*pendingAcquire{q}); n != 1 {
		t.Fatal("a token first seen long after TakeOverAll waited")
	}
}
