package roles

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/ddhq/dd/shard"
)

// What /readyz of each role checks beyond "the listener is up" (README, "Every role"). Each check is a
// few atomic loads per shard or per queue, so that a probe every second costs nothing at 1,000 shards.

// storeHealth remembers whether the last write of events to the store failed.
type storeHealth struct {
	err atomic.Pointer[error]
}

func (h *storeHealth) observe(err error) {
	switch {
	case err != nil:
		h.err.Store(&err)
	case h.err.Load() != nil:
		h.err.Store(nil)
	}
}

func (h *storeHealth) failed() error {
	if p := h.err.Load(); p != nil {
		return *p
	}
	return nil
}

// ready says why the gateway is not ready: its shards are not started, one of them is neither connected
// nor resuming its session, the store does not take its events, or Redis (events.sink "redis") does not.
func (g *gatewayRole) ready() error {
	if err := g.storeHealth.failed(); err != nil {
		return fmt.Errorf("the store does not take events: %w", err)
	}
	if err := g.st.DiskErr(); err != nil {
		return fmt.Errorf("the store does not take events: %w", err)
	}
	if g.sinkErr != nil {
		if err := g.sinkErr(); err != nil {
			return fmt.Errorf("events wait in the queue: %w", err)
		}
	}
	cur := g.gw.Current()
	if cur == nil {
		return errors.New("shards are not started yet (waiting for Discord's /gateway/bot)")
	}
	return shardsDown(cur.Manager().Shards())
}

// shardsDown says how many shards are neither connected nor between two attempts to resume.
func shardsDown(shards []*shard.Shard) error {
	down, first := 0, -1
	var firstState shard.State
	for _, s := range shards {
		switch st := s.State(); st {
		case shard.StateReady, shard.StateResuming:
			continue
		case shard.StateDisconnected, shard.StateConnecting:
			if s.Session().Resumable() {
				continue // between two attempts to resume
			}
			fallthrough
		default:
			if down == 0 {
				first, firstState = s.ID(), st
			}
			down++
		}
	}
	if down > 0 {
		return fmt.Errorf("%d of %d shards are not connected (shard %d is %s)", down, len(shards), first, firstState)
	}
	return nil
}
