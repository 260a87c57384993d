package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ddhq/dd/store"
)

// env is a queue on a real Badger store in a temporary directory, reopenable.
type env struct {
	t   testing.TB
	dir string
	o   Options
	st  *store.Store
	q   *Queue
	reg *prometheus.Registry
	// wrap, when set, is what the queue sees of the store.
	wrap func(*store.Store) Store
}

func newEnv(t testing.TB, o Options) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), o: o}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *env) open() {
	e.t.Helper()
	st, err := store.Open(store.Options{Path: e.dir})
	if err != nil {
		e.t.Fatalf("opening store: %v", err)
	}
	e.reg = prometheus.NewRegistry()
	o := e.o
	o.Registerer = e.reg
	var qs Store = st
	if e.wrap != nil {
		qs = e.wrap(st)
	}
	q, err := Open(qs, o)
	if err != nil {
		st.Close()
		e.t.Fatalf("opening queue: %v", err)
	}
	e.st, e.q = st, q
}

func (e *env) close() {
	e.t.Helper()
	if e.q == nil {
		return
	}
	if err := e.q.Close(); err != nil {
		e.t.Errorf("closing queue: %v", err)
	}
	if err := e.st.Close(); err != nil {
		e.t.Errorf("closing store: %v", err)
	}
	e.q, e.st = nil, nil
}

func (e *env) reopen() {
	e.t.Helper()
	e.close()
	e.open()
}

func (e *env) consumer(name string) *Consumer {
	e.t.Helper()
	c, err := e.q.Consumer(name)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) append(recs []Record, also ...KV) {
	e.t.Helper()
	if err := e.q.Append(context.Background(), recs, also...); err != nil {
		e.t.Fatalf("Append: %v", err)
	}
}

func (e *env) flush() {
	e.t.Helper()
	if err := e.q.Flush(context.Background()); err != nil {
		e.t.Fatalf("Flush: %v", err)
	}
}

// smallTxnStore is the store with transactions of at most max writes: past that, Update fails with
// store.ErrTooBig, as Badger does past its own limits.
type smallTxnStore struct {
	*store.Store
	max int
}

func (s smallTxnStore) Update(fn func(w store.Writer) error) error {
	return s.Store.Update(func(w store.Writer) error { return fn(&countingWriter{w: w, left: s.max}) })
}

type countingWriter struct {
	w    store.Writer
	left int
}

func (c *countingWriter) Set(k, v []byte) error {
	if c.left--; c.left < 0 {
		return store.ErrTooBig
	}
	return c.w.Set(k, v)
}

func (c *countingWriter) Delete(k []byte) error {
	if c.left--; c.left < 0 {
		return store.ErrTooBig
	}
	return c.w.Delete(k)
}

// storedSeqs lists the sequences of the events in the store, whatever memory thinks.
func (e *env) storedSeqs() []uint64 {
	e.t.Helper()
	var out []uint64
	if err := e.st.Scan([]byte(eventPrefix), nil, func(k, v []byte) error {
		shard := int(binary.BigEndian.Uint32(k[len(eventPrefix):]))
		return decodeBlock(shard, k, v, func(r Record) bool { out = append(out, r.Seq); return true })
	}); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// metric sums a counter's or gauge's values, or a histogram's sample counts.
func (e *env) metric(name string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		sum := 0.0
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
		return sum
	}
	e.t.Fatalf("metric %s not registered", name)
	return 0
}

