package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/shard"
)

// RunnerConfig configures a ShardRunner. Template, TotalShards and Sink are required.
type RunnerConfig struct {
	// Template is what every shard shares (token, intents, gateway URL, hooks, the cluster
	// IdentifyLimiter); ShardID, NumShards, Session and Sink are set per shard.
	Template shard.Config
	// TotalShards is the shard count.
	TotalShards int
	// Sink publishes the events; each shard writes through Sink.Fenced(its lease).
	Sink *EventSink
	// SinkFor, when set, is the sink of one holding of a shard in place of Sink.Fenced(lease): a
	// reshard's new shards, held until the switch (reshardSink).
	// resumed says the holding starts from a stored session.
	SinkFor func(id int, lease *Lease, resumed bool) shard.Sink
	// Sessions loads the sessions shards resume. Default Sink.Sessions().
	Sessions *SessionStore
	// Guilds, when set, gets the guild ids stored beside a shard's session (ShardGuilds.Restore) when
	// the shard starts here: a shard that resumes gets no READY to learn them from.
	Guilds ShardGuilds
	// OnFatal is told of a shard that Discord refused for good (4004, 4014, ...). It keeps its lease, so
	// that no other process spends identifies on it. Default: logged.
	OnFatal func(id int, err error)
	// Logger: default none.
	Logger *zap.Logger
}

// ShardRunner is the ShardHost of a gateway process: it runs a shard.Shard for each shard its owner
// holds, loads the shard's session from the KV so that it resumes, writes through the EventSink fenced
// by the shard's lease, and stops the shard the instant the lease ends.
type ShardRunner struct {
	cfg RunnerConfig
	log *zap.Logger

	mu      sync.Mutex
	running map[int]*runningShard
}

type runningShard struct {
	sh     *shard.Shard
	lease  *Lease
	cancel context.CancelFunc
	done   chan struct{}
}

var _ ShardHost = (*ShardRunner)(nil)

// NewShardRunner builds a runner.
func NewShardRunner(cfg RunnerConfig) (*ShardRunner, error) {
	if cfg.TotalShards < 1 || cfg.Sink == nil {
		return nil, errors.New("cluster: a shard runner needs TotalShards and Sink")
	}
	if cfg.Sessions == nil {
		cfg.Sessions = cfg.Sink.Sessions()
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.OnFatal == nil {
		log := cfg.Logger
		cfg.OnFatal = func(id int, err error) {
			log.Error("shard refused for good; it keeps its lease", zap.Int("shard", id), zap.Error(err))
		}
	}
	return &ShardRunner{cfg: cfg, log: cfg.Logger, running: map[int]*runningShard{}}, nil
}

// StartShard implements ShardHost.
func (r *ShardRunner) StartShard(id int, lease *Lease) error {
	r.mu.Lock()
	prev := r.running[id]
	r.mu.Unlock()
	if prev != nil {
		// A previous holding still stopping (its lease ended a moment ago, its last batch not given up
		// yet): wait for it, so that one shard never runs twice here.
		select {
		case <-prev.done:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("cluster: shard %d: the previous run did not stop", id)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	sess, ok, err := r.cfg.Sessions.Load(ctx, id, r.cfg.TotalShards)
	if err != nil {
		cancel()
		// Starting without it would spend an identify on a session that may well be resumable.
		return err
	}
	if r.cfg.Guilds != nil {
		if ids, err := r.cfg.Sessions.LoadGuilds(ctx, id, r.cfg.TotalShards); err != nil {
			r.log.Warn("guild ids of the previous holder not read; the shard counts its guilds from scratch", zap.Int("shard", id), zap.Error(err))
		} else if len(ids) > 0 {
			r.cfg.Guilds.Restore(id, ids)
		}
	}
	cancel()
	c := r.cfg.Template
	c.ShardID, c.NumShards = id, r.cfg.TotalShards
	c.Sink = r.cfg.Sink.Fenced(lease)
	if r.cfg.SinkFor != nil {
		c.Sink = r.cfg.SinkFor(id, lease, ok)
	}
	c.Logger = r.log
	c.Session = shard.Session{}
	if ok {
		c.Session = sess
	}
	sh := shard.New(c)
	rctx, rcancel := context.WithCancel(context.Background())
	rs := &runningShard{sh: sh, lease: lease, cancel: rcancel, done: make(chan struct{})}
	r.mu.Lock()
	r.running[id] = rs
	r.mu.Unlock()
	r.log.Info("starting shard", zap.Int("shard", id), zap.Bool("resume", ok), zap.Int64("seq", sess.Seq))
	go func() {
		defer close(rs.done)
		defer func() {
			r.mu.Lock()
			if r.running[id] == rs {
				delete(r.running, id)
			}
			r.mu.Unlock()
		}()
		if err := sh.Run(rctx); err != nil {
			r.cfg.OnFatal(id, err)
		}
	}()
	go func() {
		select {
		case <-lease.Done():
			// Lost (not released: a handover cancels first). Stop now, before anyone can take it.
			if !errors.Is(lease.Err(), ErrLeaseReleased) {
				r.log.Warn("shard lease lost; stopping the shard", zap.Int("shard", id), zap.Error(lease.Err()))
			}
			rcancel()
		case <-rs.done:
		}
	}()
	return nil
}

// StopShard implements ShardHost: the shard closes with a resumable code and its last batch is written
// before it returns.
func (r *ShardRunner) StopShard(id int) {
	r.mu.Lock()
	rs := r.running[id]
	r.mu.Unlock()
	if rs == nil {
		return
	}
	rs.cancel()
	<-rs.done
}

// Shard is the running shard id, or nil.
func (r *ShardRunner) Shard(id int) *shard.Shard {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rs := r.running[id]; rs != nil {
		return rs.sh
	}
	return nil
}

// Running lists the ids of the running shards, in order.
func (r *ShardRunner) Running() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]int, 0, len(r.running))
	for id := range r.running {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

// Shards are the running shards, in order of id.
func (r *ShardRunner) Shards() []*shard.Shard {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*shard.Shard, 0, len(r.running))
	for _, rs := range r.running {
		out = append(out, rs.sh)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// ShardForGuild is the shard of a guild at the runner's shard count (it may run in another process).
func (r *ShardRunner) ShardForGuild(guildID uint64) int {
	return discord.ShardForGuild(guildID, r.cfg.TotalShards)
}

// Stop stops every running shard resumably (what the owner's Run does on its way out; for a runner
// used without one).
func (r *ShardRunner) Stop() {
	var wg sync.WaitGroup
	for _, id := range r.Running() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.StopShard(id)
		}()
	}
	wg.Wait()
}
