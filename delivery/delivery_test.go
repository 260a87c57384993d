package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/store"
)

// qenv is a queue on a real Badger store in a temporary directory, reopenable.
type qenv struct {
	t   testing.TB
	dir string
	st  *store.Store
	q   *queue.Queue
	c   *queue.Consumer
}

func newQueue(t testing.TB) *qenv {
	t.Helper()
	e := &qenv{t: t, dir: t.TempDir()}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *qenv) open() {
	e.t.Helper()
	st, err := store.Open(store.Options{Path: e.dir})
	if err != nil {
		e.t.Fatal(err)
	}
	q, err := queue.Open(st, queue.Options{FlushInterval: 10 * time.Millisecond})
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := q.Consumer("bot")
	if err != nil {
		e.t.Fatal(err)
	}
	e.st, e.q, e.c = st, q, c
}

func (e *qenv) close() {
	if e.q == nil {
		return
	}
	if err := e.q.Close(); err != nil {
		e.t.Errorf("closing queue: %v", err)
	}
	if err := e.st.Close(); err != nil {
		e.t.Errorf("closing store: %v", err)
	}
	e.q = nil
}

// payload is a gateway payload with spacing and escapes a re-encoder would change.
func payload(shard, n int) []byte {
	return fmt.Appendf(nil, `{"op":0, "t":"MESSAGE_CREATE","s":%d,"d":{"content":"h\u00e9llo \"%d\" é","shard":%d}}`, n, n, shard)
}

// appendEvents appends perShard events to each shard, a few per call, and returns the ids expected per
// shard in order.
func (e *qenv) appendEvents(shards []int, perShard int) map[int][]string {
	e.t.Helper()
	ids := map[int][]string{}
	for n := 0; n < perShard; n += 3 {
		for _, s := range shards {
			var recs []queue.Record
			for i := n; i < min(n+3, perShard); i++ {
				recs = append(recs, queue.Record{Shard: s, Payload: payload(s, i)})
			}
			if err := e.q.Append(context.Background(), recs); err != nil {
				e.t.Fatal(err)
			}
			for _, r := range recs {
				ids[s] = append(ids[s], e.q.EventID(r.Seq))
			}
		}
	}
	return ids
}

type request struct {
	header http.Header
	body   []byte
	status int
}

type event struct {
	shard   int
	payload []byte
	id      string
}

// bot is a loopback receiver that records every request, and the events of those it answered 2xx.
type bot struct {
	t      testing.TB
	mu     sync.Mutex
	reqs   []request
	events []event
	status func(r request) int // nil answers 204
	srv    *httptest.Server
}

func newBot(t testing.TB) *bot {
	b := &bot{t: t}
	b.srv = httptest.NewServer(b)
	t.Cleanup(b.srv.Close)
	return b
}

func (b *bot) url() string { return b.srv.URL + "/events" }

func (b *bot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := request{header: r.Header.Clone(), body: body, status: http.StatusNoContent}
	b.mu.Lock()
	if b.status != nil {
		req.status = b.status(req)
	}
	b.reqs = append(b.reqs, req)
	if req.status/100 == 2 {
		evs, err := parseEvents(req)
		if err != nil {
			b.t.Errorf("bot got a bad request: %v", err)
		}
		b.events = append(b.events, evs...)
	}
	b.mu.Unlock()
	w.WriteHeader(req.status)
}

func parseEvents(r request) ([]event, error) {
	type envelope struct {
		ShardID *int            `json:"shardId"`
		Payload json.RawMessage `json:"payload"`
	}
	var envs []envelope
	var ids []string
	if bytes.HasPrefix(r.body, []byte("[")) {
		if err := json.Unmarshal(r.body, &envs); err != nil {
			return nil, fmt.Errorf("body %q: %w", r.body, err)
		}
		ids = strings.Split(r.header.Get("X-DD-Event-Ids"), ",")
	} else {
		var env envelope
		if err := json.Unmarshal(r.body, &env); err != nil {
			return nil, fmt.Errorf("body %q: %w", r.body, err)
		}
		envs, ids = []envelope{env}, []string{r.header.Get("X-DD-Event-Id")}
	}
	if len(ids) != len(envs) {
		return nil, fmt.Errorf("%d event ids for %d envelopes", len(ids), len(envs))
	}
	out := make([]event, len(envs))
	for i, env := range envs {
		if env.ShardID == nil {
			return nil, fmt.Errorf("envelope without shardId: %s", r.body)
		}
		out[i] = event{shard: *env.ShardID, payload: env.Payload, id: ids[i]}
	}
	return out, nil
}

