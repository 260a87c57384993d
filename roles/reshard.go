package roles

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/internal/filter"
	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/reshard"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/store"
)

// A generation is one shard set of one shard count, with its own filter (guilds per shard) and sink.
// Normally one runs; during a reshard the new one connects beside it (see reshardTo).
type generation struct {
	total   int
	ids     []int
	mgr     *shard.Manager
	filter  *filter.Filter
	sink    *genSink
	cancel  context.CancelFunc
	stopped chan struct{} // closed when the manager's Run returned
	err     error         // Run's error, valid after stopped
}

// startGeneration builds and starts a shard set. A held generation (a reshard's new set) queues
// nothing until it goes live, and starts without stored sessions.
func (g *gatewayRole) startGeneration(ctx context.Context, total int, ids []int, held bool) (*generation, error) {
	gen := &generation{total: total, ids: ids, stopped: make(chan struct{}),
		filter: filter.New(filter.Options{Drop: g.cfg.Events.Drop, DedupMessageUpdates: g.cfg.Gateway.DedupMessageUpdates,
			DropKnownGuildCreates: g.cfg.Gateway.DropKnownGuildCreates, LoadingGuildEvent: g.cfg.Gateway.LoadingGuildEvent,
			DropLoadingBurst: held}),
		sink: newGenSink(g.q, held, &g.storeHealth),
	}
	gen.sink.guilds, gen.sink.total = gen.filter, total
	if !held {
		// Resumed shards get no READY or GUILD_CREATE burst: their guilds come from the store.
		for _, id := range ids {
			if v, err := g.st.Get(guildsKey(total, id)); err == nil {
				gen.filter.Restore(id, decodeGuilds(v))
			}
		}
	}
	var sessions shard.SessionLoader = shard.NewSessionStore(g.st)
	if held {
		sessions = nil
	}
	mgr, err := shard.NewManager(shard.ManagerConfig{
		TotalShards: total, ShardIDs: ids, Sessions: sessions, Logger: g.log,
		Template: shard.Config{
			Token: g.cfg.Discord.Token, Intents: int(g.cfg.Gateway.Intents), GatewayURL: g.info.URL,
			APIVersion: g.cfg.Discord.APIVersion, Compress: g.cfg.Gateway.Compress, LargeThreshold: g.cfg.Gateway.LargeThreshold,
			Identify: g.limiter, Sink: gen.sink,
			Hooks: shard.Hooks{OnDispatch: func(s *shard.Shard, ev *shard.Event) bool { return g.onDispatch(gen.filter, s, ev) },
				OnClose: func(_ *shard.Shard, code int, _ error) { g.closes.WithLabelValues(closeLabel(code)).Inc() }},
		},
	})
	if err != nil {
		return nil, err
	}
	gen.mgr = mgr
	gctx, cancel := context.WithCancel(ctx)
	gen.cancel = cancel
	go func() {
		gen.err = mgr.Run(gctx)
		close(gen.stopped)
	}()
	return gen, nil
}

// loaded reports whether every shard of the set is ready and has had every guild's GUILD_CREATE.
func (gen *generation) loaded() bool {
	if !gen.mgr.Ready() {
		return false
	}
	for _, id := range gen.ids {
		if gen.filter.Loading(id) > 0 {
			return false
		}
	}
	return true
}

// genSink is a generation's shard.Sink. Live, it queues events with the session, and while a reshard
// runs it records what it handled (window: queued, or dropped by the filter). Held, it keeps only a short tail of each shard's events and
// their sessions, in memory. Retired, it drops everything (the new set delivers).
type genSink struct {
	q      *queue.Queue
	health *storeHealth

	// Each shard's guilds are stored with its events when they change (see guildsRecord).
	guilds   *filter.Filter
	total    int
	guildMu  sync.Mutex
	guildVer map[int]uint64 // the version of each shard's guilds last stored

	mu       sync.RWMutex // Dispatch holds it for reading; a switch takes it to change mode atomically
	mode     sinkMode
	window   *reshard.Window
	tails    map[int]*reshard.Tail[shard.Event]
	sessions map[int]shard.Session
	tailMu   sync.Mutex // guards tails and sessions in held mode

	matcher    atomic.Pointer[reshard.Matcher] // after going live: drop what the old set queued
	matchUntil atomic.Int64                    // unix nanoseconds
}

