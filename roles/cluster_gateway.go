package roles

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/cluster"
	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/gateway"
	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/internal/filter"
	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/shard"
)

// clusterGateway is the gateway role in cluster mode (cluster.nats_url set; PRODUCT.md §7): the shards
// are shared with the deployment's other gateway processes through leases in NATS (cluster.ShardOwner),
// run by a cluster.ShardRunner that publishes their events to the stream (cluster.EventSink) and keeps
// their sessions in the KV, identify paced through the KV (cluster.IdentifyLimiter). The bot's events go
// to events.urls from the stream (cluster.Delivery: the shards this process runs are the ones it
// delivers), and with --role=all the in-process cache follows the stream with its own durable consumer.
// No Badger queue and no shard.Manager: what survives a process is in NATS.
//
// Not in cluster mode yet (refused by the config, or answered 501): the reshard (gateway.reshard, POST
// /reshard), events.sink "redis", cache.request_members, gateway.clusters.
type clusterGateway struct {
	cfg            *config.Config
	log            *zap.Logger
	reg            prometheus.Registerer
	api            http.Handler
	conn           *cluster.Conn
	identifyWindow time.Duration

	// cacheApply, set before run (--role=all), applies the stream's events to the in-process cache.
	cacheApply func(payloads ...[]byte) error

	st    atomic.Pointer[clusterRun] // nil until the shards start
	fatal chan error

	received prometheus.Counter
	filtered prometheus.Counter
	closes   *prometheus.CounterVec
}

// clusterRun is what run built once /gateway/bot answered.
type clusterRun struct {
	total  int
	owner  *cluster.ShardOwner
	runner *cluster.ShardRunner
	sink   *cluster.EventSink
	deliv  *cluster.Delivery // nil without events.urls
	filter *filter.Filter
}

// newClusterGateway connects to NATS (failing when no server answers) and prepares the role; run starts
// the shards.
func newClusterGateway(cfg *config.Config, reg prometheus.Registerer, log *zap.Logger, identifyWin time.Duration) (*clusterGateway, error) {
	log = log.Named("gateway")
	c := cfg.Cluster
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: c.NATSURL, Name: c.Name, Instance: c.Instance,
		Replicas: c.Replicas, CredsFile: c.NATSCreds, TLSCAFile: c.NATSTLSCA, Log: log.Named("cluster")})
	if err != nil {
		return nil, fmt.Errorf("cluster.nats_url: %w", err)
	}
	g := &clusterGateway{cfg: cfg, log: log.With(zap.String("instance", conn.Instance())), reg: reg, conn: conn,
		identifyWindow: identifyWin, fatal: make(chan error, 1),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_gateway_events_received_total",
			Help: "Dispatch events received from Discord."}),
		filtered: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_gateway_events_filtered_total",
			Help: "Dispatch events not published (events.drop, duplicate GUILD_CREATE, embed-unfurl MESSAGE_UPDATE)."}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dd_gateway_connection_closes_total",
			Help: "Gateway connections ended, by close code (none: dropped without a close frame)."}, []string{"code"}),
	}
	published := func(f func(*clusterRun) int64) func() float64 {
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
			published(func(r *clusterRun) int64 { return int64(r.filter.TotalGuilds()) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_cluster_shards_owned", Help: "Shards whose lease this process holds."},
			published(func(r *clusterRun) int64 { return int64(len(r.owner.Owned())) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_cluster_nats_connected", Help: "1 while the NATS connection is up."},
			func() float64 {
				if conn.Connected() {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dd_cluster_events_published_total",
			Help: "Events the stream acknowledged as new."}, published(func(r *clusterRun) int64 { return r.sink.Published() })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dd_cluster_events_duplicate_total",
			Help: "Events the stream acknowledged as a copy of one it held (a replay after a resume or a takeover)."},
			published(func(r *clusterRun) int64 { return r.sink.Duplicates() })),
	)
	mux := http.NewServeMux()
	cmds := shardCommands{shards: g.shardSet, log: log}
	mux.HandleFunc("POST /{$}", cmds.handleDiscordeno)
	mux.HandleFunc("POST /shards/{id}/send", cmds.handleShardSend)
	mux.HandleFunc("GET /status", g.handleStatus)
	mux.HandleFunc("POST /reshard", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, http.StatusNotImplemented, "resharding is not available in cluster mode yet: set gateway.total_shards on every process and restart them")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no gateway endpoint %s %s", r.Method, r.URL.Path))
	})
	g.api = requireSecret(cfg.Gateway.Secret, mux)
	return g, nil
}

func (g *clusterGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.api.ServeHTTP(w, r) }

