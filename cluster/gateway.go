package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/discord"
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
	// IdentifyTurnTTL is how long a dead process's identify turn blocks its bucket (IdentifyConfig's
	// TurnTTL). Default 30 s.
	IdentifyTurnTTL time.Duration
	// LeaseTTL is the shard leases' TTL (cluster.lease_ttl), also how long the stream waits for a
	// delivery batch's holder. Default 10 s.
	LeaseTTL time.Duration
	// MaxEvents bounds the stream (events.max_queue_events). Default EventSinkConfig's.
	MaxEvents int64
	// Delivery delivers the events of the shards this process runs to the bot (events.urls). No URLs:
	// dd does not deliver, the bot reads the stream itself. Its AckWait defaults to LeaseTTL.
	Delivery DeliveryConfig
	// Reshard says gateway.reshard was asked for: every process checks every ReshardEvery whether the
	// guilds fill ReshardPercentage of the shards' capacity, and starts a reshard of the deployment (one
	// wins; see Reshard).
	Reshard bool
	// ReshardPercentage is gateway.reshard_percentage. Default 80.
	ReshardPercentage int
	// ReshardEvery is how often the automatic trigger looks. Default 1 minute.
	ReshardEvery time.Duration
	// CountFor is the count a reshard to Discord's recommendation moves to (gateway.NewShardCount).
	// Default: the recommendation, at least what the guilds need at 2,500 a shard.
	CountFor func(recommended, guilds, maxConcurrency int) int
	// CheckTarget says why a reshard cannot move to total (gateway.CheckCount). Default CheckCount.
	CheckTarget func(total, maxConcurrency int) error
	// IdentifyReserve is how many identifies a reshard leaves in the daily budget
	// (gateway.reshard_identify_reserve).
	IdentifyReserve int
	// ReshardDeadline bounds how long a reshard's new shards may take to be ready before it is rolled
	// back. Default: one machine's rule, 2 x (new shards + 1) identify windows + 2 minutes.
	ReshardDeadline time.Duration
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
	next  atomic.Pointer[gatewayRun] // a reshard's new count, while it runs here
	fatal chan error
	info  *shard.GatewayBot

	// The reshard in progress (reshard.go): the target bucket's view, and this process's work on it
	// (work and ignored: Run's goroutine only).
	rsMu        sync.Mutex
	rs          reshardState
	rsWake      chan struct{}
	work        *reshardWork
	ignored     string
	fenceMu     sync.Mutex
	fencePassed map[string]bool

	received prometheus.Counter
	filtered prometheus.Counter
	closes   *prometheus.CounterVec
}

// gatewayRun is what Run built once /gateway/bot answered: one shard count's owner, runner and sink
// (two while a reshard runs).
type gatewayRun struct {
	total  int
	owner  *ShardOwner
	runner *ShardRunner
	sink   *EventSink
	rsink  *reshardSink // a reshard's new count: its shards are held until the switch
	deliv  *Delivery    // nil without URLs
	filter *filter.Filter
	host   *deliveringHost

	cancel context.CancelFunc // the owner's
	done   chan struct{}      // closed when the owner left

	heartbeatACKs sync.Map // shard -> *atomic.Int64: heartbeat ACKs read (a reshard's proof, reshard_run.go)
}

