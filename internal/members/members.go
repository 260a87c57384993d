// Package members asks Discord for the member lists that the gateway does not get whole. A guild whose
// GUILD_CREATE lists fewer members than its member_count (a large guild, or any guild without the
// GuildPresences intent) gets one Request Guild Members (op 8, every member: query "" and limit 0) on its
// shard, and the GUILD_MEMBERS_CHUNK answers, tracked by the request's nonce and their chunk_index and
// chunk_count, complete it. Requests are paced under Discord's two limits: a share of each connection's
// 120 sends per 60 s, and one request for every member per guild per session per 30 s (a RATE_LIMITED
// answer is waited out and retried). Which guilds are complete is kept in the store, so that a restart
// that resumes its sessions asks only for what is missing.
//
// It does not apply the chunks (the cache does, from the queue, like any event) and does not decide
// where the events go: it only watches the dispatches and sends op 8 on the shards it is given.
package members

import (
	"container/heap"
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/internal/rawjson"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/store"
)

// NoncePrefix begins the nonce of every request dd sends: a bot tells dd's GUILD_MEMBERS_CHUNKs (and
// RATE_LIMITEDs) from the answers to its own requests by it, and the cache counts only chunks with it
// towards a complete member list. A bot's own nonces must not begin with it.
const NoncePrefix = "dd:"

// Order is which guilds are asked for first, on each shard.
type Order int

const (
	// OrderArrival asks in the order the guilds were loaded (cache.request_members = "all").
	OrderArrival Order = iota
	// OrderSmallFirst asks for the guilds with the fewest members first ("small-first"): most guilds
	// are complete soonest, and the largest, whose chunks take longest, come last.
	OrderSmallFirst
)

// Sender is a shard that requests can be sent on; *shard.Shard is one.
type Sender interface {
	ID() int
	NumShards() int
	State() shard.State
	SendRaw(ctx context.Context, payload []byte) error
}

// Store keeps which guilds are complete; *store.Store is one.
type Store interface {
	Update(fn func(w store.Writer) error) error
	Scan(prefix, from []byte, fn func(key, value []byte) error) error
}

// Options configure New. Zero values take the defaults given.
type Options struct {
	Order Order
	// PerWindow requests are sent per shard per SendWindow at most. Default 60 per 60 s: half of
	// Discord's 120 sends per connection per 60 s, so heartbeats and the bot's own commands keep the rest.
	PerWindow  int
	SendWindow time.Duration
	// Window is Discord's limit on requests for every member: one per guild per session per Window.
	// Default 30 s. dd never asks for a guild again within it on the same session.
	Window time.Duration
	// Timeout: a request that got no chunk for this long (since it was sent or since its last chunk) is
	// sent again. Default Window, so that the retry is never within the window of the request it
	// replaces.
	Timeout time.Duration
	// Tick is how often sends, timeouts and retries are looked at, and completions stored. Default
	// Window/100, between 10 ms and 250 ms.
	Tick       time.Duration
	Store      Store
	Logger     *zap.Logger
	Registerer prometheus.Registerer
}

