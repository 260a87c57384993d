package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/internal/rawjson"
	"github.com/ddhq/dd/queue"
)

// RedisOptions configure NewRedis. Zero values take the defaults given.
type RedisOptions struct {
	// URL is events.redis_url: redis:// or rediss:// (TLS), with user, password and database number as
	// go-redis reads them (redis://user:password@host:6379/2).
	URL string
	// Prefix goes before every stream name (events.redis_prefix), and before the key of the sink's
	// positions (Prefix + "dd:written").
	Prefix string
	// MaxLen trims each stream to about this many entries (XADD MAXLEN ~). Default 10,000,000.
	MaxLen int
	// BatchMax is the most events of one shard per round trip. Default 100.
	BatchMax int
	// Timeout bounds one round trip. Default 10s.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts, as in Options. Defaults 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// MaxInFlight bounds the round trips in flight across all shards, and so the connections to Redis.
	// Default 32.
	MaxInFlight int
	// PingEvery is how often Redis is checked while no events flow, so that readiness and the log follow
	// it. Default 1s.
	PingEvery  time.Duration
	Logger     *zap.Logger
	Registerer prometheus.Registerer // nil registers nothing
}

// RedisSink adds a queue consumer's events to Redis streams in the layout @discordjs/brokers reads
// (README, "Redis Streams"): each event is one entry of the stream named Prefix + its event name (t),
// with one field "data", the MessagePack of {"shardId":N,"payload":{...},"eventId":"<X-DD-Event-Id>"}.
// A bot subscribes with discord.js's PubSubRedisBroker.
//
// One worker per shard, running while the shard has events to add, sends them in order, up to BatchMax
// per round trip, and acknowledges them in the queue only once Redis has added them all; while Redis is
// unreachable the attempts are retried with backoff and the events wait in the queue. A round trip is
// one Lua script that adds the batch and records the shard's last added event id in the hash Prefix +
// "dd:written", skipping the events already recorded: a batch sent again (its answer was lost, or dd
// died between Redis's answer and the queue's acknowledgment) is not added twice.
type RedisSink struct {
	c      *queue.Consumer
	o      RedisOptions
	client *redis.Client
	shown  string // the URL as logged: its password masked
	posKey string
	log    *zap.Logger
	m      *redisMetrics
	slots  chan struct{}
	health redisHealth
}

const (
	defaultRedisBatchMax    = 100
	defaultRedisMaxInFlight = 32
	defaultRedisMaxLen      = 10_000_000
	defaultRedisMaxBackoff  = 5 * time.Second
	defaultRedisPingEvery   = time.Second
	// pingSource is the health source of the periodic check (shards are the others).
	pingSource = -1
)

var redisLoggerOnce sync.Once

// NewRedis checks o and prepares a RedisSink for c; Run starts it. It does not connect yet.
func NewRedis(c *queue.Consumer, o RedisOptions) (*RedisSink, error) {
	shown := maskURLPassword(o.URL)
	if u, err := url.Parse(o.URL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		// url.Parse's error quotes the URL whole, password included: it is not shown.
		return nil, fmt.Errorf("delivery: events.redis_url %s is not a redis:// or rediss:// URL with a host", shown)
	}
	ro, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("delivery: events.redis_url %s: %s", shown, strings.ReplaceAll(err.Error(), o.URL, shown))
	}
	if o.MaxLen <= 0 {
		o.MaxLen = defaultRedisMaxLen
	}
	if o.BatchMax <= 0 {
		o.BatchMax = defaultRedisBatchMax
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = defaultMinBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(defaultRedisMaxBackoff, o.MinBackoff)
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = defaultRedisMaxInFlight
	}
	if o.PingEvery <= 0 {
		o.PingEvery = defaultRedisPingEvery
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	// Every attempt is counted and retried here, with backoff; go-redis retrying inside an attempt would
	// hide failures from the log and the metrics.
	ro.MaxRetries = -1
	ro.PoolSize = o.MaxInFlight
	ro.PoolTimeout = o.Timeout
	ro.ContextTimeoutEnabled = true
	ro.DisableIdentity = true // CLIENT SETINFO: Redis before 7.2 refuses it
	log := o.Logger.Named("redis").With(zap.String("consumer", c.Name()))
	// go-redis prints plain lines on stderr, where dd's log is JSON; its own notes (a failed dial per
	// attempt) would repeat what the sink says once.
	redisLoggerOnce.Do(func() { redis.SetLogger(redisLogger{o.Logger.Named("go-redis")}) })
	m, err := newRedisMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	s := &RedisSink{c: c, o: o, client: redis.NewClient(ro), shown: shown, posKey: o.Prefix + "dd:written",
		log: log, m: m, slots: make(chan struct{}, o.MaxInFlight)}
	s.health.m = m
	return s, nil
}

