package roles

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/delivery"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/internal/filter"
	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/internal/members"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/reshard"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/store"
)

// identifyWindow is Discord's: one IDENTIFY per max_concurrency bucket per 5 s. A margin absorbs the
// jitter between our send and Discord's receipt, which is what Discord judges.
// coordinatorPoll is how often a split gateway process asks the rest role for the deployment's shard count.
var coordinatorPoll = 2 * time.Second

const identifyWindow = 5 * time.Second

// identifyMarginFor is the margin kept over the identify window: 5 % (250 ms of Discord's 5 s), and at
// least 50 ms, the receipt jitter seen on a loaded machine.
func identifyMarginFor(window time.Duration) time.Duration {
	return max(window/20, 50*time.Millisecond)
}

// gatewayRole wires shards -> filter -> queue -> delivery, and serves the gateway's HTTP API.
type gatewayRole struct {
	cfg   *config.Config
	log   *zap.Logger
	st    *store.Store
	q     *queue.Queue
	deliv interface{ Run(context.Context) error } // to the bot: HTTP (delivery.Deliverer) or Redis (delivery.RedisSink)
	reg   prometheus.Registerer
	api   http.Handler

	// The running shard set (cur), and during a reshard the one taking over (next).
	cur, next atomic.Pointer[generation]
	changed   chan struct{} // a reshard switched cur
	info      *shard.GatewayBot
	limiter   identify.Limiter
	runCtx    context.Context

	resharding     atomic.Bool
	reshardWG      sync.WaitGroup
	reshardMu      sync.Mutex
	reshardState   reshardState
	reshards       *prometheus.CounterVec
	reshardSeconds prometheus.Histogram

	identifyWindow time.Duration

	// cacheQueue is the cache's own consumer of the queue (nil when no cache runs); feeds are the queue's
	// readers besides the bot's delivery (the in-process cache, or delivery to the cache role at
	// cache.url), started and stopped with it.
	cacheQueue *queue.Consumer
	feeds      []func(context.Context) error

	received prometheus.Counter
	filtered prometheus.Counter
	closes   *prometheus.CounterVec

	storeHealth storeHealth
	// sinkErr says why the bot's sink does not take events (nil when it does); nil for HTTP, whose
	// failures are the bot's.
	sinkErr func() error

	// ignoredTarget is the last rest role target this process refused to follow (logged once each).
	ignoredTarget int

	// members sends dd's own member requests (cache.request_members; nil when off). memberWindow
	// overrides Discord's 30 s per-guild window (tests); dd's pace is scaled with it.
	members      *members.Requester
	memberWindow time.Duration
}

// closeLabel is a connection end's code as a metric label: "none" for a drop without a close frame.
func closeLabel(code int) string {
	if code == 0 {
		return "none"
	}
	return strconv.Itoa(code)
}