type sinkMode int

const (
	sinkLive sinkMode = iota
	sinkHeld
	sinkRetired
)

// How long a reshard keeps its bookkeeping: the new set's recent events, the old set's queued events,
// and the time after the switch during which late duplicates are still caught.
const (
	reshardTailHold   = 20 * time.Second
	reshardTailMax    = 200_000
	reshardWindowKeep = 60 * time.Second
	reshardWindowMax  = 2_000_000
	reshardLateMatch  = 10 * time.Second
)

func newGenSink(q *queue.Queue, held bool, health *storeHealth) *genSink {
	s := &genSink{q: q, health: health}
	if held {
		s.mode = sinkHeld
		s.tails, s.sessions = map[int]*reshard.Tail[shard.Event]{}, map[int]shard.Session{}
	}
	return s
}

func (s *genSink) Dispatch(ctx context.Context, evs []shard.Event, sess shard.Session) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch s.mode {
	case sinkRetired:
		return nil
	case sinkHeld:
		s.tailMu.Lock()
		defer s.tailMu.Unlock()
		t := s.tails[sess.ShardID]
		if t == nil {
			t = reshard.NewTail[shard.Event](reshardTailHold, reshardTailMax)
			s.tails[sess.ShardID] = t
		}
		for _, ev := range evs {
			if !ev.Dropped {
				t.Add(ev)
			}
		}
		s.sessions[sess.ShardID] = sess
		return nil
	}
	m := s.matcher.Load()
	if m != nil && time.Now().UnixNano() > s.matchUntil.Load() {
		s.matcher.Store(nil)
		m = nil
	}
	recs := make([]queue.Record, 0, len(evs))
	for _, ev := range evs {
		if ev.Dropped || (m != nil && m.Seen(ev.Raw)) {
			continue
		}
		recs = append(recs, queue.Record{Shard: sess.ShardID, Payload: ev.Raw})
	}
	k, v := shard.SessionRecord(sess)
	kvs := []queue.KV{{Key: k, Value: v}}
	gkv, gver, gchanged := s.guildsRecord(sess.ShardID)
	if gchanged {
		kvs = append(kvs, gkv)
	}
	err := s.q.Append(ctx, recs, kvs...)
	if s.health != nil && ctx.Err() == nil {
		s.health.observe(err)
	}
	if err != nil {
		return err
	}
	if gchanged {
		s.storedGuilds(sess.ShardID, gver)
	}
	// What this set handled, queued or deliberately dropped: a new set does the same with its copies.
	if w := s.window; w != nil {
		for _, ev := range evs {
			w.Record(ev.Raw)
		}
	}
	return nil
}

// guildsKey is where a shard's guild ids are stored, beside its session (shard.SessionKey).
func guildsKey(total, id int) []byte { return fmt.Appendf(nil, "gateway/guilds/%d/%d", total, id) }

func encodeGuilds(ids []uint64) []byte {
	out := make([]byte, 0, 8*len(ids))
	for _, id := range ids {
		out = binary.BigEndian.AppendUint64(out, id)
	}
	return out
}

func decodeGuilds(v []byte) []uint64 {
	ids := make([]uint64, 0, len(v)/8)
	for i := 0; i+8 <= len(v); i += 8 {
		ids = append(ids, binary.BigEndian.Uint64(v[i:]))
	}
	return ids
}

// guildsRecord returns shard's guild ids to store when they changed since last stored; the set
// changes on READY, on joining and on leaving a guild, so it is rarely written.
func (s *genSink) guildsRecord(shard int) (queue.KV, uint64, bool) {
	if s.guilds == nil {
		return queue.KV{}, 0, false
	}
	s.guildMu.Lock()
	ver := s.guildVer[shard]
	s.guildMu.Unlock()
	ids, now, changed := s.guilds.GuildsChanged(shard, ver)
	if !changed {
		return queue.KV{}, 0, false
	}
	return queue.KV{Key: guildsKey(s.total, shard), Value: encodeGuilds(ids)}, now, true
}

