// Package delivery sends the gateway's events from a queue consumer to the bot over HTTP, as the README
// ("The gateway role", Delivery) promises: POST to events.urls[shard % len] with the events secret, Discordeno's big-bot envelope
// {"shardId": N, "payload": <the gateway payload, byte for byte>} and a stable X-DD-Event-Id. Each
// shard's events arrive in order (one POST per shard in flight); a 2xx acknowledges them in the queue,
// anything else is retried with backoff for as long as dd runs, so delivery never drops an event. Across
// shards it follows the queue's ordering fences (queue.Queue.SetFence), as every consumer does.
//
// With BatchMax > 1 every POST carries a JSON array of up to BatchMax envelopes of one shard (an array
// even when it holds one event, so the bot parses one shape), with X-DD-Event-Ids listing their ids
// comma-separated in order and X-DD-Event-Id the first one's.
//
// It does not store anything (the queue does) and does not interpret payloads.
package delivery

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/queue"
)

// Options configure New. Zero values take the defaults given.
type Options struct {
	URLs   []string // events.urls: shard N goes to URLs[N % len(URLs)]
	Secret string   // events.secret: sent as Authorization; omitted when empty
	// BatchMax is the most events of one shard per POST. 1 (the default) sends one envelope per POST;
	// more sends a JSON array.
	BatchMax int
	// Timeout bounds one POST, response included. Default 10s.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts, doubling from one to the other with
	// jitter. Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// MaxInFlight bounds the POSTs in flight across all shards (and the idle connections kept per bot
	// host). Default 256.
	MaxInFlight int
	// Client overrides the HTTP client (its Timeout is ignored: Timeout applies).
	Client     *http.Client
	Logger     *zap.Logger
	Registerer prometheus.Registerer // nil registers nothing
}

const (
	defaultTimeout     = 10 * time.Second
	defaultMinBackoff  = 100 * time.Millisecond
	defaultMaxBackoff  = 10 * time.Second
	defaultMaxInFlight = 256
	failLogEvery       = 10 * time.Second
)

// Deliverer delivers one queue consumer's events to the bot.
type Deliverer struct {
	c       *queue.Consumer
	o       Options
	bot     *BotPoster
	log     *zap.Logger
	m       *metrics
	slots   chan struct{} // MaxInFlight tokens
	fails   failLog
	failing atomic.Int64 // shards retrying a POST
}

