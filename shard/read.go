package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/internal/ctxsleep"
	"github.com/ddhq/dd/internal/rawjson"
)

// header is the part of every payload dd routes on.
type header struct {
	op   int
	seq  int64 // 0 when null or absent
	name string
}

// parseHeader reads op, s and t without decoding d (which is most of a payload). It stops once it has
// all three: Discord sends them before d, which is then not scanned a second time (the object reader
// has found its end already).
func parseHeader(raw []byte) (header, error) {
	h := header{op: -1}
	seen := 0
	err := rawjson.EachField(raw, func(k, v []byte) bool {
		switch string(k) {
		case "op":
			if n, ok := rawjson.Int(v); ok {
				h.op = int(n)
			}
		case "s":
			h.seq, _ = rawjson.Int(v)
		case "t":
			h.name, _ = rawjson.String(v)
		default:
			return true
		}
		seen++
		return seen < 3
	})
	if err == nil && h.op < 0 {
		err = errors.New("no op")
	}
	return h, err
}

// readLoop reads payloads until the connection ends. It runs HELLO, then RESUME or IDENTIFY (whose turn
// connectOnce holds already, to be sent at identifyAt), then routes every payload.
//
// An idle shard spends its life blocked in c.next below this frame, and the runtime halves a blocked
// goroutine's stack only while it uses under a quarter of it (less 800 bytes): at 16 KiB, 3,296 bytes.
// So the loop keeps its own frame small and routes each payload in onPayload, whose frame is gone while
// it waits.
func (s *Shard) readLoop(ctx context.Context, c *conn, hb *heartbeater, sink *sinkRunner, resume bool, identifyAt time.Time) connEnd {
	r := s.newRouter(ctx, c, hb, sink, resume, identifyAt)
	for r.ended == nil {
		raw, err := c.next()
		s.route(r, raw, err)
	}
	r.helloTimer.Stop()
	return *r.ended
}

//go:noinline
func (s *Shard) newRouter(ctx context.Context, c *conn, hb *heartbeater, sink *sinkRunner, resume bool, identifyAt time.Time) *payloadRouter {
	r := &payloadRouter{ctx: ctx, c: c, hb: hb, sink: sink, resume: resume, identifyAt: identifyAt}
	r.helloTimer = time.AfterFunc(s.cfg.HelloTimeout, c.drop)
	return r
}

// route handles what one c.next returned: a payload, or the error that ends the connection.
//
//go:noinline
func (s *Shard) route(r *payloadRouter, raw []byte, err error) {
	if err != nil {
		end := s.endFromReadError(err, r.healthy)
		r.ended = &end
		return
	}
	r.ended = s.onPayload(r, raw)
}

// payloadRouter is one connection's read loop's state, for onPayload.
type payloadRouter struct {
	ctx        context.Context
	c          *conn
	hb         *heartbeater
	sink       *sinkRunner
	resume     bool
	identifyAt time.Time
	helloTimer *time.Timer
	healthy    bool     // READY or RESUMED came
	ended      *connEnd // how the connection ends, once a payload decided it
}

// onPayload routes one payload; a non-nil result ends the connection.
func (s *Shard) onPayload(r *payloadRouter, raw []byte) *connEnd {
	healthy := r.healthy
	h, err := parseHeader(raw)
	if err != nil {
		return &connEnd{err: fmt.Errorf("gateway sent undecodable payload: %w", err), healthy: healthy}
	}
	t := h.name
	if s.cfg.Hooks.OnPayload != nil && !s.cfg.Hooks.OnPayload(s, h.op, t, raw) {
		return nil
	}
	switch h.op {
	case discord.OpHello:
		r.helloTimer.Stop()
		var p struct {
			D struct {
				HeartbeatInterval int64 `json:"heartbeat_interval"`
			} `json:"d"`
		}
		if err := json.Unmarshal(raw, &p); err != nil || p.D.HeartbeatInterval <= 0 {
			return &connEnd{err: fmt.Errorf("bad HELLO: %s", raw)}
		}
		r.hb.start(time.Duration(p.D.HeartbeatInterval) * time.Millisecond)
		if err := s.authenticate(r.ctx, r.c, r.resume, r.identifyAt); err != nil {
			return &connEnd{err: err}
		}
	case discord.OpHeartbeat:
		r.hb.beatNow()
	case discord.OpHeartbeatAck:
		r.hb.acked()
	case discord.OpReconnect:
		return &connEnd{err: errors.New("Discord asked to reconnect (op 7)"), pause: pauseNone, healthy: healthy}
	case discord.OpInvalidSession:
		var p struct {
			D bool `json:"d"`
		}
		_ = json.Unmarshal(raw, &p)
		s.releaseIdentify(true)
		if p.D {
			return &connEnd{err: errors.New("session invalidated (op 9, resumable)"), healthy: healthy}
		}
		return &connEnd{err: errors.New("session invalidated (op 9, not resumable)"), next: identifyAnew, pause: pauseInvalidated,
			healthy: healthy}
	case discord.OpDispatch:
		// Every dispatch is delivered, also one whose s is 0 or does not advance (Discord-compatible
		// servers such as Spacebar number from 0); only the highest sequence is kept for resuming.
		s.mu.Lock()
		if h.seq > s.seq {
			s.seq = h.seq
		}
		s.mu.Unlock()
		switch t {
		case "READY":
			if err := s.onReady(raw); err != nil {
				return &connEnd{err: err}
			}
			r.healthy = true
		case "RESUMED":
			s.log.Info("resumed")
			s.setState(StateReady)
			r.healthy = true
		}
		ev := Event{Seq: h.seq, Type: t, Raw: raw}
		if s.cfg.Hooks.OnDispatch != nil && !s.cfg.Hooks.OnDispatch(s, &ev) {
			ev = Event{Seq: h.seq, Type: t, Raw: raw, Dropped: true}
		}
		r.sink.push(ev)
	}
	return nil
}