// Run adds events to Redis until ctx ends or the queue closes, and returns when every shard's worker has
// stopped. A shard's worker runs only while the shard has events to add (queue.Consumer.Serve). A round
// trip in flight at that moment is abandoned: if Redis added its events they are not acknowledged in the
// queue, and the next start sends them again, which Redis skips.
func (s *RedisSink) Run(ctx context.Context) error {
	defer s.client.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { s.watch(ctx) })
	return s.c.Serve(ctx, s.deliverBatch)
}

// Err says why Redis does not take events (nil when it does): the last check could not reach it, or a
// shard's last attempt failed. The gateway's /readyz is 503 with it.
func (s *RedisSink) Err() error { return s.health.err() }

// watch pings Redis every PingEvery, so that an outage shows (and its end) while no event flows.
func (s *RedisSink) watch(ctx context.Context) {
	for {
		pctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
		err := s.client.Ping(pctx).Err()
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.health.fail(s, pingSource, classify(err), err)
		} else if s.health.ok(s, pingSource); s.health.err() == nil {
			s.m.up.Set(1)
		}
		if ctxsleep.Sleep(ctx, s.o.PingEvery) != nil {
			return
		}
	}
}

// deliverBatch adds the shard's next events until Redis has them; false when there are none.
func (s *RedisSink) deliverBatch(ctx context.Context, shard int) (more bool) {
	return nextBatch(ctx, s.c, shard, s.o.BatchMax, s.o.MaxBackoff, s.log, s.m.age, func(recs []queue.Record) bool {
		b := s.encode(shard, recs)
		return len(b.keys) == 1 || s.writeUntilTaken(ctx, shard, b) // nothing to write when no event could be encoded
	})
}

// redisBatch is one round trip's script arguments: KEYS are the positions hash and one stream per event;
// ARGV the shard, the queue's instance, MAXLEN, then each event's sequence and entry.
type redisBatch struct {
	keys []string
	args []any
	n    int
}

// writeScript adds a batch of one shard's events, skipping those at or before the shard's recorded
// position when it is this queue instance's, and records the last one added. An event that Redis
// refuses (a key of another type) stops the batch with the position at the event before it, so a retry
// neither loses nor repeats anything. It returns how many events it added.
var writeScript = redis.NewScript(`
local pos, shard, inst, maxlen = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local done
local last = redis.call('HGET', pos, shard)
if last then
  local i, s = string.match(last, '^(.*)%-(%d+)$')
  if i == inst then done = s end
end
local top
local added = 0
for k = 2, #KEYS do
  local seq = ARGV[2 * k]
  if not done or #seq > #done or (#seq == #done and seq > done) then
    local r = redis.pcall('XADD', KEYS[k], 'MAXLEN', '~', maxlen, '*', 'data', ARGV[2 * k + 1])
    if type(r) == 'table' and r.err then
      if top then redis.call('HSET', pos, shard, inst .. '-' .. top) end
      return redis.error_reply('XADD ' .. KEYS[k] .. ': ' .. r.err)
    end
    top = seq
    added = added + 1
  end
end
if top then redis.call('HSET', pos, shard, inst .. '-' .. top) end
return added
`)

