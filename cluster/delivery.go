package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/delivery"
	"github.com/ddhq/dd/internal/ctxsleep"
)

// Delivery to events.urls in cluster mode (PRODUCT.md §4 and §7): the bot gets what it gets from one
// machine, POST to urls[shard % len] with the events secret, body the envelope {"shardId":N,"payload":...}
// as it is in the stream (or, with BatchMax > 1, a JSON array of up to BatchMax envelopes of one shard,
// with X-DD-Event-Ids listing their ids), X-DD-Event-Id the event's Nats-Msg-Id, acknowledged only after
// the bot's 2xx, retried with backoff for as long as it takes.
//
// How one shard's events stay in order with several processes able to deliver: each shard has one
// durable pull consumer of the stream, "dd-delivery-<shard>" (ConsumerName), filtered on the shard's
// subjects, with AckPolicy All and MaxAckPending = BatchMax. The server then lets out at most one
// batch of the shard at a time, to whichever process pulls first; the next batch only after the last
// event of this one is acknowledged (which acknowledges the batch), or after AckWait when its holder went
// silent, when the server gives the same events again, first. So two processes never deliver different
// batches of one shard at once, whoever pulls: the order is the server's, not a lease's. The holder of a
// batch tells the server it is still at it (InProgress, every AckWait/4) while the bot keeps failing, and
// gives the batch up (without acknowledging it) when it could not have told the server for AckWait/2,
// so that the server's redelivery to another process does not race a late POST of its own.
//
// Which process pulls a shard's consumer: the one that runs the shard (ShardDelivery is started and
// stopped with it), so that a deployment pulls each shard once and a dead process's shards are
// delivered by their new owners. A handover may leave the old owner's last pull request open a moment:
// what the server sends to it then is given back at once (Nak) and goes to the new owner.
//
// Redelivery happens under the same X-DD-Event-Id (the Nats-Msg-Id), so a bot that remembers ids drops
// copies. One case of order remains (see the package doc): an event the stream stored after later
// ones of its session (a stream leader lost between two publishes of one batch, on a NATS cluster) is
// delivered where the stream holds it, after them.

// DeliveryConfig configures a Delivery. URLs is required.
type DeliveryConfig struct {
	URLs   []string // events.urls: shard N goes to URLs[N % len(URLs)]
	Secret string   // events.secret, sent as Authorization; omitted when empty
	// BatchMax is the most events of one shard per POST (events.batch_max). 1 (default) sends one
	// envelope per POST, more a JSON array (even of one).
	BatchMax int
	// AckWait is how long the server waits for a batch's holder before it gives the batch to another
	// process. Default 10 s (cluster.lease_ttl is the natural value: how long a silent process is
	// presumed alive).
	AckWait time.Duration
	// Timeout bounds one POST. Default 10 s.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts. Defaults 100 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration
	// PullWait is how long one pull waits for an event before it is sent again. Default 5 s.
	PullWait time.Duration
	Client   *http.Client
	// Fence, when set, says whether a batch of shard's events whose last stream sequence is seq may go
	// to the bot now (a reshard's switch: a new shard's events wait until the old shards that shared its
	// guilds were delivered through their last event). Asked again every 50 ms, the batch held meanwhile.
	Fence      func(ctx context.Context, shard int, seq uint64) (bool, error)
	Log        *zap.Logger
	Registerer prometheus.Registerer // nil registers nothing
}

// Delivery delivers the stream's events to the bot, one ShardDelivery per shard this process runs.
type Delivery struct {
	c      *Conn
	cfg    DeliveryConfig
	stream jetstream.Stream
	poster *delivery.BotPoster
	log    *zap.Logger

	delivered prometheus.Counter
	failed    *prometheus.CounterVec
	count     atomic.Int64

	mu      sync.Mutex
	running map[int]*deliveryRun
	wg      sync.WaitGroup
}

type deliveryRun struct {
	users  int // holdings delivering it (under Delivery.mu)
	cancel context.CancelFunc
	done   chan struct{}
	// backlog is how many of the shard's events were in the stream behind the last one pulled: the
	// NumPending of its metadata (free with every event; no request).
	backlog atomic.Int64
}

