package cluster

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/internal/eventmatch"
	"github.com/ddhq/dd/shard"
)

// This process's part in a reshard (the steps are described in reshard.go). stepReshard runs on Run's
// goroutine on every change of the target bucket's reshard keys and every 250 ms; what waits (an old
// shard's stop, a new shard's go-live) runs on goroutines of its own, one per holding.

// reshardWork is what this process does for the reshard in progress.
type reshardWork struct {
	rec     reshardRecord
	next    *gatewayRun
	sampler *seqSampler
	stop    context.CancelFunc // the sampler
	seen    time.Time          // when this process began following it
	last    reshardState       // the last view of it (its stopped shards, once it is gone)
	log     *zap.Logger

	mu        sync.Mutex
	readyPut  map[int]bool
	marking   map[*heldShard]bool
	living    map[*heldShard]bool
	retiring  map[*Lease]bool
	passed    map[int]bool // shards whose delivery fence passed
	ignoredAt int          // a reshard from another count, said once
}

// reshardDeadline is how long the new shards may take to be ready before the reshard is rolled back:
// ceil(shards / max_concurrency) identify windows, doubled, plus time for the guilds to load (one
// machine's rule), with max_concurrency taken as 1.
func (g *Gateway) reshardDeadline(to int) time.Duration {
	if g.cfg.ReshardDeadline > 0 {
		return g.cfg.ReshardDeadline
	}
	w := g.cfg.IdentifyWindow
	if w <= 0 {
		w = 5 * time.Second
	}
	return 2*time.Duration(to+1)*w + 2*time.Minute
}

// stepReshard moves this process's part of the reshard on by what the target bucket shows.
func (g *Gateway) stepReshard(ctx context.Context) {
	view := g.reshardView()
	cur := g.st.Load()
	if cur == nil {
		return
	}
	work := g.work
	rec := view.rec
	if rec == nil {
		if work != nil {
			g.endReshard(ctx, cur, work)
		}
		return
	}
	if rec.From != cur.total {
		if work == nil || work.rec.ID != rec.ID {
			if g.ignored != rec.ID {
				g.ignored = rec.ID
				g.log.Warn("a reshard runs from a count this process does not run; it follows once that reshard ends",
					zap.Int("from", rec.From), zap.Int("to", rec.To), zap.Int("total_shards", cur.total))
			}
		}
		return
	}
	if work != nil && work.rec.ID != rec.ID {
		g.dropNext(work, "another reshard replaced it")
		work = nil
	}
	if work == nil {
		var err error
		if work, err = g.startNext(ctx, cur, *rec); err != nil {
			g.log.Error("reshard: the new shards cannot start here; retrying", zap.Int("to", rec.To), zap.Error(err))
			return
		}
		g.work = work
	}
	work.rec = *rec
	work.last = view
	next := work.next
	switch rec.Phase {
	case phaseHeld:
		g.markReady(ctx, work, view)
		if len(view.ready) >= rec.To {
			rec2 := *rec
			rec2.Phase = phaseSwitching
			v, _ := json.Marshal(rec2)
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := g.conn.KV(BucketTarget).Update(rctx, reshardKey, v, view.rev); err == nil {
				work.log.Info("reshard: every new shard is ready; switching", zap.Int("new_shards", rec.To))
			}
			cancel()
		} else if time.Since(work.seen) > g.reshardDeadline(rec.To) {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := g.conn.KV(BucketTarget).Delete(rctx, reshardKey, jetstream.LastRevision(view.rev)); err == nil {
				work.log.Warn("reshard rolled back: the new shards were not ready in time; the old shards kept running",
					zap.Int("ready", len(view.ready)), zap.Int("new_shards", rec.To))
				go func(rec reshardRecord) {
					pctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					g.purgeReshardKeys(pctx, rec)
				}(*rec)
			}
			cancel()
		}
	case phaseSwitching:
		next.rsink.switching.Store(true)
		for _, b := range next.owner.Owned() {
			h := next.rsink.holding(b)
			if h == nil {
				continue
			}
			g.newShardStep(ctx, work, view, h)
		}
		for _, a := range cur.owner.Owned() {
			if _, ok := view.stopped[a]; ok {
				continue
			}
			le := cur.owner.lease(a)
			work.mu.Lock()
			busy := le == nil || work.retiring[le]
			if !busy {
				work.retiring[le] = true
			}
			work.mu.Unlock()
			if !busy {
				go g.retireOld(ctx, work, *rec, cur, a, le)
			}
		}
		if len(view.live) >= rec.To && len(view.stopped) >= rec.From && g.drained(ctx, cur, view) {
			g.completeReshard(ctx, work, view)
		}
	}
}

