// Command nats-go is a bot that reads dd's event stream in cluster mode (PRODUCT.md §7) directly from
// NATS JetStream instead of receiving events over HTTP: a durable pull consumer on the stream
// <NAME>_EVENTS, each event handled in order within its shard and acknowledged once handled.
//
//	go run ./examples/nats-go -nats nats://127.0.0.1:4222 -name dd -durable my-bot -shards 16
//
// It prints one line per event; put your bot's logic in handle. Stop it with Ctrl-C: the events it had
// not acknowledged are delivered again to the next run (the consumer is durable, so a restart goes on
// where the last run stopped). See consume.go for how order and copies are dealt with.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	url := flag.String("nats", nats.DefaultURL, "NATS servers, comma-separated (dd's cluster.nats_url)")
	name := flag.String("name", "dd", "dd's cluster.name: the stream is <NAME>_EVENTS, the subjects <name>.events.<shard>.<EVENT_TYPE>")
	durable := flag.String("durable", "bot", "the durable consumer's name: one per bot application (two processes of one name share the events)")
	shards := flag.Int("shards", 1, "dd's shard count: this bot reads shards 0 to shards-1 (one consumer each)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(*url, nats.Name("dd example bot "+*durable), nats.MaxReconnects(-1))
	if err != nil {
		log.Fatalf("connecting to %s: %v", *url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	ids := make([]int, *shards)
	for i := range ids {
		ids[i] = i
	}
	err = Consume(ctx, js, Config{Name: *name, Durable: *durable, Shards: ids, Handle: handle, Log: log.Printf})
	if err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
}

// handle is the bot: here it prints the event. It runs for one shard's events one at a time, in order;
// an error makes Consume call it again with the same event.
func handle(ctx context.Context, ev Event) error {
	fmt.Printf("shard %d %s s=%d id=%s %d bytes\n", ev.Shard, ev.Type, ev.Seq, ev.ID, len(ev.Data))
	return nil
}