// NewDelivery checks cfg and finds the event stream (NewEventSink creates it).
func NewDelivery(ctx context.Context, c *Conn, cfg DeliveryConfig) (*Delivery, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("cluster: delivery needs at least one URL (events.urls)")
	}
	if cfg.BatchMax <= 0 {
		cfg.BatchMax = 1
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(10*time.Second, cfg.MinBackoff)
	}
	if cfg.PullWait <= 0 {
		cfg.PullWait = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = c.log
	}
	// The POST itself is the one-machine delivery's: same headers, client, URL check and failure labels.
	poster, err := delivery.NewBotPoster(delivery.PosterOptions{URLs: cfg.URLs, Secret: cfg.Secret,
		Batch: cfg.BatchMax > 1, Timeout: cfg.Timeout, Client: cfg.Client})
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := c.js.Stream(rctx, StreamName(c.name))
	if err != nil {
		return nil, fmt.Errorf("cluster: delivery: stream %s: %w", StreamName(c.name), err)
	}
	d := &Delivery{c: c, cfg: cfg, stream: stream, poster: poster, log: cfg.Log.Named("delivery"),
		running: map[int]*deliveryRun{},
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "dd_delivery_delivered_events_total",
			Help: "Events the bot acknowledged with a 2xx."}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dd_delivery_failed_attempts_total",
			Help: "POSTs to the bot that failed and will be retried, by reason (status_5xx, status_4xx, status_other, timeout, network)."},
			[]string{"reason"}),
	}
	if cfg.Registerer != nil {
		for _, col := range []prometheus.Collector{d.delivered, d.failed} {
			if err := cfg.Registerer.Register(col); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

// ConsumerName is the durable consumer that delivers shard id's events to events.urls: "dd-delivery-<id>"
// (a name of dd's own, so that a bot reading the stream with consumers of its own, "bot-0" say, is not
// reconfigured by it).
func ConsumerName(shardID int) string { return "dd-delivery-" + strconv.Itoa(shardID) }

// consumer creates (or finds) the shard's durable consumer.
func (d *Delivery) consumer(ctx context.Context, shardID int) (jetstream.Consumer, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return d.stream.CreateOrUpdateConsumer(rctx, jetstream.ConsumerConfig{
		Durable:       ConsumerName(shardID),
		Description:   "dd: delivery of shard " + strconv.Itoa(shardID) + "'s events to events.urls",
		FilterSubject: d.c.name + ".events." + strconv.Itoa(shardID) + ".>",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       d.cfg.AckWait,
		MaxAckPending: d.cfg.BatchMax,
		MaxDeliver:    -1,
	})
}

// Start delivers shard id's events until the returned stop is called (or Close). Only the shard's
// holders may deliver it (see puller): during a reshard, the holder of old shard id and the holder of
// new shard id may be the same process, which then delivers the one consumer once, until both stopped.
// stop gives a batch being posted up, unacknowledged (the next holder delivers it again under the same
// ids), and returns once the run ended; calling it again does nothing.
func (d *Delivery) Start(shardID int) (stop func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running == nil {
		return func() {} // closed
	}
	run, ok := d.running[shardID]
	if !ok {
		ctx, cancel := context.WithCancel(context.Background())
		run = &deliveryRun{cancel: cancel, done: make(chan struct{})}
		d.running[shardID] = run
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer close(run.done)
			d.run(ctx, shardID, run)
		}()
	}
	run.users++
	var once sync.Once
	return func() {
		once.Do(func() {
			d.mu.Lock()
			run.users--
			last := run.users == 0
			if last {
				run.cancel()
				if d.running != nil && d.running[shardID] == run {
					delete(d.running, shardID)
				}
			}
			d.mu.Unlock()
			if !last {
				return
			}
			// Wait until the pull is closed and what it held given back, so that the shard's next holder
			// (after the lease is released) finds nothing out but what the server knows of.
			select {
			case <-run.done:
			case <-time.After(d.cfg.AckWait):
			}
		})
	}
}

// Backlog is how many of shard id's events wait for the bot, as of the last event pulled (0 when the
// shard is not delivered here).
func (d *Delivery) Backlog(shardID int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if run := d.running[shardID]; run != nil {
		return int(run.backlog.Load())
	}
	return 0
}

// Delivered counts the events the bot acknowledged (copies included).
func (d *Delivery) Delivered() int64 { return d.count.Load() }

// Delivering lists the shards delivered here.
func (d *Delivery) Delivering() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]int, 0, len(d.running))
	for id := range d.running {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

// Close stops every shard's delivery and waits for them.
func (d *Delivery) Close() {
	d.mu.Lock()
	for _, run := range d.running {
		run.cancel()
	}
	d.running = nil
	d.mu.Unlock()
	d.wg.Wait()
}

// run is one shard's delivery loop.
func (d *Delivery) run(ctx context.Context, shardID int, run *deliveryRun) {
	var cons jetstream.Consumer
	for backoff := 250 * time.Millisecond; cons == nil; backoff = min(2*backoff, 5*time.Second) {
		var err error
		if cons, err = d.consumer(ctx, shardID); err != nil {
			if ctx.Err() != nil {
				return
			}
			d.log.Warn("delivery consumer not ready; retrying", zap.Int("shard", shardID), zap.Error(err))
			if ctxsleep.Sleep(ctx, backoff) != nil {
				return
			}
		}
	}
	p := &puller{c: d.c, cons: cons, n: d.cfg.BatchMax, ackWait: d.cfg.AckWait, wait: d.cfg.PullWait, log: d.log.With(zap.Int("shard", shardID))}
	defer p.close()
	target, shown := d.poster.URL(shardID)
	for ctx.Err() == nil {
		msgs, err := p.next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Debug("pull failed; retrying", zap.Int("shard", shardID), zap.Error(err))
				_ = ctxsleep.Sleep(ctx, time.Second)
			}
			continue
		}
		if md, err := msgs[len(msgs)-1].Metadata(); err == nil {
			run.backlog.Store(int64(md.NumPending) + int64(len(msgs)))
		}
		if d.cfg.Fence != nil && !d.fenced(ctx, shardID, msgs, p.held()) {
			if ctx.Err() == nil {
				p.reset() // the batch was given up: the server gives it again; gather it first
			}
			continue
		}
		ok, acked := d.deliver(ctx, shardID, target, shown, msgs, p.held())
		if ok {
			run.backlog.Add(-int64(len(msgs)))
		}
		if !ok || !acked {
			p.reset() // given up or not acknowledged: the server gives the batch again; gather it first
		}
	}
}

