// Package roles is dd's thin wiring: it reads the config, builds the packages a role needs, connects them
// and serves their HTTP APIs. Logic lives in the packages (gateway, shard, identify, queue, delivery,
// cache, ratelimit, restproxy, store); a role only assembles them, so the same pieces can be embedded by
// another Go program without a role.
package roles

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/gateway"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/internal/httpapi"
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
// and prints Hint.
type FatalError struct {
	Err  error
	Hint string
}

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

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

	var servers []*roleServer
	add := func(r config.Role, l config.Listener, h http.Handler, ready func() error) {
		s := newRoleServer(r, l, h, reg, log)
		s.check = ready
		servers = append(servers, s)
	}
	// background work of the roles (shards, delivery, the identify queue), run once the listeners are up.
	var background []func(context.Context) error
	identifyWin := o.IdentifyWindow
	if identifyWin == 0 {
		identifyWin = identify.Window
	}
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
		add(config.RoleGateway, cfg.Gateway.Listener, cgw, cgw.ready)
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
		cr, err := newCache(cfg, st, reg, log)
		if err != nil {
			return err
		}
		add(config.RoleCache, cfg.Cache.Listener, cr, cr.ready)
		if cgw != nil {
			cgw.cacheApply = cr.cache.Apply // --role=all in cluster mode: the cache follows the stream
		}
		if gw != nil {
			cr.following = gw.cacheQueue
			// --role=all: the cache follows the gateway's queue in-process, stopped before the queue closes.
			gw.feeds = append(gw.feeds, func(ctx context.Context) error { return cr.cache.Follow(ctx, gw.cacheQueue) })
		}
	}

	addrs := map[config.Role]string{}
	for _, s := range servers {
		if err := s.listen(); err != nil {
			for _, started := range servers {
				started.close()
			}
			return err
		}
		addrs[s.role] = s.addr()
	}
	errc := make(chan error, len(servers)+len(background))
	for _, s := range servers {
		go func() { errc <- s.serve() }()
		s.ready.Store(true)
		log.Info("listening", zap.String("role", string(s.role)), zap.String("addr", s.addr()))
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
		s.ready.Store(false)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.http.Shutdown(sctx); err != nil {
				log.Warn("listener did not drain in time", zap.String("role", string(s.role)), zap.Error(err))
				s.close()
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

// roleServer is one role's HTTP listener: health, readiness and metrics without auth, the role's API
// behind it.
type roleServer struct {
	role     config.Role
	cfg      config.Listener
	http     *http.Server
	overflow *http.Server // answers the connections past cfg.MaxConnections (see limitListener)
	listener *limitListener
	ready    atomic.Bool
	// check, when set, says why the role is not ready though it listens (shards down, Discord
	// unreachable, the cache behind its queue). It must be cheap: probes call it every few seconds.
	check   func() error
	refused prometheus.Counter
	log     *zap.Logger
	lastLog atomic.Int64 // unix nanoseconds of the last "connections over the cap" line
}

func newRoleServer(role config.Role, l config.Listener, api http.Handler, reg *prometheus.Registry, log *zap.Logger) *roleServer {
	s := &roleServer{role: role, cfg: l, log: log.Named("http").With(zap.String("role", string(role)))}
	s.refused = prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_http_connections_refused_total",
		Help: "Connections past the listener's max_connections (answered 503 or closed).", ConstLabels: prometheus.Labels{"role": string(role)}})
	reg.MustRegister(s.refused)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", api)
	// The server's own errors (accept errors, handler panics, broken requests) at Warn: the logger's
	// level is info at least, and zap.NewStdLog would write them at Info.
	errLog, _ := zap.NewStdLogAt(s.log, zap.WarnLevel)
	s.http = &http.Server{
		Handler:           ownPathsThenAPI(mux, api),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}
	s.overflow = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			switch r.URL.Path {
			case "/healthz", "/readyz":
				mux.ServeHTTP(w, r)
			default:
				httpapi.WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many connections: %s.max_connections (%d) are open; try again", role, l.MaxConnections))
			}
		}),
		ReadHeaderTimeout: 2 * time.Second,
		IdleTimeout:       time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          errLog,
	}
	s.overflow.SetKeepAlivesEnabled(false)
	return s
}

func (s *roleServer) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		httpapi.WriteError(w, http.StatusServiceUnavailable, "not ready")
		return
	}
	if s.check != nil {
		if err := s.check(); err != nil {
			httpapi.WriteError(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"status": "ready"})
}

// overCap counts a connection past max_connections, and says so in the log at most every 10 s.
func (s *roleServer) overCap() {
	s.refused.Inc()
	now := time.Now().UnixNano()
	if last := s.lastLog.Load(); now-last > int64(10*time.Second) && s.lastLog.CompareAndSwap(last, now) {
		s.log.Warn("connections over the cap are refused with 503", zap.Int("max_connections", s.cfg.MaxConnections))
	}
}

// ownPathsThenAPI sends the role's own endpoints to mux and everything else straight to the role's API,
// so that the API sees request paths exactly as sent (ServeMux would clean "/a/../b" and redirect to it,
// turning a traversal attempt into a request).
func ownPathsThenAPI(mux, api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz", "/metrics":
			mux.ServeHTTP(w, r)
		default:
			api.ServeHTTP(w, withBodyDeadline(w, r))
		}
	})
}

func (s *roleServer) listen() error {
	l, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("%s.listen %s: %w", s.role, s.cfg.Listen, err)
	}
	s.listener = newLimitListener(l, max(s.cfg.MaxConnections, 1), s.overCap)
	return nil
}

func (s *roleServer) addr() string { return s.listener.Addr().String() }

func (s *roleServer) serve() error {
	go func() { _ = s.overflow.Serve(s.listener.overflow) }()
	defer s.overflow.Close()
	if err := s.http.Serve(s.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s listener: %w", s.role, err)
	}
	return nil
}

func (s *roleServer) close() {
	if s.listener != nil {
		_ = s.http.Close()
		_ = s.overflow.Close()
	}
}
