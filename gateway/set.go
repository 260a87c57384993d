package gateway

import (
	"context"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/internal/filter"
	"github.com/ddhq/dd/shard"
)

// A Set is one shard set of one shard count: a shard.Manager, the filter that knows its guilds, and
// its sink into the queue. Normally one runs; during a reshard the new one connects beside it.
type Set struct {
	total   int
	ids     []int
	mgr     *shard.Manager
	filter  *filter.Filter
	sink    *sink
	cancel  context.CancelFunc
	stopped chan struct{} // closed when the manager's Run returned
	err     error         // Run's error, valid after stopped
}

// Total is the set's shard count.
func (s *Set) Total() int { return s.total }

// IDs are the shards of Total this process runs.
func (s *Set) IDs() []int { return s.ids }

// Manager runs the set's shards (commands, states, sessions).
func (s *Set) Manager() *shard.Manager { return s.mgr }

// Guilds is how many guilds a shard has, and how many of them have not had their GUILD_CREATE yet.
func (s *Set) Guilds(id int) (guilds, loading int) {
	return s.filter.GuildCount(id), s.filter.Loading(id)
}

// TotalGuilds is how many guilds the set's shards have.
func (s *Set) TotalGuilds() int { return s.filter.TotalGuilds() }

// Filtered is how many events the set's filter kept from the queue.
func (s *Set) Filtered() int64 { return s.filter.Dropped() }

// startSet builds and starts a shard set. A held set (a reshard's new one) queues nothing until it goes
// live, and starts without stored sessions.
func (g *Gateway) startSet(ctx context.Context, total int, ids []int, held bool) (*Set, error) {
	set := &Set{total: total, ids: ids, stopped: make(chan struct{}),
		filter: filter.New(filter.Options{Rules: g.cfg.Filter, DropLoadingBurst: held}),
	}
	set.sink = g.sw.newSink(held, set.filter, total)
	sessions := g.cfg.Sessions
	if held {
		sessions = nil
	} else {
		// Resumed shards get no READY or GUILD_CREATE burst: their guilds come from the store.
		for _, id := range ids {
			if v, err := g.cfg.Store.Get(guildsKey(total, id)); err == nil {
				set.filter.Restore(id, decodeGuilds(v))
			}
		}
	}
	tmpl := g.cfg.Shard
	if tmpl.GatewayURL == "" {
		tmpl.GatewayURL = g.info.Load().URL
	}
	tmpl.Identify, tmpl.Sink = g.limiter, set.sink
	onDispatch, onClose := tmpl.Hooks.OnDispatch, tmpl.Hooks.OnClose
	tmpl.Hooks.OnDispatch = func(s *shard.Shard, ev *shard.Event) bool {
		if onDispatch != nil && !onDispatch(s, ev) {
			return false
		}
		return g.onDispatch(set, s, ev)
	}
	tmpl.Hooks.OnClose = func(s *shard.Shard, code int, err error) {
		g.m.closes.WithLabelValues(closeLabel(code)).Inc()
		if onClose != nil {
			onClose(s, code, err)
		}
	}
	mgr, err := shard.NewManager(shard.ManagerConfig{TotalShards: total, ShardIDs: ids, Sessions: sessions, Logger: g.log, Template: tmpl})
	if err != nil {
		return nil, err
	}
	set.mgr = mgr
	gctx, cancel := context.WithCancel(ctx)
	set.cancel = cancel
	go func() {
		set.err = mgr.Run(gctx)
		close(set.stopped)
	}()
	return set, nil
}

// onDispatch is every shard's filter step.
func (g *Gateway) onDispatch(set *Set, s *shard.Shard, ev *shard.Event) bool {
	g.m.received.Inc()
	keep, out := set.filter.Keep(s.ID(), ev.Type, ev.Raw)
	if g.cfg.Observe != nil {
		cur := g.cur.Load()
		g.cfg.Observe(s, ev, keep, cur == nil || cur == set)
	}
	if !keep {
		g.m.filtered.Inc()
		return false
	}
	ev.Raw = out
	return true
}

// stop ends the set's sessions at Discord (close 1000: they are not resumed) and waits for its shards.
func (s *Set) stop() {
	s.mgr.EndSessionsOnStop()
	s.cancel()
	<-s.stopped
}

// loaded reports whether every shard of the set is ready and has had every guild's GUILD_CREATE.
func (s *Set) loaded() bool {
	if !s.mgr.Ready() {
		return false
	}
	for _, id := range s.ids {
		if s.filter.Loading(id) > 0 {
			return false
		}
	}
	return true
}

// sharedGuilds returns, for each shard x of the set, the old shards (of oldTotal) that held some of x's
// guilds: the pairs whose events may have reached only the old set before x's session began.
func (s *Set) sharedGuilds(oldTotal int) map[int]map[int]bool {
	need := map[int]map[int]bool{}
	for _, x := range s.ids {
		ids, _, _ := s.filter.GuildsChanged(x, 0)
		for _, g := range ids {
			if need[x] == nil {
				need[x] = map[int]bool{}
			}
			need[x][discord.ShardForGuild(g, oldTotal)] = true
		}
	}
	return need
}

// closeLabel is a connection end's code as a metric label: "none" for a drop without a close frame.
func closeLabel(code int) string {
	if code == 0 {
		return "none"
	}
	return strconv.Itoa(code)
}

// metrics are the pipeline's (README, "Metrics"); their names are part of dd's contract.
type metrics struct {
	received, filtered prometheus.Counter
	closes, reshards   *prometheus.CounterVec
	reshardSeconds     prometheus.Histogram
	ready, guilds      prometheus.GaugeFunc
}

func newMetrics(g *Gateway) metrics {
	return metrics{
		reshards: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dd_gateway_reshards_total",
			Help: "Reshards by result (switched, rolled_back)."}, []string{"result"}),
		reshardSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dd_gateway_reshard_seconds",
			Help: "How long reshards took, from start to switch or rollback.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_gateway_events_received_total",
			Help: "Dispatch events received from Discord."}),
		filtered: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_gateway_events_filtered_total",
			Help: "Dispatch events not queued (events.drop, duplicate GUILD_CREATE, embed-unfurl MESSAGE_UPDATE)."}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dd_gateway_connection_closes_total",
			Help: "Gateway connections ended, by close code (none: dropped without a close frame). One code rising fast means the server keeps refusing."},
			[]string{"code"}),
		ready: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_gateway_shards_ready", Help: "Shards in the ready state."},
			func() float64 { return float64(g.countReady()) }),
		guilds: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_gateway_guilds", Help: "Guilds on this process's shards."},
			func() float64 {
				if cur := g.cur.Load(); cur != nil {
					return float64(cur.TotalGuilds())
				}
				return 0
			}),
	}
}

func (m metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.received, m.filtered, m.closes, m.reshards, m.reshardSeconds, m.ready, m.guilds} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (g *Gateway) countReady() int {
	cur := g.cur.Load()
	if cur == nil {
		return 0
	}
	n := 0
	for _, s := range cur.mgr.Shards() {
		if s.State() == shard.StateReady {
			n++
		}
	}
	return n
}