// puller reads a consumer in batches for the one process that may read it (the shard's owner, or a
// cache process its own consumer). With MaxAckPending above 1, events could be overtaken by later ones
// when some sat unacknowledged elsewhere: a previous holder's batch (given back, or not when it died),
// an event lost on its way to a pull, an acknowledgement lost. The server gives those again first, but
// only once given back or once AckWait ran out, and meanwhile lets later events out. So a puller begins
// (and begins again after any trouble) by gathering: it pulls until it got as many events given again
// as the consumer had out when it began, or until AckWait (and a quarter) ran out, holding what it got
// meanwhile; it then hands them out in stream order, before anything pulled later.
type puller struct {
	c       *Conn
	cons    jetstream.Consumer
	n       int
	ackWait time.Duration
	wait    time.Duration
	log     *zap.Logger

	it      jetstream.MessagesContext
	settled bool
	queue   []jetstream.Msg // gathered, in stream order, not handed out yet
}

// held is what the puller holds besides the batch it handed out (to keep held at the server too).
func (p *puller) held() []jetstream.Msg { return p.queue }

func (p *puller) open() error {
	if p.it != nil {
		return nil
	}
	it, err := p.cons.Messages(jetstream.PullMaxMessages(2*p.n+16), jetstream.PullExpiry(p.wait))
	if err != nil {
		return err
	}
	p.it = it
	return nil
}

