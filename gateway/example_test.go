package gateway_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/gateway"
	"github.com/ddhq/dd/internal/rawjson"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/sim/discordsim"
	"github.com/ddhq/dd/store"
)

// A Go program runs a bot's shards into its own queue, and reshards them without a role: here one shard
// against the simulator, whose bot is in four guilds, moved to two shards. The new shards' READY and
// GUILD_CREATE burst brings nothing new, so the queue holds what the first shard queued; events sent
// during the reshard would reach it once, in order, whichever set received them.
func ExampleGateway() {
	const token = "example-token-0123456789"
	sim := discordsim.New(discordsim.Config{Guilds: 4, Tokens: []string{token}, IdentifyWindow: 100 * time.Millisecond})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		fmt.Println(err)
		return
	}
	defer sim.Close()
	dir, _ := os.MkdirTemp("", "gateway-example")
	defer os.RemoveAll(dir)
	st, err := store.Open(store.Options{Path: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	q, err := queue.Open(st, queue.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer q.Close()
	bot, _ := q.Consumer("bot") // registered before anything is queued: it reads from the start

	gw, err := gateway.New(gateway.Config{
		Shard:       shard.Config{Token: token, Intents: discord.IntentGuilds, APIVersion: 10},
		TotalShards: 1, Queue: q, Store: st, Sessions: shard.NewSessionStore(st),
		GatewayBot:     gateway.GatewayBotFrom(sim.APIURL(), 10, "Bot "+token, nil),
		IdentifyWindow: 100 * time.Millisecond, // the simulator's; Discord's is 5 s
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- gw.Run(ctx) }()
	defer func() { cancel(); <-stopped }()

	waitFor := func(what string, ok func() bool) bool {
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				fmt.Println("timed out waiting for", what)
				return false
			}
		}
		return true
	}
	if !waitFor("the guilds", func() bool { cur := gw.Current(); return cur != nil && cur.TotalGuilds() == 4 }) {
		return
	}
	started, err := gw.Reshard(ctx, 2, "the example asks")
	if err != nil {
		fmt.Println(err)
		return
	}
	if !waitFor("the switch", func() bool { return gw.ReshardStatus().Result != "" }) {
		return
	}
	fmt.Printf("reshard %d -> %d: %s\n", started.From, started.To, gw.ReshardStatus().Result)
	fmt.Printf("running %d shards with %d guilds\n", gw.Current().Total(), gw.Current().TotalGuilds())
	recs, _ := bot.Read(0, 100)
	for _, r := range recs {
		t, _ := rawjson.String(rawjson.Field(r.Payload, "t"))
		fmt.Println("queued:", t)
	}
	// Output:
	// reshard 1 -> 2: switched
	// running 2 shards with 4 guilds
	// queued: READY
	// queued: GUILD_CREATE
	// queued: GUILD_CREATE
	// queued: GUILD_CREATE
	// queued: GUILD_CREATE
}
