package gateway_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/gateway"
	"github.com/ddhq/dd/internal/rawjson"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/sim/discordsim"
	"github.com/ddhq/dd/store"
)

// The pipeline alone (no role, no delivery): a reshard from 2 to 4 shards under a firehose queues each
// message once, and a reader that honours the queue's fences gets every channel's messages in order,
// across the switch that moves channels between shards.
func TestReshardQueuesEachEventOnceAndInOrder(t *testing.T) {
	const token, window, total = "tok-gateway-0123456789", 100 * time.Millisecond, 4000
	sim := discordsim.New(discordsim.Config{Guilds: 40, Tokens: []string{token}, IdentifyWindow: window, MaxConcurrency: 2})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	st, err := store.Open(store.Options{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	q, err := queue.Open(st, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	reader, _ := q.Consumer("reader")
	gw, err := gateway.New(gateway.Config{
		Shard:       shard.Config{Token: token, Intents: discord.IntentGuilds | discord.IntentGuildMessages, APIVersion: 10},
		TotalShards: 2, Queue: q, Store: st, Sessions: shard.NewSessionStore(st),
		GatewayBot: gateway.GatewayBotFrom(sim.APIURL(), 10, "Bot "+token, nil), IdentifyWindow: window,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- gw.Run(ctx) }()
	defer func() { cancel(); <-stopped }()
	testkit.Eventually(t, 10*time.Second, "40 guilds on 2 shards", func() bool {
		cur := gw.Current()
		return cur != nil && cur.TotalGuilds() == 40 && cur.Manager().Ready()
	})

	done := make(chan struct{})
	sim.StartFirehose(discordsim.FirehoseOptions{Rate: 3000, Total: total, MessageCreate: 1, Done: done})
	time.Sleep(200 * time.Millisecond)
	if _, err := gw.Reshard(ctx, 4, "the test asks"); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Reshard(ctx, 4, "again"); err != gateway.ErrBusy {
		t.Errorf("a second reshard while one runs: %v, want ErrBusy", err)
	}
	testkit.Eventually(t, 20*time.Second, "the switch", func() bool { return gw.ReshardStatus().Result != "" })
	if r := gw.ReshardStatus().Result; r != "switched" || gw.Current().Total() != 4 {
		t.Fatalf("reshard ended %q with %d shards", r, gw.Current().Total())
	}
	<-done

	// Read as every consumer of the queue does: shard by shard, acknowledging; a fence holds the new
	// shards' events until everything queued before the switch is acknowledged.
	count := map[string]int{}
	byChan := map[string][]int{}
	deadline := time.Now().Add(30 * time.Second)
	for len(count) < total && time.Now().Before(deadline) {
		ids, _ := q.Shards()
		got := 0
		for _, id := range ids {
			recs, err := reader.Read(id, 1000)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				reader.Ack(id, r.Seq)
				if typ, _ := rawjson.String(rawjson.Field(r.Payload, "t")); typ != "MESSAGE_CREATE" {
					continue
				}
				d := rawjson.Field(r.Payload, "d")
				nonce, _ := rawjson.String(rawjson.Field(d, "nonce"))
				ch, _ := rawjson.String(rawjson.Field(d, "channel_id"))
				var n int
				fmt.Sscanf(nonce, "evt-%d", &n)
				count[nonce]++
				byChan[ch] = append(byChan[ch], n)
			}
			got += len(recs)
		}
		if got == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	dups := 0
	for _, c := range count {
		if c > 1 {
			dups++
		}
	}
	if len(count) != total || dups != 0 {
		t.Errorf("the queue holds %d distinct messages (want %d), %d of them more than once", len(count), total, dups)
	}
	for ch, seq := range byChan {
		for i := 1; i < len(seq); i++ {
			if seq[i] < seq[i-1] {
				t.Errorf("channel %s: message %d read after %d", ch, seq[i], seq[i-1])
				break
			}
		}
	}
}
