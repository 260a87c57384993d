// Package roles is dd's thin wiring: it reads the config, builds the packages a role needs, connects them
// and serves their HTTP APIs. Logic lives in the packages (gateway, shard, identify, queue, delivery,
// cache, ratelimit, restproxy, store); a role only assembles them, so the same pieces can be embedded by
// another Go program without a role.
package roles

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/gateway"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/store"
)

// Options for Run.
type Options struct {
	Config  *config.Config
	Role    config.Role
	Logger  *zap.Logger
	Version string
	// Ready, when set, receives the listeners' addresses once every listener accepts connections
	// (tests listen on port 0 and need to know where).
	Ready func(addrs map[config.Role]string)
	// IdentifyWindow overrides Discord's 5 s identify window, for tests against a simulator configured
	// with a shorter one. Zero means Discord's.
	IdentifyWindow time.Duration
	// MemberRequestWindow overrides Discord's 30 s limit on requests for every member of a guild, for
	// tests against a simulator configured with a shorter one; dd's own requests are paced per twice it
	// (Discord's 60 s send window). Zero means Discord's.
	MemberRequestWindow time.Duration
}

// FatalError is an error after which retrying cannot help (Discord refused the token, say). main exits 1
// and prints Hint. It is the pipeline's (a Gateway's Run returns it), so that every role says it alike.
type FatalError = gateway.FatalError

