// Package idlepack decides when a gateway connection's decoder packs its history: between messages, once
// no message came for an idle period. Both stream decoders (internal/zlibstream, internal/zstdstream) use
// it; how a history is packed and unpacked is theirs. It is not for anything that runs without a timer
// per connection.
package idlepack

import (
	"sync"
	"time"
)

// WokenIdle is how long a decoder woken from its packed state by one message waits before packing again;
// a message within that time makes it a busy decoder, which waits its whole idle period.
const WokenIdle = 50 * time.Millisecond

// Parking is a decoder's state between messages and the timer of its packing. Mu guards it and what the
// decoder packs; every method is called with Mu held.
type Parking struct {
	// Check is what the timer calls: it takes Mu and asks Due. Set once by the owner, so that parking,
	// once per message, allocates nothing.
	Check func()

	Mu     sync.Mutex
	Parked bool // between messages: the decoder's history is not in use
	Woken  bool // unpacked for a message after an idle period
	Closed bool

	parks uint64 // times parked
	seen  uint64 // parks when the timer was armed
	armed bool
	timer *time.Timer
}

// Park notes that the decoder stopped at the end of a message, and arms the timer to call Check after
// idle, or WokenIdle after a wake. idle 0: never.
func (p *Parking) Park(idle time.Duration) {
	p.Parked = true
	p.parks++
	if p.armed || p.Closed || idle <= 0 {
		return
	}
	p.armed, p.seen = true, p.parks
	wait := idle
	if p.Woken {
		wait = min(wait, WokenIdle)
	}
	if p.timer == nil {
		p.timer = time.AfterFunc(wait, p.Check)
	} else {
		p.timer.Reset(wait)
	}
}

// Due is the timer's question: whether the decoder stayed parked since the timer was armed and has a
// history to pack (unpacked), so that it packs now. If messages came meanwhile it is a busy decoder: the
// timer is armed again for the whole idle period.
func (p *Parking) Due(idle time.Duration, unpacked bool) bool {
	p.armed = false
	if p.Closed || !p.Parked || !unpacked {
		return false
	}
	if p.parks != p.seen {
		p.Woken = false
		p.armed, p.seen = true, p.parks
		p.timer.Reset(idle)
		return false
	}
	return true
}

// Close stops the timer for good.
func (p *Parking) Close() {
	p.Closed = true
	if p.timer != nil {
		p.timer.Stop()
	}
}