func (o *Options) defaults() {
	if o.PerWindow <= 0 {
		o.PerWindow = 60
	}
	if o.SendWindow <= 0 {
		o.SendWindow = 60 * time.Second
	}
	if o.Window <= 0 {
		o.Window = 30 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = o.Window
	}
	if o.Tick <= 0 {
		o.Tick = min(max(o.Window/100, 10*time.Millisecond), 250*time.Millisecond)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// state is a guild's member list as the requester sees it.
type state byte

const (
	statePending   state = 'p' // to be asked for
	stateRequested state = 'r' // asked, answers coming (stored as pending: a restart asks again)
	stateComplete  state = 'c' // every chunk of a request came
)

type guild struct {
	id        uint64
	count     int    // member_count
	seq       uint64 // arrival order
	state     state
	nonce     string
	got       []bool // chunk indices received, for the current nonce
	received  int
	lastSent  time.Time // the last request on the current session (zero: none since its READY)
	lastChunk time.Time
	notBefore time.Time // not asked again before (RATE_LIMITED's retry_after, the window, a failed send)
	heapIdx   int       // -1 when not in a shard's heap
}

// Stats counts guilds by state.
type Stats struct {
	Pending   int `json:"pending"`
	Requested int `json:"requested"`
	Complete  int `json:"complete"`
}

// Requester sends and tracks dd's own member requests for one gateway process. Observe is fed every
// dispatch; Run sends.
type Requester struct {
	o   Options
	log *zap.Logger

	mu       sync.Mutex
	guilds   map[uint64]*guild
	inflight map[string]*guild // by nonce
	total    int               // the shard count the heaps are built for
	byShard  map[int]*guildHeap
	waiting  []*guild // pending but not before their notBefore
	sent     map[Sender]*sendWindow
	busy     map[Sender]bool // a send goroutine runs for it
	dirty    map[uint64]bool // to store
	seq      uint64
	nonceSeq uint64

	requests, rateLimited, timedOut, chunks prometheus.Counter
}

// New loads what the store knows (guilds complete, guilds still to ask for).
func New(o Options) (*Requester, error) {
	o.defaults()
	r := &Requester{o: o, log: o.Logger.Named("members"), guilds: map[uint64]*guild{}, inflight: map[string]*guild{},
		byShard: map[int]*guildHeap{}, sent: map[Sender]*sendWindow{}, busy: map[Sender]bool{}, dirty: map[uint64]bool{},
		nonceSeq: uint64(time.Now().UnixNano()),
		requests: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_gateway_member_requests_total",
			Help: "Requests for every member of a guild (op 8) dd sent itself (cache.request_members)."}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_gateway_member_requests_rate_limited_total",
			Help: "dd's member requests answered RATE_LIMITED (waited out and sent again)."}),
		timedOut: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_gateway_member_requests_timed_out_total",
			Help: "dd's member requests whose chunks stopped coming before the last (sent again)."}),
		chunks: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_gateway_member_chunks_total",
			Help: "GUILD_MEMBERS_CHUNKs answering dd's own requests."}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(r.requests, r.rateLimited, r.timedOut, r.chunks)
		for _, s := range []state{statePending, stateRequested, stateComplete} {
			o.Registerer.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_gateway_member_guilds",
				Help:        "Guilds with members missing from GUILD_CREATE, by where dd's requests for them stand.",
				ConstLabels: prometheus.Labels{"state": s.String()}}, func() float64 { return float64(r.count(s)) }))
		}
	}
	if o.Store != nil {
		err := o.Store.Scan([]byte(keyPrefix), nil, func(k, v []byte) error {
			if len(k) != len(keyPrefix)+8 || len(v) < 1 {
				return nil
			}
			g := r.newGuild(binary.BigEndian.Uint64(k[len(keyPrefix):]))
			g.state = stateComplete
			if state(v[0]) != stateComplete {
				g.state = statePending
			}
			if n, k := binary.Uvarint(v[1:]); k > 0 {
				g.count = int(n)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("members: loading which guilds are complete: %w", err)
		}
	}
	return r, nil
}

func (s state) String() string {
	switch s {
	case statePending:
		return "pending"
	case stateRequested:
		return "requested"
	}
	return "complete"
}

// keyPrefix + the guild id (8 bytes, big-endian): a state byte (pending or complete) + member_count.
const keyPrefix = "gateway/members/"

func key(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte(keyPrefix), id) }

func (r *Requester) newGuild(id uint64) *guild {
	r.seq++
	g := &guild{id: id, seq: r.seq, heapIdx: -1}
	r.guilds[id] = g
	return g
}

func (r *Requester) count(s state) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, g := range r.guilds {
		if g.state == s {
			n++
		}
	}
	return n
}

// Stats counts the guilds dd tracks by state.
func (r *Requester) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s Stats
	for _, g := range r.guilds {
		switch g.state {
		case statePending:
			s.Pending++
		case stateRequested:
			s.Requested++
		case stateComplete:
			s.Complete++
		}
	}
	return s
}

// Complete reports whether dd holds a guild's whole member list from its own request.
func (r *Requester) Complete(id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.guilds[id]
	return g != nil && g.state == stateComplete
}

// Observe is told of a dispatch (the whole payload) received by shard `shardID` of `numShards`. live
// says whether the shard's events are the ones queued: a reshard's new shard set is not live until the
// switch, and its READY and GUILD_CREATEs change nothing (the old set kept the lists current). The
// answers to dd's requests count whatever set they come on.
func (r *Requester) Observe(shardID, numShards int, live bool, t string, raw []byte) {
	switch t {
	case "GUILD_MEMBERS_CHUNK":
		r.onChunk(rawjson.Field(raw, "d"))
	case "RATE_LIMITED":
		r.onRateLimited(rawjson.Field(raw, "d"))
	case "READY":
		if live {
			r.onReady(shardID, numShards)
		}
	case "GUILD_CREATE":
		if live {
			r.onGuildCreate(rawjson.Field(raw, "d"))
		}
	case "GUILD_DELETE":
		if live {
			r.onGuildDelete(rawjson.Field(raw, "d"))
		}
	}
}

