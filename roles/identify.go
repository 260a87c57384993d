package roles

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/reshard"
	"github.com/ddhq/dd/shard"
)

// identifyQueuePath is where the rest role serves the identify queue that split gateway instances share.
const identifyQueuePath = "/dd/v1/identify/"

// identifyService is the rest role's shared identify queue. It learns the bot's limits from /gateway/bot
// when a gateway first asks (a rest role that no split gateway uses makes no such call), and grants
// nothing before: until then it answers 503 and gateways wait.
type identifyService struct {
	cfg    *config.Config
	window time.Duration
	log    *zap.Logger
	queue  atomic.Pointer[identify.Queue]
	wanted chan struct{}
	once   sync.Once
	// observe, when set, hears how each /gateway/bot call went (the rest role's readiness).
	observe func(error)
	// maxConc is Discord's max_concurrency from the last /gateway/bot (0 before the first).
	maxConc atomic.Int64
}

// maxConcurrency is the bot's identify concurrency, 0 while not known yet.
func (s *identifyService) maxConcurrency() int { return int(s.maxConc.Load()) }

func newIdentifyService(cfg *config.Config, window time.Duration, log *zap.Logger) *identifyService {
	return &identifyService{cfg: cfg, window: window, log: log.Named("identify"), wanted: make(chan struct{})}
}

func (s *identifyService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := s.queue.Load()
	if q == nil {
		s.once.Do(func() { close(s.wanted) })
		httpapi.WriteError(w, http.StatusServiceUnavailable, "the identify queue is waiting for Discord's limits (GET /gateway/bot)")
		return
	}
	q.ServeHTTP(w, r)
}

// run fetches the limits, then refreshes the daily budget every few minutes.
func (s *identifyService) run(ctx context.Context) error {
	select {
	case <-s.wanted:
	case <-ctx.Done():
		return nil
	}
	client := &http.Client{Timeout: 15 * time.Second}
	backoff := time.Second
	for {
		info, err := shard.FetchGatewayBot(ctx, client, s.cfg.Discord.APIURL, s.cfg.Discord.APIVersion, "Bot "+s.cfg.Discord.Token)
		if ctx.Err() != nil {
			return nil
		}
		var he *shard.HTTPError
		if errors.As(err, &he) && he.Status == http.StatusUnauthorized {
			return &FatalError{Err: err, Hint: "Discord refused the token: set discord.token to the bot token from the developer portal"}
		}
		wait := 5 * time.Minute
		if s.observe != nil {
			s.observe(err)
		}
		if err == nil {
			s.maxConc.Store(int64(info.SessionStartLimit.MaxConcurrency))
		}
		switch {
		case err != nil:
			s.log.Warn("cannot read the identify limits yet; retrying", zap.Error(err), zap.Duration("after", backoff))
			wait, backoff = backoff, min(2*backoff, time.Minute)
		case s.queue.Load() == nil:
			l := identify.NewLocal(info.SessionStartLimit, s.window, identifyMarginFor(s.window), s.log)
			s.queue.Store(identify.NewQueue(l, s.cfg.Rest.Secret, 0, s.log))
			s.log.Info("identify queue open", zap.Int("max_concurrency", info.SessionStartLimit.MaxConcurrency),
				zap.Int("remaining", info.SessionStartLimit.Remaining))
		default:
			s.queue.Load().Limiter().Update(info.SessionStartLimit)
		}
		if ctxsleep.Sleep(ctx, wait) != nil {
			return nil
		}
	}
}

// withIdentifyQueue serves the identify queue beside the rest role's API. The caller authenticates first:
// the queue's first request makes the rest role ask Discord for /gateway/bot, which no stranger may cause.
func withIdentifyQueue(secret string, q http.Handler, api http.Handler) http.Handler {
	q = requireSecret(secret, q)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, identifyQueuePath) {
			q.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// shardCount is len(shardRange(g, total)), computed without building the list.
func shardCount(g config.Gateway, total int) int {
	if g.Clusters > 1 {
		if g.ClusterID >= total {
			return 0
		}
		return (total - g.ClusterID + g.Clusters - 1) / g.Clusters
	}
	first, last := g.FirstShard, g.LastShard
	if last < 0 || last >= total {
		last = total - 1
	}
	return max(last-first+1, 0)
}

// shardRange is this instance's shards of total: with gateway.clusters, the shards whose id modulo
// clusters is cluster_id (so that a reshard to a multiple of the count keeps every guild in its process);
// else first_shard..last_shard.
func shardRange(g config.Gateway, total int) []int {
	if total > reshard.MaxShards {
		return nil // never sized by an unchecked number; callers vet total with reshard.CheckCount
	}
	var ids []int
	if g.Clusters > 1 {
		for id := g.ClusterID; id < total; id += g.Clusters {
			ids = append(ids, id)
		}
		return ids
	}
	first, last := g.FirstShard, g.LastShard
	if last < 0 || last >= total {
		last = total - 1
	}
	for id := first; id <= last; id++ {
		ids = append(ids, id)
	}
	return ids
}
