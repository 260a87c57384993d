package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/shard"
)

// ErrBusy is returned when a reshard is already in progress.
var ErrBusy = errors.New("a reshard is already in progress")

// ErrNotStarted is returned before Run has started the shards, and after it stopped.
var ErrNotStarted = errors.New("shards are not started yet")

// ReshardError says why Reshard did not start a reshard, and whose side it is on.
type ReshardError struct {
	Reason ReshardRefusal
	Err    error
}

func (e *ReshardError) Error() string { return e.Err.Error() }
func (e *ReshardError) Unwrap() error { return e.Err }

// ReshardRefusal classifies a ReshardError.
type ReshardRefusal int

const (
	// BadCount: the count cannot be run (out of range, not a multiple of max_concurrency, or, split,
	// not a multiple of the current count).
	BadCount ReshardRefusal = iota
	// WouldHurt: the count could be run but not now (already there, too few for the guilds, the
	// identify budget).
	WouldHurt
	// Unreachable: Discord's /gateway/bot or the coordinator did not answer.
	Unreachable
)

func refuse(r ReshardRefusal, err error) error { return &ReshardError{Reason: r, Err: err} }

// Started is what Reshard set going.
type Started struct {
	From, To int
	// Requested is true in a split deployment: the coordinator's target was raised to To, and every
	// process (this one too) follows it.
	Requested bool
}

type reshardStart struct {
	old   *Set
	total int
	ids   []int
	why   string
}

// Reshard starts a zero-downtime reshard to total shards (0: Discord's recommendation for the guilds)
// in the background, after checking that it makes sense and that the identify budget allows it; ctx
// bounds only the checks. ReshardStatus follows it. Errors: ErrNotStarted, ErrBusy, *ReshardError.
func (g *Gateway) Reshard(ctx context.Context, total int, why string) (Started, error) {
	if total != 0 {
		// Vetted before anything is sized by it (the shard id list, the identify budget check).
		if err := CheckCount(total, 0); err != nil {
			return Started{}, refuse(BadCount, err)
		}
	}
	cur := g.cur.Load()
	if cur == nil {
		return Started{}, ErrNotStarted
	}
	to := total
	if to == 0 {
		info, err := g.cfg.GatewayBot(ctx)
		if err != nil || info == nil {
			return Started{}, refuse(Unreachable, fmt.Errorf("cannot ask Discord for its recommendation: %v", err))
		}
		to = NewShardCount(info.Shards, cur.TotalGuilds(), info.SessionStartLimit.MaxConcurrency)
	}
	coord := g.cfg.Reshard.Coordinator
	if coord != nil {
		to = MultipleOf(to, cur.total)
	}
	if err := g.checkTarget(cur, to); err != nil {
		return Started{}, refuse(BadCount, err)
	}
	if coord != nil {
		if to == cur.total {
			return Started{}, refuse(WouldHurt, fmt.Errorf("already at %d shards", to))
		}
		target, err := coord.Target(ctx, to)
		if err != nil {
			return Started{}, refuse(Unreachable, fmt.Errorf("the reshard coordinator did not take it: %w", err))
		}
		return Started{From: cur.total, To: target, Requested: true}, nil
	}
	from, err := g.startReshard(ctx, to, why)
	return Started{From: from, To: to}, err
}

// startReshard begins a reshard to total shards after the checks that need no coordinator.
func (g *Gateway) startReshard(ctx context.Context, total int, why string) (from int, err error) {
	cur := g.cur.Load()
	if cur == nil {
		return 0, ErrNotStarted
	}
	if err := g.checkTarget(cur, total); err != nil {
		return cur.total, refuse(BadCount, err)
	}
	guilds := cur.TotalGuilds()
	if need := minShards(guilds); total < need {
		return cur.total, refuse(WouldHurt, fmt.Errorf("%d shards cannot hold %d guilds (2500 a shard at most): at least %d", total, guilds, need))
	}
	if total == cur.total {
		return cur.total, refuse(WouldHurt, fmt.Errorf("already at %d shards", total))
	}
	info, err := g.cfg.GatewayBot(ctx)
	if err != nil || info == nil {
		return cur.total, refuse(WouldHurt, fmt.Errorf("cannot check the identify budget: %v", err))
	}
	ids := g.shardIDs(total)
	reserve := g.cfg.Reshard.IdentifyReserve
	if rem, need := info.SessionStartLimit.Remaining, len(ids)+reserve; rem < need {
		return cur.total, refuse(WouldHurt, fmt.Errorf("the identify budget has %d left today; %d new shards plus the reserve of %d (gateway.reshard_identify_reserve) need %d",
			rem, len(ids), reserve, need))
	}
	if !g.resharding.CompareAndSwap(false, true) {
		return cur.total, ErrBusy
	}
	// The reshard outlives the caller's ctx: Run starts it on its own.
	select {
	case g.starts <- reshardStart{old: cur, total: total, ids: ids, why: why}:
		return cur.total, nil
	case <-g.runDone:
		g.resharding.Store(false)
		return cur.total, ErrNotStarted
	}
}

