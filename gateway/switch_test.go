package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/cache"
	"github.com/ddhq/dd/internal/rawjson"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/store"
)

// openQueue opens a queue on a store on disk, both closed after the test.
func openQueue(t *testing.T) (*store.Store, *queue.Queue) {
	st, err := store.Open(store.Options{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Open(st, queue.Options{})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close(); st.Close() })
	return st, q
}

// Events the old set queued that reach the new set only after the switch (a lagging new connection)
// are dropped for a while after it; other events pass.
func TestLateDuplicatesAfterTheSwitchAreDropped(t *testing.T) {
	_, q := openQueue(t)
	c, _ := q.Consumer("bot")
	sw := &switcher{q: q, log: zap.NewNop()}
	old, next := sw.newSink(false, nil, 1), sw.newSink(true, nil, 2)
	sw.record(old, newWindow(time.Minute, 1000))
	ev := func(seq int64, id string) shard.Event {
		return shard.Event{Seq: seq, Type: "MESSAGE_CREATE", Raw: json.RawMessage(`{"t":"MESSAGE_CREATE","s":` + fmt.Sprint(seq) + `,"op":0,"d":{"id":"` + id + `"}}`)}
	}
	ctx := context.Background()
	oldSess := shard.Session{ShardID: 0, NumShards: 1, ID: "old", ResumeURL: "ws://x"}
	newSess := shard.Session{ShardID: 0, NumShards: 2, ID: "new", ResumeURL: "ws://x"}
	if err := old.Dispatch(ctx, []shard.Event{ev(10, "A"), ev(11, "B")}, oldSess); err != nil {
		t.Fatal(err)
	}
	if err := next.Dispatch(ctx, []shard.Event{ev(3, "A")}, newSess); err != nil { // the new set lags: no B yet
		t.Fatal(err)
	}
	if err := sw.handOver(ctx, old, next); err != nil {
		t.Fatal(err)
	}
	if err := old.Dispatch(ctx, []shard.Event{ev(12, "D")}, oldSess); err != nil { // retired: dropped
		t.Fatal(err)
	}
	if err := next.Dispatch(ctx, []shard.Event{ev(4, "B"), ev(5, "C")}, newSess); err != nil { // B arrives late
		t.Fatal(err)
	}
	var got []string
	for range 2 { // the switch's fence: what the new set queued is read once the old set's is acknowledged
		recs, _ := c.Read(0, 100)
		for _, r := range recs {
			id, _ := rawjson.String(rawjson.Field(rawjson.Field(r.Payload, "d"), "id"))
			got = append(got, id)
			c.Ack(0, r.Seq)
		}
	}
	if strings.Join(got, ",") != "A,B,C" {
		t.Fatalf("queued %v, want A,B,C (each once, D dropped)", got)
	}
}

// The in-process cache (--role=all) follows the queue with its own consumer, at its own pace. Across the
// switch a guild moves from old shard 1 (of 2) to new shard 3 (of 4): the member update the new shard
// queues must not reach the cache while the member's add still waits on the old shard, however slow the
// cache is there, or the add would be applied last and the cache would serve the old nick.
func TestCacheNeverAppliesAGuildsLaterEventFirstAcrossTheSwitch(t *testing.T) {
	st, q := openQueue(t)
	bot, _ := q.Consumer("bot")
	cacheQueue, _ := q.Consumer("cache")
	c, err := cache.Open(st, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const guild, user = 3 << 22, 3<<22 + 1 // shard 1 of 2, shard 3 of 4
	member := func(typ string, s int64, nick string) shard.Event {
		raw := fmt.Sprintf(`{"op":0,"t":%q,"s":%d,"d":{"guild_id":"%d","nick":%q,"roles":[],"joined_at":"2020-09-13T12:26:40.000000+00:00",`+
			`"user":{"id":"%d","username":"u"}}}`, typ, s, guild, nick, user)
		return shard.Event{Seq: s, Type: typ, Raw: json.RawMessage(raw)}
	}
	if got := guildShard(member("X", 1, "").Raw, 2); got != 1 {
		t.Fatalf("test guild on old shard %d, want 1", got)
	}
	ctx := context.Background()
	sw := &switcher{q: q, log: zap.NewNop()}
	old, next := sw.newSink(false, nil, 2), sw.newSink(true, nil, 4)
	sw.record(old, newWindow(time.Minute, 1000))
	if err := old.Dispatch(ctx, []shard.Event{member("GUILD_MEMBER_ADD", 7, "before")},
		shard.Session{ShardID: 1, NumShards: 2, ID: "old", ResumeURL: "ws://x"}); err != nil {
		t.Fatal(err)
	}
	if err := sw.handOver(ctx, old, next); err != nil {
		t.Fatal(err)
	}
	if err := next.Dispatch(ctx, []shard.Event{member("GUILD_MEMBER_UPDATE", 3, "after")},
		shard.Session{ShardID: 3, NumShards: 4, ID: "new", ResumeURL: "ws://x"}); err != nil {
		t.Fatal(err)
	}

	// The cache's reader of shard 1 is slow: shard 3's reader gets nothing yet.
	if recs, _ := cacheQueue.Read(3, 10); len(recs) != 0 {
		t.Fatalf("the cache can read the member update on new shard 3 (%s) while the member's add waits on old shard 1", recs[0].Payload)
	}
	// The bot's delivery passes on its own: once it has the add, it gets the update, whatever the cache.
	if recs, _ := bot.Read(1, 10); len(recs) != 1 {
		t.Fatalf("the bot reads %d events on shard 1, want the add", len(recs))
	} else {
		bot.Ack(1, recs[0].Seq)
	}
	if recs, _ := bot.Read(3, 10); len(recs) != 1 {
		t.Fatalf("the bot, past the switch's fence, reads %d events on shard 3, want the update", len(recs))
	}
	if recs, _ := cacheQueue.Read(3, 10); len(recs) != 0 {
		t.Fatal("the cache reads the update once the bot has the add: the fence must be the cache's own")
	}

	// The cache's real follower applies both, in order.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go c.Follow(fctx, cacheQueue)
	testkit.Eventually(t, 5*time.Second, "the cache to follow both events", func() bool { return cacheQueue.Depth() == 0 })
	b, err := c.Member(guild, user)
	if err != nil {
		t.Fatal(err)
	}
	if nick, _ := rawjson.String(rawjson.Field(b, "nick")); nick != "after" {
		t.Fatalf("the cache serves nick %q, want the update's %q: %s", nick, "after", b)
	}
}
