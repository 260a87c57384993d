// Package natsts tests the TypeScript example bot (src/bot.ts) against a real NATS server fed by dd's
// EventSink. It needs node, and `npm ci` run in this folder (scripts/test.sh does both).
package natsts

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddhq/dd/examples/internal/streamtest"
	"github.com/ddhq/dd/internal/testkit"
)

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
func runBot(t *testing.T, st *streamtest.Stream, want int) ([]event, string) {
	t.Helper()
	cmd := exec.Command("node", "dist/bot.js", "--nats", st.URL, "--name", "dd", "--durable", "ts-bot", "--shards", "3")
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
	st.WaitAcked(t, "ts-bot-shard-0", "ts-bot-shard-1", "ts-bot-shard-2")
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
	st := streamtest.Start(t)
	st.Publish(t, 0, "a", 1, 20)
	st.Publish(t, 1, "b", 1, 20, 7) // 7 dropped by a hook: a gap the bot must not wait for
	st.Publish(t, 2, "c", 1, 20)
	time.Sleep(400 * time.Millisecond)
	st.Publish(t, 1, "b", 16, 25) // a resume's replay of 16-20, past the duplicate window: copies in the stream

	evs, stderr := runBot(t, st, 20+24+20)
	for shardID, want := range []string{seqIDs("a", 1, 20), seqIDs("b", 1, 25, 7), seqIDs("c", 1, 20)} {
		if got := ids(evs, shardID); got != want {
			t.Errorf("shard %d printed, in this order:\n  %s\nwant each event once, in order:\n  %s", shardID, got, want)
		}
	}
	for _, ev := range evs {
		if ev.Type != streamtest.Types[ev.Seq%3] || string(ev.Data) != streamtest.Data(ev.Shard, ev.Seq) {
			t.Errorf("event %s decoded as type %q seq %d data %s", ev.ID, ev.Type, ev.Seq, ev.Data)
		}
	}
	if n := strings.Count(stderr, "copy of event b-"); n != 5 {
		t.Errorf("%d copies dropped; want 5 (b-16..b-20 stored twice); stderr:\n%s", n, stderr)
	}

	st.Publish(t, 2, "c", 21, 23)
	evs, _ = runBot(t, st, 3)
	if got := ids(evs, 2); got != "c-21 c-22 c-23" || len(evs) != 3 {
		t.Errorf("second run printed %v; want only what was published since: c-21 c-22 c-23", evs)
	}
}
