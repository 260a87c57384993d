package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// Name is the role the server serves: a label of its metric, a field of its log lines, and the
	// config section named in its errors ("<name>.listen", "<name>.max_connections").
	Name           string
	Listen         string
	MaxConnections int
	// API is the role's own handler; it sees request paths exactly as sent.
	API http.Handler
	// Ready, when set, says why the role is not ready though it listens (shards down, Discord
	// unreachable, the cache behind its queue). It must be cheap: probes call it every few seconds.
	Ready    func() error
	Registry *prometheus.Registry // served on /metrics; gets dd_http_connections_refused_total
	Logger   *zap.Logger
	// IdleTimeout closes a keep-alive connection that sent no new request for this long (0: 120 s).
	IdleTimeout time.Duration
	// A request body must arrive at BodyMinRate bytes a second on average after the first BodyGrace
	// (0: 16 KiB/s after 10 s), see withBodyDeadline.
	BodyGrace   time.Duration
	BodyMinRate int64
}

// Server is one role's HTTP listener: /healthz, /readyz and /metrics without auth, the role's API
// behind them, at most MaxConnections connections at once (the rest are answered 503 by a small
// overflow server, see limitListener), and request bodies that must keep arriving (README, "Every
// role").
type Server struct {
	o        ServerOptions
	http     *http.Server
	overflow *http.Server // answers the connections past MaxConnections
	listener *limitListener
	ready    atomic.Bool
	refused  prometheus.Counter
	log      *zap.Logger
	lastLog  atomic.Int64 // unix nanoseconds of the last "connections over the cap" line
}

// NewServer builds a server; Listen and Serve start it.
func NewServer(o ServerOptions) *Server {
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 120 * time.Second
	}
	if o.BodyGrace == 0 {
		o.BodyGrace = 10 * time.Second
	}
	if o.BodyMinRate == 0 {
		o.BodyMinRate = 16 << 10
	}
	s := &Server{o: o, log: o.Logger.Named("http").With(zap.String("role", o.Name))}
	s.refused = prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_http_connections_refused_total",
		Help: "Connections past the listener's max_connections (answered 503 or closed).", ConstLabels: prometheus.Labels{"role": o.Name}})
	o.Registry.MustRegister(s.refused)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{}))
	// The server's own errors (accept errors, handler panics, broken requests) at Warn: the logger's
	// level is info at least, and zap.NewStdLog would write them at Info.
	errLog, _ := zap.NewStdLogAt(s.log, zap.WarnLevel)
	s.http = &http.Server{
		Handler:           s.ownPathsThenAPI(mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       o.IdleTimeout,
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
				WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many connections: %s.max_connections (%d) are open; try again", o.Name, o.MaxConnections))
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

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		WriteError(w, http.StatusServiceUnavailable, "not ready")
		return
	}
	if s.o.Ready != nil {
		if err := s.o.Ready(); err != nil {
			WriteError(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
	}
	WriteJSON(w, http.StatusOK, map[string]any{"status": "ready"})
}

// SetReady says whether /readyz may answer ready (besides Ready): not before the server serves, nor
// once it shuts down.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// overCap counts a connection past max_connections, and says so in the log at most every 10 s.
func (s *Server) overCap() {
	s.refused.Inc()
	now := time.Now().UnixNano()
	if last := s.lastLog.Load(); now-last > int64(10*time.Second) && s.lastLog.CompareAndSwap(last, now) {
		s.log.Warn("connections over the cap are refused with 503", zap.Int("max_connections", s.o.MaxConnections))
	}
}

// ownPathsThenAPI sends the server's own endpoints to mux and everything else straight to the role's
// API, so that the API sees request paths exactly as sent (ServeMux would clean "/a/../b" and redirect
// to it, turning a traversal attempt into a request).
func (s *Server) ownPathsThenAPI(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz", "/metrics":
			mux.ServeHTTP(w, r)
		default:
			s.o.API.ServeHTTP(w, withBodyDeadline(w, r, s.o.BodyGrace, s.o.BodyMinRate))
		}
	})
}

// Listen opens the listener.
func (s *Server) Listen() error {
	l, err := net.Listen("tcp", s.o.Listen)
	if err != nil {
		return fmt.Errorf("%s.listen %s: %w", s.o.Name, s.o.Listen, err)
	}
	s.listener = newLimitListener(l, max(s.o.MaxConnections, 1), s.overCap)
	return nil
}

// Addr is where the server listens, once Listen returned.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Serve serves until Shutdown or Close.
func (s *Server) Serve() error {
	go func() { _ = s.overflow.Serve(s.listener.overflow) }()
	defer s.overflow.Close()
	if err := s.http.Serve(s.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s listener: %w", s.o.Name, err)
	}
	return nil
}

// Shutdown stops taking connections and waits for the requests in progress until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// Close closes the listener and every connection at once.
func (s *Server) Close() {
	if s.listener != nil {
		_ = s.http.Close()
		_ = s.overflow.Close()
	}
}