func (s *genSink) storedGuilds(shard int, ver uint64) {
	s.guildMu.Lock()
	if s.guildVer == nil {
		s.guildVer = map[int]uint64{}
	}
	s.guildVer[shard] = max(s.guildVer[shard], ver)
	s.guildMu.Unlock()
}

// record starts (or stops, with nil) remembering what the sink queues.
func (s *genSink) record(w *reshard.Window) {
	s.mu.Lock()
	s.window = w
	s.mu.Unlock()
}

// markers returns, for each pair of an old shard y (of oldTotal) and a new shard x that share guilds
// (need[x] holds those y), the newest event x holds of a guild of y, and how many pairs have none yet.
// Once the old set has handled the marker of (y, x), old shard y has read everything sent to it before
// that event, which was sent after x's session began: so every event of those guilds that reached only
// the old set (sent before x existed) is handled, and x has everything sent after. A pair without a
// marker has no such proof: the old shard may still hold unread events that only it received.
func (s *genSink) markers(oldTotal int, need map[int]map[int]bool) (out [][]byte, missing int) {
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	for x, ys := range need {
		t := s.tails[x]
		for y := range ys {
			var newest []byte
			if t != nil {
				t.Newest(func(ev shard.Event) bool {
					if reshard.GuildShard(ev.Raw, oldTotal) == y {
						newest = ev.Raw
						return false
					}
					return true
				})
			}
			if newest == nil {
				missing++
				continue
			}
			out = append(out, newest)
		}
	}
	return out, missing
}

// sharedGuilds returns, for each shard x of gen, the old shards (of oldTotal) that held some of x's
// guilds: the pairs whose events may have reached only the old set before x's session began.
func (gen *generation) sharedGuilds(oldTotal int) map[int]map[int]bool {
	need := map[int]map[int]bool{}
	for _, x := range gen.ids {
		ids, _, _ := gen.filter.GuildsChanged(x, 0)
		for _, g := range ids {
			if need[x] == nil {
				need[x] = map[int]bool{}
			}
			need[x][discord.ShardForGuild(g, oldTotal)] = true
		}
	}
	return need
}

// handledAll reports whether the sink's window holds every marker.
func (s *genSink) handledAll(markers [][]byte) bool {
	s.mu.RLock()
	w := s.window
	s.mu.RUnlock()
	if w == nil {
		return false
	}
	m := w.Matcher(time.Now().Add(-reshardWindowKeep))
	for _, mk := range markers {
		if !m.Has(mk) {
			return false
		}
	}
	return true
}

// goLive queues the held tail, less what old already handled, with each shard's session, and from then
// on queues directly (dropping, for a short while, events old handled first). The caller holds old.mu.
func (s *genSink) goLive(ctx context.Context, old *genSink, log *zap.Logger) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	type held struct {
		evs   []shard.Event
		since time.Time
	}
	byShard := map[int]held{}
	oldest := time.Now()
	for id, t := range s.tails {
		evs, since := t.Take()
		byShard[id] = held{evs, since}
		if since.Before(oldest) {
			oldest = since
		}
	}
	// A little before the oldest held event: the old set may have received it slightly earlier.
	m := old.window.Matcher(oldest.Add(-2 * time.Second))
	ids := make([]int, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	nHeld, queued := 0, 0
	oldQueued := m.Left()
	for _, id := range ids {
		var recs []queue.Record
		for _, ev := range byShard[id].evs {
			nHeld++
			if !m.Seen(ev.Raw) {
				recs = append(recs, queue.Record{Shard: id, Payload: ev.Raw})
			}
		}
		queued += len(recs)
		k, v := shard.SessionRecord(s.sessions[id])
		kvs := []queue.KV{{Key: k, Value: v}}
		gkv, gver, gchanged := s.guildsRecord(id)
		if gchanged {
			kvs = append(kvs, gkv)
		}
		if err := s.q.Append(ctx, recs, kvs...); err != nil {
			return fmt.Errorf("queueing shard %d's events at the switch: %w", id, err)
		}
		if gchanged {
			s.storedGuilds(id, gver)
		}
	}
	log.Info("switch: the new shards' held events, less those the old shards queued, are queued",
		zap.Int("held", nHeld), zap.Int("old_queued_meanwhile", oldQueued), zap.Int("queued_now", queued),
		zap.Int("old_not_yet_seen_by_new", m.Left()))
	s.matcher.Store(m)
	s.matchUntil.Store(time.Now().Add(reshardLateMatch).UnixNano())
	s.mode, s.tails, s.sessions = sinkLive, nil, nil
	return nil
}

