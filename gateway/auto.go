package gateway

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// The reshards no request starts: when the guilds fill the shards (ReshardConfig.Auto), and, in a split
// deployment, when the coordinator's target rises.

// everyWhileSettled calls fn every interval with the running shard set, skipping ticks while none runs
// or a reshard is under way.
func (g *Gateway) everyWhileSettled(ctx context.Context, every time.Duration, fn func(ctx context.Context, cur *Set)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if cur := g.cur.Load(); cur != nil && !g.resharding.Load() {
			fn(ctx, cur)
		}
	}
}

// checkReshardDue reshards (or, split, proposes a count to the coordinator) when the guilds fill
// Reshard.Percentage of the shards' capacity.
func (g *Gateway) checkReshardDue(ctx context.Context, cur *Set) {
	guilds := cur.TotalGuilds()
	if own := len(cur.ids); own > 0 && own < cur.total {
		// A process of a split deployment sees only its own shards' guilds: scale them to the deployment
		// (guilds spread evenly over shards), so that it judges the whole count as one process would.
		guilds = guilds * cur.total / own
	}
	pct := g.cfg.Reshard.Percentage
	if !Due(guilds, cur.total, pct) {
		return
	}
	info, err := g.cfg.GatewayBot(ctx)
	if err != nil || info == nil {
		return
	}
	to := NewShardCount(info.Shards, guilds, info.SessionStartLimit.MaxConcurrency)
	if to <= cur.total {
		to = NewShardCount(cur.total+1, guilds, info.SessionStartLimit.MaxConcurrency)
	}
	why := fmt.Sprintf("%d guilds fill %d%% or more of %d shards", guilds, pct, cur.total)
	if c := g.cfg.Reshard.Coordinator; c != nil {
		// The whole deployment moves: propose the count; every process (this one too) follows it.
		if _, err := c.Target(ctx, MultipleOf(to, cur.total)); err != nil {
			g.log.Warn("reshard due but the rest role's coordinator did not take it", zap.String("why", why), zap.Error(err))
		}
		return
	}
	if _, err := g.startReshard(ctx, to, why); err != nil {
		g.log.Warn("reshard due but not started", zap.String("why", why), zap.Error(err))
	}
}

// followCoordinator reshards this process when the deployment's target rises above its count. Each
// poll proposes the process's own count, so a restarted coordinator that keeps its target in memory
// only learns the deployment's count back from its processes within one poll.
func (g *Gateway) followCoordinator(ctx context.Context, cur *Set) {
	target, err := g.cfg.Reshard.Coordinator.Target(ctx, cur.total)
	if err != nil || target <= cur.total {
		return
	}
	// A target this process cannot move to (out of range, not a multiple of max_concurrency or of its
	// count) is ignored, said once per target rather than on every poll.
	if err := g.checkTarget(cur, target); err != nil {
		if g.ignoredTarget != target {
			g.ignoredTarget = target
			g.log.Error("ignoring the rest role's reshard target", zap.Int("target", target), zap.Int("total_shards", cur.total), zap.Error(err))
		}
		return
	}
	if _, err := g.startReshard(ctx, target, fmt.Sprintf("the deployment reshards to %d (rest role)", target)); err != nil {
		g.log.Warn("the deployment reshards but this process cannot follow yet", zap.Int("to", target), zap.Error(err))
	}
}