// New checks o and prepares a Deliverer for c; Run starts it.
func New(c *queue.Consumer, o Options) (*Deliverer, error) {
	if o.BatchMax <= 0 {
		o.BatchMax = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = defaultMinBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(defaultMaxBackoff, o.MinBackoff)
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = defaultMaxInFlight
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	bot, err := NewBotPoster(PosterOptions{URLs: o.URLs, Secret: o.Secret, Batch: o.BatchMax > 1, Timeout: o.Timeout,
		MaxIdle: o.MaxInFlight, Client: o.Client})
	if err != nil {
		return nil, fmt.Errorf("delivery: %w", err)
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	return &Deliverer{
		c: c, o: o, bot: bot, m: m,
		log:   o.Logger.Named("delivery").With(zap.String("consumer", c.Name())),
		slots: make(chan struct{}, o.MaxInFlight),
	}, nil
}

// Run delivers until ctx ends or the queue closes, and returns when every shard's worker has stopped. A
// shard's worker runs only while the shard has events to deliver (queue.Consumer.Serve). A POST in
// flight at that moment is abandoned without acknowledgment: its events are delivered again on the next
// start, with the same ids.
func (d *Deliverer) Run(ctx context.Context) error { return d.c.Serve(ctx, d.deliverBatch) }

// deliverBatch sends the shard's next events until the bot takes them; false when there are none.
func (d *Deliverer) deliverBatch(ctx context.Context, shard int) (more bool) {
	return nextBatch(ctx, d.c, shard, d.o.BatchMax, d.o.MaxBackoff, d.log, d.m.age, func(recs []queue.Record) bool {
		body, ids := d.encode(shard, recs)
		if !d.postUntilTaken(ctx, shard, body, ids) {
			return false
		}
		d.m.delivered.Add(float64(len(recs)))
		return true
	})
}

// postUntilTaken posts body until the bot answers 2xx (true) or ctx ends (false).
func (d *Deliverer) postUntilTaken(ctx context.Context, shard int, body []byte, ids []string) bool {
	target, shown := d.bot.URL(shard)
	for attempt := 0; ; attempt++ {
		reason, err := d.post(ctx, target, body, ids)
		if err == nil {
			if attempt > 0 {
				d.stopFailing(shard, shown, attempt+1, true)
			}
			return true
		}
		if ctx.Err() != nil {
			if attempt > 0 {
				d.stopFailing(shard, shown, attempt, false)
			}
			return false
		}
		if attempt == 0 {
			d.m.failingShards.Inc()
			d.failing.Add(1)
		}
		d.m.failed.WithLabelValues(reason).Inc()
		d.fails.note(d.log, shard, shown, attempt+1, err)
		if ctxsleep.Sleep(ctx, backoff(d.o.MinBackoff, d.o.MaxBackoff, attempt)) != nil {
			d.stopFailing(shard, shown, attempt+1, false)
			return false
		}
	}
}

// stopFailing notes a shard no longer retrying, and says so when the bot took its events and no shard
// is failing any more.
func (d *Deliverer) stopFailing(shard int, shownURL string, attempts int, taken bool) {
	d.m.failingShards.Dec()
	if d.failing.Add(-1) == 0 && taken {
		d.log.Info("delivering events to the bot works again", zap.Int("shard", shard), zap.String("url", shownURL),
			zap.Int("attempts", attempts))
	}
}

// encode builds the POST body: one envelope, or an array of them when batching.
func (d *Deliverer) encode(shard int, recs []queue.Record) (body []byte, ids []string) {
	size := 2
	for _, r := range recs {
		size += len(r.Payload) + 40
	}
	ids = make([]string, len(recs))
	body = AppendBody(make([]byte, 0, size), len(recs), d.o.BatchMax > 1, func(b []byte, i int) []byte {
		ids[i] = recs[i].ID
		return httpapi.AppendEnvelope(b, shard, recs[i].Payload)
	})
	return body, ids
}

// AppendEnvelope appends Discordeno's big-bot envelope {"shardId":N,"payload":<payload>} to b (see
// httpapi.AppendEnvelope, where every receiver's decoder lives beside it).
func AppendEnvelope(b []byte, shard int, payload []byte) []byte {
	return httpapi.AppendEnvelope(b, shard, payload)
}

// post sends one attempt. On failure reason is the metric label.
func (d *Deliverer) post(ctx context.Context, target string, body []byte, ids []string) (reason string, err error) {
	release, err := inFlight(ctx, d.slots, d.m.inFlight)
	if err != nil {
		return "canceled", err
	}
	defer release()
	start := time.Now()
	if reason, err = d.bot.Post(ctx, target, body, ids); err == nil {
		d.m.postSeconds.Observe(time.Since(start).Seconds())
	}
	return reason, err
}

// failLog rate-limits the warning about failed attempts: while the bot is down thousands of shards
// fail at once, and one line per 10 seconds says it.
type failLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (f *failLog) note(log *zap.Logger, shard int, shownURL string, attempt int, err error) {
	f.mu.Lock()
	if time.Since(f.last) < failLogEvery {
		f.suppressed++
		f.mu.Unlock()
		return
	}
	suppressed := f.suppressed
	f.last, f.suppressed = time.Now(), 0
	f.mu.Unlock()
	log.Warn("delivering events to the bot failed; retrying (events wait in the queue)",
		zap.Int("shard", shard), zap.String("url", shownURL), zap.Int("attempt", attempt),
		zap.Int("other_failures_since_last_log", suppressed), zap.Error(err))
}

type metrics struct {
	delivered   prometheus.Counter
	failed      *prometheus.CounterVec
	postSeconds prometheus.Histogram
	age         prometheus.Histogram
	inFlight    prometheus.Gauge
	// failingShards counts shards retrying a POST: all of them while the bot is down.
	failingShards prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dd_delivery_delivered_events_total", Help: "Events the bot acknowledged with a 2xx."}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dd_delivery_failed_attempts_total",
			Help: "POSTs to the bot that failed and will be retried, by reason (status_5xx, status_4xx, status_other, timeout, network).",
		}, []string{"reason"}),
		postSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dd_delivery_post_seconds",
			Help:    "Duration of successful POSTs to the bot.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9), // 0.5ms .. 33s
		}),
		age: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dd_delivery_latency_seconds",
			Help:    "Time from receiving an event from Discord to the bot acknowledging it (queueing and retries included).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 11), // 1ms .. 17min
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dd_delivery_in_flight_posts", Help: "POSTs to the bot in flight."}),
		failingShards: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dd_delivery_failing_shards", Help: "Shards whose events the bot has not taken on the last attempt."}),
	}
	return m, register(reg, m.delivered, m.failed, m.postSeconds, m.age, m.inFlight, m.failingShards)
}
