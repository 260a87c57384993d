// Package shard runs Discord gateway shards: one websocket connection's state machine per shard
// (hello, heartbeat, identify, resume, reconnect, close codes), and a Manager that runs a set of shards
// with a shared identify limiter (package identify). It hands dispatch events, in order, to a Sink together with the
// session state to persist with them; it does not store or deliver events itself (see queue/ and
// delivery/). Other Go programs can embed a Manager and replace its default behaviour with Hooks.
package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/internal/ctxsleep"
)

// ErrPayloadTooLarge is returned for a command over Discord's 4096-byte limit; it is never sent.
var ErrPayloadTooLarge = errors.New("shard: payload over 4096 bytes")

// ErrNotConnected is returned by Send while the shard has no live session.
var ErrNotConnected = errors.New("shard: not connected")

// State is where a shard is in its life.
type State int32

// The states of a shard. Transitions happen in Shard.Run only.
const (
	StateDisconnected State = iota
	StateConnecting
	StateIdentifying
	StateResuming
	StateReady
	StateFatal
	StateStopped
	// StateWaiting: no session to resume, waiting for the identify turn before connecting.
	StateWaiting
)

func (s State) String() string {
	return [...]string{"disconnected", "connecting", "identifying", "resuming", "ready", "fatal", "stopped", "waiting"}[s]
}

// Session is what a shard needs to resume after a disconnect or a restart of dd.
type Session struct {
	ShardID   int    `json:"shard_id"`
	NumShards int    `json:"num_shards"`
	ID        string `json:"session_id"`
	ResumeURL string `json:"resume_gateway_url"`
	Seq       int64  `json:"seq"`
}

// Resumable reports whether the session can be resumed.
func (s Session) Resumable() bool { return s.ID != "" && s.ResumeURL != "" }

// Event is one dispatch (op 0) as received.
type Event struct {
	Seq  int64
	Type string
	// Raw is the whole payload, {"op":0,"t":...,"s":...,"d":...}, byte for byte as Discord sent it.
	Raw json.RawMessage
	// Dropped events were refused by the OnDispatch hook: a Sink must not pass them on, but still
	// persists the session with their sequence, so a restart does not replay them for nothing. Raw is
	// kept, for bookkeeping (a reshard notes what the old shards handled).
	Dropped bool
}

// Sink receives a shard's events in order. Dispatch must make the events (but the Dropped ones) and the
// session (whose Seq is the last event's) durable atomically before it returns: a shard resumes from the
// last session a Sink accepted, so an event is never skipped. An error makes the shard reconnect and
// resume from there.
type Sink interface {
	Dispatch(ctx context.Context, events []Event, session Session) error
}

// Hooks replace or extend a shard's default behaviour (the "controllers" of an embedding program).
// Every hook is optional and runs on the shard's own goroutine: keep it quick.
type Hooks struct {
	// OnPayload sees every payload received, before dd handles it. Returning false skips dd's handling:
	// use with care (a skipped HELLO or READY stalls the shard).
	OnPayload func(s *Shard, op int, t string, raw json.RawMessage) bool
	// OnDispatch sees each dispatch before it goes to the Sink; returning false drops the event (it
	// reaches the Sink marked Dropped, so that its sequence is persisted).
	OnDispatch func(s *Shard, ev *Event) bool
	// BeforeIdentify may change the IDENTIFY payload (presence, properties) or refuse with an error,
	// which counts as a failed connection attempt.
	BeforeIdentify func(s *Shard, id *Identify) error
	// OnClose is told of every connection end: the close code (0 when there was none) and the error.
	OnClose func(s *Shard, code int, err error)
	// OnStateChange is told of every state transition.
	OnStateChange func(s *Shard, from, to State)
}

// Properties are IDENTIFY's connection properties.
type Properties struct {
	OS      string `json:"os"`
	Browser string `json:"browser"`
	Device  string `json:"device"`
}

// Identify is the IDENTIFY payload's d.
type Identify struct {
	Token          string          `json:"token"`
	Properties     Properties      `json:"properties"`
	Intents        int             `json:"intents"`
	Shard          [2]int          `json:"shard"`
	LargeThreshold int             `json:"large_threshold,omitempty"`
	Presence       json.RawMessage `json:"presence,omitempty"`
}

