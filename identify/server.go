package identify

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/internal/httpapi"
)

// QueuePath is where dd's rest role serves the shared identify queue (a Server) that split gateway
// processes reach with a Remote.
const QueuePath = "/dd/v1/identify/"

// Server is the shared identify queue as a process serves it: a Queue whose limits come from
// /gateway/bot, learnt when a gateway first asks (a server no gateway uses makes no such call). It
// grants nothing before: until then it answers 503 and gateways wait. Run refreshes the daily budget
// every few minutes.
type Server struct {
	secret string
	window time.Duration
	fetch  func(ctx context.Context) (limit SessionStartLimit, retry bool, err error)
	log    *zap.Logger
	queue  atomic.Pointer[Queue]
	wanted chan struct{}
	once   sync.Once
	// observe, when set, hears how each /gateway/bot call went.
	observe func(error)
	maxConc atomic.Int64 // Discord's max_concurrency from the last /gateway/bot (0 before the first)
}

// NewServer serves a queue paced by window (0: Window) to callers with secret. fetch reads the bot's
// limits from /gateway/bot; when it says retry is pointless (Discord refused the token), Run returns its
// error. observe, when set, hears how each call went.
func NewServer(secret string, window time.Duration, fetch func(ctx context.Context) (SessionStartLimit, bool, error),
	observe func(error), log *zap.Logger) *Server {
	if window == 0 {
		window = Window
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{secret: secret, window: window, fetch: fetch, observe: observe, log: log, wanted: make(chan struct{})}
}

// MaxConcurrency is the bot's identify concurrency, 0 while not known yet.
func (s *Server) MaxConcurrency() int { return int(s.maxConc.Load()) }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := s.queue.Load()
	if q == nil {
		s.once.Do(func() { close(s.wanted) })
		httpapi.WriteError(w, http.StatusServiceUnavailable, "the identify queue is waiting for Discord's limits (GET /gateway/bot)")
		return
	}
	q.ServeHTTP(w, r)
}

// Run fetches the limits once a gateway asks, then refreshes the daily budget every few minutes, until
// ctx ends (nil) or fetch fails for good (its error).
func (s *Server) Run(ctx context.Context) error {
	select {
	case <-s.wanted:
	case <-ctx.Done():
		return nil
	}
	backoff := time.Second
	for {
		limit, retry, err := s.fetch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !retry {
			return err
		}
		wait := 5 * time.Minute
		if s.observe != nil {
			s.observe(err)
		}
		if err == nil {
			s.maxConc.Store(int64(limit.MaxConcurrency))
		}
		switch {
		case err != nil:
			s.log.Warn("cannot read the identify limits yet; retrying", zap.Error(err), zap.Duration("after", backoff))
			wait, backoff = backoff, min(2*backoff, time.Minute)
		case s.queue.Load() == nil:
			l := NewLocal(limit, s.window, Margin(s.window), s.log)
			s.queue.Store(NewQueue(l, s.secret, 0, s.log))
			s.log.Info("identify queue open", zap.Int("max_concurrency", limit.MaxConcurrency), zap.Int("remaining", limit.Remaining))
		default:
			s.queue.Load().Limiter().Update(limit)
		}
		if ctxsleep.Sleep(ctx, wait) != nil {
			return nil
		}
	}
}
