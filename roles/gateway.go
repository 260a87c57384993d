package roles

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/delivery"
	"github.com/ddhq/dd/gateway"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/internal/members"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/store"
)

// coordinatorPoll is how often a split gateway process asks the rest role for the deployment's shard count.
var coordinatorPoll = 2 * time.Second

// gatewayRole wires the pipeline (package gateway: shards -> filter -> queue) to delivery, the cache's
// feed and dd's own member requests, and serves the gateway's HTTP API.
type gatewayRole struct {
	cfg   *config.Config
	log   *zap.Logger
	st    *store.Store
	q     *queue.Queue
	gw    *gateway.Gateway
	deliv interface{ Run(context.Context) error } // to the bot: HTTP (delivery.Deliverer) or Redis (delivery.RedisSink)
	reg   prometheus.Registerer
	api   http.Handler

	// cacheQueue is the cache's own consumer of the queue (nil when no cache runs); feeds are the queue's
	// readers besides the bot's delivery (the in-process cache, or delivery to the cache role at
	// cache.url), started and stopped with it.
	cacheQueue *queue.Consumer
	feeds      []func(context.Context) error

	storeHealth storeHealth
	// sinkErr says why the bot's sink does not take events (nil when it does); nil for HTTP, whose
	// failures are the bot's.
	sinkErr func() error

	// members sends dd's own member requests (cache.request_members; nil when off). memberWindow
	// overrides Discord's 30 s per-guild window (tests); dd's pace is scaled with it.
	members      *members.Requester
	memberWindow time.Duration
}

