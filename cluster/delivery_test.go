package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ddhq/dd/cluster/clustertest"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/shard"
)

// botRecorder is the bot's event endpoint: it checks each POST against the delivery contract (secret,
// content type, envelope or array, X-DD-Event-Id and X-DD-Event-Ids) and records every event's arrival
// with the id it came under. It fails when two POSTs of one shard are in flight at once.
type botRecorder struct {
	t       *testing.T
	secret  string
	batch   bool
	fail    func() bool // answer 503 to this POST
	hang    atomic.Bool // hold POSTs until released (a slow bot)
	release chan struct{}

	mu       sync.Mutex
	inFlight map[int]int
	arrivals map[int][]int64            // shard -> sequences in arrival order
	idOf     map[string]map[string]bool // "<shard>-<seq>" -> the ids it arrived under
	problems []string
}

func newBotRecorder(t *testing.T, secret string, batch bool) (*botRecorder, string) {
	b := &botRecorder{t: t, secret: secret, batch: batch, fail: func() bool { return false }, release: make(chan struct{}),
		inFlight: map[int]int{}, arrivals: map[int][]int64{}, idOf: map[string]map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(srv.Close)
	return b, srv.URL + "/events"
}

func (b *botRecorder) problem(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) < 20 {
		b.problems = append(b.problems, fmt.Sprintf(format, args...))
	}
}

