package process

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ddhq/dd/internal/redistest"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/discordsim"
)

// redisEvent is one stream entry as a discord.js bot decodes it.
type redisEvent struct {
	stream  string
	ms      int64 // the entry id's time part
	shard   int
	seq     int64
	eventID string
}

// readRedisEvents reads every entry of every stream under prefix.
func readRedisEvents(t *testing.T, rdb *redis.Client, prefix string) []redisEvent {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []redisEvent
	for _, k := range keys {
		if typ, _ := rdb.Type(ctx, k).Result(); typ != "stream" {
			continue
		}
		msgs, err := rdb.XRange(ctx, k, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			var v struct {
				ShardID int    `msgpack:"shardId"`
				EventID string `msgpack:"eventId"`
				Payload struct {
					Op int    `msgpack:"op"`
					T  string `msgpack:"t"`
					S  int64  `msgpack:"s"`
					D  any    `msgpack:"d"`
				} `msgpack:"payload"`
			}
			data, _ := m.Values["data"].(string)
			if err := msgpack.Unmarshal([]byte(data), &v); err != nil {
				t.Fatalf("%s %s: data is not the MessagePack envelope: %v", k, m.ID, err)
			}
			if prefix+v.Payload.T != k || v.Payload.Op != 0 || v.Payload.D == nil {
				t.Fatalf("%s %s: payload %+v is not this stream's gateway dispatch", k, m.ID, v.Payload)
			}
			msPart, _, _ := strings.Cut(m.ID, "-")
			ms, _ := strconv.ParseInt(msPart, 10, 64)
			out = append(out, redisEvent{stream: k, ms: ms, shard: v.ShardID, seq: v.Payload.S, eventID: v.EventID})
		}
	}
	return out
}

// The promise for the Redis sink, with the real binary: a firehose into 4 shards goes to Redis
// streams; Redis is SIGKILLed mid-firehose (dd's /readyz is 503 naming Redis, and its log says so once,
// and once that it is over) and restarted with its data; then dd is SIGKILLed and restarted. Every event
// of every shard is in Redis exactly once (per shard sequence and per X-DD-Event-Id), each shard's in the
// order Discord sent them.
func TestRedisSinkLosesAndRepeatsNothingAcrossRedisAndDDKills(t *testing.T) {
	const pass = "redis-pass-0123456789"
	srv := redistest.Start(t, redistest.Options{Persist: true, Password: pass})
	sim := discordsim.New(discordsim.Config{Guilds: 20, MaxConcurrency: 16, Tokens: []string{"tok-redis-0123456789"}})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	dir := t.TempDir()
	env := []string{"DD_DISCORD__TOKEN=tok-redis-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(),
		"DD_STORE__PATH=" + filepath.Join(dir, "data"), "DD_EVENTS__SINK=redis", "DD_EVENTS__REDIS_URL=" + srv.URL(pass),
		"DD_EVENTS__REDIS_PREFIX=bot:", "DD_GATEWAY__LISTEN=127.0.0.1:0", "DD_GATEWAY__TOTAL_SHARDS=4",
		"DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false", "DD_LOG__FORMAT=json"}
	shardsReady := sessionsConnected(sim, 4)
	p := startDD(t, dir, env, "--role=gateway")
	addr := p.waitListening(t, 1)["gateway"]
	logs := watchLog(p)
	testkit.Eventually(t, 15*time.Second, "4 shards connected", shardsReady)
	testkit.Eventually(t, 10*time.Second, "dd ready", func() bool { code, _ := get(t, "http://"+addr+"/readyz"); return code == 200 })

	done := make(chan struct{})
	stop := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 4000, Total: 16000, Done: done})
	defer stop()
	time.Sleep(600 * time.Millisecond)

	// 1. Redis killed, then back with its data.
	srv.Kill()
	testkit.Eventually(t, 5*time.Second, "/readyz 503 naming Redis", func() bool {
		code, body := get(t, "http://"+addr+"/readyz")
		return code == 503 && strings.Contains(body, "Redis")
	})
	time.Sleep(time.Second)
	srv.Start()
	testkit.Eventually(t, 10*time.Second, "/readyz 200 with Redis back", func() bool { code, _ := get(t, "http://"+addr+"/readyz"); return code == 200 })
	testkit.Eventually(t, 5*time.Second, "the recovery in the log", func() bool { return logs.saw("Redis takes events again") })
	down, back := logs.count("Redis does not take events"), logs.count("Redis takes events again")
	if down != 1 || back != 1 {
		t.Errorf("the log says Redis is down %d times and back %d times over one outage, want once each", down, back)
	}

	// 2. dd SIGKILLed while events pour in, then restarted.
	time.Sleep(300 * time.Millisecond)
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	time.Sleep(300 * time.Millisecond)
	p = startDD(t, dir, env, "--role=gateway")
	<-done

	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: pass})
	defer rdb.Close()
	var events []redisEvent
	var missing string
	complete := func() bool {
		sessions := sim.Sessions()
		if len(sessions) != 4 {
			return false
		}
		events = readRedisEvents(t, rdb, "bot:")
		seen := map[[2]int64]bool{}
		for _, e := range events {
			seen[[2]int64{int64(e.shard), e.seq}] = true
		}
		for _, s := range sessions {
			for seq := int64(1); seq <= s.Seq; seq++ {
				if !seen[[2]int64{int64(s.Shard), seq}] {
					missing = fmt.Sprintf("shard %d seq %d of %d", s.Shard, seq, s.Seq)
					return false
				}
			}
		}
		return true
	}
	deadline := time.Now().Add(60 * time.Second)
	for !complete() {
		if time.Now().After(deadline) {
			t.Fatalf("not every event reached Redis: missing %s (%d entries)", missing, len(events))
		}
		time.Sleep(200 * time.Millisecond)
	}

	perShard := map[[2]int64]int{}
	ids := map[string]int{}
	for _, e := range events {
		perShard[[2]int64{int64(e.shard), e.seq}]++
		ids[e.eventID]++
	}
	for k, n := range perShard {
		if n != 1 {
			t.Errorf("shard %d seq %d is in Redis %d times, want once", k[0], k[1], n)
		}
	}
	for id, n := range ids {
		if n != 1 || id == "" {
			t.Errorf("event id %q is in Redis %d times, want once", id, n)
		}
	}
	// Order: within a stream (read in entry order) each shard's sequences rise; and each shard's events
	// were added one batch after the other, so across streams a later sequence never has an earlier
	// entry time.
	lastSeq := map[string]int64{}
	for _, e := range events {
		k := e.stream + "/" + strconv.Itoa(e.shard)
		if e.seq <= lastSeq[k] {
			t.Fatalf("%s: shard %d seq %d after its seq %d", e.stream, e.shard, e.seq, lastSeq[k])
		}
		lastSeq[k] = e.seq
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].seq < events[j].seq })
	lastMs := map[int]int64{}
	for _, e := range events {
		if e.ms < lastMs[e.shard] {
			t.Fatalf("shard %d seq %d was added to Redis before an earlier event of its shard", e.shard, e.seq)
		}
		lastMs[e.shard] = e.ms
	}
	st := sim.GatewayStats()
	if len(st.Identifies) != 4 {
		t.Errorf("identifies = %d, want the first 4 only (the SIGKILLed dd resumes)", len(st.Identifies))
	}
	t.Logf("%d events in Redis across %d streams, each once", len(events), len(streamsOf(events)))
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func streamsOf(events []redisEvent) map[string]bool {
	m := map[string]bool{}
	for _, e := range events {
		m[e.stream] = true
	}
	return m
}

func (w *logWatch) count(prefix string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}
