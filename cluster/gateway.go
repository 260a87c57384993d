package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/filter"
	"github.com/ddhq/dd/shard"
)

// GatewayConfig configures a Gateway. Conn and GatewayBot are required.
type GatewayConfig struct {
	// Conn is the process's connection to NATS. Run closes it on its way out.
	Conn *Conn
	// GatewayBot asks Discord for /gateway/bot (the gateway URL, the recommended shard count, the
	// identify limits), retrying as it sees fit: gateway.GatewayBotFrom. nil, nil means ctx ended.
	GatewayBot func(ctx context.Context) (*shard.GatewayBot, error)
	// TotalShards is the shard count (gateway.total_shards); 0 takes Discord's recommendation, agreed by
	// the deployment's processes through the target bucket (AgreeShardCount).
	TotalShards int
	// CheckCount says why a shard count cannot run (gateway.CheckCount). Default: at least 1.
	CheckCount func(total int) error
	// Shards, when set, is the fixed set of shards this process holds of total (gateway.ShardRange of
	// first_shard..last_shard). nil: the live processes share every shard evenly.
	Shards func(total int) []int
	// Shard is what every shard shares: token, intents, API version, compression, large threshold.
	// The gateway URL, the identify limiter and the hooks are the Gateway's.
	Shard shard.Config
	// Filter is what the shards drop or rename before the stream.
	Filter Filter
	// IdentifyWindow is Discord's identify window per bucket. Default 5 s.
	IdentifyWindow time.Duration
	// LeaseTTL is the shard leases' TTL (cluster.lease_ttl), also how long the stream waits for a
	// delivery batch's holder. Default 10 s.
	LeaseTTL time.Duration
	// MaxEvents bounds the stream (events.max_queue_events). Default EventSinkConfig's.
	MaxEvents int64
	// Delivery delivers the events of the shards this process runs to the bot (events.urls). No URLs:
	// dd does not deliver, the bot reads the stream itself. Its AckWait defaults to LeaseTTL.
	Delivery DeliveryConfig
	// Reshard says gateway.reshard was asked for: Run logs that it is not available in cluster mode yet.
	Reshard bool
	// Registerer receives the gateway's metrics (and the delivery's). nil registers nothing.
	Registerer prometheus.Registerer
	// Logger: default none.
	Logger *zap.Logger
}

// Filter is what the shards drop or rename before the stream: events.drop and the gateway's dedup keys.
type Filter = filter.Rules

// FatalError is an error after which running again cannot help; Hint says what to change.
type FatalError struct {
	Err  error
	Hint string
}

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// Gateway is a gateway process of cluster mode (PRODUCT.md §7): it shares the bot's shards with the
// deployment's other gateway processes through leases (ShardOwner), runs its share with a ShardRunner
// that publishes their events to the stream (EventSink) and keeps their sessions in the KV, identifies
// through the KV's limiter (IdentifyLimiter), and delivers its shards' events to the bot (Delivery). No
// local queue: what survives a process is in NATS.
type Gateway struct {
	cfg    GatewayConfig
	conn   *Conn
	log    *zap.Logger
	follow func(payloads [][]byte) error

	st    atomic.Pointer[gatewayRun] // nil until the shards start
	fatal chan error

	received prometheus.Counter
	filtered prometheus.Counter
	closes   *prometheus.CounterVec
}

// gatewayRun is what Run built once /gateway/bot answered.
type gatewayRun struct {
	total  int
	owner  *ShardOwner
	runner *ShardRunner
	sink   *EventSink
	deliv  *Delivery // nil without URLs
	filter *filter.Filter
}

// NewGateway prepares a gateway process and registers its metrics; Run starts the shards.
func NewGateway(cfg GatewayConfig) (*Gateway, error) {
	if cfg.Conn == nil || cfg.GatewayBot == nil {
		return nil, errors.New("cluster: a gateway needs Conn and GatewayBot")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.CheckCount == nil {
		cfg.CheckCount = func(total int) error {
			if total < 1 {
				return fmt.Errorf("total_shards must be at least 1, got %d", total)
			}
			return nil
		}
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	g := &Gateway{cfg: cfg, conn: cfg.Conn, log: cfg.Logger.With(zap.String("instance", cfg.Conn.Instance())), fatal: make(chan error, 1),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_gateway_events_received_total",
			Help: "Dispatch events received from Discord."}),
		filtered: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_gateway_events_filtered_total",
			Help: "Dispatch events not published (events.drop, duplicate GUILD_CREATE, embed-unfurl MESSAGE_UPDATE)."}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dd_gateway_connection_closes_total",
			Help: "Gateway connections ended, by close code (none: dropped without a close frame)."}, []string{"code"}),
	}
	if cfg.Registerer != nil {
		g.register(cfg.Registerer)
	}
	return g, nil
}