// acks is how many heartbeat ACKs shard id's connections read.
func (r *gatewayRun) acks(id int) int64 {
	if v, ok := r.heartbeatACKs.Load(id); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// stopOwner makes the run's owner leave (shards handed over, leases released) and waits for it.
func (r *gatewayRun) stopOwner() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
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
	if cfg.IdentifyWindow <= 0 {
		cfg.IdentifyWindow = 5 * time.Second
	}
	if cfg.ReshardPercentage <= 0 {
		cfg.ReshardPercentage = 80
	}
	if cfg.ReshardEvery <= 0 {
		cfg.ReshardEvery = time.Minute
	}
	if cfg.CountFor == nil {
		cfg.CountFor = func(recommended, guilds, _ int) int {
			return max(recommended, (guilds+discord.MaxGuildsPerShard-1)/discord.MaxGuildsPerShard, 1)
		}
	}
	if cfg.CheckTarget == nil {
		check := cfg.CheckCount
		cfg.CheckTarget = func(total, _ int) error { return check(total) }
	}
	g := &Gateway{cfg: cfg, conn: cfg.Conn, log: cfg.Logger.With(zap.String("instance", cfg.Conn.Instance())), fatal: make(chan error, 1),
		rsWake: make(chan struct{}, 1), fencePassed: map[string]bool{},
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
// ends, following the deployment's reshards (reshard.go); then it hands its shards over (closed
// resumably, sessions written, leases released) and closes the NATS connection. A *FatalError means no
// shard can run. A Gateway runs once.
func (g *Gateway) Run(ctx context.Context) error {
	defer g.conn.Close()
	info, err := g.cfg.GatewayBot(ctx)
	if err != nil || info == nil {
		return err // nil: ctx ended
	}
	g.info = info
	total := g.cfg.TotalShards
	if total == 0 {
		if total, err = AgreeShardCount(ctx, g.conn, max(info.Shards, 1)); err != nil {
			return err
		}
	} else if n := g.resharded(ctx); n > 0 && n != total && g.cfg.Shards == nil {
		g.log.Warn("the deployment was resharded (POST /reshard or gateway.reshard): it runs the count the reshard set, not gateway.total_shards",
			zap.Int("total_shards", n), zap.Int("configured", total))
		total = n
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
	run, err := g.build(ctx, info, total, ids, false)
	if err != nil {
		return err
	}
	if run.deliv != nil {
		defer run.deliv.Close()
	}
	// The reshard keys are read before any shard starts: a process that joins during a switch must not
	// start an old shard that stopped for it, nor deliver a new shard's events past the fence.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	initial := make(chan struct{})
	go g.watchReshard(wctx, initial)
	select {
	case <-initial:
	case <-ctx.Done():
		return nil
	}
	g.st.Store(run)
	g.log.Info("joining the deployment's gateway processes", zap.String("cluster", g.conn.Name()), zap.Int("total_shards", total),
		zap.Ints("fixed_shards", ids), zap.Duration("lease_ttl", g.cfg.LeaseTTL),
		zap.Int("max_concurrency", info.SessionStartLimit.MaxConcurrency), zap.Int("identifies_remaining", info.SessionStartLimit.Remaining))

	var wg sync.WaitGroup
	fctx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	if g.follow != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = Follow(fctx, g.conn, FollowConfig{Log: g.log.Named("cache")}, g.follow)
		}()
	}
	if g.cfg.Reshard {
		if g.cfg.Shards != nil {
			g.log.Info("automatic resharding is off: first_shard/last_shard fix this process's shards (cluster mode reshards only when the processes share every shard)")
		} else {
			wg.Add(1)
			go func() {
				defer wg.Done()
				g.autoReshard(fctx)
			}()
		}
	}
	g.startOwner(run)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-g.fatal:
			var fe *shard.FatalError
			hint := "see the log lines of each shard"
			if errors.As(err, &fe) {
				hint = fe.Hint
			}
			runErr = &FatalError{Err: fmt.Errorf("a shard cannot run: %w", err), Hint: hint}
			break loop
		case <-g.rsWake:
		case <-tick.C:
		}
		g.stepReshard(ctx)
	}
	// Shards handed over: stopped resumably, sessions written, leases released.
	if work := g.work; work != nil {
		work.stop()
		work.next.stopOwner()
	}
	g.st.Load().stopOwner()
	stopFollow()
	wg.Wait()
	return runErr
}

// resharded is the count a finished reshard set ("resharded" in the target bucket), 0 when none did.
func (g *Gateway) resharded(ctx context.Context) int {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	e, err := g.conn.KV(BucketTarget).Get(rctx, reshardedKey)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(string(e.Value()))
	return n
}

// startOwner runs run's owner until run.stopOwner.
func (g *Gateway) startOwner(run *gatewayRun) {
	octx, cancel := context.WithCancel(context.Background())
	run.cancel, run.done = cancel, make(chan struct{})
	go func() {
		defer close(run.done)
		_ = run.owner.Run(octx, run.host)
	}()
}

// autoReshard is gateway.reshard in cluster mode: every ReshardEvery, when the guilds fill
// ReshardPercentage of the shards' capacity, a reshard of the deployment to Discord's recommendation (at
// least one more shard). Every process looks; the target bucket lets one start it.
func (g *Gateway) autoReshard(ctx context.Context) {
	t := time.NewTicker(g.cfg.ReshardEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		run := g.st.Load()
		if run == nil || g.reshardView().rec != nil {
			continue
		}
		guilds := g.deploymentGuilds(run)
		if guilds*100 < run.total*discord.MaxGuildsPerShard*g.cfg.ReshardPercentage {
			continue
		}
		info, err := g.cfg.GatewayBot(ctx)
		if err != nil || info == nil {
			continue
		}
		to := g.cfg.CountFor(info.Shards, guilds, info.SessionStartLimit.MaxConcurrency)
		if to <= run.total {
			to = g.cfg.CountFor(run.total+1, guilds, info.SessionStartLimit.MaxConcurrency)
		}
		why := fmt.Sprintf("%d guilds fill %d%% or more of %d shards", guilds, g.cfg.ReshardPercentage, run.total)
		if _, _, err := g.Reshard(ctx, to, why); err != nil && !errors.Is(err, ErrReshardBusy) {
			g.log.Warn("reshard due but not started", zap.String("why", why), zap.Error(err))
		}
	}
}