// handOver is the switch: the queue takes next's events from now on, and s's no more. s's appends wait
// (not drop) while it runs, so a failed switch loses nothing.
func (s *genSink) handOver(ctx context.Context, next *genSink, log *zap.Logger) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A guild's events move to another shard here. The fence makes every consumer of the queue (the
	// bot's delivery, the cache) take everything queued so far, on every shard (the old set's events, and
	// those queued before a restart), before anything the new set queues. A failed switch leaves it: it
	// then only holds the old set's later events behind its earlier ones for a moment.
	if _, err := s.q.SetFence(ctx); err != nil {
		log.Error("the switch's ordering fence is not stored: a restart before every consumer has passed it "+
			"could let a guild's later events overtake earlier ones", zap.Error(err))
	}
	if err := next.goLive(ctx, s, log); err != nil {
		return err
	}
	s.mode = sinkRetired
	return nil
}

// ---- the reshard itself ----

// reshardState is what /status shows of a reshard.
type reshardState struct {
	InProgress bool      `json:"in_progress"`
	From       int       `json:"from,omitempty"`
	To         int       `json:"to,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	Result     string    `json:"result,omitempty"` // of the last one: switched, rolled back: why
	Took       string    `json:"took,omitempty"`
}

// errReshardBusy is returned when a reshard is already running.
var errReshardBusy = errors.New("a reshard is already in progress")

// startReshard begins a reshard to total shards in the background, after checking that it makes sense
// and that the identify budget allows it.
func (g *gatewayRole) startReshard(ctx context.Context, total int, why string) (from int, err error) {
	cur := g.cur.Load()
	if cur == nil {
		return 0, errors.New("shards are not started yet")
	}
	if err := g.checkTarget(cur, total); err != nil {
		return cur.total, err
	}
	guilds := cur.filter.TotalGuilds()
	if need := (guilds + 2499) / 2500; total < need {
		return cur.total, fmt.Errorf("%d shards cannot hold %d guilds (2500 a shard at most): at least %d", total, guilds, need)
	}
	if total == cur.total {
		return cur.total, fmt.Errorf("already at %d shards", total)
	}
	info, err := g.fetchGatewayBot(ctx)
	if err != nil || info == nil {
		return cur.total, fmt.Errorf("cannot check the identify budget: %v", err)
	}
	own := shardCount(g.cfg.Gateway, total)
	if rem, need := info.SessionStartLimit.Remaining, own+g.cfg.Gateway.ReshardIdentifyReserve; rem < need {
		return cur.total, fmt.Errorf("the identify budget has %d left today; %d new shards plus the reserve of %d (gateway.reshard_identify_reserve) need %d",
			rem, own, g.cfg.Gateway.ReshardIdentifyReserve, need)
	}
	ids := shardRange(g.cfg.Gateway, total)
	if !g.resharding.CompareAndSwap(false, true) {
		return cur.total, errReshardBusy
	}
	g.reshardWG.Add(1)
	go func() {
		defer g.reshardWG.Done()
		defer g.resharding.Store(false)
		g.reshardTo(ctx, cur, total, ids, why)
	}()
	return cur.total, nil
}

// checkTarget says why this process cannot reshard from cur to total: a count out of range or not a
// multiple of max_concurrency (reshard.CheckCount), or, split, not a multiple of the current count.
func (g *gatewayRole) checkTarget(cur *generation, total int) error {
	if err := reshard.CheckCount(total, g.info.SessionStartLimit.MaxConcurrency); err != nil {
		return err
	}
	if g.cfg.Gateway.Clusters > 1 && total%cur.total != 0 {
		return fmt.Errorf("a split deployment (gateway.clusters) moves to a multiple of its %d shards, not %d", cur.total, total)
	}
	return nil
}

// reshardTo runs a reshard from old to total shards: the new set connects while the old one delivers;
// when every new shard is ready with all its guilds, the switch hands delivery over without losing or
// repeating an event; if the new set fails, it is dropped and the old one, which never stopped, stays.
func (g *gatewayRole) reshardTo(ctx context.Context, old *generation, total int, ids []int, why string) {
	start := time.Now()
	log := g.log.With(zap.Int("from", old.total), zap.Int("to", total))
	log.Info("reshard started", zap.String("why", why))
	g.setReshardState(reshardState{InProgress: true, From: old.total, To: total, StartedAt: start})
	old.sink.record(reshard.NewWindow(reshardWindowKeep, reshardWindowMax))
	defer old.sink.record(nil)

	next, err := g.startGeneration(ctx, total, ids, true)
	if err != nil {
		g.reshardDone(log, old.total, total, start, "rolled back: "+err.Error())
		return
	}
	g.next.Store(next)
	defer g.next.Store(nil)
	rollback := func(reason string) {
		next.mgr.EndSessionsOnStop()
		next.cancel()
		<-next.stopped
		g.reshardDone(log, old.total, total, start, "rolled back: "+reason)
	}
	// Identifying the new set takes ceil(shards / max_concurrency) identify windows; allow double, plus
	// time for the guilds to load.
	deadline := time.Now().Add(2*time.Duration(len(ids)+1)*g.identifyWindow + 2*time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !(next.loaded() && old.mgr.Ready()) {
		select {
		case <-ctx.Done():
			rollback("dd is shutting down")
			return
		case <-next.stopped:
			g.reshardDone(log, old.total, total, start, fmt.Sprintf("rolled back: the new shards stopped: %v", next.err))
			return
		case <-tick.C:
			if time.Now().After(deadline) {
				rollback("the new shards were not ready in time")
				return
			}
			for _, s := range next.mgr.Shards() {
				if s.State() == shard.StateFatal {
					rollback(fmt.Sprintf("Discord refused new shard %d for good", s.ID()))
					return
				}
			}
		}
	}

	// Wait until the old set has read as far as the new one, so that switching drops nothing only it got
	// (events sent before the new shards existed). That takes a marker for every pair of old and new
	// shards that share guilds; a pair whose guilds stay quiet for a while gets none, and its old shard
	// has had that long to read what it was sent before.
	need := next.sharedGuilds(old.total)
	quietUntil := time.Now().Add(max(2*g.identifyWindow, time.Second))
	markers, missing := next.sink.markers(old.total, need)
	for missing > 0 && time.Now().Before(quietUntil) {
		select {
		case <-ctx.Done():
			rollback("dd is shutting down")
			return
		case <-time.After(10 * time.Millisecond):
		}
		markers, missing = next.sink.markers(old.total, need)
	}
	if missing > 0 {
		log.Info("switch: some old and new shards share only quiet guilds; switching without their markers",
			zap.Int("pairs_without_marker", missing))
	}
	for !old.sink.handledAll(markers) {
		if time.Now().After(deadline) {
			rollback("the old shards did not catch up with the new ones in time")
			return
		}
		select {
		case <-ctx.Done():
			rollback("dd is shutting down")
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := old.sink.handOver(context.WithoutCancel(ctx), next.sink, log); err != nil {
		rollback(err.Error())
		return
	}
	g.cur.Store(next)
	select {
	case g.changed <- struct{}{}:
	default:
	}
	if err := g.persistReshard(old, next); err != nil {
		log.Error("could not store the new shard count; a restart would run the old count", zap.Error(err))
	}
	old.mgr.EndSessionsOnStop()
	old.cancel()
	<-old.stopped
	g.reshardDone(log, old.total, total, start, "switched")
}

func (g *gatewayRole) reshardDone(log *zap.Logger, from, to int, start time.Time, result string) {
	took := time.Since(start)
	g.setReshardState(reshardState{From: from, To: to, StartedAt: start, Result: result, Took: took.Round(time.Millisecond).String()})
	outcome := "switched"
	if result != "switched" {
		outcome = "rolled_back"
		log.Warn("reshard rolled back; the old shards kept running", zap.String("why", result), zap.Duration("took", took))
	} else {
		log.Info("reshard switched", zap.Duration("took", took))
	}
	g.reshards.WithLabelValues(outcome).Inc()
	g.reshardSeconds.Observe(took.Seconds())
}

func (g *gatewayRole) setReshardState(s reshardState) {
	g.reshardMu.Lock()
	g.reshardState = s
	g.reshardMu.Unlock()
}

// totalKey stores the shard count a reshard moved to, with the configured count it replaced.
var totalKey = []byte("gateway/total_shards")

type storedTotal struct {
	Total      int `json:"total"`
	FromConfig int `json:"from_config"` // gateway.total_shards when the reshard happened
}

// persistReshard stores the new count and drops the old sessions (ended at Discord).
func (g *gatewayRole) persistReshard(old, next *generation) error {
	v, _ := json.Marshal(storedTotal{Total: next.total, FromConfig: g.cfg.Gateway.TotalShards})
	return g.st.Update(func(w store.Writer) error {
		if err := w.Set(totalKey, v); err != nil {
			return err
		}
		for _, id := range old.ids {
			if err := w.Delete(shard.SessionKey(id, old.total)); err != nil {
				return err
			}
			if err := w.Delete(guildsKey(old.total, id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// storedTotal returns the count of the last reshard, when gateway.total_shards has not changed since.
func (g *gatewayRole) storedTotal() (int, bool) {
	v, err := g.st.Get(totalKey)
	if err != nil {
		return 0, false
	}
	var st storedTotal
	if json.Unmarshal(v, &st) != nil {
		return 0, false
	}
	if err := reshard.CheckCount(st.Total, 0); err != nil {
		g.log.Error("ignoring the stored shard count of the last reshard", zap.Error(err))
		return 0, false
	}
	if st.FromConfig != g.cfg.Gateway.TotalShards {
		g.log.Info("gateway.total_shards changed since the last reshard; using the configured count",
			zap.Int("resharded_to", st.Total), zap.Int("configured", g.cfg.Gateway.TotalShards))
		return 0, false
	}
	return st.Total, true
}

// split reports whether this process is one of several that share the shards through the rest role.
func (g *gatewayRole) split() bool { return g.cfg.Gateway.Clusters > 1 && g.cfg.Rest.URL != "" }

// autoReshard checks every reshard_check_interval whether the guilds fill reshard_percentage of the
// shards' capacity, and reshards to Discord's recommendation when they do.
func (g *gatewayRole) autoReshard(ctx context.Context) {
	g.everyWhileSettled(ctx, g.cfg.Gateway.ReshardCheckInterval, func(cur *generation) { g.checkReshardDue(ctx, cur) })
}

// everyWhileSettled calls fn every interval with the running shard set, skipping ticks while none runs
// or a reshard is under way.
func (g *gatewayRole) everyWhileSettled(ctx context.Context, every time.Duration, fn func(cur *generation)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if cur := g.cur.Load(); cur != nil && !g.resharding.Load() {
			fn(cur)
		}
	}
}

// checkReshardDue reshards (or, split, proposes a count to the rest role) when the guilds fill
// reshard_percentage of the shards' capacity.
func (g *gatewayRole) checkReshardDue(ctx context.Context, cur *generation) {
	guilds := cur.filter.TotalGuilds()
	if own := len(cur.ids); own > 0 && own < cur.total {
		// A process of a split deployment sees only its own shards' guilds: scale them to the deployment
		// (guilds spread evenly over shards), so that it judges the whole count as one process would.
		guilds = guilds * cur.total / own
	}
	if !reshard.Due(guilds, cur.total, g.cfg.Gateway.ReshardPercentage) {
		return
	}
	info, err := g.fetchGatewayBot(ctx)
	if err != nil || info == nil {
		return
	}
	to := reshard.NewShardCount(info.Shards, guilds, info.SessionStartLimit.MaxConcurrency)
	if to <= cur.total {
		to = reshard.NewShardCount(cur.total+1, guilds, info.SessionStartLimit.MaxConcurrency)
	}
	why := fmt.Sprintf("%d guilds fill %d%% or more of %d shards", guilds, g.cfg.Gateway.ReshardPercentage, cur.total)
	if g.split() {
		// The whole deployment moves: propose the count; every process (this one too) follows it.
		if _, err := g.coordinatorCall(ctx, splitCount(to, cur.total)); err != nil {
			g.log.Warn("reshard due but the rest role's coordinator did not take it", zap.String("why", why), zap.Error(err))
		}
		return
	}
	if _, err := g.startReshard(ctx, to, why); err != nil {
		g.log.Warn("reshard due but not started", zap.String("why", why), zap.Error(err))
	}
}

// handleReshard serves POST /reshard [{"total_shards": N}].
func (g *gatewayRole) handleReshard(w http.ResponseWriter, r *http.Request) {
	var body struct {
		TotalShards *int `json:"total_shards"`
	}
	if r.ContentLength != 0 {
		if err := decodeBody(w, r, 4096, &body); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "body must be empty or {\"total_shards\": N}: "+err.Error())
			return
		}
	}
	cur := g.cur.Load()
	if cur == nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, "shards are not started yet")
		return
	}
	to := 0
	if body.TotalShards != nil {
		// Vetted before anything is sized by it (the shard id list, the identify budget check).
		if err := reshard.CheckCount(*body.TotalShards, 0); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		to = *body.TotalShards
	} else {
		info, err := g.fetchGatewayBot(r.Context())
		if err != nil || info == nil {
			httpapi.WriteError(w, http.StatusBadGateway, fmt.Sprintf("cannot ask Discord for its recommendation: %v", err))
			return
		}
		to = reshard.NewShardCount(info.Shards, cur.filter.TotalGuilds(), info.SessionStartLimit.MaxConcurrency)
	}
	if g.split() {
		to = splitCount(to, cur.total)
	}
	if err := g.checkTarget(cur, to); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "reshard not started: "+err.Error())
		return
	}
	if g.split() {
		if to == cur.total {
			httpapi.WriteError(w, http.StatusUnprocessableEntity, fmt.Sprintf("reshard not started: already at %d shards", to))
			return
		}
		target, err := g.coordinatorCall(r.Context(), to)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadGateway, "the rest role's reshard coordinator did not take it: "+err.Error())
			return
		}
		httpapi.WriteJSON(w, http.StatusAccepted, map[string]any{"status": "requested", "from": cur.total, "to": target,
			"progress": "every gateway process follows the rest role's target; GET /status on each shows it under reshard"})
		return
	}
	// The reshard outlives this request: it runs on the role's context.
	from, err := g.startReshard(g.runCtx, to, "requested with POST /reshard")
	switch {
	case errors.Is(err, errReshardBusy):
		httpapi.WriteError(w, http.StatusConflict, err.Error())
	case err != nil:
		httpapi.WriteError(w, http.StatusUnprocessableEntity, "reshard not started: "+err.Error())
	default:
		httpapi.WriteJSON(w, http.StatusAccepted, map[string]any{"status": "started", "from": from, "to": to,
			"progress": "GET /status shows it under reshard"})
	}
}