// Config configures one shard.
type Config struct {
	ShardID, NumShards int
	Token              string // without "Bot "
	Intents            int
	GatewayURL         string // from /gateway/bot
	APIVersion         int    // default 10
	Compress           string // zstd-stream (default) | zlib-stream | none
	LargeThreshold     int    // 50..250; 0 leaves Discord's default
	Presence           json.RawMessage
	Properties         Properties
	Identify           identify.Limiter // required: identify.Local in one process, identify.Noop grants at once
	Sink               Sink
	Hooks              Hooks
	Logger             *zap.Logger
	// Session is a stored session to resume; zero means identify.
	Session Session

	// SendLimit commands per SendWindow (Discord: 120 per 60 s); SendReserve of them are kept for
	// heartbeats, identify and resume.
	SendLimit   int
	SendWindow  time.Duration
	SendReserve int
	// ReconnectMin and ReconnectMax bound the reconnect backoff (default 1 s and 60 s).
	ReconnectMin, ReconnectMax time.Duration
	// HelloTimeout bounds the wait for HELLO after connecting (default 20 s).
	HelloTimeout time.Duration
}

func (c *Config) defaults() {
	if c.APIVersion == 0 {
		c.APIVersion = 10
	}
	if c.Compress == "" {
		c.Compress = CompressZstd
	}
	if c.SendLimit == 0 {
		c.SendLimit = 120
	}
	if c.SendWindow == 0 {
		c.SendWindow = 60 * time.Second
	}
	if c.SendReserve == 0 {
		c.SendReserve = 5
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = time.Second
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = 60 * time.Second
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = 20 * time.Second
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Properties.OS == "" {
		c.Properties = Properties{OS: "linux", Browser: "dd", Device: "dd"}
	}
}

// FatalError means Discord refused the shard for a reason that reconnecting cannot fix.
type FatalError struct {
	ShardID int
	Code    int
	Name    string
	Hint    string
}

func (e *FatalError) Error() string {
	return fmt.Sprintf("shard %d: Discord closed the connection with %d (%s): %s", e.ShardID, e.Code, e.Name, e.Hint)
}

// Shard is one gateway shard. Run drives it; the other methods are safe from any goroutine.
type Shard struct {
	cfg  Config
	log  *zap.Logger
	send *sendLimiter

	state      atomic.Int32
	rtt        atomic.Int64 // nanoseconds, last heartbeat round trip
	endSession atomic.Bool  // close with 1000 when stopped: the session ends at Discord

	mu        sync.Mutex
	conn      *conn
	persisted Session // the last session the Sink made durable: what we resume from
	live      Session // the session of the current connection (its Seq is not used)
	seq       int64   // the last sequence received (heartbeats carry it)

	identifyMu      sync.Mutex
	identifyRelease func(answered bool) // the identify turn, held from before the dial until READY or failure
}

// New builds a shard; Run starts it.
func New(cfg Config) *Shard {
	cfg.defaults()
	s := &Shard{cfg: cfg, log: cfg.Logger.With(zap.Int("shard", cfg.ShardID), zap.Int("shards", cfg.NumShards))}
	// Discord counts sends by their arrival: one held up on the way (a loaded machine) arrives closer to
	// the later ones than it left. Spacing them over 5 % more than the window absorbs that.
	s.send = newSendLimiter(cfg.SendLimit, cfg.SendReserve, cfg.SendWindow+cfg.SendWindow/20)
	if cfg.Session.NumShards == cfg.NumShards && cfg.Session.ShardID == cfg.ShardID {
		s.persisted = cfg.Session
		s.seq = cfg.Session.Seq
	}
	return s
}

// ID is the shard's id.
func (s *Shard) ID() int { return s.cfg.ShardID }

// NumShards is the shard count this shard belongs to.
func (s *Shard) NumShards() int { return s.cfg.NumShards }

// State is the shard's current state.
func (s *Shard) State() State { return State(s.state.Load()) }

// RTT is the last heartbeat round trip.
func (s *Shard) RTT() time.Duration { return time.Duration(s.rtt.Load()) }

// Session is the last durable session (what a restart would resume).
func (s *Shard) Session() Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.persisted
}

