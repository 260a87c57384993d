package shard

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/discordsim"
)

// An embedding program's hooks replace dd's default behaviour: dropped dispatches never reach the Sink,
// BeforeIdentify changes what is sent, OnPayload and OnStateChange see everything.
func TestHooksReplaceDefaultBehaviour(t *testing.T) {
	sim := startSim(t, discordsim.Config{Guilds: 4})
	var payloads, identifies atomic.Int64
	var (
		mu     sync.Mutex
		states []State
	)
	h := startShards(t, sim, 1, []int{0}, func(c *ManagerConfig) {
		c.Template.Hooks = Hooks{
			OnPayload: func(s *Shard, op int, typ string, raw json.RawMessage) bool { payloads.Add(1); return true },
			OnDispatch: func(s *Shard, ev *Event) bool {
				return ev.Type != "GUILD_CREATE" // this bot does not want them
			},
			BeforeIdentify: func(s *Shard, id *Identify) error {
				identifies.Add(1)
				id.LargeThreshold = 250
				return nil
			},
			OnStateChange: func(s *Shard, from, to State) { mu.Lock(); states = append(states, to); mu.Unlock() },
		}
	})
	testkit.Eventually(t, 5*time.Second, "ready", func() bool { return h.mgr.Shard(0).State() == StateReady })
	g := sim.Guilds()[0]
	sim.Dispatch(g.ID, "MESSAGE_CREATE", map[string]any{"id": "1", "channel_id": fmt.Sprint(g.Channels[0]), "guild_id": fmt.Sprint(g.ID),
		"content": "x", "author": map[string]any{"id": "1", "username": "u"}})
	testkit.Eventually(t, 5*time.Second, "the message", func() bool { return h.sink.count(0, "MESSAGE_CREATE") == 1 })
	if n := h.sink.count(0, "GUILD_CREATE"); n != 0 {
		t.Errorf("%d GUILD_CREATEs reached the sink despite the hook", n)
	}
	if identifies.Load() != 1 || payloads.Load() < 3 {
		t.Errorf("BeforeIdentify ran %d times, OnPayload saw %d payloads", identifies.Load(), payloads.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(states) < 3 || states[len(states)-1] != StateReady {
		t.Errorf("state changes %v", states)
	}
}
