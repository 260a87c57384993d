package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/ddhq/dd/internal/eventmatch"
	"github.com/ddhq/dd/shard"
)

// The event stream (PRODUCT.md §7). Every dispatch is a message of the stream <NAME>_EVENTS on the subject
// <name>.events.<shard>.<EVENT_TYPE>, body the delivery envelope {"shardId":N,"payload":<the gateway
// payload as Discord sent it>}, header Nats-Msg-Id the event's id: "<session id>-<sequence>", the same
// however often the event is published (a resume's replay, another process's replay after a takeover),
// so that the stream drops the copy inside its duplicate window. The id is also what delivery sends as
// X-DD-Event-Id. Headers DD-Shard-Id and DD-Event repeat the shard and the event name for consumers that
// filter without parsing the body.
const (
	HeaderShard = "DD-Shard-Id"
	HeaderEvent = "DD-Event"
)

// EventSinkConfig configures an EventSink. Every field has a default.
type EventSinkConfig struct {
	// MaxEvents bounds the stream: past it the oldest events are dropped (events.max_queue_events).
	// Default 10,000,000.
	MaxEvents int64
	// DuplicateWindow is how long the stream remembers an event id to drop a second copy. A copy comes
	// from a replay: a shard that resumes after a failed batch (seconds), or the process that takes a dead
	// one's shards over (within 2 x lease_ttl, since the session in the KV may lag the stream by the
	// events published before the owner died). It must outlast both; the server keeps every id of the
	// window in memory (about 100 bytes an event: 2.4 million ids, some 250 MB, at 20,000 events/s for
	// 2 minutes). Default 2 minutes.
	DuplicateWindow time.Duration
	// AckTimeout bounds the wait for the stream's acknowledgements of one batch; a batch not
	// acknowledged in time fails, and the shard resumes from its last durable sequence. Default 5 s.
	AckTimeout time.Duration
	// Sessions is where sessions are written once their events are in the stream. Default a
	// SessionStore on the Conn.
	Sessions *SessionStore
	// Holds, when set, says whether this process still holds shard id of num: a batch of a shard it no
	// longer holds fails at once and writes no session (the lease's end stops the shard anyway; this
	// closes the gap before it does).
	Holds func(shardID, numShards int) bool
	// Guilds, when set, is what knows each shard's guild ids: the sink writes a shard's ids beside its
	// session (SessionStore.SaveGuilds) after a batch that changed them, so that the process taking the
	// shard over restores them (RunnerConfig.Guilds).
	Guilds ShardGuilds
	// Log: default the Conn's.
	Log *zap.Logger
}

// EventSink is a shard.Sink that publishes events to the stream and then writes the session to the KV:
// a session in the KV never names a sequence whose event is not in the stream, so a process that
// takes the shard over resumes from there and skips nothing.
type EventSink struct {
	c        *Conn
	js       jetstream.JetStream
	cfg      EventSinkConfig
	stream   string
	prefix   string // "<name>.events."
	sessions *SessionStore
	log      *zap.Logger

	published  atomic.Int64
	duplicates atomic.Int64

	guildMu  sync.Mutex
	guildVer map[int]uint64 // shard -> the version of its guild ids last written

	// window, while a reshard runs, remembers what this sink's shards handled (published, or dropped by
	// the filter): an old shard stops for the switch once it handled the new shards' markers.
	window    atomic.Pointer[eventmatch.Window]
	handledAt sync.Map // shard -> time.Time of its last batch with events, while window is set
}

// idleFor reports whether shard handled no event for d (while recordHandled runs).
func (s *EventSink) idleFor(shard int, d time.Duration) bool {
	v, ok := s.handledAt.Load(shard)
	return !ok || time.Since(v.(time.Time)) >= d
}

// recordHandled starts (w) or stops (nil) remembering what the sink handles.
func (s *EventSink) recordHandled(w *eventmatch.Window) { s.window.Store(w) }

// handled reports whether every key was handled since recordHandled began.
func (s *EventSink) handled(keys []uint64) bool {
	w := s.window.Load()
	if w == nil {
		return len(keys) == 0
	}
	m := w.Matcher(time.Time{})
	for _, k := range keys {
		if !m.HasKey(k) {
			return false
		}
	}
	return true
}

var _ shard.Sink = (*EventSink)(nil)

// StreamName is the event stream of a deployment: "DD_EVENTS" for "dd".
func StreamName(name string) string { return strings.ToUpper(name) + "_EVENTS" }