func (b *bot) snapshot() ([]request, []event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.reqs), slices.Clone(b.events)
}

// idsByShard lists the delivered ids per shard, in order of delivery, and how many repeated one
// already delivered.
func idsByShard(evs []event) (map[int][]string, int) {
	out := map[int][]string{}
	seen := map[string]bool{}
	dups := 0
	for _, e := range evs {
		if seen[e.id] {
			dups++
			continue
		}
		seen[e.id] = true
		out[e.shard] = append(out[e.shard], e.id)
	}
	return out, dups
}

// start runs a Deliverer; the returned func stops it and waits for Run to return.
func start(t testing.TB, c *queue.Consumer, o Options) (stop func()) {
	t.Helper()
	if o.MinBackoff == 0 {
		o.MinBackoff, o.MaxBackoff = 5*time.Millisecond, 40*time.Millisecond
	}
	d, err := New(c, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return after its context was cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func counterValue(t testing.TB, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				match = match || lp.GetValue() == label
			}
			if match {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func gaugeValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("gauge %s not found", name)
	return 0
}

func TestBotDownLosesNothingAndKeepsOrder(t *testing.T) {
	// The bot's address, with nothing listening yet: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	e := newQueue(t)
	reg := prometheus.NewRegistry()
	start(t, e.c, Options{URLs: []string{"http://" + addr + "/"}, Registerer: reg})
	shards := []int{0, 1, 2, 3}
	want := e.appendEvents(shards, 40)
	time.Sleep(100 * time.Millisecond)
	if n := counterValue(t, reg, "dd_delivery_failed_attempts_total", "network"); n == 0 {
		t.Fatal("no failed attempt counted while the bot was unreachable")
	}

	// The bot comes up, answers 503 for a while, then takes events.
	b := &bot{t: t}
	up := time.Now()
	b.status = func(request) int {
		if time.Since(up) < 100*time.Millisecond {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	var l2 net.Listener
	testkit.Eventually(t, 15*time.Second, "the bot's port to be free again", func() bool {
		l2, err = net.Listen("tcp", addr)
		return err == nil
	})
	b.srv = httptest.NewUnstartedServer(b)
	b.srv.Listener = l2
	b.srv.Start()
	t.Cleanup(b.srv.Close)

	more := e.appendEvents([]int{1}, 5) // appended while the backlog drains
	want[1] = append(want[1], more[1]...)
	testkit.Eventually(t, 15*time.Second, "every event delivered", func() bool {
		_, evs := b.snapshot()
		return len(evs) >= 4*40+5
	})
	_, evs := b.snapshot()
	got, dups := idsByShard(evs)
	if dups != 0 {
		t.Errorf("%d events delivered twice though the bot acknowledged each once", dups)
	}
	for _, s := range shards {
		if !slices.Equal(got[s], want[s]) {
			t.Fatalf("shard %d: delivered\n%v\nwant, in this order,\n%v", s, got[s], want[s])
		}
	}
	if n := counterValue(t, reg, "dd_delivery_failed_attempts_total", "status_5xx"); n == 0 {
		t.Error("no failed attempt counted for the 503s")
	}
	testkit.Eventually(t, 15*time.Second, "the queue to be emptied", func() bool { return e.q.Depth() == 0 })
	// Counted once the bot's answer is read, after the bot saw the event: read after the queue emptied.
	if n := counterValue(t, reg, "dd_delivery_delivered_events_total", ""); n != 4*40+5 {
		t.Errorf("dd_delivery_delivered_events_total = %v, want %d", n, 4*40+5)
	}
	if n := gaugeValue(t, reg, "dd_delivery_failing_shards"); n != 0 {
		t.Errorf("dd_delivery_failing_shards = %v after recovery, want 0", n)
	}
}

func TestRedeliveredEventsKeepTheirID(t *testing.T) {
	e := newQueue(t)
	b := newBot(t)
	failed := map[string][]byte{} // id -> body of the failed attempt
	b.status = func(r request) int {
		id := r.header.Get("X-DD-Event-Id")
		if _, ok := failed[id]; !ok {
			failed[id] = r.body
			return http.StatusInternalServerError
		}
		return http.StatusNoContent
	}
	start(t, e.c, Options{URLs: []string{b.url()}})
	want := e.appendEvents([]int{5, 6}, 10)
	testkit.Eventually(t, 15*time.Second, "every event delivered", func() bool {
		_, evs := b.snapshot()
		return len(evs) >= 20
	})
	reqs, evs := b.snapshot()
	got, _ := idsByShard(evs)
	for _, s := range []int{5, 6} {
		if !slices.Equal(got[s], want[s]) {
			t.Fatalf("shard %d: delivered %v, want %v", s, got[s], want[s])
		}
	}
	for _, r := range reqs {
		if r.status/100 != 2 {
			continue
		}
		id := r.header.Get("X-DD-Event-Id")
		first, ok := failed[id]
		if !ok {
			t.Fatalf("event %s delivered without the failed first attempt", id)
		}
		if !bytes.Equal(first, r.body) {
			t.Fatalf("event %s: retry body %s differs from the first attempt's %s", id, r.body, first)
		}
	}
}

func TestEnvelopeIsExact(t *testing.T) {
	for _, secret := range []string{"s3cret", ""} {
		t.Run(fmt.Sprintf("secret=%q", secret), func(t *testing.T) {
			e := newQueue(t)
			b := newBot(t)
			start(t, e.c, Options{URLs: []string{b.url()}, Secret: secret})
			want := e.appendEvents([]int{2}, 3)
			testkit.Eventually(t, 15*time.Second, "3 events", func() bool {
				_, evs := b.snapshot()
				return len(evs) == 3
			})
			reqs, _ := b.snapshot()
			for i, r := range reqs {
				wantBody := `{"shardId":2,"payload":` + string(payload(2, i)) + `}`
				if string(r.body) != wantBody {
					t.Errorf("body\n%s\nwant\n%s", r.body, wantBody)
				}
				if got := r.header.Get("Content-Type"); got != "application/json" {
					t.Errorf("Content-Type %q, want application/json", got)
				}
				if got := r.header.Values("Authorization"); secret == "" && len(got) != 0 || secret != "" && !slices.Equal(got, []string{secret}) {
					t.Errorf("Authorization %q, want %q", got, secret)
				}
				if got := r.header.Get("X-DD-Event-Id"); got != want[2][i] {
					t.Errorf("X-DD-Event-Id %q, want %q", got, want[2][i])
				}
				if got := r.header.Get("X-DD-Event-Ids"); got != "" {
					t.Errorf("X-DD-Event-Ids %q without batching", got)
				}
			}
		})
	}
}

func TestBatchingSendsArraysInOrder(t *testing.T) {
	e := newQueue(t)
	b := newBot(t)
	want := e.appendEvents([]int{9}, 25) // all waiting before delivery starts: batches fill up
	start(t, e.c, Options{URLs: []string{b.url()}, BatchMax: 10, Secret: "x"})
	testkit.Eventually(t, 15*time.Second, "25 events", func() bool {
		_, evs := b.snapshot()
		return len(evs) >= 25
	})
	reqs, evs := b.snapshot()
	got, _ := idsByShard(evs)
	if !slices.Equal(got[9], want[9]) {
		t.Fatalf("delivered %v, want %v", got[9], want[9])
	}
	if len(reqs) != 3 {
		t.Fatalf("%d POSTs for 25 events in batches of 10, want 3", len(reqs))
	}
	var wantBody strings.Builder
	wantBody.WriteString("[")
	for i := range 10 {
		if i > 0 {
			wantBody.WriteString(",")
		}
		fmt.Fprintf(&wantBody, `{"shardId":9,"payload":%s}`, payload(9, i))
	}
	wantBody.WriteString("]")
	if string(reqs[0].body) != wantBody.String() {
		t.Fatalf("first batch body\n%s\nwant\n%s", reqs[0].body, wantBody.String())
	}
	for i, r := range reqs {
		ids := strings.Split(r.header.Get("X-DD-Event-Ids"), ",")
		if !slices.Equal(ids, want[9][i*10:min(25, i*10+10)]) {
			t.Fatalf("batch %d: X-DD-Event-Ids %v", i, ids)
		}
		if r.header.Get("X-DD-Event-Id") != ids[0] {
			t.Fatalf("batch %d: X-DD-Event-Id %q, want the first id %q", i, r.header.Get("X-DD-Event-Id"), ids[0])
		}
	}
}

func TestShardsGoToTheirURL(t *testing.T) {
	e := newQueue(t)
	bots := []*bot{newBot(t), newBot(t)}
	start(t, e.c, Options{URLs: []string{bots[0].url(), bots[1].url()}})
	e.appendEvents([]int{0, 1, 2, 3}, 2)
	testkit.Eventually(t, 15*time.Second, "8 events", func() bool {
		_, a := bots[0].snapshot()
		_, b := bots[1].snapshot()
		return len(a)+len(b) == 8
	})
	for i, b := range bots {
		_, evs := b.snapshot()
		for _, ev := range evs {
			if ev.shard%2 != i {
				t.Fatalf("shard %d's event went to urls[%d]", ev.shard, i)
			}
		}
	}
}

func TestTimeoutIsRetried(t *testing.T) {
	e := newQueue(t)
	b := newBot(t)
	var first atomic.Bool
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !first.Swap(true) {
			// Read the body, so that the server notices the client hanging up, then hang past the
			// deliverer's timeout.
			_, _ = io.ReadAll(r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		b.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(slow)
	t.Cleanup(srv.Close)
	reg := prometheus.NewRegistry()
	start(t, e.c, Options{URLs: []string{srv.URL}, Timeout: 100 * time.Millisecond, Registerer: reg})
	want := e.appendEvents([]int{0}, 1)
	testkit.Eventually(t, 15*time.Second, "the event after a timeout", func() bool {
		_, evs := b.snapshot()
		return len(evs) == 1
	})
	if _, evs := b.snapshot(); evs[0].id != want[0][0] {
		t.Fatalf("delivered %s, want %s", evs[0].id, want[0][0])
	}
	if n := counterValue(t, reg, "dd_delivery_failed_attempts_total", "timeout"); n != 1 {
		t.Fatalf("failed attempts for timeout = %v, want 1", n)
	}
}

func TestRedirectIsAFailureNotAnAcknowledgment(t *testing.T) {
	e := newQueue(t)
	b := newBot(t)
	var redirected atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusOK) // what a followed 302 would reach: a GET without the events
			return
		}
		if !redirected.Swap(true) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		b.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	reg := prometheus.NewRegistry()
	start(t, e.c, Options{URLs: []string{srv.URL}, Registerer: reg})
	e.appendEvents([]int{0}, 1)
	testkit.Eventually(t, 15*time.Second, "the event posted after the redirect", func() bool {
		_, evs := b.snapshot()
		return len(evs) == 1
	})
	if n := counterValue(t, reg, "dd_delivery_failed_attempts_total", "status_other"); n != 1 {
		t.Fatalf("failed attempts status_other = %v, want 1 (the 302)", n)
	}
}

func TestRestartResumesWithoutSkipping(t *testing.T) {
	e := newQueue(t)
	b := newBot(t)
	b.status = func(request) int { time.Sleep(time.Millisecond); return http.StatusOK }
	shards := []int{0, 1, 2}
	want := e.appendEvents(shards, 60)
	stop := start(t, e.c, Options{URLs: []string{b.url()}})
	testkit.Eventually(t, 15*time.Second, "some events delivered", func() bool {
		_, evs := b.snapshot()
		return len(evs) >= 40
	})
	stop()
	_, before := b.snapshot()
	e.close()

	e.open()
	start(t, e.c, Options{URLs: []string{b.url()}})
	testkit.Eventually(t, 15*time.Second, "the rest delivered", func() bool {
		_, evs := b.snapshot()
		got, _ := idsByShard(evs)
		return len(got[0])+len(got[1])+len(got[2]) == 180
	})
	_, evs := b.snapshot()
	got, dups := idsByShard(evs)
	for _, s := range shards {
		if !slices.Equal(got[s], want[s]) {
			t.Fatalf("shard %d: delivered %v, want %v", s, got[s], want[s])
		}
	}
	// Only a POST cut short by the stop may be delivered again: at most one per shard.
	if dups > len(shards) {
		t.Fatalf("%d events delivered again after the restart (%d before it); want at most %d", dups, len(before), len(shards))
	}
}

// BenchmarkDeliveryEndToEnd appends b.N events over 16 shards (as the gateway would, a few per call)
// and measures how fast they reach a loopback bot, one per POST and batched.
func BenchmarkDeliveryEndToEnd(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			e := newQueue(b)
			var received atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				n := 1
				if ids := r.Header.Get("X-DD-Event-Ids"); ids != "" {
					n = strings.Count(ids, ",") + 1
				}
				received.Add(int64(n))
				w.WriteHeader(http.StatusNoContent)
			}))
			b.Cleanup(srv.Close)
			start(b, e.c, Options{URLs: []string{srv.URL}, BatchMax: batch})
			const shards = 16
			p := append([]byte(`{"op":0,"t":"MESSAGE_CREATE","s":1,"d":`), append(bytes.Repeat([]byte("x"), 600), '}')...)
			b.ResetTimer()
			begin := time.Now()
			recs := make([]queue.Record, 0, 4)
			for i := range b.N {
				recs = append(recs, queue.Record{Shard: (i / 4) % shards, Payload: p})
				if len(recs) == cap(recs) || i == b.N-1 {
					if err := e.q.Append(context.Background(), recs); err != nil {
						b.Fatal(err)
					}
					recs = recs[:0]
				}
			}
			for received.Load() < int64(b.N) {
				time.Sleep(time.Millisecond)
			}
			b.ReportMetric(float64(b.N)/time.Since(begin).Seconds(), "events/s")
		})
	}
}

