// Package natsts tests the TypeScript example bot (src/bot.ts) against a real NATS server fed by dd's
// EventSink. It needs node, and `npm ci` run in this folder (scripts/test.sh does both).
package natsts

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ddhq/dd/cluster"
	"github.com/ddhq/dd/cluster/clustertest"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/shard"
)

var types = []string{"MESSAGE_CREATE", "TYPING_START", "MESSAGE_REACTION_ADD"}

// publish sends shard's events from..to of session sess through dd's real EventSink, in batches of 5
// as a shard does; the events in drop are dropped by the OnDispatch hook (never published).
func publish(t *testing.T, sink *cluster.EventSink, shardID int, sess string, from, to int64, drop ...int64) {
	t.Helper()
	for lo := from; lo <= to; lo += 5 {
		var evs []shard.Event
		hi := min(lo+4, to)
		for s := lo; s <= hi; s++ {
			raw := fmt.Sprintf(`{"op":0,"t":%q,"s":%d,"d":{"shard":%d,"n":%d}}`, types[s%3], s, shardID, s)
			ev := shard.Event{Seq: s, Type: types[s%3], Raw: json.RawMessage(raw)}
			for _, d := range drop {
				ev.Dropped = ev.Dropped || d == s
			}
			evs = append(evs, ev)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := sink.Dispatch(ctx, evs, shard.Session{ShardID: shardID, NumShards: 3, ID: sess, ResumeURL: "wss://resume", Seq: hi})
		cancel()
		if err != nil {
			t.Fatalf("publishing shard %d events %d-%d: %v", shardID, lo, hi, err)
		}
	}
}

// event is a line the bot prints.
type event struct {
	ID    string          `json:"id"`
	Shard int             `json:"shard"`
	Type  string          `json:"type"`
	Seq   int64           `json:"seq"`
	Data  json.RawMessage `json:"data"`
}

// build compiles the bot with the TypeScript compiler installed by npm ci.
func build(t *testing.T) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the TypeScript example (examples/nats-ts) did not run")
	}
	if _, err := os.Stat("node_modules/typescript/bin/tsc"); err != nil {
		t.Fatalf("examples/nats-ts has no node_modules: run `npm ci` there first (scripts/test.sh does): %v", err)
	}
	if out, err := exec.Command(node, "node_modules/typescript/bin/tsc", "-p", ".").CombinedOutput(); err != nil {
		t.Fatalf("tsc: %v\n%s", err, out)
	}
}

// runBot runs the bot until it printed want events and its consumers have nothing pending or
// unacknowledged, then stops it with SIGTERM and checks it exits cleanly. It returns the events and
// what the bot wrote to stderr.
func runBot(t *testing.T, url string, js jetstream.JetStream, want int) ([]event, string) {
	t.Helper()
	cmd := exec.Command("node", "dist/bot.js", "--nats", url, "--name", "dd", "--durable", "ts-bot", "--shards", "3")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var events []event
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("bot printed %q: %v", sc.Text(), err)
				continue
			}
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
		}
	}()
	exited := make(chan error, 1)
	go func() { <-read; exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(events)
	}
	testkit.Eventually(t, 30*time.Second, fmt.Sprintf("the bot printing %d events", want), func() bool {
		select {
		case err := <-exited:
			t.Fatalf("the bot exited early (%v); stderr:\n%s", err, stderr.String())
		default:
		}
		return count() >= want
	})
	testkit.Eventually(t, 10*time.Second, "every shard's consumer with 0 events pending and 0 unacknowledged", func() bool {
		for id := 0; id < 3; id++ {
			c, err := js.Consumer(context.Background(), "DD_EVENTS", fmt.Sprintf("ts-bot-shard-%d", id))
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
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the bot, stopped by SIGTERM, exited with %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the bot still running 10 s after SIGTERM; stderr:\n%s", stderr.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != want {
		t.Errorf("the bot printed %d events; want %d", len(events), want)
	}
	return events, stderr.String()
}

func ids(evs []event, shardID int) string {
	var s []string
	for _, ev := range evs {
		if ev.Shard == shardID {
			s = append(s, ev.ID)
		}
	}
	return strings.Join(s, " ")
}

func seqIDs(sess string, from, to int64, skip ...int64) string {
	var s []string
	for n := from; n <= to; n++ {
		if len(skip) == 0 || n != skip[0] {
			s = append(s, fmt.Sprintf("%s-%d", sess, n))
		}
	}
	return strings.Join(s, " ")
}

// TestTypeScriptBotReadsEveryEventOnceInShardOrder runs the TypeScript example bot against three shards'
// events published by dd's EventSink, with a Discord replay that the stream took in as copies (after its
// duplicate window): the bot prints every published event once, each shard's in order, decoded from
// the envelope, and acknowledges them all. Run again, its durable consumers hand it only what was
// published since.
func TestTypeScriptBotReadsEveryEventOnceInShardOrder(t *testing.T) {
	build(t)
	srv := clustertest.Server(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: srv.ClientURL(), Instance: "gateway"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sink, err := cluster.NewEventSink(ctx, conn, cluster.EventSinkConfig{DuplicateWindow: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, sink, 0, "a", 1, 20)
	publish(t, sink, 1, "b", 1, 20, 7) // 7 dropped by a hook: a gap the bot must not wait for
	publish(t, sink, 2, "c", 1, 20)
	time.Sleep(400 * time.Millisecond)
	publish(t, sink, 1, "b", 16, 25) // a resume's replay of 16-20, past the duplicate window: copies in the stream

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	evs, stderr := runBot(t, srv.ClientURL(), js, 20+24+20)
	for shardID, want := range []string{seqIDs("a", 1, 20), seqIDs("b", 1, 25, 7), seqIDs("c", 1, 20)} {
		if got := ids(evs, shardID); got != want {
			t.Errorf("shard %d printed, in this order:\n  %s\nwant each event once, in order:\n  %s", shardID, got, want)
		}
	}
	for _, ev := range evs {
		if ev.Type != types[ev.Seq%3] || string(ev.Data) != fmt.Sprintf(`{"shard":%d,"n":%d}`, ev.Shard, ev.Seq) {
			t.Errorf("event %s decoded as type %q seq %d data %s", ev.ID, ev.Type, ev.Seq, ev.Data)
		}
	}
	if n := strings.Count(stderr, "copy of event b-"); n != 5 {
		t.Errorf("%d copies dropped; want 5 (b-16..b-20 stored twice); stderr:\n%s", n, stderr)
	}

	publish(t, sink, 2, "c", 21, 23)
	evs, _ = runBot(t, srv.ClientURL(), js, 3)
	if got := ids(evs, 2); got != "c-21 c-22 c-23" || len(evs) != 3 {
		t.Errorf("second run printed %v; want only what was published since: c-21 c-22 c-23", evs)
	}
}