// gather is the beginning described on puller.
func (p *puller) gather(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	info, err := p.cons.Info(rctx)
	cancel()
	if err != nil {
		return err
	}
	if err := p.open(); err != nil {
		return err
	}
	out := info.NumAckPending
	if out == 0 {
		p.settled = true
		return nil
	}
	p.log.Info("events of this consumer are out; gathering them before anything later", zap.Int("events", out), zap.Duration("ack_wait", p.ackWait))
	started := time.Now()
	h := newHolder(p.c, nil, p.ackWait)
	again := 0
	deadline := started.Add(p.ackWait + p.ackWait/4)
	for again < out && time.Now().Before(deadline) {
		m, err := p.it.Next(jetstream.NextMaxWait(min(p.ackWait/8, time.Until(deadline)+time.Millisecond)))
		if ctx.Err() != nil {
			if err == nil {
				p.queue = append(p.queue, m)
			}
			giveBack(p.queue)
			p.queue = nil
			return ctx.Err()
		}
		if err == nil {
			p.queue = append(p.queue, m)
			h.msgs = p.queue
			if md, err := m.Metadata(); err == nil && md.NumDelivered > 1 {
				again++
			}
		}
		h.held()
	}
	slices.SortFunc(p.queue, func(a, b jetstream.Msg) int { return cmp.Compare(streamSeq(a), streamSeq(b)) })
	p.log.Info("gathered", zap.Int("events", len(p.queue)), zap.Int("given_again", again), zap.Duration("took", time.Since(started)))
	p.settled = true
	return nil
}

func streamSeq(m jetstream.Msg) uint64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return md.Sequence.Stream
}