func newGateway(cfg *config.Config, st *store.Store, reg prometheus.Registerer, log *zap.Logger, identifyWin time.Duration, withCache bool) (*gatewayRole, error) {
	log = log.Named("gateway")
	q, err := queue.Open(st, queue.Options{MaxEvents: cfg.Events.MaxQueueEvents, Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	g := &gatewayRole{cfg: cfg, log: log, st: st, q: q, reg: reg}
	if err := g.buildDelivery(withCache); err != nil {
		q.Close()
		return nil, err
	}
	gc := cfg.Gateway
	split := gc.Clusters > 1 && cfg.Rest.URL != ""
	apiURL, auth := gatewayBotAPI(cfg)
	var limiter identify.Limiter // nil: a Local one from /gateway/bot's limits
	var coord gateway.Coordinator
	if cfg.Rest.URL != "" {
		// Split instances share the rest role's identify queue, so that together they identify no
		// faster than one process would. Both shard sets of a reshard share the limiter too.
		limiter = identify.NewRemote(strings.TrimRight(cfg.Rest.URL, "/")+identify.QueuePath, cfg.Rest.Secret, log)
	}
	if split {
		coord = gateway.CoordinatorClient{URL: cfg.Rest.URL, Secret: cfg.Rest.Secret}
	}
	// With gateway.clusters, the shards whose id modulo clusters is cluster_id; else first..last.
	shards := gateway.ShardRange(gc.FirstShard, gc.LastShard)
	if gc.Clusters > 1 {
		shards = gateway.ShardSplit(gc.ClusterID, gc.Clusters)
	}
	g.gw, err = gateway.New(gateway.Config{
		Shard: shard.Config{Token: cfg.Discord.Token, Intents: int(gc.Intents), APIVersion: cfg.Discord.APIVersion,
			Compress: gc.Compress, LargeThreshold: gc.LargeThreshold},
		TotalShards: gc.TotalShards, Shards: shards, Processes: gc.Clusters,
		Queue: q, Store: st, Sessions: shard.NewSessionStore(st), GatewayBot: gateway.GatewayBotFrom(apiURL, cfg.Discord.APIVersion, auth, log),
		Identify: limiter, IdentifyWindow: identifyWin,
		Filter: gateway.Filter{Drop: cfg.Events.Drop, DedupMessageUpdates: gc.DedupMessageUpdates,
			DropKnownGuildCreates: gc.DropKnownGuildCreates, LoadingGuildEvent: gc.LoadingGuildEvent},
		Reshard: gateway.ReshardConfig{Auto: gc.Reshard && (gc.Clusters == 1 || split), CheckInterval: gc.ReshardCheckInterval,
			Percentage: gc.ReshardPercentage, IdentifyReserve: gc.ReshardIdentifyReserve, Coordinator: coord, CoordinatorPoll: coordinatorPoll},
		Observe: g.observe, Appended: g.storeHealth.observe, Registerer: reg, Logger: log,
	})
	if err != nil {
		q.Close()
		return nil, err
	}
	g.api = requireSecret(cfg.Gateway.Secret, withProfiles(gateway.NewHandler(g.gw, q)))
	return g, nil
}

// buildDelivery builds the queue's readers: the bot's delivery and, when a cache runs, the cache's.
func (g *gatewayRole) buildDelivery(withCache bool) error {
	cfg, log := g.cfg, g.log
	bot, err := g.q.Consumer("bot")
	if err != nil {
		return err
	}
	// The cache reads the same queue from its own position, registered before delivery can acknowledge
	// anything so that no event is deleted before the cache has it: in-process (withCache, --role=all)
	// or posted to the cache role at cache.url.
	if withCache || cfg.Cache.URL != "" {
		if g.cacheQueue, err = g.q.Consumer("cache"); err != nil {
			return err
		}
	}
	if !withCache && cfg.Cache.URL != "" {
		feed, err := delivery.New(g.cacheQueue, delivery.Options{URLs: []string{strings.TrimSuffix(cfg.Cache.URL, "/") + "/events"},
			Secret: cfg.Cache.Secret, BatchMax: cfg.Cache.BatchMax, Logger: log.Named("cache-feed")})
		if err != nil {
			return err
		}
		g.feeds = append(g.feeds, feed.Run)
	}
	if cfg.Events.Sink == "redis" {
		rs, err := delivery.NewRedis(bot, delivery.RedisOptions{URL: cfg.Events.RedisURL, Prefix: cfg.Events.RedisPrefix,
			MaxLen: cfg.Events.MaxQueueEvents, Logger: log.Named("delivery"), Registerer: g.reg})
		if err != nil {
			return err
		}
		g.deliv, g.sinkErr = rs, rs.Err
		return nil
	}
	g.deliv, err = delivery.New(bot, delivery.Options{URLs: cfg.Events.URLs, Secret: cfg.Events.Secret,
		BatchMax: cfg.Events.BatchMax, Logger: log.Named("delivery"), Registerer: g.reg})
	return err
}

func (g *gatewayRole) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.api.ServeHTTP(w, r) }

// run runs delivery and the pipeline until ctx ends, then closes the shards resumably and flushes the
// queue. A *FatalError means no shard can run.
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
	// Before the shards start: they report every dispatch to it.
	stopMembers, err := g.startMemberRequests(ctx)
	if err != nil {
		return err
	}
	defer func() { cancel(); stopMembers() }()
	return g.gw.Run(ctx)
}

// observe hands dd's member requests what they follow: what the queue gets (a duplicate GUILD_CREATE
// the filter drops changes nothing), and the answers to them even if events.drop keeps them from the
// queue.
func (g *gatewayRole) observe(s *shard.Shard, ev *shard.Event, kept, live bool) {
	if g.members != nil && (kept || ev.Type == "GUILD_MEMBERS_CHUNK" || ev.Type == "RATE_LIMITED") {
		g.members.Observe(s.ID(), s.NumShards(), live, ev.Type, ev.Raw)
	}
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
			cur := g.gw.Current()
			if cur == nil {
				return nil
			}
			shards := cur.Manager().Shards()
			out := make([]members.Sender, len(shards))
			for i, s := range shards {
				out[i] = s
			}
			return out
		})
	}()
	return func() { <-done }, nil
}