func (b *botRecorder) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Header.Get("Authorization") != b.secret || r.Header.Get("Content-Type") != "application/json" || r.URL.Path != "/events" {
		b.problem("POST %s: Authorization %q, Content-Type %q", r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	type env struct {
		ShardID int `json:"shardId"`
		Payload struct {
			Op int    `json:"op"`
			S  int64  `json:"s"`
			T  string `json:"t"`
		} `json:"payload"`
	}
	var envs []env
	if b.batch {
		if err := json.Unmarshal(body, &envs); err != nil {
			b.problem("batch body %.100s: %v", body, err)
		}
	} else {
		var e env
		if err := json.Unmarshal(body, &e); err != nil {
			b.problem("body %.100s: %v", body, err)
		}
		envs = append(envs, e)
	}
	if len(envs) == 0 {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	ids := []string{r.Header.Get("X-DD-Event-Id")}
	if b.batch {
		ids = strings.Split(r.Header.Get("X-DD-Event-Ids"), ",")
		if ids[0] != r.Header.Get("X-DD-Event-Id") {
			b.problem("X-DD-Event-Id %q is not the first of X-DD-Event-Ids %q", r.Header.Get("X-DD-Event-Id"), r.Header.Get("X-DD-Event-Ids"))
		}
	}
	if len(ids) != len(envs) {
		b.problem("%d ids for %d events", len(ids), len(envs))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	sh := envs[0].ShardID
	b.mu.Lock()
	b.inFlight[sh]++
	if b.inFlight[sh] > 1 {
		b.problems = append(b.problems, fmt.Sprintf("shard %d: two POSTs in flight at once", sh))
	}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.inFlight[sh]--
		b.mu.Unlock()
	}()
	if b.hang.Load() {
		select {
		case <-b.release:
		case <-r.Context().Done():
			return
		}
	}
	if b.fail() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	b.mu.Lock()
	for i, e := range envs {
		if e.ShardID != sh || e.Payload.Op != 0 || e.Payload.T == "" {
			b.problems = append(b.problems, fmt.Sprintf("event %d of a POST for shard %d: %+v", i, sh, e))
		}
		b.arrivals[sh] = append(b.arrivals[sh], e.Payload.S)
		key := fmt.Sprintf("%d-%d", sh, e.Payload.S)
		if b.idOf[key] == nil {
			b.idOf[key] = map[string]bool{}
		}
		b.idOf[key][ids[i]] = true
	}
	b.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// complete says whether shard's sequences 1..last all arrived.
func (b *botRecorder) complete(shard int, last int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	seen := map[int64]bool{}
	for _, s := range b.arrivals[shard] {
		seen[s] = true
	}
	return int64(len(seen)) >= last
}

// check reports lost events, first arrivals out of order, events that came under more than one id (or
// not under the stream's), and returns how many arrivals were copies.
func (b *botRecorder) check(t *testing.T, shards int, last int64, session func(shard int) string) (copies int) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Error(p)
	}
	for sh := 0; sh < shards; sh++ {
		seen, n := clustertest.CheckOrder(t, sh, b.arrivals[sh])
		copies += n
		for s := int64(1); s <= last; s++ {
			if !seen[s] {
				t.Errorf("shard %d: event %d never delivered", sh, s)
				break
			}
			ids := b.idOf[fmt.Sprintf("%d-%d", sh, s)]
			if want := EventID(session(sh), s); len(ids) != 1 || !ids[want] {
				t.Errorf("shard %d: event %d delivered under ids %v; want only %s", sh, s, ids, want)
			}
		}
	}
	return copies
}

// publishEvents publishes sequences from..to of shard's session through the sink, batches of 10.
func publishEvents(t *testing.T, s *EventSink, shardID, num int, session string, from, to int64) {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	for start := from; start <= to; start += 10 {
		var evs []shard.Event
		end := min(start+9, to)
		for seq := start; seq <= end; seq++ {
			evs = append(evs, shard.Event{Seq: seq, Type: "MESSAGE_CREATE",
				Raw: json.RawMessage(fmt.Sprintf(`{"op":0,"t":"MESSAGE_CREATE","s":%d,"d":{"n":%d}}`, seq, seq))})
		}
		if err := s.Dispatch(ctx, evs, shard.Session{ShardID: shardID, NumShards: num, ID: session, Seq: end}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeliveryInOrderAcrossHandovers has two processes hand two shards' delivery back and forth (as
// their owners change) every 300 ms, batches of 7, to a bot that answers 503 to a fifth of the POSTs,
// while the events are still being published. Every event arrives, under its stream id only, each
// shard's first arrivals in order, never two POSTs of one shard in flight at once.
func TestDeliveryInOrderAcrossHandovers(t *testing.T) {
	url := clustertestServer(t)
	ca, cb := connect(t, url, "a", 1), connect(t, url, "b", 1)
	ctx := ctxFor(t, 90*time.Second)
	sink, err := NewEventSink(ctx, ca, EventSinkConfig{})
	if err != nil {
		t.Fatal(err)
	}
	bot, target := newBotRecorder(t, "events-secret", true)
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	bot.fail = func() bool { mu.Lock(); defer mu.Unlock(); return rng.IntN(5) == 0 }
	const last = 400
	session := func(sh int) string { return fmt.Sprintf("sess%d", sh) }
	publishEvents(t, sink, 0, 2, session(0), 1, 100)
	publishEvents(t, sink, 1, 2, session(1), 1, 100)

	var ds []*Delivery
	for _, c := range []*Conn{ca, cb} {
		d, err := NewDelivery(ctx, c, DeliveryConfig{URLs: []string{target}, Secret: "events-secret", BatchMax: 7, Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).With(zap.String("p", c.Instance())),
			AckWait: 2 * time.Second, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, PullWait: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		ds = append(ds, d)
	}
	// Shard 0 starts on a, shard 1 on b; every 300 ms one of them moves to the other process.
	stops := []func(){ds[0].Start(0), ds[1].Start(1)}
	on := []int{0, 1}
	done := make(chan struct{})
	moved := 0
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(300 * time.Millisecond):
			}
			if bot.complete(0, last) && bot.complete(1, last) {
				return
			}
			sh := i % 2
			stops[sh]() // the old owner stops (its pull closed, its batch given back) before the new one starts
			on[sh] = 1 - on[sh]
			stops[sh] = ds[on[sh]].Start(sh)
			moved++
		}
	}()
	started := time.Now()
	// The rest at 100 events/s a shard, so that handovers fall mid-stream.
	for from := int64(101); from <= last; from += 10 {
		publishEvents(t, sink, 0, 2, session(0), from, from+9)
		publishEvents(t, sink, 1, 2, session(1), from, from+9)
		time.Sleep(100 * time.Millisecond)
	}
	testkit.Eventually(t, 60*time.Second, "both shards delivered", func() bool { return bot.complete(0, last) && bot.complete(1, last) })
	took := time.Since(started)
	<-done
	copies := bot.check(t, 2, last, session)
	t.Logf("2 x %d events delivered in %s across %d handovers, batches of 7, a fifth of POSTs refused: %d copies", last, took.Round(time.Millisecond), moved, copies)
	if n := ds[0].Delivered() + ds[1].Delivered(); n < 2*last {
		t.Errorf("the processes count %d events delivered; want at least %d", n, 2*last)
	}
}

// TestDeliveryTakesOverADeadHoldersBatch: process a pulls a batch and dies with its POST in flight (its
// NATS connection and its connection to the bot gone: no acknowledgement, no InProgress, no Nak);
// process b, pulling the same shard, gets the batch once the server's AckWait ran out, delivers it under
// the same ids, then the rest in order.
func TestDeliveryTakesOverADeadHoldersBatch(t *testing.T) {
	url := clustertestServer(t)
	ca, cb := connect(t, url, "a", 1), connect(t, url, "b", 1)
	ctx := ctxFor(t, 60*time.Second)
	sink, err := NewEventSink(ctx, cb, EventSinkConfig{})
	if err != nil {
		t.Fatal(err)
	}
	bot, target := newBotRecorder(t, "", false)
	session := func(int) string { return "solo" }
	publishEvents(t, sink, 0, 1, "solo", 1, 50)
	const ackWait = 2 * time.Second
	cfg := DeliveryConfig{URLs: []string{target}, AckWait: ackWait, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, PullWait: time.Second}
	da, err := NewDelivery(ctx, ca, cfg)
	if err != nil {
		t.Fatal(err)
	}
	db, err := NewDelivery(ctx, cb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	bot.hang.Store(true)
	da.Start(0)
	testkit.Eventually(t, 10*time.Second, "a's first POST in flight", func() bool {
		bot.mu.Lock()
		defer bot.mu.Unlock()
		return bot.inFlight[0] == 1
	})
	ca.Close() // a dies
	da.Close()
	bot.hang.Store(false)
	db.Start(0)
	took := testkit.Eventually(t, 3*ackWait, "b delivers event 1", func() bool { return bot.complete(0, 1) })
	publishEvents(t, sink, 0, 1, "solo", 51, 80)
	testkit.Eventually(t, 20*time.Second, "b delivers every event", func() bool { return bot.complete(0, 80) })
	copies := bot.check(t, 1, 80, session)
	t.Logf("a died holding events 1..; b delivered them %s after (AckWait %s); copies at the bot: %d", took.Round(time.Millisecond), ackWait, copies)
	if took < ackWait/2 {
		t.Errorf("b delivered a batch a still held after %s, well before AckWait %s", took, ackWait)
	}
	if took > ackWait+2*time.Second {
		t.Errorf("b delivered the dead holder's batch after %s; want within AckWait %s and a pull", took, ackWait)
	}
}

// TestDeliveryBacklog: while the bot refuses, a shard's backlog is every event in the stream for it
// (read from the events' metadata, no request); once the bot takes them it is 0.
func TestDeliveryBacklog(t *testing.T) {
	url := clustertestServer(t)
	c := connect(t, url, "a", 1)
	ctx := ctxFor(t, 30*time.Second)
	sink, err := NewEventSink(ctx, c, EventSinkConfig{})
	if err != nil {
		t.Fatal(err)
	}
	bot, target := newBotRecorder(t, "", true)
	var down atomic.Bool
	down.Store(true)
	bot.fail = down.Load
	publishEvents(t, sink, 0, 1, "s", 1, 50)
	d, err := NewDelivery(ctx, c, DeliveryConfig{URLs: []string{target}, BatchMax: 10, AckWait: 2 * time.Second,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, PullWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	if n := d.Backlog(0); n != 0 {
		t.Errorf("backlog %d before the shard is delivered here", n)
	}
	d.Start(0)
	testkit.Eventually(t, 10*time.Second, "a backlog of 50 while the bot refuses", func() bool { return d.Backlog(0) == 50 })
	down.Store(false)
	testkit.Eventually(t, 10*time.Second, "every event delivered", func() bool { return bot.complete(0, 50) })
	testkit.Eventually(t, 5*time.Second, "a backlog of 0", func() bool { return d.Backlog(0) == 0 })
	bot.check(t, 1, 50, func(int) string { return "s" })
}
