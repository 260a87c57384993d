package shard

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/discord"
)

// heartbeater sends heartbeats on one connection: the first after interval × jitter, then every
// interval. A heartbeat that finds the previous one unacknowledged means a zombie connection: it is
// dropped (no close frame, so the session stays resumable) and the shard resumes.
type heartbeater struct {
	s *Shard
	c *conn

	mu       sync.Mutex
	timer    *time.Timer
	interval time.Duration
	waiting  bool // a heartbeat was sent and not yet acknowledged
	sentAt   time.Time
	stopped  bool
}

func (h *heartbeater) start(interval time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	h.interval = interval
	first := time.Duration(rand.Float64() * float64(interval))
	h.timer = time.AfterFunc(first, h.tick)
}

func (h *heartbeater) tick() {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	if h.waiting {
		h.mu.Unlock()
		h.s.log.Warn("no heartbeat ACK since the last heartbeat: zombie connection, resuming")
		h.c.drop()
		return
	}
	h.timer.Reset(h.interval)
	h.mu.Unlock()
	h.beat()
}

// beatNow answers Discord's op 1 at once (it does not change the schedule).
func (h *heartbeater) beatNow() { go h.beat() }

func (h *heartbeater) beat() {
	h.s.mu.Lock()
	seq := h.s.seq
	h.s.mu.Unlock()
	var d any
	if seq > 0 {
		d = seq
	}
	payload, _ := json.Marshal(map[string]any{"op": discord.OpHeartbeat, "d": d})
	h.mu.Lock()
	h.waiting, h.sentAt = true, time.Now()
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.s.sendPriority(ctx, h.c, payload); err != nil {
		h.s.log.Debug("heartbeat not sent", zap.Error(err))
	}
}

func (h *heartbeater) acked() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waiting {
		h.s.rtt.Store(int64(time.Since(h.sentAt)))
	}
	h.waiting = false
}

func (h *heartbeater) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	if h.timer != nil {
		h.timer.Stop()
	}
}