// onReady: a new session. The old one's requests will not be answered, and the per-session window
// starts afresh. Every guild of the shard gets its GUILD_CREATE next, which decides whether it is asked
// for again (see onGuildCreate).
func (r *Requester) onReady(shardID, numShards int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.guilds {
		if discord.ShardForGuild(g.id, numShards) != shardID {
			continue
		}
		g.lastSent, g.notBefore = time.Time{}, time.Time{}
		if g.state == stateRequested {
			r.abandon(g)
			r.enqueue(g)
		}
	}
}

// onGuildCreate: a guild loaded (after READY, at the end of an outage, or joined). Listing fewer members
// than member_count, it is asked for, even if it was complete: members may have come and gone while no
// session saw them. Listing them all, it needs nothing.
func (r *Requester) onGuildCreate(d []byte) {
	var id uint64
	var count, listed int
	unavailable := false
	_ = rawjson.EachField(d, func(k, v []byte) bool {
		switch string(k) {
		case "id":
			id, _ = rawjson.Snowflake(v)
		case "member_count":
			n, _ := rawjson.Int(v)
			count = int(n)
		case "members":
			_ = rawjson.EachElement(v, func([]byte) bool { listed++; return true })
		case "unavailable":
			unavailable = string(v) == "true"
		}
		return true
	})
	if id == 0 || unavailable {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.guilds[id]
	if listed >= count {
		if g != nil {
			r.forget(g)
		}
		return
	}
	if g == nil {
		g = r.newGuild(id)
	}
	g.count = count
	if g.state == stateRequested {
		r.abandon(g) // the cache starts the guild's list afresh at its GUILD_CREATE: so does the count
	}
	g.state = statePending
	r.dirty[id] = true
	r.enqueue(g)
}

func (r *Requester) onGuildDelete(d []byte) {
	id, _ := rawjson.Snowflake(rawjson.Field(d, "id"))
	if string(rawjson.Field(d, "unavailable")) == "true" {
		return // an outage: the GUILD_CREATE that ends it decides
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if g := r.guilds[id]; g != nil {
		r.forget(g)
	}
}

func (r *Requester) forget(g *guild) {
	r.abandon(g)
	r.unqueue(g)
	delete(r.guilds, g.id)
	r.dirty[g.id] = true
}

func (r *Requester) onChunk(d []byte) {
	var nonce string
	index, count := -1, 0
	_ = rawjson.EachField(d, func(k, v []byte) bool {
		switch string(k) {
		case "nonce":
			nonce, _ = rawjson.String(v)
		case "chunk_index":
			n, _ := rawjson.Int(v)
			index = int(n)
		case "chunk_count":
			n, _ := rawjson.Int(v)
			count = int(n)
		}
		return true
	})
	if len(nonce) <= len(NoncePrefix) || nonce[:len(NoncePrefix)] != NoncePrefix {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.inflight[nonce]
	if g == nil || index < 0 || count < 1 || index >= count {
		return // an answer to a request given up (timed out, a GUILD_CREATE since), or from another process
	}
	r.chunks.Inc()
	if g.got == nil || len(g.got) != count {
		g.got, g.received = make([]bool, count), 0
	}
	g.lastChunk = time.Now()
	if !g.got[index] {
		g.got[index] = true
		g.received++
	}
	if g.received == count {
		delete(r.inflight, nonce)
		g.state, g.nonce, g.got = stateComplete, "", nil
		r.dirty[g.id] = true
	}
}

func (r *Requester) onRateLimited(d []byte) {
	if op, _ := rawjson.Int(rawjson.Field(d, "opcode")); op != discord.OpRequestGuildMembers {
		return
	}
	nonce, _ := rawjson.String(rawjson.Field(rawjson.Field(d, "meta"), "nonce"))
	retry, err := strconv.ParseFloat(string(rawjson.Field(d, "retry_after")), 64)
	if err != nil || retry < 0 {
		retry = r.o.Window.Seconds()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.inflight[nonce]
	if g == nil {
		return
	}
	r.rateLimited.Inc()
	r.abandon(g)
	// A refused request does not start Discord's window (the one it was refused for does): only
	// retry_after counts. dd's own last answered request is older than the window, or dd would not have sent.
	g.lastSent = time.Time{}
	wait := time.Duration(retry * float64(time.Second))
	// A margin over retry_after (which Discord rounds): the retry must land past the window's end.
	g.notBefore = time.Now().Add(wait + max(wait/50, 20*time.Millisecond))
	r.enqueue(g)
}

// abandon forgets a guild's request in flight: its answers no longer count.
func (r *Requester) abandon(g *guild) {
	if g.nonce != "" {
		delete(r.inflight, g.nonce)
	}
	g.nonce, g.got, g.received = "", nil, 0
	if g.state == stateRequested {
		g.state = statePending
	}
}

// enqueue puts a pending guild on its shard's heap, or in waiting until it may be asked again.
func (r *Requester) enqueue(g *guild) {
	if g.state != statePending || g.heapIdx >= 0 || r.total == 0 {
		return
	}
	if !g.lastSent.IsZero() {
		g.notBefore = later(g.notBefore, g.lastSent.Add(r.o.Window))
	}
	if time.Now().Before(g.notBefore) {
		r.waiting = append(r.waiting, g)
		g.heapIdx = -2 // waiting
		return
	}
	sh := discord.ShardForGuild(g.id, r.total)
	h := r.byShard[sh]
	if h == nil {
		h = &guildHeap{order: r.o.Order}
		r.byShard[sh] = h
	}
	heap.Push(h, g)
}

func (r *Requester) unqueue(g *guild) {
	switch {
	case g.heapIdx >= 0:
		heap.Remove(r.byShard[discord.ShardForGuild(g.id, r.total)], g.heapIdx)
	case g.heapIdx == -2:
		for i, w := range r.waiting {
			if w == g {
				r.waiting = append(r.waiting[:i], r.waiting[i+1:]...)
				break
			}
		}
		g.heapIdx = -1
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Run sends requests on the shards that shards returns (the live set: it may change with a reshard)
// until ctx ends, then stores what completed.
func (r *Requester) Run(ctx context.Context, shards func() []Sender) {
	t := time.NewTicker(r.o.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.flush()
			return
		case <-t.C:
		}
		r.step(ctx, shards(), time.Now())
		r.flush()
	}
}

// step gives up timed-out requests, moves due retries to their heaps and sends what each ready shard's
// budget allows.
func (r *Requester) step(ctx context.Context, senders []Sender, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(senders) == 0 {
		return
	}
	if total := senders[0].NumShards(); total != r.total {
		r.rebuild(total)
	}
	for _, g := range r.inflight {
		if now.Sub(later(g.lastSent, g.lastChunk)) >= r.o.Timeout {
			r.timedOut.Inc()
			r.log.Info("a member request got no answer in time; asking again", zap.Uint64("guild", g.id),
				zap.Int("chunks", g.received), zap.Int("of", len(g.got)))
			r.abandon(g)
			r.enqueue(g)
		}
	}
	if len(r.waiting) > 0 {
		due := r.waiting
		r.waiting = nil
		for _, g := range due {
			g.heapIdx = -1
			r.enqueue(g)
		}
	}
	live := map[Sender]bool{}
	for _, s := range senders {
		live[s] = true
		h := r.byShard[s.ID()]
		if h == nil || h.Len() == 0 || r.busy[s] || s.State() != shard.StateReady {
			continue
		}
		w := r.sent[s]
		if w == nil {
			w = &sendWindow{}
			r.sent[s] = w
		}
		room := w.room(now, r.o.PerWindow, r.o.SendWindow)
		var batch []*guild
		for len(batch) < room && h.Len() > 0 {
			g := heap.Pop(h).(*guild)
			r.nonceSeq++
			g.state, g.nonce, g.lastSent, g.lastChunk = stateRequested, NoncePrefix+strconv.FormatUint(r.nonceSeq, 36), now, time.Time{}
			r.inflight[g.nonce] = g
			batch = append(batch, g)
		}
		if len(batch) > 0 {
			r.busy[s] = true // until send returns: it records the sends in w as they happen
			go r.send(ctx, s, w, batch)
		}
	}
	for s := range r.sent {
		if !live[s] && !r.busy[s] {
			delete(r.sent, s) // a retired shard set
		}
	}
}

// rebuild re-sorts the pending guilds onto the shards of a new shard count.
func (r *Requester) rebuild(total int) {
	r.total = total
	r.byShard = map[int]*guildHeap{}
	r.waiting = nil
	for _, g := range r.guilds {
		g.heapIdx = -1
	}
	for _, g := range r.guilds {
		r.enqueue(g)
	}
}

type request struct {
	Op int `json:"op"`
	D  struct {
		GuildID string `json:"guild_id"`
		Query   string `json:"query"`
		Limit   int    `json:"limit"`
		Nonce   string `json:"nonce"`
	} `json:"d"`
}

// send sends a shard's batch in order. What cannot be sent (the shard disconnected) is pending again.
func (r *Requester) send(ctx context.Context, s Sender, w *sendWindow, batch []*guild) {
	defer func() {
		r.mu.Lock()
		delete(r.busy, s)
		r.mu.Unlock()
	}()
	for _, g := range batch {
		r.mu.Lock()
		nonce := g.nonce
		r.mu.Unlock()
		if nonce == "" {
			continue // given up meanwhile
		}
		payload := fmt.Appendf(nil, `{"op":8,"d":{"guild_id":"%d","query":"","limit":0,"nonce":%q}}`, g.id, nonce)
		err := s.SendRaw(ctx, payload)
		r.mu.Lock()
		if err == nil {
			// Timed after the send: the window then ends no earlier than Discord's (which counts receipts).
			w.record(time.Now())
			r.requests.Inc()
			if g.nonce == nonce {
				g.lastSent = time.Now() // the window runs from the send, which the limiter may have delayed
			}
		} else if g.nonce == nonce {
			r.abandon(g)
			g.notBefore = time.Now().Add(r.o.Tick * 10)
			r.enqueue(g)
		}
		r.mu.Unlock()
	}
}

// flush stores the guilds whose state changed.
func (r *Requester) flush() {
	r.mu.Lock()
	if len(r.dirty) == 0 || r.o.Store == nil {
		r.mu.Unlock()
		return
	}
	type rec struct {
		k, v []byte
	}
	recs := make([]rec, 0, len(r.dirty))
	for id := range r.dirty {
		var v []byte
		if g := r.guilds[id]; g != nil {
			st := statePending
			if g.state == stateComplete {
				st = stateComplete
			}
			v = binary.AppendUvarint([]byte{byte(st)}, uint64(g.count))
		}
		recs = append(recs, rec{key(id), v})
	}
	dirty := r.dirty
	r.dirty = map[uint64]bool{}
	r.mu.Unlock()
	err := r.o.Store.Update(func(w store.Writer) error {
		for _, x := range recs {
			if x.v == nil {
				if err := w.Delete(x.k); err != nil {
					return err
				}
			} else if err := w.Set(x.k, x.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		r.log.Warn("storing which guilds' member lists are complete; will retry", zap.Error(err))
		r.mu.Lock()
		for id := range dirty {
			r.dirty[id] = true
		}
		r.mu.Unlock()
	}
}

// sendWindow is a shard's recent request times (a sliding window).
type sendWindow struct{ times []time.Time }

func (w *sendWindow) room(now time.Time, limit int, window time.Duration) int {
	i := 0
	for i < len(w.times) && now.Sub(w.times[i]) >= window {
		i++
	}
	w.times = w.times[i:]
	return max(0, limit-len(w.times))
}

func (w *sendWindow) record(now time.Time) { w.times = append(w.times, now) }

// guildHeap orders a shard's pending guilds: by arrival, or smallest first.
type guildHeap struct {
	order Order
	gs    []*guild
}

func (h *guildHeap) Len() int { return len(h.gs) }
func (h *guildHeap) Less(i, j int) bool {
	a, b := h.gs[i], h.gs[j]
	if h.order == OrderSmallFirst && a.count != b.count {
		return a.count < b.count
	}
	return a.seq < b.seq
}
func (h *guildHeap) Swap(i, j int) {
	h.gs[i], h.gs[j] = h.gs[j], h.gs[i]
	h.gs[i].heapIdx, h.gs[j].heapIdx = i, j
}
func (h *guildHeap) Push(x any) {
	g := x.(*guild)
	g.heapIdx = len(h.gs)
	h.gs = append(h.gs, g)
}
func (h *guildHeap) Pop() any {
	g := h.gs[len(h.gs)-1]
	h.gs = h.gs[:len(h.gs)-1]
	g.heapIdx = -1
	return g
}
