package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Event is one dispatch read from the stream.
type Event struct {
	// ID is the message's Nats-Msg-Id: "<session id>-<sequence>", the X-DD-Event-Id of HTTP delivery,
	// the same for every copy of one Discord event.
	ID    string
	Shard int
	// Type, Seq and Data are the gateway payload's t, s and d.
	Type string
	Seq  int64
	Data json.RawMessage
}

// Config configures Consume.
type Config struct {
	// Name is dd's cluster.name. Default "dd".
	Name string
	// Durable names this bot's consumers, one per shard: "<durable>-shard-<n>". Default "bot".
	Durable string
	// Shards lists the shards to read: dd's shard count, or this bot process's part of them. A shard
	// without events yet is fine (its consumer waits). Required.
	Shards []int
	// Handle is the bot. It is called for one shard's events one at a time, in the stream's order, and
	// again with the same event while it returns an error (going on would break the shard's order).
	Handle func(context.Context, Event) error
	// AckWait is how long the server waits for an event's acknowledgement before it delivers the event
	// again. A handler slower than this sees no copy (copies are dropped here) but delays its shard by
	// the redelivery. Default 30 s.
	AckWait time.Duration
	// Log receives what goes wrong and the copies dropped. Default: none.
	Log func(format string, args ...any)
}

// Consume reads the stream until ctx ends.
//
// Order: each shard has a durable pull consumer of its own (filter <name>.events.<shard>.>) with
// MaxAckPending 1, so the server hands out a shard's next event only once the previous one is
// acknowledged. That is what keeps a shard in order across a crash or a lost acknowledgement: with more
// than one event outstanding, a redelivered event (after AckWait) would come after later ones the
// server had already handed out. Shards are independent: one goroutine each. The cost is a round trip
// per event within a shard, some thousands of events a second per shard on a LAN, far above what a
// Discord shard sends.
//
// Copies: delivery is at least once. An event comes again when its acknowledgement was lost or late
// (AckWait), and the stream may hold two copies of one Discord event when dd replayed it after the
// stream's duplicate window. Both carry the same Nats-Msg-Id; the copy comes soon after the original,
// so remembering the last ids handled per shard is enough to drop it. The memory is this process's:
// an event handled just before a crash, not yet acknowledged, is handled again by the next run, so a
// handler whose effects must not repeat keeps the last id it handled with them.
func Consume(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if cfg.Name == "" {
		cfg.Name = "dd"
	}
	if cfg.Durable == "" {
		cfg.Durable = "bot"
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	if len(cfg.Shards) == 0 || cfg.Handle == nil {
		return errors.New("nats-go: Config.Shards and Config.Handle are required")
	}
	stream := strings.ToUpper(cfg.Name) + "_EVENTS"
	var iters []jetstream.MessagesContext
	for _, id := range cfg.Shards {
		c, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable:       ShardConsumer(cfg.Durable, id),
			FilterSubject: cfg.Name + ".events." + strconv.Itoa(id) + ".>",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			MaxAckPending: 1,
			// A new consumer starts at the stream's oldest event (the stream keeps
			// events.max_queue_events of them); DeliverNewPolicy would start at its end.
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			stopAll(iters)
			return fmt.Errorf("consumer for shard %d on %s: %w", id, stream, err)
		}
		it, err := c.Messages(jetstream.PullMaxMessages(8))
		if err != nil {
			stopAll(iters)
			return fmt.Errorf("reading shard %d: %w", id, err)
		}
		iters = append(iters, it)
	}
	ctx, cancel := context.WithCancel(ctx) // one shard's failure stops the others
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(iters))
	for i, it := range iters {
		wg.Add(1)
		go func(shardID int, it jetstream.MessagesContext) {
			defer wg.Done()
			if err := readShard(ctx, it, cfg); err != nil {
				errs <- fmt.Errorf("shard %d: %w", shardID, err)
			}
		}(cfg.Shards[i], it)
	}
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case err = <-errs:
	}
	cancel()
	stopAll(iters)
	wg.Wait()
	return err
}

// ShardConsumer is the durable consumer that reads one shard for a bot.
func ShardConsumer(durable string, shardID int) string {
	return durable + "-shard-" + strconv.Itoa(shardID)
}

func stopAll(iters []jetstream.MessagesContext) {
	for _, it := range iters {
		it.Stop()
	}
}

func readShard(ctx context.Context, it jetstream.MessagesContext, cfg Config) error {
	seen := newRecentIDs(1024)
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil: // the connection was closed or the consumer deleted (an unreachable NATS is waited for)
			return err
		}
		ev, err := decode(msg)
		if err != nil {
			cfg.Log("%s: not a dd event, dropped for good: %v", msg.Subject(), err)
			_ = msg.Term()
			continue
		}
		if seen.has(ev.ID) {
			cfg.Log("copy of event %s (shard %d %s) dropped", ev.ID, ev.Shard, ev.Type)
			ack(ctx, msg, cfg)
			continue
		}
		for {
			err := cfg.Handle(ctx, ev)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				// Stopping: the next run gets this event first, without waiting for AckWait.
				_ = msg.Nak()
				return nil
			}
			cfg.Log("event %s (shard %d %s): %v; trying again", ev.ID, ev.Shard, ev.Type, err)
			_ = msg.InProgress() // keeps the server from handing the event out again meanwhile
			select {
			case <-ctx.Done():
				_ = msg.Nak()
				return nil
			case <-time.After(time.Second):
			}
		}
		seen.add(ev.ID)
		ack(ctx, msg, cfg)
	}
}

// ack waits for the server's confirmation: the shard's next event comes only after it anyway. A failed
// acknowledgement means the event comes again after AckWait, and is dropped as a copy.
func ack(ctx context.Context, msg jetstream.Msg, cfg Config) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		cfg.Log("acknowledging %s: %v", msg.Headers().Get(jetstream.MsgIDHeader), err)
	}
}

// decode reads the delivery envelope {"shardId":N,"payload":{"op":0,"t":...,"s":...,"d":...}}.
func decode(msg jetstream.Msg) (Event, error) {
	var env struct {
		ShardID *int `json:"shardId"`
		Payload struct {
			T string          `json:"t"`
			S int64           `json:"s"`
			D json.RawMessage `json:"d"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(msg.Data(), &env); err != nil {
		return Event{}, err
	}
	id := msg.Headers().Get(jetstream.MsgIDHeader)
	if env.ShardID == nil || id == "" {
		return Event{}, errors.New("no shardId in the body or no Nats-Msg-Id header")
	}
	return Event{ID: id, Shard: *env.ShardID, Type: env.Payload.T, Seq: env.Payload.S, Data: env.Payload.D}, nil
}

// recentIDs remembers the last n ids added.
type recentIDs struct {
	ids  map[string]struct{}
	ring []string
	next int
}

func newRecentIDs(n int) *recentIDs {
	return &recentIDs{ids: make(map[string]struct{}, n), ring: make([]string, n)}
}

func (r *recentIDs) has(id string) bool { _, ok := r.ids[id]; return ok }

func (r *recentIDs) add(id string) {
	delete(r.ids, r.ring[r.next])
	r.ring[r.next] = id
	r.ids[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
}