// encode builds the script's arguments. An event whose payload is not JSON (never seen from Discord) is
// left out with an Error line: no retry could deliver it.
func (s *RedisSink) encode(shard int, recs []queue.Record) redisBatch {
	inst, _ := splitEventID(recs[0].ID)
	b := redisBatch{keys: make([]string, 1, 1+len(recs)), args: make([]any, 3, 3+2*len(recs))}
	b.keys[0] = s.posKey
	b.args[0], b.args[1], b.args[2] = strconv.Itoa(shard), inst, strconv.Itoa(s.o.MaxLen)
	for _, r := range recs {
		t, _ := rawjson.String(rawjson.Field(r.Payload, "t"))
		entry, err := appendRedisEntry(make([]byte, 0, len(r.Payload)+64), shard, r.Payload, r.ID)
		if err != nil || t == "" {
			if err == nil {
				err = errors.New("payload has no event name (t)")
			}
			s.m.failed.WithLabelValues("encode").Inc()
			s.log.Error("event not added to Redis: it cannot be encoded", zap.Int("shard", shard), zap.String("event_id", r.ID),
				zap.Error(err))
			continue
		}
		_, seq := splitEventID(r.ID)
		b.keys = append(b.keys, s.o.Prefix+t)
		b.args = append(b.args, seq, entry)
		b.n++
	}
	return b
}

// splitEventID splits an X-DD-Event-Id into the queue's instance and the event's sequence.
func splitEventID(id string) (instance, seq string) {
	i := strings.LastIndexByte(id, '-')
	if i < 0 {
		return "", id
	}
	return id[:i], id[i+1:]
}

// writeUntilTaken runs the batch until Redis has added it (true) or ctx ends (false).
func (s *RedisSink) writeUntilTaken(ctx context.Context, shard int, b redisBatch) bool {
	for attempt := 0; ; attempt++ {
		added, err := s.write(ctx, b)
		if err == nil {
			s.health.ok(s, shard)
			s.m.delivered.Add(float64(b.n))
			s.m.skipped.Add(float64(b.n - added))
			return true
		}
		if ctx.Err() != nil {
			s.health.ok(s, shard) // not a failure of Redis; the source must not stay failing
			return false
		}
		reason := classify(err)
		s.m.failed.WithLabelValues(reason).Inc()
		s.health.fail(s, shard, reason, err)
		if ctxsleep.Sleep(ctx, backoff(s.o.MinBackoff, s.o.MaxBackoff, attempt)) != nil {
			s.health.ok(s, shard)
			return false
		}
	}
}

func (s *RedisSink) write(ctx context.Context, b redisBatch) (added int, err error) {
	release, err := inFlight(ctx, s.slots, s.m.inFlight)
	if err != nil {
		return 0, err
	}
	defer release()
	wctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	start := time.Now()
	n, err := writeScript.Run(wctx, s.client, b.keys, b.args...).Int()
	if err != nil {
		return 0, err
	}
	s.m.writeSeconds.Observe(time.Since(start).Seconds())
	return n, nil
}

// classify names a failure for the metric and the log: timeout, network, or redis (an error reply such
// as LOADING, OOM, READONLY, NOAUTH, WRONGTYPE).
func classify(err error) string {
	var re redis.Error
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.As(err, &re) && !errors.As(err, &ne):
		return "redis"
	default:
		return "network"
	}
}

// redisHealth is whether Redis takes events, from the periodic check and each shard's last attempt. It
// logs the first failure and the recovery once each, not every retry: while Redis is down every shard
// retries.
type redisHealth struct {
	m        *redisMetrics
	n        atomic.Int32 // len(failing), read without the lock on every batch
	mu       sync.Mutex
	failing  map[int]error // by source: a shard, or pingSource
	since    time.Time
	attempts int
}