// startNext starts the new shard count beside cur: its filter, sink, runner and owner.
func (g *Gateway) startNext(ctx context.Context, cur *gatewayRun, rec reshardRecord) (*reshardWork, error) {
	log := g.log.With(zap.Int("from", rec.From), zap.Int("to", rec.To), zap.String("reshard", rec.ID))
	next, err := g.build(ctx, g.info, rec.To, nil, true)
	if err != nil {
		return nil, err
	}
	next.rsink.floor = rec.Seq
	next.deliv, next.host.deliv = cur.deliv, cur.deliv
	next.host.later = func(id int) bool { return id < rec.From }
	sctx, stop := context.WithCancel(context.Background())
	work := &reshardWork{rec: rec, next: next, sampler: &seqSampler{}, stop: stop, seen: time.Now(), log: log,
		readyPut: map[int]bool{}, marking: map[*heldShard]bool{}, living: map[*heldShard]bool{}, retiring: map[*Lease]bool{},
		passed: map[int]bool{}}
	first, err := lastStreamSeq(ctx, g.conn)
	if err != nil {
		first = rec.Seq
	}
	go work.sampler.run(sctx, g.conn, min(first, rec.Seq))
	cur.sink.recordHandled(eventmatch.NewWindow(reshardWindowKeep, reshardWindowMax))
	g.next.Store(next)
	g.startOwner(next)
	log.Info("reshard started: the new shards connect beside the old ones, held until the switch",
		zap.String("why", rec.Why), zap.String("requested_by", rec.By))
	return work, nil
}

// markReady writes the ready key of each new shard here that is READY with its guilds.
func (g *Gateway) markReady(ctx context.Context, work *reshardWork, view reshardState) {
	next := work.next
	for _, b := range next.owner.Owned() {
		if view.ready[b] || work.readyPut[b] {
			continue
		}
		s := next.runner.Shard(b)
		if s == nil || s.State() != shard.StateReady || next.filter.Loading(b) > 0 || next.rsink.holding(b) == nil {
			continue
		}
		if err := g.putTarget(ctx, work.rec.key("ready", b), nil); err == nil {
			work.readyPut[b] = true
			work.log.Info("reshard: new shard ready with its guilds", zap.Int("shard", b), zap.Int("guilds", next.filter.GuildCount(b)))
		}
	}
}

// newShardStep writes a new shard's markers, and brings it live once the old shards sharing its guilds
// stopped.
func (g *Gateway) newShardStep(ctx context.Context, work *reshardWork, view reshardState, h *heldShard) {
	rec := work.rec
	b := h.id
	olds := sharing(b, rec.To, rec.From)
	work.mu.Lock()
	startMark := view.marks[b] == nil && !work.marking[h]
	if startMark {
		work.marking[h] = true
	}
	work.mu.Unlock()
	if startMark {
		go func() {
			quiet := time.Now().Add(max(2*g.cfg.IdentifyWindow, time.Second))
			m := h.markers(rec.From, olds)
			for len(m) < len(olds) && time.Now().Before(quiet) && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
				m = h.markers(rec.From, olds)
			}
			if len(m) < len(olds) {
				work.log.Info("reshard: some old shards share only quiet guilds with this new shard; no marker for them",
					zap.Int("shard", b), zap.Int("old_shards", len(olds)), zap.Int("markers", len(m)))
			}
			v, _ := json.Marshal(m)
			if err := g.putTarget(ctx, rec.key("mark", b), v); err != nil {
				work.mu.Lock()
				delete(work.marking, h)
				work.mu.Unlock()
			}
		}()
	}
	if h.isLive() {
		if !view.live[b] {
			_ = g.putTarget(ctx, rec.key("live", b), nil)
		}
		return
	}
	for _, a := range olds {
		if _, ok := view.stopped[a]; !ok {
			return
		}
	}
	work.mu.Lock()
	busy := work.living[h]
	work.living[h] = true
	work.mu.Unlock()
	if busy {
		return
	}
	stopped := view.stopped
	go func() {
		var read int
		held, published, left, err := h.goLive(ctx, func(since time.Time, from uint64) (*eventmatch.Matcher, error) {
			rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			if from == 0 {
				from = work.sampler.before(since)
			}
			m, n, err := readBack(rctx, g.conn, olds, stopped, from)
			read = n
			return m, err
		})
		if err != nil {
			work.log.Warn("reshard: new shard not live yet; retrying", zap.Int("shard", b), zap.Error(err))
			work.mu.Lock()
			delete(work.living, h)
			work.mu.Unlock()
			return
		}
		work.log.Info("reshard: new shard live: its held events, less those the old shards published, are in the stream",
			zap.Int("shard", b), zap.Ints("old_shards", olds), zap.Int("held", held), zap.Int("old_read_back", read),
			zap.Int("published_now", published), zap.Int("old_not_yet_seen_by_new", left))
		_ = g.putTarget(ctx, rec.key("live", b), nil)
		g.pokeReshard()
	}()
}