// checkTarget says why this process cannot reshard from cur to total: a count out of range or not a
// multiple of max_concurrency (CheckCount), or, split, not a multiple of the current count.
func (g *Gateway) checkTarget(cur *Set, total int) error {
	if err := CheckCount(total, g.info.Load().SessionStartLimit.MaxConcurrency); err != nil {
		return err
	}
	if g.cfg.Processes > 1 && total%cur.total != 0 {
		return fmt.Errorf("a split deployment (gateway.clusters) moves to a multiple of its %d shards, not %d", cur.total, total)
	}
	return nil
}

// reshardTo runs a reshard from old to total shards: the new set connects while the old one delivers;
// when every new shard is ready with all its guilds, the switch hands delivery over without losing or
// repeating an event; if the new set fails, it is dropped and the old one, which never stopped, stays.
func (g *Gateway) reshardTo(ctx context.Context, old *Set, total int, ids []int, why string) {
	start := time.Now()
	log := g.log.With(zap.Int("from", old.total), zap.Int("to", total))
	log.Info("reshard started", zap.String("why", why))
	g.setStatus(ReshardStatus{InProgress: true, From: old.total, To: total, StartedAt: start})
	done := func(result string) { g.reshardDone(log, old.total, total, start, result) }
	g.sw.record(old.sink, newWindow(reshardWindowKeep, reshardWindowMax))
	defer g.sw.record(old.sink, nil)

	next, err := g.startSet(ctx, total, ids, true)
	if err != nil {
		done("rolled back: " + err.Error())
		return
	}
	g.next.Store(next)
	defer g.next.Store(nil)
	rollback := func(reason string) {
		next.stop()
		done("rolled back: " + reason)
	}
	// Identifying the new set takes ceil(shards / max_concurrency) identify windows; allow double, plus
	// time for the guilds to load.
	window := g.cfg.IdentifyWindow
	deadline := time.Now().Add(2*time.Duration(len(ids)+1)*window + 2*time.Minute)
	if reason := g.waitLoaded(ctx, old, next, deadline); reason != "" {
		if reason == "stopped" {
			done(fmt.Sprintf("rolled back: the new shards stopped: %v", next.err))
			return
		}
		rollback(reason)
		return
	}

	// Wait until the old set has read as far as the new one, so that switching drops nothing only it got
	// (events sent before the new shards existed). That takes a marker for every pair of old and new
	// shards that share guilds; a pair whose guilds stay quiet for a while gets none, and its old shard
	// has had that long to read what it was sent before.
	need := next.sharedGuilds(old.total)
	quietUntil := time.Now().Add(max(2*window, time.Second))
	markers, missing := next.sink.markers(old.total, need)
	for missing > 0 && time.Now().Before(quietUntil) {
		if ctxsleep.Sleep(ctx, 10*time.Millisecond) != nil {
			rollback("dd is shutting down")
			return
		}
		markers, missing = next.sink.markers(old.total, need)
	}
	if missing > 0 {
		log.Info("switch: some old and new shards share only quiet guilds; switching without their markers",
			zap.Int("pairs_without_marker", missing))
	}
	for !g.sw.handledAll(old.sink, markers) {
		if time.Now().After(deadline) {
			rollback("the old shards did not catch up with the new ones in time")
			return
		}
		if ctxsleep.Sleep(ctx, 10*time.Millisecond) != nil {
			rollback("dd is shutting down")
			return
		}
	}
	if err := g.sw.handOver(context.WithoutCancel(ctx), old.sink, next.sink); err != nil {
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
	old.stop()
	done("switched")
}

// waitLoaded waits until every new shard is ready with its guilds (and the old set is ready), and says
// why not otherwise: "stopped" when the new set's manager ended, else a rollback's reason.
func (g *Gateway) waitLoaded(ctx context.Context, old, next *Set, deadline time.Time) string {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !(next.loaded() && old.mgr.Ready()) {
		select {
		case <-ctx.Done():
			return "dd is shutting down"
		case <-next.stopped:
			return "stopped"
		case <-tick.C:
			if time.Now().After(deadline) {
				return "the new shards were not ready in time"
			}
			for _, s := range next.mgr.Shards() {
				if s.State() == shard.StateFatal {
					return fmt.Sprintf("Discord refused new shard %d for good", s.ID())
				}
			}
		}
	}
	return ""
}

func (g *Gateway) reshardDone(log *zap.Logger, from, to int, start time.Time, result string) {
	took := time.Since(start)
	g.setStatus(ReshardStatus{From: from, To: to, StartedAt: start, Result: result, Took: took.Round(time.Millisecond).String()})
	outcome := "switched"
	if result != "switched" {
		outcome = "rolled_back"
		log.Warn("reshard rolled back; the old shards kept running", zap.String("why", result), zap.Duration("took", took))
	} else {
		log.Info("reshard switched", zap.Duration("took", took))
	}
	g.m.reshards.WithLabelValues(outcome).Inc()
	g.m.reshardSeconds.Observe(took.Seconds())
}