// Run starts the role's parts and blocks until ctx is cancelled, then shuts down gracefully within
// shutdown_timeout. It returns nil after a clean shutdown.
func Run(ctx context.Context, o Options) error {
	cfg, log := o.Config, o.Logger
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dd_build_info", Help: "dd's version and role."},
		[]string{"version", "role"})
	buildInfo.WithLabelValues(o.Version, string(o.Role)).Set(1)
	reg.MustRegister(buildInfo)

	var st *store.Store
	if o.Role.Runs(config.RoleGateway) || o.Role.Runs(config.RoleCache) {
		var err error
		st, err = store.Open(store.Options{Path: cfg.Store.Path, SyncWrites: cfg.Store.SyncWrites,
			MemoryLimit: cfg.Store.MemoryLimit, Logger: log,
			Registerer: reg})
		if err != nil {
			return err
		}
		defer func() {
			if err := st.Close(); err != nil {
				log.Error("closing store", zap.Error(err))
			}
		}()
	}

	var servers []roleServer
	add := func(r config.Role, l config.Listener, h http.Handler, ready func() error) {
		servers = append(servers, roleServer{r, newRoleServer(r, l, h, reg, log, ready)})
	}
	// background work of the roles (shards, delivery, the identify queue), run once the listeners are up.
	var background []func(context.Context) error
	identifyWin := o.IdentifyWindow // 0: Discord's, in every package that takes it
	if o.Role.Runs(config.RoleRest) {
		rest, err := newRest(cfg, reg, log)
		if err != nil {
			return err
		}
		defer rest.Close()
		ids := identify.NewServer(cfg.Rest.Secret, identifyWin, identifyLimits(cfg), rest.ObserveUpstream, log.Named("identify"))
		coord := &gateway.CoordinatorServer{Secret: cfg.Rest.Secret, MaxConcurrency: ids.MaxConcurrency, Logger: log.Named("reshard-coordinator")}
		add(config.RoleRest, cfg.Rest.Listener, restRoutes(cfg.Rest.Secret, ids, coord, rest), rest.Ready)
		background = append(background, ids.Run, func(ctx context.Context) error { rest.WatchUpstream(ctx); return nil })
	}
	var gw *gatewayRole
	var cgw *clusterGateway // cluster mode (cluster.nats_url): the gateway of roles/cluster_gateway.go
	if o.Role.Runs(config.RoleGateway) && cfg.Cluster.NATSURL != "" {
		var err error
		if cgw, err = newClusterGateway(cfg, reg, log, identifyWin); err != nil {
			return err
		}
		add(config.RoleGateway, cfg.Gateway.Listener, cgw, cgw.Ready)
		background = append(background, cgw.run)
	} else if o.Role.Runs(config.RoleGateway) {
		var err error
		gw, err = newGateway(cfg, st, reg, log, identifyWin, o.Role.Runs(config.RoleCache))
		if err != nil {
			return err
		}
		gw.memberWindow = o.MemberRequestWindow
		add(config.RoleGateway, cfg.Gateway.Listener, gw, gw.ready)
		background = append(background, gw.run)
	}
	if o.Role.Runs(config.RoleCache) {
		var following *queue.Consumer
		if gw != nil {
			following = gw.cacheQueue
		}
		c, api, err := newCache(cfg, st, following, reg, log)
		if err != nil {
			return err
		}
		add(config.RoleCache, cfg.Cache.Listener, requireSecret(cfg.Cache.Secret, api), api.Ready)
		if cgw != nil {
			cgw.FollowStream(func(p [][]byte) error { return c.Apply(p...) }) // --role=all in cluster mode: the cache follows the stream
		} else if cfg.Cluster.NATSURL != "" {
			background = append(background, clusterCacheFollower(cfg, c.Apply, log)) // --role=cache: its own consumer
		}
		if gw != nil {
			// --role=all: the cache follows the gateway's queue in-process, stopped before the queue closes.
			gw.feeds = append(gw.feeds, func(ctx context.Context) error { return c.Follow(ctx, gw.cacheQueue) })
		}
	}

	addrs := map[config.Role]string{}
	for _, s := range servers {
		if err := s.Listen(); err != nil {
			for _, started := range servers {
				started.Close()
			}
			return err
		}
		addrs[s.role] = s.Addr()
	}
	errc := make(chan error, len(servers)+len(background))
	for _, s := range servers {
		go func() { errc <- s.Serve() }()
		s.SetReady(true)
		log.Info("listening", zap.String("role", string(s.role)), zap.String("addr", s.Addr()))
	}
	if o.Ready != nil {
		o.Ready(addrs)
	}
	bgCtx, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	var bg sync.WaitGroup
	for _, run := range background {
		bg.Add(1)
		go func() {
			defer bg.Done()
			if err := run(bgCtx); err != nil {
				errc <- err
			}
		}()
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	log.Info("shutting down", zap.Duration("timeout", cfg.ShutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range servers {
		s.SetReady(false)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Shutdown(sctx); err != nil {
				log.Warn("listener did not drain in time", zap.String("role", string(s.role)), zap.Error(err))
				s.Close()
			}
		}()
	}
	wg.Wait()
	// Then the background work: shards close resumably and persist their last events, delivery stops,
	// the queue is flushed. The store closes after (deferred above).
	stopBackground()
	bgDone := make(chan struct{})
	go func() { bg.Wait(); close(bgDone) }()
	select {
	case <-bgDone:
	case <-sctx.Done():
		log.Error("background work did not stop within shutdown_timeout; closing the store anyway")
	}
	return runErr
}

// The limits every role's listener puts on a client (README, "Every role"); variables so that tests can
// shorten them.
var (
	// idleTimeout closes a keep-alive connection that sent no new request for this long, so that idle
	// clients do not hold connection slots.
	idleTimeout = 120 * time.Second
	// A request body must arrive at bodyMinRate on average after the first bodyGrace.
	bodyGrace   = 10 * time.Second
	bodyMinRate = int64(16 << 10) // bytes per second
)

// roleServer is one role's listener: health, readiness and metrics without auth, the role's API behind.
type roleServer struct {
	role config.Role
	*httpapi.Server
}

func newRoleServer(role config.Role, l config.Listener, api http.Handler, reg *prometheus.Registry, log *zap.Logger, ready func() error) *httpapi.Server {
	return httpapi.NewServer(httpapi.ServerOptions{Name: string(role), Listen: l.Listen, MaxConnections: l.MaxConnections,
		API: api, Ready: ready, Registry: reg, Logger: log, IdleTimeout: idleTimeout, BodyGrace: bodyGrace, BodyMinRate: bodyMinRate})
}