func (h *redisHealth) fail(s *RedisSink, source int, reason string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failing == nil {
		h.failing = map[int]error{}
	}
	if _, was := h.failing[source]; !was && source != pingSource {
		h.m.failingShards.Inc()
	}
	if len(h.failing) == 0 {
		h.since, h.attempts = time.Now(), 0
		h.m.up.Set(0)
		s.log.Warn("Redis does not take events; retrying until it does (events wait in the queue)",
			zap.String("redis_url", s.shown), zap.String("reason", reason), zap.Error(err))
	}
	h.attempts++
	h.failing[source] = err
	h.n.Store(int32(len(h.failing)))
}

func (h *redisHealth) ok(s *RedisSink, source int) {
	if h.n.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, was := h.failing[source]; !was {
		return
	}
	delete(h.failing, source)
	if source != pingSource {
		h.m.failingShards.Dec()
	}
	h.n.Store(int32(len(h.failing)))
	if len(h.failing) == 0 {
		h.m.up.Set(1)
		s.log.Info("Redis takes events again", zap.String("redis_url", s.shown),
			zap.Duration("down_for", time.Since(h.since).Round(time.Millisecond)), zap.Int("failed_attempts", h.attempts))
	}
}

func (h *redisHealth) err() error {
	if h.n.Load() == 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err, ok := h.failing[pingSource]; ok {
		return fmt.Errorf("Redis is unreachable: %w", err)
	}
	for source, err := range h.failing {
		return fmt.Errorf("Redis refused shard %d's events (%d shards failing): %w", source, len(h.failing), err)
	}
	return nil
}

// maskURLPassword hides a URL's password for the log; a string that is not a URL is hidden whole after
// its scheme, since its password cannot be told apart.
func maskURLPassword(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if scheme, _, ok := strings.Cut(s, "://"); ok {
			return scheme + "://xxxxx"
		}
		return "xxxxx"
	}
	return u.Redacted()
}

// redisLogger passes go-redis's own notes to dd's log at Debug.
type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("note", fmt.Sprintf(format, v...)))
	}
}

type redisMetrics struct {
	delivered     prometheus.Counter
	skipped       prometheus.Counter
	failed        *prometheus.CounterVec
	writeSeconds  prometheus.Histogram
	age           prometheus.Histogram
	inFlight      prometheus.Gauge
	failingShards prometheus.Gauge
	up            prometheus.Gauge
}

func newRedisMetrics(reg prometheus.Registerer) (*redisMetrics, error) {
	m := &redisMetrics{
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dd_delivery_redis_delivered_events_total", Help: "Events Redis has in their stream (XADD acknowledged, now or by an attempt whose answer was lost), acknowledged in the queue."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dd_delivery_redis_skipped_events_total",
			Help: "Of the delivered events, those sent to Redis again (after a crash or a lost answer) that it already had, and did not add twice."}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dd_delivery_redis_failed_attempts_total",
			Help: "Round trips to Redis that failed and will be retried, by reason (network, timeout, redis: an error reply); encode: events left out because their payload is not JSON.",
		}, []string{"reason"}),
		writeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dd_delivery_redis_write_seconds",
			Help:    "Duration of successful round trips to Redis (one shard's batch).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 0.1ms .. 26s
		}),
		age: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dd_delivery_redis_latency_seconds",
			Help:    "Time from receiving an event from Discord to Redis having it (queueing and retries included).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 11),
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dd_delivery_redis_in_flight_batches", Help: "Round trips to Redis in flight."}),
		failingShards: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dd_delivery_redis_failing_shards", Help: "Shards whose last round trip to Redis failed."}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dd_delivery_redis_up", Help: "1 while Redis takes events (its last check and every shard's last round trip succeeded)."}),
	}
	return m, register(reg, m.delivered, m.skipped, m.failed, m.writeSeconds, m.age, m.inFlight, m.failingShards, m.up)
}
