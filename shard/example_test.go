package shard_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/sim/discordsim"
)

// printSink prints what it is handed; a real Sink makes the events and the session durable together.
type printSink struct {
	mu   sync.Mutex
	seen int
	done chan struct{}
}

func (p *printSink) Dispatch(_ context.Context, events []shard.Event, sess shard.Session) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range events {
		if ev.Dropped {
			continue
		}
		fmt.Printf("shard %d: %s\n", sess.ShardID, ev.Type)
		if p.seen++; p.seen == 3 {
			close(p.done)
		}
	}
	return nil
}

// A Go program embeds a Manager to run shards with its own Sink and Hooks: here one shard against the
// simulator, whose bot is in two guilds, printing READY and the two GUILD_CREATEs. Hooks.BeforeIdentify
// sets the presence the shard identifies with.
func ExampleManager() {
	sim := discordsim.New(discordsim.Config{Guilds: 2, Tokens: []string{"example-token-0123456789"}})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		fmt.Println(err)
		return
	}
	defer sim.Close()
	sink := &printSink{done: make(chan struct{})}
	m, err := shard.NewManager(shard.ManagerConfig{
		TotalShards: 1, ShardIDs: []int{0},
		Template: shard.Config{
			Token: "example-token-0123456789", Intents: discord.IntentGuilds, GatewayURL: sim.GatewayURL(),
			Identify: identify.NewLocal(identify.SessionStartLimit{Total: 1000, Remaining: 1000,
				ResetAfter: 24 * time.Hour, MaxConcurrency: 1}, 5*time.Second, 250*time.Millisecond, nil),
			Sink: sink,
			Hooks: shard.Hooks{BeforeIdentify: func(_ *shard.Shard, id *shard.Identify) error {
				id.Presence = []byte(`{"status":"online","since":null,"activities":[],"afk":false}`)
				return nil
			}},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- m.Run(ctx) }()
	select {
	case <-sink.done:
	case <-time.After(10 * time.Second):
		fmt.Println("timed out")
	}
	cancel()
	<-stopped
	// Output:
	// shard 0: READY
	// shard 0: GUILD_CREATE
	// shard 0: GUILD_CREATE
}
