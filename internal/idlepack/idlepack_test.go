package idlepack

import (
	"testing"
	"time"
)

// A decoder that stays parked packs after its idle period; one that took messages meanwhile is a busy
// decoder and waits a whole period more; one woken by a lone message packs again after WokenIdle.
func TestParkingPacksOnlyAfterAQuietPeriod(t *testing.T) {
	const idle = 500 * time.Millisecond // ten WokenIdles: a late timer on a loaded machine is not mistaken for one
	checks := make(chan time.Time, 4)
	p := Parking{Check: func() { checks <- time.Now() }}
	due := func() bool {
		<-checks
		p.Mu.Lock()
		defer p.Mu.Unlock()
		return p.Due(idle, true)
	}

	start := time.Now()
	p.Mu.Lock()
	p.Park(idle)
	p.Mu.Unlock()
	if !due() || time.Since(start) < idle {
		t.Fatalf("a decoder parked for %v: not due", time.Since(start))
	}

	// Messages between the arming and the check: busy, re-armed for the whole period.
	p.Mu.Lock()
	p.Parked = false
	p.Park(idle) // armed
	p.Parked = false
	p.Park(idle) // a second message, not armed again
	p.Mu.Unlock()
	if due() {
		t.Fatal("due although a message came after the timer was armed")
	}
	if !due() {
		t.Fatal("not due after a quiet period following the busy one")
	}

	// Woken by a lone message after packing: packs again after WokenIdle, not idle.
	p.Mu.Lock()
	p.Woken = true
	p.Parked = false
	start = time.Now()
	p.Park(idle)
	p.Mu.Unlock()
	if !due() || time.Since(start) >= idle {
		t.Fatalf("a woken decoder was due after %v; want about %v", time.Since(start), WokenIdle)
	}

	// Closed: the timer never fires.
	p.Mu.Lock()
	p.Park(idle)
	p.Close()
	p.Mu.Unlock()
	select {
	case <-checks:
		t.Fatal("the timer fired after Close")
	case <-time.After(2 * idle):
	}
}