func (g *Gateway) register(reg prometheus.Registerer) {
	published := func(f func(*gatewayRun) int64) func() float64 {
		return func() float64 {
			if r := g.st.Load(); r != nil {
				return float64(f(r))
			}
			return 0
		}
	}
	reg.MustRegister(g.received, g.filtered, g.closes,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_gateway_shards_ready", Help: "Shards in the ready state."},
			func() float64 { return float64(g.countReady()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_gateway_guilds", Help: "Guilds on this process's shards."},
			published(func(r *gatewayRun) int64 { return int64(r.filter.TotalGuilds()) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_cluster_shards_owned", Help: "Shards whose lease this process holds."},
			published(func(r *gatewayRun) int64 { return int64(len(r.owner.Owned())) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_cluster_nats_connected", Help: "1 while the NATS connection is up."},
			func() float64 {
				if g.conn.Connected() {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dd_cluster_events_published_total",
			Help: "Events the stream acknowledged as new."}, published(func(r *gatewayRun) int64 { return r.sink.Published() })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dd_cluster_events_duplicate_total",
			Help: "Events the stream acknowledged as a copy of one it held (a replay after a resume or a takeover)."},
			published(func(r *gatewayRun) int64 { return r.sink.Duplicates() })),
	)
}

// FollowStream makes Run also apply every event of the stream with apply, through this process's own
// durable consumer (Follow): a cache in the same process. Call it before Run.
func (g *Gateway) FollowStream(apply func(payloads [][]byte) error) { g.follow = apply }

// Run fetches /gateway/bot, joins the deployment and runs this process's share of the shards until ctx
// ends; then it hands its shards over (closed resumably, sessions written, leases released) and closes
// the NATS connection. A *FatalError means no shard can run. A Gateway runs once.
func (g *Gateway) Run(ctx context.Context) error {
	defer g.conn.Close()
	info, err := g.cfg.GatewayBot(ctx)
	if err != nil || info == nil {
		return err // nil: ctx ended
	}
	total := g.cfg.TotalShards
	if total == 0 {
		if total, err = AgreeShardCount(ctx, g.conn, max(info.Shards, 1)); err != nil {
			return err
		}
	}
	if err := g.cfg.CheckCount(total); err != nil {
		return &FatalError{Err: err, Hint: "set gateway.total_shards to a count dd can run (0 takes Discord's recommendation)"}
	}
	var ids []int
	if g.cfg.Shards != nil {
		if ids = g.cfg.Shards(total); len(ids) == 0 {
			return &FatalError{Err: fmt.Errorf("no shard to run of %d in the fixed set", total),
				Hint: "check gateway.first_shard, last_shard and total_shards"}
		}
	}
	run, err := g.build(ctx, info, total, ids)
	if err != nil {
		return err
	}
	if run.deliv != nil {
		defer run.deliv.Close()
	}
	g.st.Store(run)
	if g.cfg.Reshard {
		g.log.Info("automatic resharding is not available in cluster mode yet: the shard count stays until every process restarts with another gateway.total_shards",
			zap.Int("total_shards", total))
	}
	g.log.Info("joining the deployment's gateway processes", zap.String("cluster", g.conn.Name()), zap.Int("total_shards", total),
		zap.Ints("fixed_shards", ids), zap.Duration("lease_ttl", g.cfg.LeaseTTL),
		zap.Int("max_concurrency", info.SessionStartLimit.MaxConcurrency), zap.Int("identifies_remaining", info.SessionStartLimit.Remaining))

	octx, stopOwner := context.WithCancel(ctx)
	defer stopOwner()
	var wg sync.WaitGroup
	if g.follow != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = Follow(octx, g.conn, FollowConfig{Log: g.log.Named("cache")}, g.follow)
		}()
	}
	ownerDone := make(chan struct{})
	go func() {
		defer close(ownerDone)
		_ = run.owner.Run(octx, &deliveringHost{runner: run.runner, deliv: run.deliv})
	}()
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-g.fatal:
		var fe *shard.FatalError
		hint := "see the log lines of each shard"
		if errors.As(err, &fe) {
			hint = fe.Hint
		}
		runErr = &FatalError{Err: fmt.Errorf("a shard cannot run: %w", err), Hint: hint}
	}
	stopOwner()
	<-ownerDone // shards handed over: stopped resumably, sessions written, leases released
	wg.Wait()
	return runErr
}

// build makes the pieces of a run: the identify limiter, the sink into the stream, the delivery, the
// filter, the runner and the owner.
func (g *Gateway) build(ctx context.Context, info *shard.GatewayBot, total int, ids []int) (*gatewayRun, error) {
	limiter, err := NewIdentifyLimiter(ctx, g.conn, IdentifyConfig{Limit: info.SessionStartLimit,
		Window: g.cfg.IdentifyWindow, Log: g.log.Named("identify")})
	if err != nil {
		return nil, err
	}
	f := filter.New(filter.Options{Rules: g.cfg.Filter})
	// Each shard's guild ids go to the KV beside its session, and come back into the filter in the
	// process that takes the shard over (it resumes: no READY to learn them from).
	sink, err := NewEventSink(ctx, g.conn, EventSinkConfig{MaxEvents: g.cfg.MaxEvents, Guilds: f, Log: g.log})
	if err != nil {
		return nil, err
	}
	run := &gatewayRun{total: total, sink: sink, filter: f}
	if d := g.cfg.Delivery; len(d.URLs) > 0 {
		if d.AckWait == 0 {
			d.AckWait = g.cfg.LeaseTTL
		}
		if d.Log == nil {
			d.Log = g.log
		}
		if d.Registerer == nil {
			d.Registerer = g.cfg.Registerer
		}
		if run.deliv, err = NewDelivery(ctx, g.conn, d); err != nil {
			return nil, err
		}
	}
	tmpl := g.cfg.Shard
	tmpl.GatewayURL, tmpl.Identify = info.URL, limiter
	tmpl.Hooks = shard.Hooks{
		OnDispatch: func(s *shard.Shard, ev *shard.Event) bool {
			g.received.Inc()
			keep, out := f.Keep(s.ID(), ev.Type, ev.Raw)
			if !keep {
				g.filtered.Inc()
				return false
			}
			ev.Raw = out
			return true
		},
		OnClose: func(_ *shard.Shard, code int, _ error) { g.closes.WithLabelValues(closeCodeLabel(code)).Inc() },
	}
	run.runner, err = NewShardRunner(RunnerConfig{Template: tmpl, TotalShards: total, Sink: sink, Guilds: f, Logger: g.log,
		OnFatal: func(id int, err error) {
			select {
			case g.fatal <- err:
			default:
			}
		},
	})
	if err == nil {
		run.owner, err = NewShardOwner(g.conn, OwnerConfig{TotalShards: total, ShardIDs: ids, TTL: g.cfg.LeaseTTL, Log: g.log})
	}
	if err != nil {
		if run.deliv != nil {
			run.deliv.Close()
		}
		return nil, err
	}
	return run, nil
}

// closeCodeLabel is a connection end's code as a metric label: "none" for a drop without a close frame.
func closeCodeLabel(code int) string {
	if code == 0 {
		return "none"
	}
	return strconv.Itoa(code)
}

// deliveringHost runs a shard and delivers its events to the bot while this process holds it.
type deliveringHost struct {
	runner *ShardRunner
	deliv  *Delivery

	mu    sync.Mutex
	stops map[int]func()
}

func (h *deliveringHost) StartShard(id int, lease *Lease) error {
	if err := h.runner.StartShard(id, lease); err != nil {
		return err
	}
	if h.deliv == nil {
		return nil
	}
	stop := h.deliv.Start(id)
	h.mu.Lock()
	if h.stops == nil {
		h.stops = map[int]func(){}
	}
	h.stops[id] = stop
	h.mu.Unlock()
	go func() {
		<-lease.Done() // lost or released: the next holder delivers
		stop()
	}()
	return nil
}

func (h *deliveringHost) StopShard(id int) {
	h.mu.Lock()
	stop := h.stops[id]
	delete(h.stops, id)
	h.mu.Unlock()
	if stop != nil {
		stop()
	}
	h.runner.StopShard(id)
}