func (s *Shard) setState(to State) {
	from := State(s.state.Swap(int32(to)))
	if from != to && s.cfg.Hooks.OnStateChange != nil {
		s.cfg.Hooks.OnStateChange(s, from, to)
	}
}

// EndSessionOnStop makes the shard close with 1000 when its context ends, which ends the session at
// Discord instead of leaving it resumable (for shards retired by a reshard).
func (s *Shard) EndSessionOnStop() { s.endSession.Store(true) }

// Send sends a command (op and d) on the live connection, through the send limiter. Payloads over
// 4096 bytes are refused with ErrPayloadTooLarge.
func (s *Shard) Send(ctx context.Context, op int, d any) error {
	b, err := json.Marshal(map[string]any{"op": op, "d": d})
	if err != nil {
		return err
	}
	return s.SendRaw(ctx, b)
}

// SendRaw sends an already encoded payload {"op":..,"d":..}.
func (s *Shard) SendRaw(ctx context.Context, payload []byte) error {
	if len(payload) > discord.MaxSendBytes {
		return fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(payload))
	}
	if st := s.State(); st != StateReady {
		return fmt.Errorf("%w (shard %d is %s)", ErrNotConnected, s.cfg.ShardID, st)
	}
	if err := s.send.wait(ctx, false); err != nil {
		return err
	}
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return ErrNotConnected
	}
	return c.send(payload)
}

// sendPriority sends heartbeat, identify and resume, which may use the limiter's reserve.
func (s *Shard) sendPriority(ctx context.Context, c *conn, payload []byte) error {
	if err := s.send.wait(ctx, true); err != nil {
		return err
	}
	return c.send(payload)
}

// Run connects and keeps the shard connected until ctx is cancelled (then it closes with a resumable
// code and returns nil) or Discord refuses it for good (a *FatalError).
func (s *Shard) Run(ctx context.Context) error {
	backoff := s.cfg.ReconnectMin
	var refusals closeStreak
	for {
		if ctx.Err() != nil {
			s.setState(StateStopped)
			return nil
		}
		started := time.Now()
		end := s.connectOnce(ctx)
		if ctx.Err() != nil {
			s.setState(StateStopped)
			return nil
		}
		if s.cfg.Hooks.OnClose != nil {
			s.cfg.Hooks.OnClose(s, end.code, end.err)
		}
		if end.next == stopForGood {
			s.setState(StateFatal)
			s.logStop(end.fatal)
			return end.fatal
		}
		if end.next == identifyAnew {
			s.mu.Lock()
			s.persisted.ID, s.persisted.ResumeURL = "", ""
			s.mu.Unlock()
		}
		s.setState(StateDisconnected)
		refusals.note(s.log, end)
		s.mu.Lock()
		resume := s.persisted.Resumable()
		s.mu.Unlock()
		if end.healthy || time.Since(started) > 2*time.Minute {
			backoff = s.cfg.ReconnectMin
		}
		var wait time.Duration
		switch end.pause {
		case pauseBackoff:
			wait = backoff/2 + rand.N(backoff/2+1)
			backoff = min(backoff*2, s.cfg.ReconnectMax)
		case pauseInvalidated:
			// Discord asks for a pause of 1-5 s before identifying again after op 9.
			wait = time.Second + rand.N(4*time.Second)
		}
		s.logReconnect(end, resume, wait)
		if err := ctxsleep.Sleep(ctx, wait); err != nil {
			s.setState(StateStopped)
			return nil
		}
	}
}

// logStop and logReconnect keep their log fields out of Run's frame, which is on an idle shard's stack
// (see readLoop).
//
//go:noinline
func (s *Shard) logStop(f *FatalError) {
	s.log.Error("shard stopped for good", zap.Int("code", f.Code), zap.String("reason", f.Name), zap.String("what_to_do", f.Hint))
}

//go:noinline
func (s *Shard) logReconnect(end connEnd, resume bool, wait time.Duration) {
	s.log.Info("reconnecting", zap.Error(end.err), zap.Int("code", end.code), zap.Bool("resume", resume),
		zap.Duration("after", wait))
}