// readAll reads and acknowledges everything the consumer has in the shard.
func readAll(t *testing.T, c *Consumer, shard int) []Record {
	t.Helper()
	var out []Record
	for {
		recs, err := c.Read(shard, 7)
		if err != nil {
			t.Fatalf("Read(%d): %v", shard, err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		c.Ack(shard, recs[len(recs)-1].Seq)
	}
}

func payload(shard, n int) []byte {
	return fmt.Appendf(nil, `{"op":0,"t":"MESSAGE_CREATE","s":%d,"d":{"shard":%d}}`, n, shard)
}

func rec(shard, n int) Record { return Record{Shard: shard, Payload: payload(shard, n)} }

func TestAppendKeepsOrderPerShardUnderConcurrentAppends(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cache int
	}{{"from memory", 0}, {"from the store", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{CacheBytes: tc.cache})
			c := e.consumer("bot")
			const shards, perShard = 32, 60
			var wg sync.WaitGroup
			for s := range shards {
				wg.Go(func() {
					for n := 0; n < perShard; {
						k := min(1+rand.IntN(4), perShard-n)
						recs := make([]Record, k)
						for i := range recs {
							recs[i] = rec(s, n+i)
						}
						e.append(recs)
						n += k
					}
				})
			}
			wg.Wait()
			seen := map[uint64]bool{}
			for s := range shards {
				got := readAll(t, c, s)
				if len(got) != perShard {
					t.Fatalf("shard %d: read %d events, want %d", s, len(got), perShard)
				}
				for i, r := range got {
					if !bytes.Equal(r.Payload, payload(s, i)) {
						t.Fatalf("shard %d: event %d is %s, want %s (order lost)", s, i, r.Payload, payload(s, i))
					}
					if r.Shard != s {
						t.Fatalf("shard %d: event %d says shard %d", s, i, r.Shard)
					}
					if i > 0 && r.Seq <= got[i-1].Seq {
						t.Fatalf("shard %d: seq %d after %d", s, r.Seq, got[i-1].Seq)
					}
					if seen[r.Seq] {
						t.Fatalf("seq %d given twice", r.Seq)
					}
					seen[r.Seq] = true
				}
			}
		})
	}
}

func TestAlsoIsCommittedAtomicallyWithTheRecords(t *testing.T) {
	e := newEnv(t, Options{})
	session := []byte("sessions/3")
	e.append([]Record{rec(3, 0), rec(3, 1)}, KV{Key: session, Value: []byte("seq=2")})

	// A call whose commit fails (Badger refuses an empty key), racing with a good call: the bad one
	// stores nothing, the good one is not failed with it.
	var wg sync.WaitGroup
	var badErr, goodErr error
	wg.Go(func() {
		badErr = e.q.Append(context.Background(), []Record{rec(4, 0)}, KV{Key: []byte{}, Value: []byte("x")})
	})
	wg.Go(func() {
		goodErr = e.q.Append(context.Background(), []Record{rec(5, 0)}, KV{Key: []byte("sessions/5"), Value: []byte("seq=1")})
	})
	wg.Wait()
	if badErr == nil {
		t.Fatal("Append with an empty key succeeded, want the commit to fail")
	}
	if goodErr != nil {
		t.Fatalf("a good Append failed along with a bad one: %v", goodErr)
	}

	e.reopen()
	v, err := e.st.Get(session)
	if err != nil || string(v) != "seq=2" {
		t.Fatalf("after reopen %s = %q, %v; want seq=2", session, v, err)
	}
	c := e.consumer("bot")
	if got := readAll(t, c, 3); len(got) != 2 {
		t.Fatalf("after reopen shard 3 has %d events, want 2", len(got))
	}
	if got := readAll(t, c, 4); len(got) != 0 {
		t.Fatalf("the failed Append left %d events in shard 4, want none", len(got))
	}
	if got := readAll(t, c, 5); len(got) != 1 {
		t.Fatalf("shard 5 has %d events, want 1", len(got))
	}
	if v, err := e.st.Get([]byte("sessions/5")); err != nil || string(v) != "seq=1" {
		t.Fatalf("sessions/5 = %q, %v; want seq=1", v, err)
	}
}