// build makes the pieces of a run: the identify limiter, the sink into the stream, the delivery, the
// filter, the runner and the owner.
func (g *Gateway) build(ctx context.Context, info *shard.GatewayBot, total int, ids []int, held bool) (*gatewayRun, error) {
	limiter, err := NewIdentifyLimiter(ctx, g.conn, IdentifyConfig{Limit: info.SessionStartLimit,
		Window: g.cfg.IdentifyWindow, TurnTTL: g.cfg.IdentifyTurnTTL, Log: g.log.Named("identify")})
	if err != nil {
		return nil, err
	}
	// A reshard's new shards drop their READY and loading burst, as one machine's new set does: the old
	// shards had those guilds, and the bot (and the cache) learnt nothing new from them.
	f := filter.New(filter.Options{Rules: g.cfg.Filter, DropLoadingBurst: held})
	// Each shard's guild ids go to the KV beside its session, and come back into the filter in the
	// process that takes the shard over (it resumes: no READY to learn them from).
	sink, err := NewEventSink(ctx, g.conn, EventSinkConfig{MaxEvents: g.cfg.MaxEvents, Guilds: f, Log: g.log})
	if err != nil {
		return nil, err
	}
	run := &gatewayRun{total: total, sink: sink, filter: f}
	if held {
		run.rsink = newReshardSink(sink, 0) // its floor is set by startNext
	}
	if d := g.cfg.Delivery; len(d.URLs) > 0 && !held {
		if d.AckWait == 0 {
			d.AckWait = g.cfg.LeaseTTL
		}
		if d.Log == nil {
			d.Log = g.log
		}
		if d.Registerer == nil {
			d.Registerer = g.cfg.Registerer
		}
		d.Fence = g.fence
		if run.deliv, err = NewDelivery(ctx, g.conn, d); err != nil {
			return nil, err
		}
	}
	tmpl := g.cfg.Shard
	tmpl.GatewayURL, tmpl.Identify = info.URL, limiter
	tmpl.Hooks = shard.Hooks{
		OnPayload: func(s *shard.Shard, op int, _ string, _ json.RawMessage) bool {
			if op == discord.OpHeartbeatAck {
				v, _ := run.heartbeatACKs.LoadOrStore(s.ID(), new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}
			return true
		},
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
	var sinkFor func(int, *Lease, bool) shard.Sink
	if held {
		sinkFor = run.rsink.sinkFor
	}
	run.runner, err = NewShardRunner(RunnerConfig{Template: tmpl, TotalShards: total, Sink: sink, SinkFor: sinkFor, Guilds: f, Logger: g.log,
		OnFatal: func(id int, err error) {
			select {
			case g.fatal <- err:
			default:
			}
		},
	})
	if err == nil {
		run.owner, err = NewShardOwner(g.conn, OwnerConfig{TotalShards: total, ShardIDs: ids, TTL: g.cfg.LeaseTTL, Log: g.log,
			SharedPresence: held})
	}
	if err != nil {
		if run.deliv != nil && !held {
			run.deliv.Close()
		}
		return nil, err
	}
	run.host = &deliveringHost{runner: run.runner, deliv: run.deliv}
	if !held {
		run.host.skip = func(id int) (bool, bool) { return g.oldStopped(run, id) }
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
	// skip, when set, says whether a shard must not run (an old shard stopped for a reshard's switch),
	// and whether it must not be delivered either (the deployment moved to another count).
	skip func(id int) (noRun, noDeliver bool)
	// later, when set, says whether a shard's delivery waits for release (a reshard's new shard whose
	// consumer the old shard of the same id's holder delivers until the reshard is done: one consumer
	// is pulled by one process at a time).
	later func(id int) bool

	mu       sync.Mutex
	stops    map[int]func()
	deferred map[int]*Lease
}

func (h *deliveringHost) StartShard(id int, lease *Lease) error {
	noRun, noDeliver := false, false
	if h.skip != nil {
		noRun, noDeliver = h.skip(id)
	}
	if noRun {
		h.runner.log.Info("old shard stopped for a reshard's switch: not run here", zap.Int("shard", id), zap.Bool("delivered_here", !noDeliver && h.deliv != nil))
	} else if err := h.runner.StartShard(id, lease); err != nil {
		return err
	}
	if h.deliv == nil || noDeliver {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.later != nil && h.later(id) {
		if h.deferred == nil {
			h.deferred = map[int]*Lease{}
		}
		h.deferred[id] = lease
		return nil
	}
	h.deliver(id, lease)
	return nil
}

// deliver starts shard id's delivery for the holding of lease. The caller holds h.mu.
func (h *deliveringHost) deliver(id int, lease *Lease) {
	stop := h.deliv.Start(id)
	if h.stops == nil {
		h.stops = map[int]func(){}
	}
	h.stops[id] = stop
	go func() {
		<-lease.Done() // lost or released: the next holder delivers
		stop()
	}()
}

// release starts the deliveries that waited (later), each once ready(id) says the consumer's other
// puller is gone, and delivers every shard from then on.
func (h *deliveringHost) release(ready func(id int) bool) {
	h.mu.Lock()
	h.later = nil
	waiting := h.deferred
	h.deferred = nil
	h.mu.Unlock()
	for id, le := range waiting {
		go func() {
			for !ready(id) && le.Valid() {
				time.Sleep(100 * time.Millisecond)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if le.Valid() {
				h.deliver(id, le)
			}
		}()
	}
}

func (h *deliveringHost) StopShard(id int) {
	h.mu.Lock()
	stop := h.stops[id]
	delete(h.stops, id)
	delete(h.deferred, id)
	h.mu.Unlock()
	if stop != nil {
		stop()
	}
	h.runner.StopShard(id)
}