func newGateway(cfg *config.Config, st *store.Store, reg prometheus.Registerer, log *zap.Logger, identifyWin time.Duration, withCache bool) (*gatewayRole, error) {
	log = log.Named("gateway")
	q, err := queue.Open(st, queue.Options{MaxEvents: cfg.Events.MaxQueueEvents, Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	bot, err := q.Consumer("bot")
	if err != nil {
		q.Close()
		return nil, err
	}
	// The cache reads the same queue from its own position, registered before delivery can acknowledge
	// anything so that no event is deleted before the cache has it: in-process (withCache, --role=all)
	// or posted to the cache role at cache.url.
	var cacheQueue *queue.Consumer
	var feeds []func(context.Context) error
	if withCache || cfg.Cache.URL != "" {
		if cacheQueue, err = q.Consumer("cache"); err != nil {
			q.Close()
			return nil, err
		}
	}
	if !withCache && cfg.Cache.URL != "" {
		feed, err := delivery.New(cacheQueue, delivery.Options{URLs: []string{strings.TrimSuffix(cfg.Cache.URL, "/") + "/events"},
			Secret: cfg.Cache.Secret, BatchMax: cfg.Cache.BatchMax, Logger: log.Named("cache-feed")})
		if err != nil {
			q.Close()
			return nil, err
		}
		feeds = append(feeds, feed.Run)
	}
	var deliv interface{ Run(context.Context) error }
	var sinkErr func() error
	if cfg.Events.Sink == "redis" {
		var rs *delivery.RedisSink
		rs, err = delivery.NewRedis(bot, delivery.RedisOptions{URL: cfg.Events.RedisURL, Prefix: cfg.Events.RedisPrefix,
			MaxLen: cfg.Events.MaxQueueEvents, Logger: log.Named("delivery"), Registerer: reg})
		deliv, sinkErr = rs, func() error { return rs.Err() }
	} else {
		deliv, err = delivery.New(bot, delivery.Options{URLs: cfg.Events.URLs, Secret: cfg.Events.Secret,
			BatchMax: cfg.Events.BatchMax, Logger: log.Named("delivery"), Registerer: reg})
	}
	if err != nil {
		q.Close()
		return nil, err
	}
	g := &gatewayRole{cfg: cfg, log: log, st: st, q: q, deliv: deliv, sinkErr: sinkErr, reg: reg, identifyWindow: identifyWin,
		cacheQueue: cacheQueue, feeds: feeds, changed: make(chan struct{}, 1),
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
	}
	reg.MustRegister(g.received, g.filtered, g.closes, g.reshards, g.reshardSeconds,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_gateway_shards_ready", Help: "Shards in the ready state."},
			func() float64 { return float64(g.countReady()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_gateway_guilds", Help: "Guilds on this process's shards."},
			func() float64 {
				if cur := g.cur.Load(); cur != nil {
					return float64(cur.filter.TotalGuilds())
				}
				return 0
			}))
	g.api = requireSecret(cfg.Gateway.Secret, g.routes())
	return g, nil
}

func (g *gatewayRole) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.api.ServeHTTP(w, r) }

// run fetches the gateway's parameters, runs the shards and delivery until ctx ends, then closes the
// shards resumably and flushes the queue. A *FatalError means no shard can run.
func (g *gatewayRole) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	// A shutdown does not wait for disk space: what the shards could not store is replayed on resume.
	defer context.AfterFunc(ctx, g.q.StopWaitingForDisk)()
	delivDone := make(chan error, 1+len(g.feeds))
	go func() { delivDone <- g.deliv.Run(ctx) }()
	for _, feed := range g.feeds {
		go func() { delivDone <- feed(ctx) }()
	}
	defer func() {
		// The shards have stopped (their last events are in the queue); now stop delivery and flush.
		cancel()
		for range 1 + len(g.feeds) {
			<-delivDone
		}
		if err := g.q.Close(); err != nil {
			g.log.Error("closing queue", zap.Error(err))
		}
	}()

	info, err := g.fetchGatewayBot(ctx)
	if err != nil {
		return err
	}
	if info == nil {
		return nil // ctx ended
	}
	total := g.cfg.Gateway.TotalShards
	if total == 0 {
		total = max(info.Shards, 1)
		// Every process of a split deployment rounds Discord's recommendation the same way.
		total = splitCount(total, max(g.cfg.Gateway.Clusters, 1))
	}
	if stored, ok := g.storedTotal(); ok && stored != total {
		g.log.Info("using the shard count of the last reshard", zap.Int("total_shards", stored))
		total = stored
	}
	if err := reshard.CheckCount(total, 0); err != nil {
		return &FatalError{Err: err, Hint: "set gateway.total_shards to a count dd can run (0 takes Discord's recommendation)"}
	}
	ids := shardRange(g.cfg.Gateway, total)
	if len(ids) == 0 {
		return &FatalError{Err: fmt.Errorf("no shard to run of %d (first_shard %d, last_shard %d, cluster %d of %d)", total,
			g.cfg.Gateway.FirstShard, g.cfg.Gateway.LastShard, g.cfg.Gateway.ClusterID, g.cfg.Gateway.Clusters),
			Hint: "check gateway.first_shard, last_shard, cluster_id, clusters and total_shards"}
	}
	// Split instances share the rest role's identify queue, so that together they identify no faster
	// than one process would. Both shard sets of a reshard share the limiter too.
	g.info = info
	g.limiter = identify.NewLocal(info.SessionStartLimit, g.identifyWindow, identifyMarginFor(g.identifyWindow), g.log)
	if g.cfg.Rest.URL != "" {
		g.limiter = identify.NewRemote(strings.TrimRight(g.cfg.Rest.URL, "/")+identifyQueuePath, g.cfg.Rest.Secret, g.log)
	}
	g.runCtx = ctx
	// Before the shards start: they report every dispatch to it.
	stopMembers, err := g.startMemberRequests(ctx)
	if err != nil {
		return err
	}
	defer func() { cancel(); stopMembers() }()
	gen, err := g.startGeneration(ctx, total, ids, false)
	if err != nil {
		return err
	}
	g.cur.Store(gen)
	g.log.Info("starting shards", zap.Int("total_shards", total), zap.Int("first", ids[0]), zap.Int("last", ids[len(ids)-1]),
		zap.Int("max_concurrency", info.SessionStartLimit.MaxConcurrency), zap.Int("identifies_remaining", info.SessionStartLimit.Remaining))
	if g.cfg.Gateway.Reshard && (g.cfg.Gateway.Clusters == 1 || g.split()) {
		g.reshardWG.Add(1)
		go func() { defer g.reshardWG.Done(); g.autoReshard(ctx) }()
	}
	if g.split() {
		g.reshardWG.Add(1)
		go func() { defer g.reshardWG.Done(); g.followCoordinator(ctx, coordinatorPoll) }()
	}
	// Stop the periodic check (and any reshard) before the deferred teardown above waits on anything:
	// on a fatal error nothing else cancels ctx.
	defer func() { cancel(); g.reshardWG.Wait() }()
	for {
		cur := g.cur.Load()
		select {
		case <-g.changed:
			continue
		case <-cur.stopped:
		}
		if g.cur.Load() != cur {
			continue // a reshard retired it
		}
		if cur.err != nil {
			var fe *shard.FatalError
			hint := "see the log lines of each shard"
			if errors.As(cur.err, &fe) {
				hint = fe.Hint
			}
			return &FatalError{Err: fmt.Errorf("no shard can run: %w", cur.err), Hint: hint}
		}
		return nil
	}
}

// fetchGatewayBot asks for /gateway/bot, through the rest role when rest.url is set. Network trouble is
// retried with backoff; a refused token is fatal. It returns nil, nil when ctx ends first.
func (g *gatewayRole) fetchGatewayBot(ctx context.Context) (*shard.GatewayBot, error) {
	apiURL, auth := g.cfg.Discord.APIURL, "Bot "+g.cfg.Discord.Token
	if g.cfg.Rest.URL != "" {
		apiURL, auth = g.cfg.Rest.URL+"/api", g.cfg.Rest.Secret
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

func (g *gatewayRole) onDispatch(f *filter.Filter, s *shard.Shard, ev *shard.Event) bool {
	g.received.Inc()
	keep, out := f.Keep(s.ID(), ev.Type, ev.Raw)
	// dd's member requests follow what the queue gets (a duplicate GUILD_CREATE the filter drops changes
	// nothing), but the answers to them count even if events.drop keeps them from the queue.
	if g.members != nil && (keep || ev.Type == "GUILD_MEMBERS_CHUNK" || ev.Type == "RATE_LIMITED") {
		cur := g.cur.Load()
		g.members.Observe(s.ID(), s.NumShards(), cur == nil || cur.filter == f, ev.Type, ev.Raw)
	}
	if !keep {
		g.filtered.Inc()
		return false
	}
	ev.Raw = out
	return true
}

func (g *gatewayRole) countReady() int {
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

// ---- the gateway's HTTP API (README, "The gateway role") ----

func (g *gatewayRole) routes() http.Handler {
	mux := http.NewServeMux()
	cmds := shardCommands{shards: g.shardSet, log: g.log}
	mux.HandleFunc("POST /{$}", cmds.handleDiscordeno)
	mux.HandleFunc("POST /shards/{id}/send", cmds.handleShardSend)
	mux.HandleFunc("GET /status", g.handleStatus)
	mux.HandleFunc("POST /reshard", g.handleReshard)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no gateway endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// ShardStatus is one shard in GET /status.
type ShardStatus struct {
	ID        int     `json:"id"`
	State     string  `json:"state"`
	RTTMillis float64 `json:"rtt_ms"`
	Guilds    int     `json:"guilds"`
	Loading   int     `json:"loading_guilds"`
	Resumable bool    `json:"resumable"`
	Queued    int     `json:"queued_events"`
}

// StatusSummary is /status at a glance: what a person or a probe of a 1,000-shard process reads first.
type StatusSummary struct {
	Shards  int            `json:"shards"`
	States  map[string]int `json:"states"` // shards by state
	Guilds  int            `json:"guilds"`
	Loading int            `json:"loading_guilds"`
	Queued  int            `json:"queued_events"`
	MaxRTT  float64        `json:"max_rtt_ms"`
}

// handleStatus answers every shard's line (the contract) and a summary; ?shards=false leaves the lines
// out, for probes of processes with many shards.
func (g *gatewayRole) handleStatus(w http.ResponseWriter, r *http.Request) {
	lines := r.URL.Query().Get("shards") != "false"
	out := map[string]any{"queue_depth": g.q.Depth()}
	g.reshardMu.Lock()
	out["reshard"] = g.reshardState
	g.reshardMu.Unlock()
	cur := g.cur.Load()
	if cur == nil {
		out["summary"], out["total_shards"] = StatusSummary{States: map[string]int{}}, 0
		if lines {
			out["shards"] = []ShardStatus{}
		}
		httpapi.WriteJSON(w, http.StatusOK, out)
		return
	}
	shards := g.shardStatuses(cur, g.q.ShardDepths())
	out["summary"], out["total_shards"] = summarize(shards), cur.total
	if lines {
		out["shards"] = shards
	}
	out["filtered_events"] = cur.filter.Dropped()
	if next := g.next.Load(); next != nil {
		nextShards := g.shardStatuses(next, nil)
		out["next_summary"], out["next_total_shards"] = summarize(nextShards), next.total
		if lines {
			out["next_shards"] = nextShards
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

func summarize(shards []ShardStatus) StatusSummary {
	s := StatusSummary{Shards: len(shards), States: map[string]int{}}
	for _, sh := range shards {
		s.States[sh.State]++
		s.Guilds += sh.Guilds
		s.Loading += sh.Loading
		s.Queued += sh.Queued
		s.MaxRTT = max(s.MaxRTT, sh.RTTMillis)
	}
	return s
}

func (g *gatewayRole) shardStatuses(gen *generation, depths map[int]int) []ShardStatus {
	out := make([]ShardStatus, 0, len(gen.ids))
	for _, s := range gen.mgr.Shards() {
		out = append(out, ShardStatus{ID: s.ID(), State: s.State().String(),
			RTTMillis: float64(s.RTT().Microseconds()) / 1000, Guilds: gen.filter.GuildCount(s.ID()),
			Loading: gen.filter.Loading(s.ID()), Resumable: s.Session().Resumable(), Queued: depths[s.ID()]})
	}
	return out
}

// startMemberRequests runs dd's own member requests (cache.request_members) on the live shard set, and
// returns what waits for them to stop once ctx ends.
func (g *gatewayRole) startMemberRequests(ctx context.Context) (stop func(), err error) {
	order := members.OrderArrival
	switch g.cfg.Cache.RequestMembers {
	case "all":
	case "small-first":
		order = members.OrderSmallFirst
	default:
		return func() {}, nil
	}
	window := g.memberWindow
	if window == 0 {
		window = 30 * time.Second // Discord's: one request for every member per guild per session per 30 s
	}
	g.members, err = members.New(members.Options{Order: order, PerWindow: g.cfg.Cache.RequestMembersPerMinute,
		SendWindow: 2 * window, Window: window, Store: g.st, Logger: g.log, Registerer: g.reg})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.members.Run(ctx, func() []members.Sender {
			cur := g.cur.Load()
			if cur == nil {
				return nil
			}
			shards := cur.mgr.Shards()
			out := make([]members.Sender, len(shards))
			for i, s := range shards {
				out[i] = s
			}
			return out
		})
	}()
	return func() { <-done }, nil
}

// shardSet is the running shard set, nil before the shards start.
func (g *gatewayRole) shardSet() ShardSet {
	if cur := g.cur.Load(); cur != nil {
		return cur.mgr
	}
	return nil
}