// authenticate sends RESUME for a resumable session, else IDENTIFY, whose turn the shard holds, at
// identifyAt: until then a goroutine waits to send it while the read loop goes on (heartbeat ACKs).
func (s *Shard) authenticate(ctx context.Context, c *conn, resume bool, identifyAt time.Time) error {
	s.mu.Lock()
	sess := s.persisted
	s.mu.Unlock()
	if resume {
		s.setState(StateResuming)
		s.mu.Lock()
		s.live = sess
		s.seq = sess.Seq
		s.mu.Unlock()
		payload, _ := json.Marshal(map[string]any{"op": discord.OpResume, "d": map[string]any{
			"token": "Bot " + s.cfg.Token, "session_id": sess.ID, "seq": sess.Seq}})
		s.log.Debug("resuming", zap.String("session", sess.ID), zap.Int64("seq", sess.Seq))
		return s.sendPriority(ctx, c, payload)
	}
	s.setState(StateIdentifying)
	id := Identify{Token: "Bot " + s.cfg.Token, Properties: s.cfg.Properties, Intents: s.cfg.Intents,
		Shard: [2]int{s.cfg.ShardID, s.cfg.NumShards}, LargeThreshold: s.cfg.LargeThreshold, Presence: s.cfg.Presence}
	if s.cfg.Hooks.BeforeIdentify != nil {
		if err := s.cfg.Hooks.BeforeIdentify(s, &id); err != nil {
			return fmt.Errorf("before identify: %w", err)
		}
	}
	payload, err := json.Marshal(map[string]any{"op": discord.OpIdentify, "d": id})
	if err != nil {
		return err
	}
	wait := time.Until(identifyAt)
	if wait <= 0 {
		return s.sendIdentify(ctx, c, payload)
	}
	go func() {
		if ctxsleep.Sleep(ctx, wait) != nil {
			return
		}
		if err := s.sendIdentify(ctx, c, payload); err != nil {
			s.log.Warn("IDENTIFY not sent; reconnecting", zap.Error(err))
			c.drop()
		}
	}()
	return nil
}

func (s *Shard) sendIdentify(ctx context.Context, c *conn, payload []byte) error {
	// Only the turn's holder may count a send (a connection that ended has given its turn back), and it
	// counts it before the write: a write that fails half-way may still reach Discord.
	s.identifyMu.Lock()
	held := s.identifyRelease != nil
	if held {
		s.cfg.Identify.Sent(s.cfg.ShardID, time.Now())
	}
	s.identifyMu.Unlock()
	if !held {
		return errors.New("the identify turn was given back before IDENTIFY left")
	}
	s.mu.Lock()
	s.seq = 0
	s.mu.Unlock()
	if err := s.sendPriority(ctx, c, payload); err != nil {
		return err
	}
	s.log.Info("identified")
	return nil
}

// releaseIdentify gives the shard's identify turn back, if it holds one; answered says that Discord's
// answer to the IDENTIFY came back (so it has arrived).
func (s *Shard) releaseIdentify(answered bool) {
	s.identifyMu.Lock()
	r := s.identifyRelease
	s.identifyRelease = nil
	s.identifyMu.Unlock()
	if r != nil {
		r(answered)
	}
}

func (s *Shard) onReady(raw json.RawMessage) error {
	var p struct {
		D struct {
			SessionID        string `json:"session_id"`
			ResumeGatewayURL string `json:"resume_gateway_url"`
		} `json:"d"`
	}
	if err := json.Unmarshal(raw, &p); err != nil || p.D.SessionID == "" {
		return fmt.Errorf("bad READY: %v", err)
	}
	s.mu.Lock()
	s.live = Session{ShardID: s.cfg.ShardID, NumShards: s.cfg.NumShards, ID: p.D.SessionID, ResumeURL: p.D.ResumeGatewayURL}
	s.mu.Unlock()
	s.releaseIdentify(true)
	s.setState(StateReady)
	s.log.Info("ready", zap.String("session", p.D.SessionID))
	return nil
}

// endFromReadError turns a read failure into the next step: a close frame by the close-code table, any
// other failure (a dropped connection, a zombie) resumes.
func (s *Shard) endFromReadError(err error, healthy bool) connEnd {
	var ce *CloseError
	if !errors.As(err, &ce) {
		return connEnd{err: err, healthy: healthy}
	}
	// A close frame is an answer: Discord read everything sent before it.
	s.releaseIdentify(true)
	return s.endFromCloseCode(err, ce.Code, healthy)
}