// next returns the next batch: gathered events first, else it waits for the consumer's next event and
// takes what else has arrived, up to n in all.
func (p *puller) next(ctx context.Context) ([]jetstream.Msg, error) {
	if !p.settled {
		if err := p.gather(ctx); err != nil {
			if ctx.Err() == nil {
				p.reset()
			}
			return nil, err
		}
	}
	if len(p.queue) > 0 {
		k := min(p.n, len(p.queue))
		batch := p.queue[:k:k]
		p.queue = p.queue[k:]
		return batch, nil
	}
	if err := p.open(); err != nil {
		return nil, err
	}
	first, err := p.it.Next(jetstream.NextContext(ctx))
	if err != nil {
		if ctx.Err() == nil {
			p.reset() // the pull is broken: begin again
		}
		return nil, err
	}
	msgs := []jetstream.Msg{first}
	for len(msgs) < p.n {
		m, err := p.it.Next(jetstream.NextMaxWait(time.Millisecond))
		if err != nil {
			break
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// reset drops the pull after trouble (what it held is given back); the next pull gathers first.
func (p *puller) reset() {
	p.close()
	p.settled = false
}

// close ends the pull and gives back what it had received but not handed out.
func (p *puller) close() {
	giveBack(p.queue)
	p.queue = nil
	if p.it == nil {
		return
	}
	p.it.Drain()
	for {
		m, err := p.it.Next(jetstream.NextMaxWait(10 * time.Millisecond))
		if err != nil {
			break
		}
		_ = m.Nak()
	}
	p.it = nil
}

// giveBack returns events to the server for another holder, at once.
func giveBack(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.Nak()
	}
}

// holder keeps a batch's events held at the server while the bot is being asked: InProgress every
// AckWait/4 while connected; held reports false once the server may have given up on this holder.
type holder struct {
	c       *Conn
	msgs    []jetstream.Msg
	ackWait time.Duration
	last    time.Time // the last InProgress sent while connected (or the pull)
	next    time.Time
}

func newHolder(c *Conn, msgs []jetstream.Msg, ackWait time.Duration) *holder {
	now := time.Now()
	return &holder{c: c, msgs: msgs, ackWait: ackWait, last: now, next: now.Add(ackWait / 4)}
}

func (h *holder) held() bool {
	now := time.Now()
	if now.After(h.next) && h.c.nc.IsConnected() {
		for _, m := range h.msgs {
			_ = m.InProgress()
		}
		h.last, h.next = now, now.Add(h.ackWait/4)
	}
	return now.Sub(h.last) < h.ackWait/2
}

// deliver posts a batch until the bot takes it (ok) and acknowledges it to the server (acked).
func (d *Delivery) deliver(ctx context.Context, shardID int, target, shown string, msgs, alsoHeld []jetstream.Msg) (ok, acked bool) {
	body, ids := d.encode(msgs)
	h := newHolder(d.c, append(msgs[:len(msgs):len(msgs)], alsoHeld...), d.cfg.AckWait)
	var lastErr error
	for attempt := 0; ; attempt++ {
		if !h.held() {
			d.log.Warn("batch given up: the server could not be told it is still being delivered; another process delivers it again",
				zap.Int("shard", shardID), zap.Int("events", len(msgs)), zap.NamedError("last_error", lastErr))
			return false, false
		}
		reason, err := d.poster.Post(ctx, target, body, ids)
		if err == nil {
			if attempt > 0 {
				d.log.Info("delivering events to the bot works again", zap.Int("shard", shardID), zap.String("url", shown), zap.Int("attempts", attempt+1))
			}
			break
		}
		if ctx.Err() != nil {
			giveBack(msgs)
			return false, false
		}
		lastErr = err
		d.failed.WithLabelValues(reason).Inc()
		if attempt == 0 || attempt%20 == 0 {
			d.log.Warn("delivering events to the bot failed; retrying (events wait in the stream)", zap.Int("shard", shardID),
				zap.String("url", shown), zap.Int("attempt", attempt+1), zap.Error(err))
		}
		if sleepHeld(ctx, d.backoff(attempt), h) != nil {
			giveBack(msgs)
			return false, false
		}
	}
	// AckAll: the last event acknowledges the batch. With batches of more than one it is confirmed: a
	// lost acknowledgement left the batch out while later events could come (the puller gathers again).
	// With MaxAckPending 1 nothing later can come before the server has it, and a lost one only brings
	// the same event again after AckWait: no wait for the confirmation (a round trip per event).
	var err error
	if d.cfg.BatchMax == 1 {
		err = msgs[0].Ack()
	} else {
		actx, cancel := context.WithTimeout(context.Background(), d.cfg.AckWait/2)
		err = msgs[len(msgs)-1].DoubleAck(actx)
		cancel()
	}
	if err != nil {
		d.log.Warn("acknowledging delivered events failed; they will be delivered again", zap.Int("shard", shardID), zap.Error(err))
	}
	d.delivered.Add(float64(len(msgs)))
	d.count.Add(int64(len(msgs)))
	return true, err == nil
}

// fenced waits until Fence lets the batch go, keeping it held at the server meanwhile; false when it
// gave the batch up (ctx ended, or the server may have given up on this holder).
func (d *Delivery) fenced(ctx context.Context, shardID int, msgs, alsoHeld []jetstream.Msg) bool {
	seq := streamSeq(msgs[len(msgs)-1])
	h := newHolder(d.c, append(msgs[:len(msgs):len(msgs)], alsoHeld...), d.cfg.AckWait)
	waited := time.Now()
	logged := false
	for {
		ok, err := d.cfg.Fence(ctx, shardID, seq)
		if err == nil && ok {
			if logged {
				d.log.Info("reshard: the old shards that shared this shard's guilds are delivered; delivering its events",
					zap.Int("shard", shardID), zap.Duration("waited", time.Since(waited)))
			}
			return true
		}
		if !logged && time.Since(waited) > time.Second {
			logged = true
			d.log.Info("reshard: this shard's events wait until the old shards that shared its guilds are delivered",
				zap.Int("shard", shardID), zap.NamedError("last_error", err))
		}
		if !h.held() {
			return false
		}
		if sleepHeld(ctx, 50*time.Millisecond, h) != nil {
			giveBack(msgs)
			return false
		}
	}
}

// sleepHeld sleeps d, keeping the batch held meanwhile.
func sleepHeld(ctx context.Context, d time.Duration, h *holder) error {
	end := time.Now().Add(d)
	for {
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		if err := ctxsleep.Sleep(ctx, min(left, h.ackWait/8)); err != nil {
			return err
		}
		h.held()
	}
}

// encode builds the POST body from the stream's envelopes.
func (d *Delivery) encode(msgs []jetstream.Msg) (body []byte, ids []string) {
	size := 2
	for _, m := range msgs {
		size += len(m.Data()) + 1
	}
	ids = make([]string, len(msgs))
	body = delivery.AppendBody(make([]byte, 0, size), len(msgs), d.cfg.BatchMax > 1, func(b []byte, i int) []byte {
		ids[i] = msgs[i].Headers().Get(jetstream.MsgIDHeader)
		return append(b, msgs[i].Data()...)
	})
	return body, ids
}

func (d *Delivery) backoff(attempt int) time.Duration {
	b := d.cfg.MaxBackoff
	if attempt < 30 {
		b = min(d.cfg.MaxBackoff, d.cfg.MinBackoff<<attempt)
	}
	return b/2 + rand.N(b/2+1)
}
