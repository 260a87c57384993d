package cluster

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/internal/rawjson"
)

// A cache process follows the whole stream with a durable consumer of its own ("dd-cache-<instance>"), so
// that several cache processes each hold every event (PRODUCT.md §7). One consumer reads the stream in
// its order, which keeps each shard's order; a batch is acknowledged (AckAll, its last event) once the
// cache stored it, and a process that restarts under the same instance name goes on from there.

// FollowConfig configures Follow.
type FollowConfig struct {
	// Durable names the consumer. Default "dd-cache-<instance>".
	Durable string
	// Batch is the most events applied at once. Default 500.
	Batch int
	// AckWait: how long the server waits for a batch before it sends it again. Default 30 s.
	AckWait time.Duration
	// PullWait: how long one pull waits for an event. Default 5 s.
	PullWait time.Duration
	Log      *zap.Logger
}

// FollowerName is the durable consumer of a cache process: "dd-cache-<instance>".
func FollowerName(instance string) string {
	return "dd-cache-" + keyUnsafe.ReplaceAllString(instance, "_")
}

// Follow applies the stream's events, in order, with apply (given the payloads, the envelope's
// "payload" of each), until ctx ends. A batch apply refuses is applied again after a backoff, and only
// then acknowledged: the cache sees every event at least once. It returns nil when ctx ends.
func Follow(ctx context.Context, c *Conn, cfg FollowConfig, apply func(payloads [][]byte) error) error {
	if cfg.Durable == "" {
		cfg.Durable = FollowerName(c.instance)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.PullWait <= 0 {
		cfg.PullWait = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = c.log
	}
	log := cfg.Log.Named("follow").With(zap.String("consumer", cfg.Durable))
	var cons jetstream.Consumer
	for backoff := 250 * time.Millisecond; cons == nil; backoff = min(2*backoff, 5*time.Second) {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		stream, err := c.js.Stream(rctx, StreamName(c.name))
		if err == nil {
			cons, err = stream.CreateOrUpdateConsumer(rctx, jetstream.ConsumerConfig{
				Durable:       cfg.Durable,
				Description:   "dd: a cache process's copy of every event",
				DeliverPolicy: jetstream.DeliverAllPolicy,
				AckPolicy:     jetstream.AckAllPolicy,
				AckWait:       cfg.AckWait,
				MaxAckPending: cfg.Batch,
				MaxDeliver:    -1,
				// A process started without cluster.instance gets a new name (and consumer) each start:
				// the server deletes a consumer nobody read for a day rather than keep them all.
				InactiveThreshold: 24 * time.Hour,
			})
		}
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("stream consumer not ready; retrying", zap.Error(err))
			if ctxsleep.Sleep(ctx, backoff) != nil {
				return nil
			}
		}
	}
	p := &puller{c: c, cons: cons, n: cfg.Batch, ackWait: cfg.AckWait, wait: cfg.PullWait, log: log}
	defer p.close()
	for ctx.Err() == nil {
		msgs, err := p.next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.Debug("pull failed; retrying", zap.Error(err))
				_ = ctxsleep.Sleep(ctx, time.Second)
			}
			continue
		}
		payloads := make([][]byte, 0, len(msgs))
		for _, m := range msgs {
			if pl := rawjson.Field(m.Data(), "payload"); len(pl) > 0 {
				payloads = append(payloads, pl)
			}
		}
		h := newHolder(c, append(msgs[:len(msgs):len(msgs)], p.held()...), cfg.AckWait)
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
			err := apply(payloads)
			if err == nil {
				break
			}
			log.Error("applying events from the stream failed; retrying", zap.Int("events", len(payloads)), zap.Error(err))
			if sleepHeld(ctx, backoff, h) != nil {
				giveBack(msgs)
				return nil
			}
		}
		actx, cancel := context.WithTimeout(context.Background(), cfg.AckWait/2)
		if err := msgs[len(msgs)-1].DoubleAck(actx); err != nil {
			log.Warn("acknowledging applied events failed; they will be applied again", zap.Error(err))
			p.reset()
		}
		cancel()
	}
	return nil
}

// FollowConnecting is Follow for a process whose only use of NATS is following (a cache process): it
// connects with o, retrying while no server answers rather than failing the process's start, and
// follows until ctx ends.
func FollowConnecting(ctx context.Context, o Options, cfg FollowConfig, apply func(payloads [][]byte) error) error {
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	var conn *Conn
	for backoff := time.Second; conn == nil; backoff = min(2*backoff, 30*time.Second) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		var err error
		conn, err = Connect(cctx, o)
		cancel()
		if err != nil {
			log.Warn("cannot follow the event stream yet: NATS unreachable; retrying", zap.Error(err), zap.Duration("after", backoff))
			if ctxsleep.Sleep(ctx, backoff) != nil {
				return nil
			}
		}
	}
	defer conn.Close()
	log.Info("following the event stream", zap.String("consumer", FollowerName(conn.Instance())))
	return Follow(ctx, conn, cfg, apply)
}