// EventSubject is the subject of an event: "dd.events.3.MESSAGE_CREATE". A character that a subject
// token cannot hold ('.', '*', '>', white space) becomes '_' (Discord's names have none).
func EventSubject(name string, shardID int, eventType string) string {
	return name + ".events." + strconv.Itoa(shardID) + "." + subjectToken(eventType)
}

func subjectToken(s string) string {
	if s == "" {
		return "_"
	}
	if strings.ContainsAny(s, ".*> \t\r\n") {
		return strings.Map(func(r rune) rune {
			switch r {
			case '.', '*', '>', ' ', '\t', '\r', '\n':
				return '_'
			}
			return r
		}, s)
	}
	return s
}

// EventID is the stable id of the event with sequence seq of a session: "<session id>-<seq>".
func EventID(sessionID string, seq int64) string {
	return sessionID + "-" + strconv.FormatInt(seq, 10)
}

// NewEventSink creates the event stream (or brings an existing one to this configuration) and returns
// the sink.
func NewEventSink(ctx context.Context, c *Conn, cfg EventSinkConfig) (*EventSink, error) {
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = 10_000_000
	}
	if cfg.DuplicateWindow == 0 {
		cfg.DuplicateWindow = 2 * time.Minute
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = c.log
	}
	if cfg.Sessions == nil {
		cfg.Sessions = NewSessionStore(c)
	}
	// A JetStream context of its own: its asynchronous publishes time out (a partition answers nothing),
	// and enough of them may be in flight for every shard's batch at once.
	js, err := jetstream.New(c.nc, jetstream.WithPublishAsyncMaxPending(16384), jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	s := &EventSink{c: c, js: js, cfg: cfg, stream: StreamName(c.name), prefix: c.name + ".events.",
		sessions: cfg.Sessions, log: cfg.Log}
	sc := jetstream.StreamConfig{
		Name:        s.stream,
		Description: "dd gateway events (cluster mode): " + c.name + ".events.<shard>.<EVENT_TYPE>",
		Subjects:    []string{c.name + ".events.>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     cfg.MaxEvents,
		Duplicates:  cfg.DuplicateWindow,
		Storage:     jetstream.FileStorage,
		Replicas:    c.replicas,
	}
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = ensureStream(rctx, c.js, sc)
		cancel()
		if err == nil {
			return s, nil
		}
		if attempt == 4 || ctx.Err() != nil {
			return nil, fmt.Errorf("cluster: creating stream %s (replicas %d): %w", s.stream, c.replicas, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
}

// Stream is the event stream's name.
func (s *EventSink) Stream() string { return s.stream }

// Sessions is the store the sink writes sessions to.
func (s *EventSink) Sessions() *SessionStore { return s.sessions }

// Published counts the events the stream acknowledged as new, Duplicates those it acknowledged as a copy
// of one it held (a replay).
func (s *EventSink) Published() int64  { return s.published.Load() }
func (s *EventSink) Duplicates() int64 { return s.duplicates.Load() }

// ErrNotHeld is returned by Dispatch for a shard this process no longer holds.
var ErrNotHeld = errors.New("cluster: this process no longer holds the shard")

// Dispatch implements shard.Sink: it publishes the batch's events (but the dropped ones, whose sequence
// the session still counts) without waiting between them, returns once the stream acknowledged every
// one, and then writes the session. An event not acknowledged in AckTimeout fails the batch: the shard
// drops its connection and resumes from the last session written, and Discord replays the rest.
func (s *EventSink) Dispatch(ctx context.Context, events []shard.Event, sess shard.Session) error {
	return s.dispatch(ctx, events, sess, func() bool { return s.cfg.Holds == nil || s.cfg.Holds(sess.ShardID, sess.NumShards) })
}

// Fenced is the sink for one holding of a shard: its batches fail, and write no session, once the lease
// is no longer valid.
func (s *EventSink) Fenced(lease *Lease) shard.Sink { return fencedSink{s: s, lease: lease} }

type fencedSink struct {
	s     *EventSink
	lease *Lease
}

func (f fencedSink) Dispatch(ctx context.Context, events []shard.Event, sess shard.Session) error {
	return f.s.dispatch(ctx, events, sess, f.lease.Valid)
}

func (s *EventSink) dispatch(ctx context.Context, events []shard.Event, sess shard.Session, held func() bool) error {
	if !held() {
		return fmt.Errorf("shard %d/%d: %w", sess.ShardID, sess.NumShards, ErrNotHeld)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AckTimeout)
	defer cancel()
	if !s.c.nc.IsConnected() {
		// Publishing now would fill the client's reconnect buffer with events flushed who knows when.
		return fmt.Errorf("cluster: shard %d: NATS unreachable: events not published", sess.ShardID)
	}
	futures := make([]jetstream.PubAckFuture, 0, len(events))
	shardID := strconv.Itoa(sess.ShardID)
	envHead := `{"shardId":` + shardID + `,"payload":`
	for _, ev := range events {
		if ev.Dropped {
			continue
		}
		body := make([]byte, 0, len(envHead)+len(ev.Raw)+1)
		body = append(body, envHead...)
		body = append(body, ev.Raw...)
		body = append(body, '}')
		m := &nats.Msg{Subject: s.prefix + shardID + "." + subjectToken(ev.Type), Data: body, Header: nats.Header{}}
		m.Header[HeaderShard] = []string{shardID}
		m.Header[HeaderEvent] = []string{ev.Type}
		// No retry of a publish that found no stream leader (an election): a retry would land after the
		// events behind it; failing the batch makes the shard resume and Discord replay it in order.
		f, err := s.js.PublishMsgAsync(m, jetstream.WithMsgID(EventID(sess.ID, ev.Seq)), jetstream.WithRetryAttempts(0))
		if err != nil {
			return fmt.Errorf("cluster: shard %d: publishing event %d to %s: %w", sess.ShardID, ev.Seq, s.stream, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				s.duplicates.Add(1)
			} else {
				s.published.Add(1)
			}
		case err := <-f.Err():
			return fmt.Errorf("cluster: shard %d: event %d of %d not stored in %s: %w", sess.ShardID, i+1, len(futures), s.stream, err)
		case <-ctx.Done():
			return fmt.Errorf("cluster: shard %d: %d of %d events not acknowledged by %s within %s", sess.ShardID,
				len(futures)-i, len(futures), s.stream, s.cfg.AckTimeout)
		}
	}
	if w := s.window.Load(); w != nil && len(events) > 0 {
		for _, ev := range events {
			w.Record(ev.Raw)
		}
		s.handledAt.Store(sess.ShardID, time.Now())
	}
	// The session is written over the revision this process last wrote or read. Another revision means
	// another writer: a stale one (a process that lost the shard and whose write NATS delivered late) when
	// this process still holds the shard, which then writes over it; otherwise this process is the stale
	// one and writes nothing.
	if !held() {
		return fmt.Errorf("shard %d/%d: %w: session not written", sess.ShardID, sess.NumShards, ErrNotHeld)
	}
	if err := s.sessions.save(ctx, sess, held); err != nil {
		return err
	}
	s.saveGuilds(ctx, sess, held)
	return nil
}

// saveGuilds writes the shard's guild ids when they changed since this process last wrote them (READY,
// a guild joined or left: rarely). A failure is logged and tried again after the next batch: the
// events and the session are stored already, and the ids only count and dedup guilds.
func (s *EventSink) saveGuilds(ctx context.Context, sess shard.Session, held func() bool) {
	if s.cfg.Guilds == nil {
		return
	}
	s.guildMu.Lock()
	ver := s.guildVer[sess.ShardID]
	s.guildMu.Unlock()
	ids, now, changed := s.cfg.Guilds.GuildsChanged(sess.ShardID, ver)
	if !changed || !held() {
		return
	}
	if err := s.sessions.SaveGuilds(ctx, sess.ShardID, sess.NumShards, ids); err != nil {
		s.log.Warn("guild ids not written beside the session; trying again after the next batch", zap.Int("shard", sess.ShardID), zap.Error(err))
		return
	}
	s.guildMu.Lock()
	if s.guildVer == nil {
		s.guildVer = map[int]uint64{}
	}
	s.guildVer[sess.ShardID] = max(s.guildVer[sess.ShardID], now)
	s.guildMu.Unlock()
}

// ensureStream finds the stream, or creates it, or updates it to sc when a setting dd owns differs. It
// looks before it creates, as Conn.ensureBucket does: processes starting together on a NATS cluster
// that all ask to create it left one request unanswered until its timeout.
func ensureStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) error {
	str, err := js.Stream(ctx, sc.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		_, err = js.CreateStream(ctx, sc)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil // another process's, created a moment ago: the next start brings its settings
		}
		return err
	case err != nil:
		return err
	}
	have := str.CachedInfo().Config
	if have.MaxMsgs != sc.MaxMsgs || have.Duplicates != sc.Duplicates || have.Replicas != sc.Replicas ||
		!slices.Equal(have.Subjects, sc.Subjects) || have.Discard != sc.Discard {
		_, err = js.UpdateStream(ctx, sc)
	}
	return err
}
