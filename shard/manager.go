package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/ddhq/dd/discord"
)

// SessionLoader returns the stored session of a shard, if any.
type SessionLoader interface {
	LoadSession(shardID, numShards int) (Session, bool, error)
}

// ManagerConfig configures a set of shards. Template holds what every shard shares (token, intents,
// gateway URL, sink, hooks, limits); ShardID, NumShards and Session are filled per shard.
type ManagerConfig struct {
	Template    Config
	TotalShards int
	ShardIDs    []int
	Sessions    SessionLoader
	Logger      *zap.Logger
}

// Manager runs a set of shards of one shard count. Each shard runs on its own goroutine; one shard
// never blocks another.
type Manager struct {
	cfg    ManagerConfig
	log    *zap.Logger
	shards map[int]*Shard
	order  []int
}

// NewManager builds the shards, loading their stored sessions so that they resume.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.TotalShards < 1 {
		return nil, fmt.Errorf("shard: total shards must be at least 1, got %d", cfg.TotalShards)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, shards: map[int]*Shard{}}
	for _, id := range cfg.ShardIDs {
		if id < 0 || id >= cfg.TotalShards {
			return nil, fmt.Errorf("shard: shard %d is not below total shards %d", id, cfg.TotalShards)
		}
		c := cfg.Template
		c.ShardID, c.NumShards = id, cfg.TotalShards
		c.Logger = cfg.Logger
		if cfg.Sessions != nil {
			sess, ok, err := cfg.Sessions.LoadSession(id, cfg.TotalShards)
			if err != nil {
				return nil, fmt.Errorf("shard %d: loading session: %w", id, err)
			}
			if ok {
				c.Session = sess
			}
		}
		m.shards[id] = New(c)
		m.order = append(m.order, id)
	}
	return m, nil
}

// Run runs every shard until ctx is cancelled (nil, after every shard closed resumably) or until no
// shard can run (the fatal errors, joined).
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		fatals []error
	)
	for _, id := range m.order {
		sh := m.shards[id]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sh.Run(ctx); err != nil {
				mu.Lock()
				fatals = append(fatals, err)
				all := len(fatals) == len(m.order)
				mu.Unlock()
				if all {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	if len(fatals) == len(m.order) && len(fatals) > 0 {
		return errors.Join(fatals...)
	}
	return nil
}

// EndSessionsOnStop makes every shard end its session (close 1000) when the manager's context ends.
func (m *Manager) EndSessionsOnStop() {
	for _, s := range m.shards {
		s.EndSessionOnStop()
	}
}

// Ready reports whether every shard is in the ready state.
func (m *Manager) Ready() bool {
	for _, s := range m.shards {
		if s.State() != StateReady {
			return false
		}
	}
	return true
}

// Shard returns shard id, or nil when this manager does not run it.
func (m *Manager) Shard(id int) *Shard { return m.shards[id] }

// Shards returns the shards in id order.
func (m *Manager) Shards() []*Shard {
	out := make([]*Shard, 0, len(m.order))
	for _, id := range m.order {
		out = append(out, m.shards[id])
	}
	return out
}

// TotalShards is the shard count.
func (m *Manager) TotalShards() int { return m.cfg.TotalShards }

// ShardForGuild is the shard that holds a guild: (guild_id >> 22) % total shards.
func (m *Manager) ShardForGuild(guildID uint64) int {
	return discord.ShardForGuild(guildID, m.cfg.TotalShards)
}