// closeStreak notices a server that keeps closing with the same code (a Discord-compatible server that
// wants a header dd does not send, say): quiet retries would hide it forever. It warns at the fifth close
// in a row, then each time the streak doubles.
type closeStreak struct {
	code, n, warnAt int
}

func (c *closeStreak) note(log *zap.Logger, end connEnd) {
	if end.healthy || end.code == 0 {
		*c = closeStreak{}
		return
	}
	if end.code != c.code {
		*c = closeStreak{code: end.code, warnAt: 5}
	}
	c.n++
	if c.n == c.warnAt {
		c.warnAt *= 2
		cc := discord.LookupCloseCode(end.code)
		log.Warn("the gateway keeps refusing the connection with the same close code; still retrying, but this needs a look",
			zap.Int("code", end.code), zap.String("reason", cc.Name), zap.Int("times_in_a_row", c.n), zap.Error(end.err))
	}
}

// nextStep is what a shard does once a connection ended.
type nextStep int

const (
	resumeSession nextStep = iota // reconnect and resume (identify if there is no session)
	identifyAnew                  // the session is gone: forget it, identify on the next connection
	stopForGood                   // Discord refused the shard for a reason reconnecting cannot fix
)

// pause is how long a shard waits before the next connection.
type pause int

const (
	pauseBackoff     pause = iota // the reconnect backoff
	pauseNone                     // at once (op 7)
	pauseInvalidated              // 1-5 s, as Discord asks after op 9
)

// connEnd is how a connection ended: one next step, decided where the end was seen.
type connEnd struct {
	err     error
	code    int // the close code, 0 when there was none
	next    nextStep
	pause   pause
	fatal   *FatalError // with stopForGood
	healthy bool        // the connection reached READY/RESUMED
}

// endFromCloseCode decides the next step from the close-code table (discord.LookupCloseCode), which
// covers Discord's codes and 1000/1001.
func (s *Shard) endFromCloseCode(err error, code int, healthy bool) connEnd {
	end := connEnd{err: err, code: code, healthy: healthy}
	cc := discord.LookupCloseCode(code)
	switch cc.Action {
	case discord.CloseFatal:
		end.next, end.fatal = stopForGood, &FatalError{ShardID: s.cfg.ShardID, Code: code, Name: cc.Name, Hint: cc.Hint}
	case discord.CloseNewSession:
		end.next = identifyAnew
	}
	return end
}

// connectOnce runs one websocket connection from dial to its end. A shard without a session to resume
// takes its identify turn first and connects only then: a connection that waited minutes behind other
// shards would live through heartbeats. Once the turn is held, the wait left is at most one window,
// during which the connection is read as usual; connecting at once puts HELLO behind us when the turn
// comes. Resumes need no turn.
func (s *Shard) connectOnce(ctx context.Context) (end connEnd) {
	s.mu.Lock()
	sess := s.persisted
	s.mu.Unlock()
	resume := sess.Resumable()
	base := s.cfg.GatewayURL
	if resume {
		base = sess.ResumeURL
	}
	u, err := gatewayURL(base, s.cfg.APIVersion, s.cfg.Compress)
	if err != nil {
		return connEnd{err: err, next: stopForGood, fatal: &FatalError{ShardID: s.cfg.ShardID, Name: "bad gateway url", Hint: err.Error()}}
	}
	var identifyAt time.Time
	if !resume {
		s.setState(StateWaiting)
		turn, err := s.cfg.Identify.Acquire(ctx, s.cfg.ShardID)
		if err != nil {
			return connEnd{err: fmt.Errorf("waiting for the identify turn: %w", err)}
		}
		identifyAt = turn.NotBefore
		s.identifyMu.Lock()
		s.identifyRelease = turn.Release
		s.identifyMu.Unlock()
		// Whatever way the connection ends, the turn goes back; an answer releases it sooner.
		defer s.releaseIdentify(false)
	}
	s.setState(StateConnecting)
	c, err := dial(ctx, u, s.cfg.Compress)
	if err != nil {
		return connEnd{err: err}
	}
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()

	cctx, cancel := context.WithCancel(ctx)
	var sinkErr atomic.Pointer[error]
	sink := &sinkRunner{s: s, ctx: cctx, events: make(chan Event, 16), failed: func(err error) {
		// The sink could not persist (a full disk, say): stop reading at once; the next connection
		// resumes from the last durable sequence and Discord replays the rest.
		if sinkErr.CompareAndSwap(nil, &err) {
			c.drop()
		}
	}}
	// Shutting down closes with a resumable code, so that a restarted dd resumes this session, unless
	// the session is being retired (an old shard set after a reshard).
	stopOnCancel := context.AfterFunc(ctx, func() {
		if s.endSession.Load() {
			c.closeGracefully(1000, "shard retired")
			return
		}
		c.closeGracefully(discord.ResumableCloseCode, "dd shutting down")
	})
	hb := &heartbeater{s: s, c: c}

	end = s.readLoop(cctx, c, hb, sink, resume, identifyAt)

	stopOnCancel()
	cancel()
	c.close(discord.ResumableCloseCode, "reconnecting")
	hb.stop()
	c.release()
	// Let the sink persist what was read, so the next connection resumes from the newest durable sequence.
	sink.wait()
	if errp := sinkErr.Load(); errp != nil {
		end = connEnd{err: fmt.Errorf("persisting events: %w", *errp)}
	}
	s.mu.Lock()
	s.conn = nil
	s.mu.Unlock()
	return end
}

