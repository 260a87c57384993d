// Package streamtest is what the example bots' tests share: a NATS server whose event stream is fed by
// dd's real EventSink, events published to it as a shard would, and the check that a bot's consumers
// took everything.
package streamtest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ddhq/dd/cluster"
	"github.com/ddhq/dd/cluster/clustertest"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/shard"
)

// Types are the types of the published events: event seq is Types[seq%3].
var Types = []string{"MESSAGE_CREATE", "TYPING_START", "MESSAGE_REACTION_ADD"}

// Data is the data of shard's event seq as published.
func Data(shardID int, seq int64) string { return fmt.Sprintf(`{"shard":%d,"n":%d}`, shardID, seq) }

// Stream is a NATS server of the test with dd's event stream (cluster name "dd").
type Stream struct {
	URL  string              // the server's client URL
	Sink *cluster.EventSink  // publishes as dd's gateway does, with a duplicate window of 300 ms
	JS   jetstream.JetStream // a connection of the bot's side
}

// Start starts the server, dd's EventSink and a JetStream connection, all ended with the test.
func Start(t *testing.T) *Stream {
	t.Helper()
	srv := clustertest.Server(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: srv.ClientURL(), Instance: "gateway"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	sink, err := cluster.NewEventSink(ctx, conn, cluster.EventSinkConfig{DuplicateWindow: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &Stream{URL: srv.ClientURL(), Sink: sink, JS: js}
}

// Publish sends shard's events from..to of session sess through the EventSink, in batches of 5 as a
// shard does; the events in drop are dropped by the OnDispatch hook (never published).
func (s *Stream) Publish(t *testing.T, shardID int, sess string, from, to int64, drop ...int64) {
	t.Helper()
	for lo := from; lo <= to; lo += 5 {
		var evs []shard.Event
		hi := min(lo+4, to)
		for seq := lo; seq <= hi; seq++ {
			raw := fmt.Sprintf(`{"op":0,"t":%q,"s":%d,"d":%s}`, Types[seq%3], seq, Data(shardID, seq))
			ev := shard.Event{Seq: seq, Type: Types[seq%3], Raw: json.RawMessage(raw)}
			for _, d := range drop {
				ev.Dropped = ev.Dropped || d == seq
			}
			evs = append(evs, ev)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.Sink.Dispatch(ctx, evs, shard.Session{ShardID: shardID, NumShards: 3, ID: sess, ResumeURL: "wss://resume", Seq: hi})
		cancel()
		if err != nil {
			t.Fatalf("publishing shard %d events %d-%d: %v", shardID, lo, hi, err)
		}
	}
}

// WaitAcked waits until every one of the bot's consumers has 0 events pending, 0 unacknowledged and 0
// redelivered, then a moment more (nothing more should come).
func (s *Stream) WaitAcked(t *testing.T, consumers ...string) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, "every shard's consumer with 0 events pending and 0 unacknowledged", func() bool {
		for _, name := range consumers {
			c, err := s.JS.Consumer(context.Background(), cluster.StreamName("dd"), name)
			if err != nil {
				return false
			}
			info, err := c.Info(context.Background())
			if err != nil || info.NumPending != 0 || info.NumAckPending != 0 || info.NumRedelivered != 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(100 * time.Millisecond) // nothing more should come
}