// run fetches /gateway/bot, joins the deployment and runs this process's share of the shards until ctx
// ends; then it hands its shards over (closed resumably, sessions written, leases released) and closes
// the NATS connection. A *FatalError means no shard can run.
func (g *clusterGateway) run(ctx context.Context) error {
	defer g.conn.Close()
	info, err := g.fetchGatewayBot(ctx)
	if err != nil || info == nil {
		return err // nil: ctx ended
	}
	gw := g.cfg.Gateway
	total := gw.TotalShards
	if total == 0 {
		if total, err = cluster.AgreeShardCount(ctx, g.conn, max(info.Shards, 1)); err != nil {
			return err
		}
	}
	if err := gateway.CheckCount(total, 0); err != nil {
		return &FatalError{Err: err, Hint: "set gateway.total_shards to a count dd can run (0 takes Discord's recommendation)"}
	}
	var ids []int
	if gw.FirstShard != 0 || gw.LastShard != -1 {
		ids = fixedShards(gw.FirstShard, gw.LastShard, total)
		if len(ids) == 0 {
			return &FatalError{Err: fmt.Errorf("no shard to run of %d (first_shard %d, last_shard %d)", total, gw.FirstShard, gw.LastShard),
				Hint: "check gateway.first_shard, last_shard and total_shards"}
		}
	}
	limiter, err := cluster.NewIdentifyLimiter(ctx, g.conn, cluster.IdentifyConfig{Limit: info.SessionStartLimit,
		Window: g.identifyWindow, Log: g.log.Named("identify")})
	if err != nil {
		return err
	}
	sink, err := cluster.NewEventSink(ctx, g.conn, cluster.EventSinkConfig{MaxEvents: int64(g.cfg.Events.MaxQueueEvents), Log: g.log})
	if err != nil {
		return err
	}
	var deliv *cluster.Delivery
	if len(g.cfg.Events.URLs) > 0 {
		deliv, err = cluster.NewDelivery(ctx, g.conn, cluster.DeliveryConfig{URLs: g.cfg.Events.URLs, Secret: g.cfg.Events.Secret,
			BatchMax: g.cfg.Events.BatchMax, AckWait: g.cfg.Cluster.LeaseTTL, Log: g.log, Registerer: g.reg})
		if err != nil {
			return err
		}
		defer deliv.Close()
	}
	f := filter.New(filter.Options{Drop: g.cfg.Events.Drop, DedupMessageUpdates: gw.DedupMessageUpdates,
		DropKnownGuildCreates: gw.DropKnownGuildCreates, LoadingGuildEvent: gw.LoadingGuildEvent})
	runner, err := cluster.NewShardRunner(cluster.RunnerConfig{
		Template: shard.Config{
			Token: g.cfg.Discord.Token, Intents: int(gw.Intents), GatewayURL: info.URL, APIVersion: g.cfg.Discord.APIVersion,
			Compress: gw.Compress, LargeThreshold: gw.LargeThreshold, Identify: limiter,
			Hooks: shard.Hooks{
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
			},
		},
		TotalShards: total, Sink: sink, Logger: g.log,
		OnFatal: func(id int, err error) {
			select {
			case g.fatal <- err:
			default:
			}
		},
	})
	if err != nil {
		return err
	}
	owner, err := cluster.NewShardOwner(g.conn, cluster.OwnerConfig{TotalShards: total, ShardIDs: ids, TTL: g.cfg.Cluster.LeaseTTL, Log: g.log})
	if err != nil {
		return err
	}
	g.st.Store(&clusterRun{total: total, owner: owner, runner: runner, sink: sink, deliv: deliv, filter: f})
	if gw.Reshard {
		g.log.Info("automatic resharding is not available in cluster mode yet: the shard count stays until every process restarts with another gateway.total_shards",
			zap.Int("total_shards", total))
	}
	g.log.Info("joining the deployment's gateway processes", zap.String("cluster", g.conn.Name()), zap.Int("total_shards", total),
		zap.Ints("fixed_shards", ids), zap.Duration("lease_ttl", g.cfg.Cluster.LeaseTTL),
		zap.Int("max_concurrency", info.SessionStartLimit.MaxConcurrency), zap.Int("identifies_remaining", info.SessionStartLimit.Remaining))

	octx, stopOwner := context.WithCancel(ctx)
	defer stopOwner()
	var wg sync.WaitGroup
	if g.cacheApply != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = cluster.Follow(octx, g.conn, cluster.FollowConfig{Log: g.log.Named("cache")}, func(p [][]byte) error { return g.cacheApply(p...) })
		}()
	}
	ownerDone := make(chan struct{})
	go func() {
		defer close(ownerDone)
		_ = owner.Run(octx, &deliveringHost{runner: runner, deliv: deliv})
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

// fixedShards is first..last (last -1: total-1), clipped to total.
func fixedShards(first, last, total int) []int {
	if last < 0 || last >= total {
		last = total - 1
	}
	var ids []int
	for id := max(first, 0); id <= last; id++ {
		ids = append(ids, id)
	}
	return ids
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
	runner *cluster.ShardRunner
	deliv  *cluster.Delivery

	mu    sync.Mutex
	stops map[int]func()
}

func (h *deliveringHost) StartShard(id int, lease *cluster.Lease) error {
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

// fetchGatewayBot asks for /gateway/bot, through the rest role when rest.url is set. Network trouble is
// retried with backoff; a refused token is fatal. It returns nil, nil when ctx ends first.
func (g *clusterGateway) fetchGatewayBot(ctx context.Context) (*shard.GatewayBot, error) {
	apiURL, auth := g.cfg.Discord.APIURL, "Bot "+g.cfg.Discord.Token
	if g.cfg.Rest.URL != "" {
		apiURL, auth = strings.TrimRight(g.cfg.Rest.URL, "/")+"/api", g.cfg.Rest.Secret
	}
	client := &http.Client{Timeout: 15 * time.Second}
	backoff := time.Second
	for {
		info, err := shard.FetchGatewayBot(ctx, client, apiURL, g.cfg.Discord.APIVersion, auth)
		if err == nil {
			return &info, nil
		}
		var he *shard.HTTPError
		if errors.As(err, &he) && he.Status == http.StatusUnauthorized {
			return nil, &FatalError{Err: fmt.Errorf("GET /gateway/bot: %w", err),
				Hint: "Discord refused the token: set discord.token to the bot token from the developer portal"}
		}
		g.log.Warn("cannot get the gateway URL yet; retrying", zap.Error(err), zap.Duration("after", backoff))
		if ctxsleep.Sleep(ctx, backoff) != nil {
			return nil, nil
		}
		backoff = min(backoff*2, time.Minute)
	}
}

// clusterShards is the ShardSet of the command endpoints: the shards this process runs.
type clusterShards struct {
	runner *cluster.ShardRunner
	total  int
}

func (s clusterShards) Shard(id int) *shard.Shard { return s.runner.Shard(id) }

func (s clusterShards) Shards() []*shard.Shard {
	var out []*shard.Shard
	for _, id := range s.runner.Running() {
		if sh := s.runner.Shard(id); sh != nil {
			out = append(out, sh)
		}
	}
	return out
}

func (s clusterShards) ShardForGuild(guildID uint64) int {
	return discord.ShardForGuild(guildID, s.total)
}

func (g *clusterGateway) shardSet() ShardSet {
	if r := g.st.Load(); r != nil {
		return clusterShards{runner: r.runner, total: r.total}
	}
	return nil
}

func (g *clusterGateway) countReady() int {
	r := g.st.Load()
	if r == nil {
		return 0
	}
	n := 0
	for _, s := range (clusterShards{runner: r.runner}).Shards() {
		if s.State() == shard.StateReady {
			n++
		}
	}
	return n
}

// ready says why this process is not ready: NATS is unreachable (its shards stop reading rather than
// lose events), the shards are not started, it holds no shard, or one it holds is neither connected nor
// resuming its session.
func (g *clusterGateway) ready() error {
	if !g.conn.Connected() {
		return errors.New("NATS is unreachable: this process's shards stop reading until it is back (events wait at Discord)")
	}
	r := g.st.Load()
	if r == nil {
		return errors.New("shards are not started yet (waiting for Discord's /gateway/bot)")
	}
	owned := r.owner.Owned()
	if len(owned) == 0 {
		return fmt.Errorf("this process holds no shard (yet) of %d; processes: %s", r.total, strings.Join(r.owner.Members(), ", "))
	}
	down, first := 0, -1
	var firstState shard.State
	for _, id := range owned {
		s := r.runner.Shard(id)
		st := shard.StateDisconnected
		if s != nil {
			st = s.State()
		}
		switch st {
		case shard.StateReady, shard.StateResuming:
			continue
		case shard.StateDisconnected, shard.StateConnecting:
			if s != nil && s.Session().Resumable() {
				continue // between two attempts to resume
			}
		}
		if down == 0 {
			first, firstState = id, st
		}
		down++
	}
	if down > 0 {
		return fmt.Errorf("%d of the %d shards this process holds are not connected (shard %d is %s)", down, len(owned), first, firstState)
	}
	return nil
}

// clusterShardStatus is one shard this process runs, in GET /status.
type clusterShardStatus struct {
	ID        int     `json:"id"`
	State     string  `json:"state"`
	RTTMillis float64 `json:"rtt_ms"`
	Guilds    int     `json:"guilds"`
	Loading   int     `json:"loading_guilds"`
	Resumable bool    `json:"resumable"`
	Queued    int     `json:"queued_events"` // in the stream, not yet delivered to events.urls
}

// clusterProcess is one gateway process of the deployment in GET /status.
type clusterProcess struct {
	Instance string `json:"instance"`
	Shards   []int  `json:"shards"`
}

// handleStatus answers the deployment as this process sees it (its processes, each shard's owner) and
// the shards this process runs; ?shards=false leaves the per-shard lines out.
func (g *clusterGateway) handleStatus(w http.ResponseWriter, r *http.Request) {
	lines := r.URL.Query().Get("shards") != "false"
	out := map[string]any{"cluster": g.conn.Name(), "instance": g.conn.Instance(), "nats_connected": g.conn.Connected()}
	run := g.st.Load()
	if run == nil {
		out["total_shards"], out["processes"] = 0, []clusterProcess{}
		out["summary"] = map[string]any{"shards": 0, "states": map[string]int{}}
		if lines {
			out["shards"], out["owners"] = []clusterShardStatus{}, []string{}
		}
		httpapi.WriteJSON(w, http.StatusOK, out)
		return
	}
	owners := run.owner.Owners()
	byProcess := map[string][]int{}
	for _, m := range run.owner.Members() {
		byProcess[m] = []int{}
	}
	ownerList := make([]string, run.total)
	var free []int
	for id := 0; id < run.total; id++ {
		o := owners[id]
		ownerList[id] = o
		if o == "" {
			free = append(free, id)
			continue
		}
		byProcess[o] = append(byProcess[o], id)
	}
	procs := make([]clusterProcess, 0, len(byProcess))
	for inst, ids := range byProcess {
		procs = append(procs, clusterProcess{Instance: inst, Shards: ids})
	}
	sort.Slice(procs, func(i, j int) bool { return procs[i].Instance < procs[j].Instance })
	var shards []clusterShardStatus
	states := map[string]int{}
	guilds, loading, queued := 0, 0, 0
	maxRTT := 0.0
	for _, s := range (clusterShards{runner: run.runner}).Shards() {
		st := clusterShardStatus{ID: s.ID(), State: s.State().String(), RTTMillis: float64(s.RTT().Microseconds()) / 1000,
			Guilds: run.filter.GuildCount(s.ID()), Loading: run.filter.Loading(s.ID()), Resumable: s.Session().Resumable()}
		if run.deliv != nil {
			st.Queued = run.deliv.Backlog(s.ID())
		}
		shards = append(shards, st)
		states[st.State]++
		queued += st.Queued
		guilds += st.Guilds
		loading += st.Loading
		maxRTT = max(maxRTT, st.RTTMillis)
	}
	if shards == nil {
		shards = []clusterShardStatus{}
	}
	if free == nil {
		free = []int{}
	}
	out["total_shards"], out["processes"], out["free_shards"] = run.total, procs, free
	out["summary"] = map[string]any{"shards": len(shards), "states": states, "guilds": guilds, "loading_guilds": loading,
		"queued_events": queued, "max_rtt_ms": maxRTT}
	out["queue_depth"] = queued // the events of this process's shards that wait for the bot
	out["filtered_events"] = run.filter.Dropped()
	out["published_events"], out["duplicate_events"] = run.sink.Published(), run.sink.Duplicates()
	if lines {
		out["owners"], out["shards"] = ownerList, shards
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// clusterCacheFollower is the cache role's feed in cluster mode without a gateway in the process: its
// own durable consumer of the stream ("dd-cache-<instance>"), so that several cache processes each hold
// every event. It connects to NATS (retrying until it can) and follows until ctx ends.
func clusterCacheFollower(cfg *config.Config, apply func(payloads ...[]byte) error, log *zap.Logger) func(context.Context) error {
	log = log.Named("cache")
	return func(ctx context.Context) error {
		c := cfg.Cluster
		var conn *cluster.Conn
		for backoff := time.Second; conn == nil; backoff = min(2*backoff, 30*time.Second) {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			var err error
			conn, err = cluster.Connect(cctx, cluster.Options{URL: c.NATSURL, Name: c.Name, Instance: c.Instance,
				Replicas: c.Replicas, CredsFile: c.NATSCreds, TLSCAFile: c.NATSTLSCA, Log: log.Named("cluster")})
			cancel()
			if err != nil {
				log.Warn("cannot follow the event stream yet: NATS unreachable; retrying", zap.Error(err), zap.Duration("after", backoff))
				if ctxsleep.Sleep(ctx, backoff) != nil {
					return nil
				}
			}
		}
		defer conn.Close()
		log.Info("following the event stream", zap.String("consumer", cluster.FollowerName(conn.Instance())))
		return cluster.Follow(ctx, conn, cluster.FollowConfig{Log: log}, func(p [][]byte) error { return apply(p...) })
	}
}