func TestAlsoLaterWriteWins(t *testing.T) {
	e := newEnv(t, Options{})
	key := []byte("sessions/0")
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { e.append([]Record{rec(0, i)}, KV{Key: key, Value: []byte("v")}) })
	}
	wg.Wait()
	e.append([]Record{rec(0, 99)}, KV{Key: key, Value: []byte("last")})
	e.append(nil, KV{Key: []byte("other"), Value: []byte("x")}, KV{Key: []byte("other")})
	if v, _ := e.st.Get(key); string(v) != "last" {
		t.Fatalf("%s = %q, want the last write", key, v)
	}
	if _, err := e.st.Get([]byte("other")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a delete after a set in one call did not win: %v", err)
	}
}

func TestAppendRefusesQueueKeysAndClosedQueue(t *testing.T) {
	e := newEnv(t, Options{})
	if err := e.q.Append(context.Background(), []Record{rec(0, 0)}, KV{Key: []byte("q/x"), Value: []byte("1")}); err == nil {
		t.Fatal("Append accepted a key inside the queue's prefix")
	}
	e.q.Close()
	if err := e.q.Append(context.Background(), []Record{rec(0, 0)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
}

func TestAppendSplitsATransactionTooBig(t *testing.T) {
	// A store that takes at most 8 writes per transaction (Badger refuses transactions past a count of
	// entries, which blocks of events rarely reach): a 3000-event call must be split, and also written
	// with its last part.
	e := &env{t: t, dir: t.TempDir(), o: Options{CacheBytes: 1}, wrap: func(st *store.Store) Store { return smallTxnStore{st, 8} }}
	e.open()
	t.Cleanup(e.close)
	recs := make([]Record, 3000)
	for i := range recs {
		recs[i] = Record{Shard: 1, Payload: payload(1, i)}
	}
	e.append(recs, KV{Key: []byte("sessions/1"), Value: []byte("3000")})
	if n := e.metric("dd_queue_commit_batch_events"); n < 2 {
		t.Fatalf("%d commits, want the call split in several", int(n))
	}
	if n := len(e.storedSeqs()); n != len(recs) {
		t.Fatalf("stored %d events, want %d", n, len(recs))
	}
	if v, _ := e.st.Get([]byte("sessions/1")); string(v) != "3000" {
		t.Fatalf("sessions/1 = %q, want 3000", v)
	}
	c := e.consumer("bot")
	got := readAll(t, c, 1)
	for i, r := range got {
		if !bytes.HasPrefix(r.Payload, payload(1, i)) {
			t.Fatalf("event %d out of order: %.60s", i, r.Payload)
		}
	}
}

func TestDeletesLargeAcknowledgedRanges(t *testing.T) {
	e := newEnv(t, Options{CacheBytes: 1, FlushInterval: time.Hour})
	c := e.consumer("bot")
	const n = 3 * maxMaintenanceOps
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = rec(i%2, i)
	}
	e.append(recs)
	c.Ack(0, recs[n-1].Seq)
	c.Ack(1, recs[n-1].Seq)
	e.flush()
	if s := e.storedSeqs(); len(s) != 0 || e.q.Depth() != 0 {
		t.Fatalf("after acking %d events, %d stored and Depth %d, want 0", n, len(s), e.q.Depth())
	}
	if got := e.metric("dd_queue_acked_events_total"); got != n {
		t.Fatalf("dd_queue_acked_events_total = %v, want %d", got, n)
	}
	e.append([]Record{rec(0, 0)})
	e.reopen()
	if d := e.q.Depth(); d != 1 {
		t.Fatalf("Depth after reopen = %d, want 1", d)
	}
	if got := readAll(t, e.consumer("bot"), 0); len(got) != 1 {
		t.Fatalf("read %d events after reopen, want 1", len(got))
	}
}

func TestReopenKeepsPositionsAndSequence(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.consumer("bot")
	recs := make([]Record, 10)
	for i := range recs {
		recs[i] = rec(1, i)
	}
	e.append(recs)
	lastSeq := recs[9].Seq
	first, _ := c.Read(1, 4)
	c.Ack(1, first[3].Seq)

	e.reopen()
	c = e.consumer("bot")
	if got := c.Position(1); got != first[3].Seq {
		t.Fatalf("position after reopen = %d, want %d", got, first[3].Seq)
	}
	if d := c.Depth(); d != 6 {
		t.Fatalf("consumer depth after reopen = %d, want 6", d)
	}
	rest := readAll(t, c, 1)
	if len(rest) != 6 || !bytes.Equal(rest[0].Payload, payload(1, 4)) {
		t.Fatalf("after reopen read %d events starting %s, want 6 starting at event 4", len(rest), rest[0].Payload)
	}
	more := []Record{rec(2, 0)}
	e.append(more)
	if more[0].Seq <= lastSeq {
		t.Fatalf("seq after reopen = %d, want > %d", more[0].Seq, lastSeq)
	}
}

// A depth the store cannot count errs high, never low: Pending (a reshard's delivery barrier) must not
// report an empty shard while events wait.
func TestDepthErrsHighWhenTheStoreCannotBeRead(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.consumer("bot")
	e.consumer("cache") // acknowledges nothing, so nothing is deleted
	recs := make([]Record, 10)
	for i := range recs {
		recs[i] = rec(1, i)
	}
	e.append(recs)
	first, _ := c.Read(1, 4)
	c.Ack(1, first[3].Seq)
	e.reopen() // the reopened queue counts the bot's depth from the store
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	q := e.q
	e.q = nil // closed below, whatever the closed store answers
	defer q.Close()
	c, err := q.Consumer("bot")
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Depth(); d < 6 {
		t.Fatalf("depth with an unreadable store = %d; want at least the 6 unacknowledged events", d)
	}
}

func TestAckedPositionIsNeverPersistedAhead(t *testing.T) {
	e := newEnv(t, Options{FlushInterval: time.Hour})
	c := e.consumer("bot")
	e.append([]Record{rec(0, 0), rec(0, 1), rec(0, 2)})
	recs, _ := c.Read(0, 1)
	c.Ack(0, recs[0].Seq)
	c.Ack(0, recs[0].Seq-1) // positions never move back
	if got := c.Position(0); got != recs[0].Seq {
		t.Fatalf("position = %d, want %d", got, recs[0].Seq)
	}
	c.Ack(0, 1<<60) // past the tail: capped, so that later events are not skipped
	e.append([]Record{rec(0, 3)})
	if got := readAll(t, c, 0); len(got) != 1 || !bytes.Equal(got[0].Payload, payload(0, 3)) {
		t.Fatalf("after acking past the tail, read %d events, want the one appended later", len(got))
	}
}

func TestTwoConsumersEachSeeEverythingAndDeletionWaitsForBoth(t *testing.T) {
	e := newEnv(t, Options{FlushInterval: time.Hour})
	a, b := e.consumer("bot"), e.consumer("cache")
	for i := range 10 {
		e.append([]Record{rec(i%2, i)})
	}
	for s := range 2 {
		if got := readAll(t, a, s); len(got) != 5 {
			t.Fatalf("consumer a read %d events of shard %d, want 5", len(got), s)
		}
	}
	e.flush()
	if n := len(e.storedSeqs()); n != 10 {
		t.Fatalf("after only a acked, %d events stored, want 10", n)
	}
	got0, _ := b.Read(0, 100)
	if len(got0) != 5 {
		t.Fatalf("consumer b reads %d events of shard 0, want 5", len(got0))
	}
	b.Ack(0, got0[2].Seq)
	e.flush()
	if n := len(e.storedSeqs()); n != 7 {
		t.Fatalf("after b acked 3 of shard 0, %d events stored, want 7", n)
	}
	if d := e.q.Depth(); d != 7 {
		t.Fatalf("Depth = %d, want 7", d)
	}
	if d := a.Depth(); d != 0 {
		t.Fatalf("a's depth = %d, want 0", d)
	}
	if d := b.Depth(); d != 7 {
		t.Fatalf("b's depth = %d, want 7", d)
	}
	readAll(t, b, 0)
	readAll(t, b, 1)
	e.flush()
	if s := e.storedSeqs(); len(s) != 0 {
		t.Fatalf("after both acked everything, stored %v, want nothing", s)
	}
	e.reopen()
	if d := e.q.Depth(); d != 0 {
		t.Fatalf("Depth after reopen = %d, want 0", d)
	}
}

func TestBoundDropsTheOldestAcrossShardsAndCountsThem(t *testing.T) {
	e := newEnv(t, Options{MaxEvents: 10, FlushInterval: time.Hour})
	c := e.consumer("bot")
	e.append([]Record{rec(0, 0)})
	first, _ := c.Read(0, 1)
	c.Ack(0, first[0].Seq) // a consumer already past some events
	var seqs []uint64
	for i := range 15 {
		r := []Record{rec(i%3, i)}
		e.append(r)
		seqs = append(seqs, r[0].Seq)
	}
	e.flush()
	// 16 appended, first acked (and deleted), 15 stored: the 5 oldest go, whatever their shard.
	stored := e.storedSeqs()
	if len(stored) != 10 {
		t.Fatalf("stored %d events, want the bound, 10", len(stored))
	}
	want := map[uint64]bool{}
	for _, s := range seqs[5:] {
		want[s] = true
	}
	for _, s := range stored {
		if !want[s] {
			t.Fatalf("seq %d survived; the oldest (%v) should have been dropped", s, seqs[:5])
		}
	}
	if got := e.metric("dd_queue_dropped_events_total"); got != 5 {
		t.Fatalf("dd_queue_dropped_events_total = %v, want 5", got)
	}
	if d := e.q.Depth(); d != 10 {
		t.Fatalf("Depth = %d, want 10", d)
	}
	if d := c.Depth(); d != 10 {
		t.Fatalf("consumer depth = %d, want 10", d)
	}
	total := 0
	for s := range 3 {
		for _, r := range readAll(t, c, s) {
			if !want[r.Seq] {
				t.Fatalf("consumer read dropped event %d", r.Seq)
			}
			total++
		}
	}
	if total != 10 {
		t.Fatalf("consumer read %d events, want 10", total)
	}
	e.reopen()
	if d, s := e.q.Depth(), e.storedSeqs(); d != 0 || len(s) != 0 {
		t.Fatalf("after reopen Depth = %d and %d events stored, want 0: Close persists acks and deletes", d, len(s))
	}
}

func TestBoundDropsWhatAConsumerReadAhead(t *testing.T) {
	e := newEnv(t, Options{MaxEvents: 10, CacheBytes: 1, FlushInterval: time.Hour})
	c := e.consumer("bot")
	first := make([]Record, 5)
	for i := range first {
		first[i] = rec(0, i)
	}
	e.append(first)
	got, _ := c.Read(0, 1) // from the store, reading the other four ahead
	c.Ack(0, got[0].Seq)
	e.flush()
	for i := range 15 {
		e.append([]Record{rec(i%3, 100+i)})
	}
	e.flush()
	// 19 stored, bound 10: the 9 oldest go, among them the four read ahead.
	for s := range 3 {
		for _, r := range readAll(t, c, s) {
			if r.Seq <= first[4].Seq+5 {
				t.Fatalf("shard %d: read dropped event %d (%s)", s, r.Seq, r.Payload)
			}
		}
	}
	if got := e.metric("dd_queue_dropped_events_total"); got != 9 {
		t.Fatalf("dd_queue_dropped_events_total = %v, want 9", got)
	}
}

func TestEventIDsAreUniqueAndStableAcrossReopen(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.consumer("bot")
	for i := range 50 {
		e.append([]Record{rec(i%5, i)})
	}
	ids := map[uint64]string{}
	seen := map[string]bool{}
	for s := range 5 {
		recs, _ := c.Read(s, 100)
		for _, r := range recs {
			if r.ID == "" || seen[r.ID] {
				t.Fatalf("event id %q empty or repeated", r.ID)
			}
			if r.ID != e.q.EventID(r.Seq) {
				t.Fatalf("Read id %q, EventID %q", r.ID, e.q.EventID(r.Seq))
			}
			seen[r.ID] = true
			ids[r.Seq] = r.ID
		}
	}
	e.reopen()
	c = e.consumer("bot")
	for s := range 5 {
		recs, _ := c.Read(s, 100)
		for _, r := range recs {
			if ids[r.Seq] != r.ID {
				t.Fatalf("event %d: id %q after reopen, was %q", r.Seq, r.ID, ids[r.Seq])
			}
		}
	}
	e.append([]Record{rec(0, 99)})
	recs := readAll(t, c, 0)
	if last := recs[len(recs)-1]; seen[last.ID] {
		t.Fatalf("new event reused id %q", last.ID)
	}

	// A wiped store gets a new instance id, so sequences starting again do not repeat ids.
	other := newEnv(t, Options{})
	other.append([]Record{rec(0, 0)})
	oc := other.consumer("bot")
	r2, _ := oc.Read(0, 1)
	if seen[r2[0].ID] || strings.Split(r2[0].ID, "-")[0] == strings.Split(recs[0].ID, "-")[0] {
		t.Fatalf("a new store's event id %q shares the instance of %q", r2[0].ID, recs[0].ID)
	}
}

func TestConcurrentAppendReadAckLosesNothing(t *testing.T) {
	// A tiny cache and a short flush interval: reads switch between memory and the store while
	// deletions run.
	e := newEnv(t, Options{CacheBytes: 16 << 10, FlushInterval: 2 * time.Millisecond})
	consumers := []*Consumer{e.consumer("bot"), e.consumer("cache")}
	const shards, perShard = 6, 300
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var producers, readers sync.WaitGroup
	errs := make(chan error, shards*(len(consumers)+1))
	for s := range shards {
		producers.Go(func() {
			for n := 0; n < perShard; {
				k := min(1+rand.IntN(5), perShard-n)
				recs := make([]Record, k)
				for i := range recs {
					recs[i] = rec(s, n+i)
				}
				if err := e.q.Append(ctx, recs); err != nil {
					errs <- err
					return
				}
				n += k
			}
		})
		for _, c := range consumers {
			readers.Go(func() {
				for n := 0; n < perShard; {
					recs, err := c.Next(ctx, s, 1+rand.IntN(8))
					if err != nil {
						errs <- fmt.Errorf("%s shard %d after %d events: %w", c.Name(), s, n, err)
						return
					}
					for _, r := range recs {
						if !bytes.Equal(r.Payload, payload(s, n)) {
							errs <- fmt.Errorf("%s shard %d: got %s, want %s", c.Name(), s, r.Payload, payload(s, n))
							return
						}
						n++
					}
					c.Ack(s, recs[len(recs)-1].Seq)
				}
			})
		}
	}
	producers.Wait()
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	e.flush()
	if s := e.storedSeqs(); len(s) != 0 || e.q.Depth() != 0 {
		t.Fatalf("after everything was acknowledged, %d events stored, Depth %d; want 0", len(s), e.q.Depth())
	}
	for _, c := range consumers {
		if d := c.Depth(); d != 0 {
			t.Fatalf("%s depth = %d, want 0", c.Name(), d)
		}
	}
	if got := e.metric("dd_queue_appended_events_total"); got != shards*perShard {
		t.Fatalf("dd_queue_appended_events_total = %v, want %d", got, shards*perShard)
	}
}

func TestNextWaitsForAppendAndStopsOnClose(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.consumer("bot")
	got := make(chan []Record, 1)
	go func() {
		recs, _ := c.Next(context.Background(), 7, 10) // shard 7 does not exist yet
		got <- recs
	}()
	time.Sleep(20 * time.Millisecond)
	e.append([]Record{rec(7, 0)})
	select {
	case recs := <-got:
		if len(recs) != 1 {
			t.Fatalf("Next returned %d events, want 1", len(recs))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not wake up on Append")
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Next(context.Background(), 8, 10)
		done <- err
	}()
	e.q.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not return on Close")
	}
}

func TestPendingAnswersWithoutMovingAnything(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(store.Options{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	q, err := Open(st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	c, _ := q.Consumer("bot")
	recs := []Record{{Shard: 0, Payload: []byte(`{"a":1}`)}, {Shard: 0, Payload: []byte(`{"a":2}`)}}
	if err := q.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if p, _ := c.Pending(0, recs[0].Seq); !p {
		t.Fatal("an unacknowledged event at the barrier is not pending")
	}
	if p, _ := c.Pending(0, recs[0].Seq-1); p {
		t.Fatal("pending before the first event")
	}
	c.Ack(0, recs[0].Seq)
	if p, _ := c.Pending(0, recs[0].Seq); p {
		t.Fatal("still pending after the ack")
	}
	if got, _ := c.Read(0, 10); len(got) != 1 || got[0].Seq != recs[1].Seq {
		t.Fatalf("Read after Pending calls returned %v", got)
	}
	if p, _ := c.Pending(7, 1<<60); p {
		t.Fatal("an unknown shard has pending events")
	}
}

// The queue's cache takes a sixteenth of the store's memory budget (store.memory_limit) unless told
// otherwise.
func TestCacheIsSizedFromTheStoresMemoryBudget(t *testing.T) {
	st, err := store.Open(store.Options{Path: t.TempDir(), MemoryLimit: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, c := range []struct{ asked, want int }{{0, 4 << 20}, {1 << 20, 1 << 20}} {
		q, err := Open(st, Options{CacheBytes: c.asked})
		if err != nil {
			t.Fatal(err)
		}
		if q.o.CacheBytes != c.want {
			t.Errorf("CacheBytes %d with store.memory_limit 64 MiB: the queue caches %d bytes, want %d", c.asked, q.o.CacheBytes, c.want)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Consumers behind the cache read ahead from the store, but all shards' read-ahead together stays
// within half of CacheBytes (without the bound, 24 shards x 64 KiB), and every event is still read
// once, in order, and the read-ahead is given back as it is read.
func TestReadAheadOfAllShardsStaysWithinItsBudget(t *testing.T) {
	const shards, perShard, cacheBytes = 24, 200, 64 << 10
	e := newEnv(t, Options{CacheBytes: cacheBytes, FlushInterval: time.Hour})
	c := e.consumer("bot")
	payload := bytes.Repeat([]byte("x"), 500)
	for i := range perShard {
		var recs []Record
		for s := range shards {
			recs = append(recs, Record{Shard: s, Payload: append([]byte(fmt.Sprintf("%d-%d:", s, i)), payload...)})
		}
		e.append(recs)
	}
	budget := int64(cacheBytes/2 + len(payload) + 16 + recordOverhead) // a read may pass it by one record
	next := make([]int, shards)
	for round := 0; ; round++ {
		done := true
		for s := range shards {
			recs, err := c.Read(s, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.q.aheadBytes.Load(); got > budget {
				t.Fatalf("round %d, shard %d: %d bytes read ahead, want at most %d", round, s, got, budget)
			}
			if len(recs) == 0 {
				continue
			}
			done = false
			if want := fmt.Sprintf("%d-%d:", s, next[s]); !bytes.HasPrefix(recs[0].Payload, []byte(want)) {
				t.Fatalf("shard %d: read %.10q, want %q next", s, recs[0].Payload, want)
			}
			next[s]++
			c.Ack(s, recs[0].Seq)
		}
		if done {
			break
		}
	}
	for s, n := range next {
		if n != perShard {
			t.Errorf("shard %d: %d events read, want %d", s, n, perShard)
		}
	}
	if got := e.q.aheadBytes.Load(); got != 0 {
		t.Errorf("everything read, yet %d bytes still counted as read ahead", got)
	}
}