// retireOld stops old shard a for the switch once it handled the new shards' markers, and writes the
// stream sequence of its last event.
func (g *Gateway) retireOld(ctx context.Context, work *reshardWork, rec reshardRecord, cur *gatewayRun, a int, le *Lease) {
	news := sharing(a, rec.From, rec.To)
	deadline := time.Now().Add(2*g.cfg.LeaseTTL + 30*time.Second)
	var keys []uint64
	for ctx.Err() == nil && le.Valid() {
		view := g.reshardView()
		if view.rec == nil || view.rec.ID != rec.ID {
			return
		}
		keys = keys[:0]
		have := 0
		for _, b := range news {
			if m, ok := view.marks[b]; ok {
				have++
				if k, ok := m[a]; ok {
					keys = append(keys, k)
				}
			}
		}
		if have == len(news) {
			break
		}
		if time.Now().After(deadline) {
			work.log.Warn("reshard: not every new shard sharing guilds with this old shard wrote its markers in time; stopping it without them",
				zap.Int("old_shard", a), zap.Int("markers", have), zap.Int("new_shards", len(news)))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The markers prove that a read everything sent to it before the new shards' sessions began. A pair
	// without one (guilds quiet on the new shard), and a shard lagging behind Discord under load, need
	// another proof: two heartbeats sent now, and two heartbeat ACKs read after them. Discord answers on
	// the same socket after what it sent before, so once the first of ours is answered, a has read
	// everything sent to it before the switch began (the new shards were all READY by then). Without a
	// proof a keeps running (publishing; the new shards hold what comes after) for up to 5 minutes.
	deadline = time.Now().Add(5 * time.Minute)
	proved := false
	for ctx.Err() == nil && le.Valid() && !proved {
		if time.Now().After(deadline) {
			work.log.Error("reshard: no proof in 5 minutes that the old shard caught up with the new ones; stopping it anyway (events sent to it alone before the new shards connected may be missing)",
				zap.Int("old_shard", a))
			break
		}
		if !cur.sink.handled(keys) {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		proved = g.heartbeatProof(ctx, cur, a)
	}
	if ctx.Err() != nil || !le.Valid() {
		work.mu.Lock()
		delete(work.retiring, le)
		work.mu.Unlock()
		return
	}
	cur.runner.StopShard(a) // closed resumably, its last batch in the stream
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	seq, err := lastShardSeq(rctx, g.conn, a)
	cancel()
	if err == nil && le.Valid() {
		err = g.putTarget(ctx, rec.key("stopped", a), []byte(strconv.FormatUint(seq, 10)))
	}
	if err != nil {
		work.log.Warn("reshard: old shard stopped but its last sequence not written; trying again", zap.Int("old_shard", a), zap.Error(err))
		work.mu.Lock()
		delete(work.retiring, le)
		work.mu.Unlock()
		return
	}
	work.log.Info("reshard: old shard stopped for the switch", zap.Int("old_shard", a), zap.Uint64("last_stream_seq", seq),
		zap.Ints("new_shards_sharing_its_guilds", news))
	g.pokeReshard()
}

// heartbeatProof sends two heartbeats on old shard a's connection and reports whether two heartbeat
// ACKs were read after them within 10 s (a must be READY).
func (g *Gateway) heartbeatProof(ctx context.Context, cur *gatewayRun, a int) bool {
	sh := cur.runner.Shard(a)
	if sh == nil || sh.State() != shard.StateReady {
		time.Sleep(50 * time.Millisecond)
		return false
	}
	n0 := cur.acks(a)
	for range 2 {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := sh.Send(sctx, discord.OpHeartbeat, nil)
		cancel()
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			return false
		}
	}
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && ctx.Err() == nil; {
		if cur.acks(a) >= n0+2 {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

// oldStopped reports whether old shard id of run must not run (stopped for a switch in progress: it is
// still delivered, until every old event is) or neither run nor be delivered (the deployment moved to
// another count: the reshard is done).
func (g *Gateway) oldStopped(run *gatewayRun, id int) (noRun, noDeliver bool) {
	view := g.reshardView()
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if view.rec == nil {
		e, err := newRawKV(g.conn, BucketTarget).last(rctx, targetKey)
		if err != nil || e.Revision == 0 || e.Deleted {
			return false, false
		}
		n, _ := strconv.Atoi(string(e.Value))
		done := n > 0 && n != run.total
		return done, done
	}
	if view.rec.From != run.total || view.rec.Phase != phaseSwitching {
		return false, false
	}
	if _, ok := view.stopped[id]; ok {
		return true, false
	}
	e, err := newRawKV(g.conn, BucketTarget).last(rctx, view.rec.key("stopped", id))
	return err == nil && e.Revision > 0 && !e.Deleted, false
}

// fence is DeliveryConfig.Fence: during a switch, a batch of shard x that holds an event of the new
// count (past the last event of old shard x, or of the reshard's start) waits until every other old
// shard sharing x's guilds was delivered through its last event.
func (g *Gateway) fence(ctx context.Context, x int, seq uint64) (bool, error) {
	view := g.reshardView()
	rec := view.rec
	if rec == nil || rec.Phase != phaseSwitching {
		return true, nil
	}
	stopped := func(a int) (uint64, bool, error) {
		if s, ok := view.stopped[a]; ok {
			return s, true, nil
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		e, err := newRawKV(g.conn, BucketTarget).last(rctx, rec.key("stopped", a))
		if err != nil {
			return 0, false, err
		}
		if e.Revision == 0 || e.Deleted {
			return 0, false, nil
		}
		s, _ := strconv.ParseUint(string(e.Value), 10, 64)
		return s, true, nil
	}
	floor := rec.Seq
	if x < rec.From {
		last, ok, err := stopped(x)
		if err != nil {
			return false, err
		}
		if !ok {
			return true, nil // old x still runs: every event of x is old x's (new x publishes after it stopped)
		}
		floor = max(floor, last)
	}
	if seq <= floor {
		return true, nil
	}
	key := rec.ID + "." + strconv.Itoa(x)
	g.fenceMu.Lock()
	passed := g.fencePassed[key]
	g.fenceMu.Unlock()
	if passed {
		return true, nil
	}
	for _, a := range sharing(x, rec.To, rec.From) {
		if a == x {
			continue // delivered in order by this very consumer
		}
		last, ok, err := stopped(a)
		if err != nil || !ok {
			return false, err
		}
		if ok, err := g.deliveredThrough(ctx, a, last); !ok || err != nil {
			return false, err
		}
	}
	g.fenceMu.Lock()
	g.fencePassed[key] = true
	g.fenceMu.Unlock()
	return true, nil
}

// deliveredThrough reports whether shard a's delivery consumer acknowledged every event up to stream
// sequence last.
func (g *Gateway) deliveredThrough(ctx context.Context, a int, last uint64) (bool, error) {
	if last == 0 {
		return true, nil
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	str, err := g.conn.js.Stream(rctx, StreamName(g.conn.name))
	if err != nil {
		return false, err
	}
	cons, err := str.Consumer(rctx, ConsumerName(a))
	if err != nil {
		return false, err
	}
	info, err := cons.Info(rctx)
	if err != nil {
		return false, err
	}
	return info.AckFloor.Stream >= last, nil
}

// drained reports whether every old shard was delivered through its last event (true without delivery).
func (g *Gateway) drained(ctx context.Context, cur *gatewayRun, view reshardState) bool {
	if cur.deliv == nil {
		return true
	}
	for a, last := range view.stopped {
		if ok, err := g.deliveredThrough(ctx, a, last); !ok || err != nil {
			return false
		}
	}
	return true
}

// completeReshard writes the new count and deletes the record (compare-and-set: one process does it).
func (g *Gateway) completeReshard(ctx context.Context, work *reshardWork, view reshardState) {
	rec := work.rec
	n := []byte(strconv.Itoa(rec.To))
	if err := g.putTarget(ctx, targetKey, n); err != nil {
		return
	}
	if err := g.putTarget(ctx, reshardedKey, n); err != nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := g.conn.KV(BucketTarget).Delete(rctx, reshardKey, jetstream.LastRevision(view.rev))
	cancel()
	if err != nil {
		return // another process did it
	}
	work.log.Info("reshard switched: the deployment runs the new count", zap.Duration("took", time.Since(rec.Started)))
	go g.cleanReshard(rec)
}

// cleanReshard deletes the reshard's keys and the old count's sessions.
func (g *Gateway) cleanReshard(rec reshardRecord) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g.purgeReshardKeys(ctx, rec)
	ss := NewSessionStore(g.conn)
	skv := g.conn.KV(BucketSessions)
	for a := 0; a < rec.From; a++ {
		_ = ss.Delete(ctx, a, rec.From)
		_ = skv.Purge(ctx, GuildsKey(a, rec.From))
	}
}

// purgeReshardKeys deletes a finished or rolled back reshard's keys ("reshard.<id>.*").
func (g *Gateway) purgeReshardKeys(ctx context.Context, rec reshardRecord) {
	kv := g.conn.KV(BucketTarget)
	if l, err := kv.ListKeysFiltered(ctx, "reshard."+rec.ID+".>"); err == nil {
		var keys []string
		for k := range l.Keys() {
			keys = append(keys, k)
		}
		for _, k := range keys {
			_ = kv.Purge(ctx, k)
		}
	}
}

// endReshard follows the end of a reshard: the new count runs (promote), or it was rolled back.
func (g *Gateway) endReshard(ctx context.Context, cur *gatewayRun, work *reshardWork) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	e, err := newRawKV(g.conn, BucketTarget).last(rctx, targetKey)
	cancel()
	if err != nil {
		return // asked again on the next step
	}
	n, _ := strconv.Atoi(string(e.Value))
	if n != work.rec.To {
		g.dropNext(work, "rolled back")
		return
	}
	next := work.next
	next.rsink.done.Store(true) // a holding that starts from now on publishes at once
	// A holding that began after its shard went live elsewhere, and that the switch no longer brings
	// live, goes live now (its tail less the old shards' events).
	stopped, rec := work.last.stopped, work.rec
	for _, b := range next.owner.Owned() {
		if h := next.rsink.holding(b); h != nil && !h.isLive() {
			olds := sharing(b, rec.To, rec.From)
			go func() {
				for attempt := 1; h.lease.Valid(); attempt++ {
					_, _, _, err := h.goLive(context.WithoutCancel(ctx), func(_ time.Time, _ uint64) (*eventmatch.Matcher, error) {
						rctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
						defer cancel()
						m, _, err := readBack(rctx, g.conn, olds, stopped, rec.Seq)
						return m, err
					})
					if err == nil {
						return
					}
					work.log.Warn("reshard: a new shard held after the switch is not live yet; retrying", zap.Int("shard", b), zap.Error(err))
					time.Sleep(time.Duration(min(attempt, 10)) * time.Second)
				}
			}()
		}
	}
	g.st.Store(next)
	g.next.Store(nil)
	g.work = nil
	work.stop()
	cur.sink.recordHandled(nil)
	cur.stopOwner() // its shards stopped already: their leases are released
	// The new shards whose consumer an old shard's holder delivered until now deliver it once that
	// holder let go (its lease released, or expired).
	leases := newRawKV(g.conn, BucketLeases)
	next.host.release(func(id int) bool {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e, err := leases.last(rctx, ShardLeaseKey(id, rec.From))
		return err == nil && (e.Revision == 0 || e.Deleted || e.Expired)
	})
	work.log.Info("reshard done here: this process runs the new count", zap.Ints("shards", next.owner.Owned()))
}

// dropNext stops the new shards of an abandoned reshard and deletes their sessions.
func (g *Gateway) dropNext(work *reshardWork, why string) {
	work.stop()
	g.work = nil
	if cur := g.st.Load(); cur != nil {
		cur.sink.recordHandled(nil)
	}
	held := work.next.owner.Owned()
	for _, sh := range work.next.runner.Shards() {
		sh.EndSessionOnStop() // never resumed: its session ends at Discord (close 1000)
	}
	work.next.stopOwner()
	g.next.Store(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ss := NewSessionStore(g.conn)
	for _, id := range held {
		_ = ss.Delete(ctx, id, work.rec.To)
	}
	work.log.Warn("reshard abandoned here; the old shards keep running", zap.String("why", why))
}