// sinkRunner hands a connection's events to the Sink in batches, in order, on a goroutine that exists
// only while events are pending: an idle shard costs no goroutine stack for it. At most one runs at a
// time (running), which keeps the order.
type sinkRunner struct {
	s       *Shard
	ctx     context.Context
	events  chan Event
	failed  func(error)
	running atomic.Bool
	broken  atomic.Bool
	wg      sync.WaitGroup
}

// push queues an event, blocking while the sink is behind (back pressure on the socket).
func (r *sinkRunner) push(ev Event) {
	r.events <- ev
	if r.running.CompareAndSwap(false, true) {
		r.wg.Add(1)
		go r.drain()
	}
}

func (r *sinkRunner) drain() {
	defer r.wg.Done()
	for {
		for len(r.events) > 0 {
			r.persist()
		}
		r.running.Store(false)
		// An event pushed between the check and the Store found running true and started nobody.
		if len(r.events) == 0 || !r.running.CompareAndSwap(false, true) {
			return
		}
	}
}

// persist hands the pending events to the Sink as one batch. After a failure it drops them: they are
// replayed on resume.
func (r *sinkRunner) persist() {
	n := len(r.events)
	batch := make([]Event, n) // sized per batch, not kept: an idle shard holds no batch memory
	for i := range batch {
		batch[i] = <-r.events
	}
	if r.broken.Load() {
		return
	}
	s := r.s
	sess := s.currentSession()
	// A sequence that does not advance (a server that numbers from 0, or repeats one) must not move the
	// stored sequence backwards: the session's Seq is the highest one made durable.
	for _, ev := range batch {
		sess.Seq = max(sess.Seq, ev.Seq)
	}
	s.mu.Lock()
	if s.persisted.ID == sess.ID {
		sess.Seq = max(sess.Seq, s.persisted.Seq)
	}
	s.mu.Unlock()
	// Persisting must finish even while the connection is being torn down.
	if err := s.cfg.Sink.Dispatch(context.WithoutCancel(r.ctx), batch, sess); err != nil {
		s.log.Error("could not persist events; will resume from the last durable sequence", zap.Error(err))
		r.broken.Store(true)
		r.failed(err)
		return
	}
	s.mu.Lock()
	s.persisted = sess
	s.mu.Unlock()
}

// wait returns once every pushed event has been handed to the Sink (or dropped after a failure).
// Called after the last push.
func (r *sinkRunner) wait() {
	r.wg.Wait()
	for len(r.events) > 0 {
		r.persist()
	}
}

// currentSession is the live connection's session (from READY, or the one being resumed).
func (s *Shard) currentSession() Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}