// Events queued after a fence of the queue wait until every event before it, on every shard, is
// delivered.
func TestFenceHoldsLaterEventsUntilEarlierOnesAreDelivered(t *testing.T) {
	e := newQueue(t)
	q, c := e.q, e.c
	var mu sync.Mutex
	var order []string
	blockShard0 := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), `"shardId":0`) {
			<-blockShard0 // shard 0's old event is slow to be taken
		}
		mu.Lock()
		order = append(order, string(body))
		mu.Unlock()
		w.WriteHeader(204)
	}))
	defer srv.Close()
	d, err := New(c, Options{URLs: []string{srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	old := []queue.Record{{Shard: 0, Payload: []byte(`{"op":0,"s":1,"t":"OLD","d":{}}`)}}
	if err := q.Append(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	if seq, err := q.SetFence(context.Background()); err != nil || seq != old[0].Seq {
		t.Fatalf("SetFence = %d, %v; want %d", seq, err, old[0].Seq)
	}
	if err := q.Append(context.Background(), []queue.Record{{Shard: 1, Payload: []byte(`{"op":0,"s":1,"t":"NEW","d":{}}`)}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	if len(order) != 0 {
		mu.Unlock()
		t.Fatalf("delivered %q while an earlier event was pending behind the fence", order)
	}
	mu.Unlock()
	close(blockShard0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(order)
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("events not delivered after the fence was passed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(order[0], "OLD") || !strings.Contains(order[1], "NEW") {
		t.Fatalf("order %q, want OLD then NEW", order)
	}
}

// The log lines about failing and recovering delivery show the bot's URL with its password masked, as
// the error from net/http already does.
func TestLoggedURLHidesItsPassword(t *testing.T) {
	const password = "bot-PASSWORD-0123456789"
	e := newQueue(t)
	b := newBot(t)
	var first atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !first.Swap(true) {
			// A network error: the connection drops without an answer.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		b.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	core, logs := observer.New(zap.InfoLevel)
	target := strings.Replace(srv.URL, "http://", "http://bot:"+password+"@", 1) + "/events"
	start(t, e.c, Options{URLs: []string{target}, Logger: zap.New(core)})
	e.appendEvents([]int{0}, 1)
	testkit.Eventually(t, 15*time.Second, "the event after a dropped connection", func() bool {
		_, evs := b.snapshot()
		return len(evs) == 1
	})
	testkit.Eventually(t, 15*time.Second, "the recovery log line", func() bool { return logs.FilterMessageSnippet("works again").Len() == 1 })
	warned := logs.FilterMessageSnippet("failed; retrying").All()
	if len(warned) != 1 {
		t.Fatalf("want one warning about the failed attempt, got %d: %v", len(warned), logs.All())
	}
	shown := strings.Replace(srv.URL, "http://", "http://bot:xxxxx@", 1) + "/events"
	for _, entry := range logs.All() {
		fields := entry.ContextMap()
		if strings.Contains(fmt.Sprint(fields), password) {
			t.Errorf("%q logs the password: %v", entry.Message, fields)
		}
		if u, ok := fields["url"]; ok && u != shown {
			t.Errorf("%q: url %q, want %q", entry.Message, u, shown)
		}
	}
	if _, ok := warned[0].ContextMap()["error"]; !ok {
		t.Errorf("the warning has no error field: %v", warned[0].ContextMap())
	}
}
