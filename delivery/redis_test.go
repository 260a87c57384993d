package delivery

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ddhq/dd/internal/redistest"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/store"
)

// redisQueue is a queue on a real Badger store with the bot's consumer.
func redisQueue(t *testing.T) (*queue.Queue, *queue.Consumer) {
	t.Helper()
	st, err := store.Open(store.Options{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Open(st, queue.Options{FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c, err := q.Consumer("bot")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close(); st.Close() })
	return q, c
}

var redisEventTypes = []string{"MESSAGE_CREATE", "TYPING_START", "GUILD_MEMBER_ADD"}

// redisPayload is event n of a shard: its type rotates, and its d says which it is.
func redisPayload(shard, n int) []byte {
	return fmt.Appendf(nil, `{"op":0,"t":"%s","s":%d,"d":{"shard":%d,"n":%d,"content":"h\u00e9llo \"%d\"","id":"81384788765712384"}}`,
		redisEventTypes[n%len(redisEventTypes)], n, shard, n, n)
}

func appendRedisEvents(t *testing.T, q *queue.Queue, shard, from, to int) {
	t.Helper()
	recs := make([]queue.Record, 0, to-from)
	for n := from; n < to; n++ {
		recs = append(recs, queue.Record{Shard: shard, Payload: redisPayload(shard, n)})
	}
	if err := q.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

func runRedisSink(t *testing.T, c *queue.Consumer, o RedisOptions) *RedisSink {
	t.Helper()
	if o.MinBackoff == 0 {
		o.MinBackoff, o.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	}
	if o.PingEvery == 0 {
		o.PingEvery = 50 * time.Millisecond
	}
	s, err := NewRedis(c, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// redisEntry is one stream entry as a bot reads it.
type redisEntry struct {
	stream, id string
	shard, n   int
	eventID    string
	payload    map[string]any
}

// readStreams reads every entry of the event streams under prefix, decoding each data field.
func readStreams(t *testing.T, rdb *redis.Client, prefix string) []redisEntry {
	t.Helper()
	var out []redisEntry
	for _, typ := range redisEventTypes {
		msgs, err := rdb.XRange(context.Background(), prefix+typ, "-", "+").Result()
		if err != nil {
			t.Fatalf("XRANGE %s: %v", prefix+typ, err)
		}
		for _, m := range msgs {
			if len(m.Values) != 1 {
				t.Fatalf("%s %s has fields %v, want data alone", prefix+typ, m.ID, m.Values)
			}
			data, ok := m.Values["data"].(string)
			if !ok {
				t.Fatalf("%s %s: no data field: %v", prefix+typ, m.ID, m.Values)
			}
			v, ok := fromMsgpack(t, []byte(data)).(map[string]any)
			if !ok || len(v) != 3 {
				t.Fatalf("%s %s: data is %#v, want {shardId, payload, eventId}", prefix+typ, m.ID, v)
			}
			p, _ := v["payload"].(map[string]any)
			d, _ := p["d"].(map[string]any)
			if p == nil || d == nil || p["t"] != typ {
				t.Fatalf("%s %s: payload %#v is not the gateway payload of a %s as a map", prefix+typ, m.ID, v["payload"], typ)
			}
			e := redisEntry{stream: prefix + typ, id: m.ID, payload: p}
			e.shard, e.n = int(v["shardId"].(int64)), int(d["n"].(int64))
			e.eventID, _ = v["eventId"].(string)
			if int(d["shard"].(int64)) != e.shard {
				t.Fatalf("%s %s: shardId %d carries shard %v's event", prefix+typ, m.ID, e.shard, d["shard"])
			}
			out = append(out, e)
		}
	}
	return out
}

// checkExactlyOnce checks that each shard's events 0..perShard-1 are there once each, with distinct event
// ids, and that each stream has a shard's events in order.
func checkExactlyOnce(t *testing.T, entries []redisEntry, shards, perShard int) {
	t.Helper()
	seen := map[[2]int]int{}
	ids := map[string]bool{}
	last := map[[2]string]int{} // stream, shard -> last n
	for _, e := range entries {
		seen[[2]int{e.shard, e.n}]++
		if ids[e.eventID] || e.eventID == "" {
			t.Fatalf("event id %q twice or empty (shard %d event %d)", e.eventID, e.shard, e.n)
		}
		ids[e.eventID] = true
		k := [2]string{e.stream, fmt.Sprint(e.shard)}
		if prev, ok := last[k]; ok && e.n <= prev {
			t.Fatalf("%s: shard %d's event %d after its event %d", e.stream, e.shard, e.n, prev)
		}
		last[k] = e.n
	}
	for s := range shards {
		for n := range perShard {
			if c := seen[[2]int{s, n}]; c != 1 {
				t.Fatalf("shard %d event %d is in Redis %d times, want once (%d entries in all)", s, n, c, len(entries))
			}
		}
	}
	if len(entries) != shards*perShard {
		t.Fatalf("%d entries, want %d", len(entries), shards*perShard)
	}
}

func waitRedis(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRedisSinkWritesTheLayoutDiscordJSReads(t *testing.T) {
	const pass = "a-redis-password-0123"
	srv := redistest.Start(t, redistest.Options{Password: pass})
	q, c := redisQueue(t)
	for s := range 3 {
		appendRedisEvents(t, q, s, 0, 40)
	}
	runRedisSink(t, c, RedisOptions{URL: srv.URL(pass), Prefix: "bot:", BatchMax: 7})
	waitRedis(t, 10*time.Second, "the queue to empty", func() bool { return q.Depth() == 0 })

	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: pass})
	defer rdb.Close()
	entries := readStreams(t, rdb, "bot:")
	checkExactlyOnce(t, entries, 3, 40)
	for _, e := range entries {
		if !strings.Contains(e.eventID, "-") || e.payload["op"] != int64(0) || e.payload["s"] != int64(e.n) {
			t.Fatalf("entry %+v: payload op/s not kept", e)
		}
		d := e.payload["d"].(map[string]any)
		if d["content"] != fmt.Sprintf(`héllo "%d"`, e.n) || d["id"] != "81384788765712384" {
			t.Fatalf("entry %+v: d not decoded as JSON would be: %#v", e, d)
		}
	}
	// Unprefixed names hold nothing; the positions hash says each shard's last event.
	if n, _ := rdb.Exists(context.Background(), "MESSAGE_CREATE").Result(); n != 0 {
		t.Fatal("a stream without the prefix exists")
	}
	pos, err := rdb.HGetAll(context.Background(), "bot:dd:written").Result()
	if err != nil || len(pos) != 3 {
		t.Fatalf("positions = %v, %v; want one per shard", pos, err)
	}
}

func TestRedisStreamsAreCappedFromMaxLen(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	q, c := redisQueue(t)
	recs := make([]queue.Record, 3000)
	for i := range recs {
		recs[i] = queue.Record{Shard: 0, Payload: []byte(fmt.Sprintf(`{"op":0,"t":"TYPING_START","s":%d,"d":{}}`, i+1))}
	}
	if err := q.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	runRedisSink(t, c, RedisOptions{URL: srv.URL(""), MaxLen: 500})
	waitRedis(t, 10*time.Second, "the queue to empty", func() bool { return q.Depth() == 0 })
	n, err := srv.Do("XLEN", "TYPING_START")
	if err != nil {
		t.Fatal(err)
	}
	// MAXLEN ~ trims whole nodes of the stream (100 entries by default), so a little more stays.
	if l, _ := strconv.Atoi(strings.TrimPrefix(n, ":")); l < 500 || l > 600 {
		t.Fatalf("XLEN = %d after 3000 events with MaxLen 500, want 500 to 600", l)
	}
}

// A batch sent again, whole or in part, is not added twice; a batch of another queue instance (another
// dd, or a store started afresh) is not mistaken for one already sent.
func TestRedisSinkDoesNotAddABatchTwice(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	_, c := redisQueue(t)
	s, err := NewRedis(c, RedisOptions{URL: srv.URL("")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.client.Close()
	batch := func(inst string, from, to int) redisBatch {
		recs := make([]queue.Record, 0, to-from)
		for n := from; n < to; n++ {
			recs = append(recs, queue.Record{Shard: 2, Payload: redisPayload(2, n), ID: fmt.Sprintf("%s-%d", inst, n+1)})
		}
		return s.encode(2, recs)
	}
	ctx := context.Background()
	for _, step := range []struct {
		inst     string
		from, to int
		added    int
	}{
		{"aaaa", 0, 10, 10},
		{"aaaa", 0, 10, 0},  // sent again whole: a crash after Redis's answer
		{"aaaa", 5, 15, 5},  // in part: 10..14 are new
		{"aaaa", 14, 15, 0}, // the last one again
		{"bbbb", 0, 3, 3},   // another queue: its sequences start again
		{"aaaa", 15, 16, 1}, // back to the first: the position is the other's, nothing skipped
	} {
		added, err := s.write(ctx, batch(step.inst, step.from, step.to))
		if err != nil || added != step.added {
			t.Fatalf("%s events %d..%d: added %d, %v; want %d", step.inst, step.from, step.to-1, added, err, step.added)
		}
	}
}

// Redis killed while events flow: the queue keeps them, /readyz's check and the metrics say so, the log
// says it once and says once that it is over; after the restart (with its data) every event is in Redis
// once, in order.
func TestRedisDownLosesNothingAndSaysSoOnce(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Persist: true})
	q, c := redisQueue(t)
	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewRegistry()
	s := runRedisSink(t, c, RedisOptions{URL: srv.URL(""), Logger: zap.New(core), Registerer: reg, BatchMax: 10})

	const shards, perShard = 4, 600
	var wg sync.WaitGroup
	for sh := range shards {
		wg.Go(func() {
			for n := 0; n < perShard; n += 10 {
				appendRedisEvents(t, q, sh, n, n+10)
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	srv.Kill()
	waitRedis(t, 5*time.Second, "the sink to notice", func() bool { return s.Err() != nil })
	time.Sleep(500 * time.Millisecond) // retries go on
	if d := q.Depth(); d == 0 {
		t.Fatal("the queue is empty while Redis is down: events left it without Redis having them")
	}
	if up := metricValue(s.m.up); up != 0 {
		t.Fatalf("dd_delivery_redis_up = %v while Redis is down", up)
	}
	if f := metricValue(s.m.failed.WithLabelValues("network")); f == 0 {
		t.Fatal("no failed attempt counted while Redis is down")
	}
	srv.Start()
	wg.Wait()
	waitRedis(t, 20*time.Second, "the queue to empty", func() bool { return q.Depth() == 0 })
	waitRedis(t, 5*time.Second, "the sink to be healthy", func() bool { return s.Err() == nil })

	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	checkExactlyOnce(t, readStreams(t, rdb, ""), shards, perShard)
	if n := logs.FilterMessageSnippet("Redis does not take events").Len(); n != 1 {
		t.Errorf("%d log lines say Redis is down, want 1:\n%v", n, logs.All())
	}
	if n := logs.FilterMessageSnippet("Redis takes events again").Len(); n != 1 {
		t.Errorf("%d log lines say Redis is back, want 1", n)
	}
	// A batch Redis added just before it died, whose answer was lost, is sent again and skipped.
	added, skipped := metricValue(s.m.delivered), metricValue(s.m.skipped)
	if added != shards*perShard {
		t.Errorf("dd_delivery_redis_delivered_events_total = %v, want %d (skipped %v)", added, shards*perShard, skipped)
	}
	t.Logf("%v events added, %v sent again and skipped", added, skipped)
	if up, failing := metricValue(s.m.up), metricValue(s.m.failingShards); up != 1 || failing != 0 {
		t.Errorf("after recovery: up %v, failing shards %v; want 1 and 0", up, failing)
	}
}

// A stream key taken by a value of another type: Redis refuses that event; the shard stops there (not
// ready, said once) and goes on once the key is freed, with nothing lost or repeated.
func TestRedisRefusedEventHoldsItsShardWithoutRepeats(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	if _, err := srv.Do("SET", "TYPING_START", "not a stream"); err != nil {
		t.Fatal(err)
	}
	q, c := redisQueue(t)
	appendRedisEvents(t, q, 0, 0, 30)
	s := runRedisSink(t, c, RedisOptions{URL: srv.URL(""), BatchMax: 30})
	waitRedis(t, 5*time.Second, "the refusal", func() bool { return s.Err() != nil })
	if err := s.Err(); !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("Err() = %v, want Redis's WRONGTYPE", err)
	}
	if _, err := srv.Do("DEL", "TYPING_START"); err != nil {
		t.Fatal(err)
	}
	waitRedis(t, 5*time.Second, "the queue to empty", func() bool { return q.Depth() == 0 })
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	entries := readStreams(t, rdb, "")
	seen := map[int]int{}
	for _, e := range entries {
		seen[e.n]++
	}
	for n := range 30 {
		if seen[n] != 1 {
			t.Fatalf("event %d in Redis %d times, want once", n, seen[n])
		}
	}
	waitRedis(t, 2*time.Second, "the sink to be healthy", func() bool { return s.Err() == nil })
}

func TestNewRedisNeverShowsThePassword(t *testing.T) {
	_, c := redisQueue(t)
	for _, u := range []string{"http://:pw-secret-123@host:6379", "redis://:pw-secret-123@host:6379/notadb", "redis://:pw%zz-secret-123@host"} {
		_, err := NewRedis(c, RedisOptions{URL: u})
		if err == nil {
			t.Fatalf("NewRedis(%q) accepted it", u)
		}
		if strings.Contains(err.Error(), "secret-123") {
			t.Fatalf("NewRedis's error shows the password: %v", err)
		}
	}
}

// metricValue reads a counter's or a gauge's value.
func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
