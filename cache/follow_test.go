package cache

import (
	"context"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/store"
)

// follower runs Follow on a store in dir until stopped.
type follower struct {
	st     *store.Store
	q      *queue.Queue
	c      *Cache
	cancel context.CancelFunc
	done   chan error
}

func startFollower(t *testing.T, dir string) *follower {
	t.Helper()
	f := &follower{st: openStore(t, dir), done: make(chan error, 1)}
	var err error
	if f.q, err = queue.Open(f.st, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	con, err := f.q.Consumer("cache")
	if err != nil {
		t.Fatal(err)
	}
	if f.c, err = Open(f.st, Options{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() { f.done <- f.c.Follow(ctx, con) }()
	return f
}

func (f *follower) stop(t *testing.T) {
	t.Helper()
	f.cancel()
	if err := <-f.done; err != nil {
		t.Errorf("Follow: %v", err)
	}
	if err := f.q.Close(); err != nil {
		t.Error(err)
	}
	if err := f.st.Close(); err != nil {
		t.Error(err)
	}
}

func appendEvents(t *testing.T, q *queue.Queue, shard int, evs ...any) {
	t.Helper()
	var recs []queue.Record
	for i := 0; i < len(evs); i += 2 {
		recs = append(recs, queue.Record{Shard: shard, Payload: payload(evs[i].(string), i, evs[i+1])})
	}
	if err := q.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

func TestFollowResumesAfterARestartWithoutLoss(t *testing.T) {
	dir := t.TempDir()
	f := startFollower(t, dir)
	g2 := g1 + 1<<22
	appendEvents(t, f.q, 0, "GUILD_CREATE", guildCreate(g1, 10, nil))
	appendEvents(t, f.q, 1, "GUILD_CREATE", guildCreate(g2, 10, nil))
	testkit.Eventually(t, 10*time.Second, "both guilds applied", func() bool { return f.c.Stats().Guilds == 2 })
	// Events queued just before the restart: the cache may or may not have applied them.
	for i := range 50 {
		appendEvents(t, f.q, i%2, "GUILD_MEMBER_ADD", map[string]any{"guild_id": id(g1), "user": user(uint64(1000 + i)),
			"roles": []string{}, "joined_at": "2024-01-01T00:00:00.000000+00:00"})
	}
	f.stop(t)

	// Events that arrive while the cache is down wait in the queue (the gateway appends them).
	st := openStore(t, dir)
	q, err := queue.Open(st, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Consumer("cache"); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, q, 1, "GUILD_DELETE", map[string]any{"id": id(g2)})
	q.Close()
	st.Close()

	f = startFollower(t, dir)
	defer f.stop(t)
	// It answers from disk at once, before catching up.
	decode(t, "guild read at once after the restart", r(f.c.Guild(g1)))
	testkit.Eventually(t, 10*time.Second, "the queue caught up", func() bool { return f.c.Stats().Guilds == 1 })
	testkit.Eventually(t, 10*time.Second, "every member added", func() bool { return f.c.Stats().Members == 60 })
	for i := range 50 {
		decode(t, "member added around the restart", r(f.c.Member(g1, uint64(1000+i))))
	}
	mustNotFound(t, "guild removed while the cache was down", r(f.c.Guild(g2)))
	if g := decode(t, "guild", r(f.c.Guild(g1))); g["member_count"] != 60.0 {
		t.Errorf("member_count = %v, want 60", g["member_count"])
	}
	checkCounters(t, f.c, f.st)
}
