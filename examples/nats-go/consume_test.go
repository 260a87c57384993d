package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ddhq/dd/examples/internal/streamtest"
	"github.com/ddhq/dd/internal/testkit"
)

// handled collects what the bot handled.
type handled struct {
	mu     sync.Mutex
	events []Event
	logs   []string
}

func (h *handled) handle(_ context.Context, ev Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
	return nil
}

func (h *handled) log(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs = append(h.logs, fmt.Sprintf(format, args...))
}

func (h *handled) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.events)
}

// run runs Consume until the bot has handled want events and every consumer has nothing pending or
// unacknowledged, then stops it.
func run(t *testing.T, st *streamtest.Stream, cfg Config, h *handled, want int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Consume(ctx, st.JS, cfg) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && err != context.Canceled {
				t.Errorf("Consume: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Consume still running 10s after its context ended")
		}
	}()
	testkit.Eventually(t, 20*time.Second, fmt.Sprintf("%d events handled", want), func() bool { return h.count() >= want })
	var consumers []string
	for _, id := range cfg.Shards {
		consumers = append(consumers, ShardConsumer(cfg.Durable, id))
	}
	st.WaitAcked(t, consumers...)
	if n := h.count(); n != want {
		t.Errorf("%d events handled; want %d", n, want)
	}
}

// TestEveryEventOnceInShardOrder publishes three shards' events through dd's EventSink, with a Discord
// replay that the stream took in as copies (after its duplicate window) and a handler slower than
// AckWait (so the server delivers its event again): the bot handles every published event once, each
// shard's in order, and acknowledges them all. A second run of the same durable consumers handles only
// what was published since.
func TestEveryEventOnceInShardOrder(t *testing.T) {
	st := streamtest.Start(t)
	sink := st.Sink
	st.Publish(t, 0, "a", 1, 20)
	st.Publish(t, 1, "b", 1, 20, 7) // 7 dropped by a hook: a gap the bot must not wait for
	st.Publish(t, 2, "c", 1, 10)
	st.Publish(t, 2, "c", 11, 20)
	time.Sleep(400 * time.Millisecond)
	st.Publish(t, 1, "b", 16, 25) // a resume's replay of 16-20, past the duplicate window: copies in the stream
	if sink.Duplicates() != 0 || sink.Published() != 20+19+20+10 {
		t.Fatalf("stream took %d events and dropped %d copies; want 69 and 0 (the replay's copies past the window)",
			sink.Published(), sink.Duplicates())
	}

	h := &handled{}
	slowOnce := sync.Once{}
	cfg := Config{Durable: "bot", Shards: []int{0, 1, 2}, AckWait: time.Second, Log: h.log,
		Handle: func(ctx context.Context, ev Event) error {
			if ev.ID == "c-5" {
				slowOnce.Do(func() { time.Sleep(1500 * time.Millisecond) }) // past AckWait: delivered again
			}
			return h.handle(ctx, ev)
		}}
	run(t, st, cfg, h, 20+24+20)

	want := map[int][]string{}
	for s := int64(1); s <= 20; s++ {
		want[0] = append(want[0], fmt.Sprintf("a-%d", s))
		want[2] = append(want[2], fmt.Sprintf("c-%d", s))
	}
	for s := int64(1); s <= 25; s++ {
		if s != 7 {
			want[1] = append(want[1], fmt.Sprintf("b-%d", s))
		}
	}
	got := map[int][]string{}
	for _, ev := range h.events {
		got[ev.Shard] = append(got[ev.Shard], ev.ID)
		if ev.Type != streamtest.Types[ev.Seq%3] || string(ev.Data) != streamtest.Data(ev.Shard, ev.Seq) {
			t.Errorf("event %s decoded as type %q data %s", ev.ID, ev.Type, ev.Data)
		}
	}
	for id := 0; id < 3; id++ {
		if strings.Join(got[id], " ") != strings.Join(want[id], " ") {
			t.Errorf("shard %d handled, in this order:\n  %v\nwant each event once, in order:\n  %v", id, got[id], want[id])
		}
	}
	copies := 0
	for _, l := range h.logs {
		if strings.HasPrefix(l, "copy of event") {
			copies++
		}
	}
	if copies < 5+1 {
		t.Errorf("%d copies dropped; want at least 6 (b-16..b-20 stored twice, c-5 delivered again); log:\n%s",
			copies, strings.Join(h.logs, "\n"))
	}

	// A restart: the durable consumers go on after the last acknowledged event.
	st.Publish(t, 0, "a", 21, 23)
	h2 := &handled{}
	cfg.Handle, cfg.Log = h2.handle, h2.log
	run(t, st, cfg, h2, 3)
	var ids []string
	for _, ev := range h2.events {
		ids = append(ids, ev.ID)
	}
	if strings.Join(ids, " ") != "a-21 a-22 a-23" {
		t.Errorf("second run handled %v; want only what was published since: [a-21 a-22 a-23]", ids)
	}

	// A crash while handling a-26 (its connection gone, nothing acknowledged or given back), events
	// published meanwhile, and a restart: the shard goes on at a-26, in order, once AckWait has passed.
	st.Publish(t, 0, "a", 24, 30)
	crashNC, err := nats.Connect(st.URL)
	if err != nil {
		t.Fatal(err)
	}
	crashJS, err := jetstream.New(crashNC)
	if err != nil {
		t.Fatal(err)
	}
	h3 := &handled{}
	cfg.Log = h3.log
	cfg.Handle = func(ctx context.Context, ev Event) error {
		if ev.ID == "a-26" {
			crashNC.Close()
			return fmt.Errorf("crashed")
		}
		return h3.handle(ctx, ev)
	}
	crashed := make(chan error, 1)
	go func() { crashed <- Consume(context.Background(), crashJS, cfg) }()
	select {
	case err := <-crashed:
		if err == nil {
			t.Errorf("Consume returned no error when its connection closed")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Consume still running 10 s after its connection closed")
	}
	if n := h3.count(); n != 2 {
		t.Errorf("before the crash %d events handled; want 2 (a-24, a-25)", n)
	}
	st.Publish(t, 0, "a", 31, 33)
	h4 := &handled{}
	cfg.Handle, cfg.Log = h4.handle, h4.log
	run(t, st, cfg, h4, 8)
	ids = nil
	for _, ev := range h4.events {
		ids = append(ids, ev.ID)
	}
	if strings.Join(ids, " ") != "a-26 a-27 a-28 a-29 a-30 a-31 a-32 a-33" {
		t.Errorf("after the crash at a-26 (a-24, a-25 handled) the next run handled %v; want a-26 to a-33 in order", ids)
	}
}
