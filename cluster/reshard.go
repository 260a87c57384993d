package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/internal/eventmatch"
	"github.com/ddhq/dd/internal/rawjson"
)

// The reshard across processes (PRODUCT.md §7): the one-machine switch (package gateway) spread over
// the deployment, with the KV's target bucket as the only place the processes meet.
//
//  1. Start. Any process (POST /reshard, or gateway.reshard's trigger) writes the key "reshard" of the
//     target bucket by Create: one reshard at a time, a second is refused (ErrReshardBusy). The record
//     names the old count M, the new count N, an id, and the stream's last sequence then.
//  2. Held. Every process follows the key. On a reshard from its count it runs a second ShardOwner on
//     count N (leases "shard.<N>.<id>", sessions "<N>.<id>": already namespaced by count) beside the
//     first, which keeps running the old shards. The new shards identify through the shared limiter,
//     write their sessions to the KV (a takeover of a held shard RESUMEs), and keep their events in a
//     short in-memory tail, not published. The old EventSink remembers what it handles (a window of
//     event keys). Each new shard's owner writes "reshard.<id>.ready.<b>" once b is READY with its
//     guilds; when every new shard is, any process moves the record to "switching" (compare-and-set).
//  3. Markers. Switching, the new shards stop writing sessions (a takeover from here resumes from before
//     the switch, and Discord replays into the new holder's tail what the old shards may not have
//     published), their tails stop trimming, and each new shard b's owner writes, per old shard a that
//     shares guilds with b (a ≡ b mod gcd(M, N)), the key of the newest event b holds of a's guilds
//     ("reshard.<id>.mark.<b>"), as one machine's markers: once old a handled it, a has read everything
//     sent before b's session began.
//  4. Stop. The owner of each old shard a waits until its window holds its markers and until two
//     heartbeats it sends on a's connection are answered (two ACKs read after them: Discord writes them
//     after what it sent before, so a has read everything sent to it alone, even when it lags behind or
//     its guilds are quiet), stops the shard (its last batch in the stream), and writes
//     "reshard.<id>.stopped.<a>" = the stream sequence of a's last event. A stopped old shard is never
//     started again: a process that takes its lease over only delivers it.
//  5. Live. Once every old shard sharing guilds with b stopped, b's owner reads those shards' events
//     back from the stream (subjects <name>.events.<a>.>, from a stream sequence sampled a little before
//     b's oldest held event, up to each one's last), builds the same multiset matcher one machine builds
//     (internal/eventmatch), publishes its tail less what matched, goes live (dropping, for a short
//     while, live events the old shards published first), and writes "reshard.<id>.live.<b>".
//  6. Order for the bot. A guild's events move from old shard a's delivery consumer to new shard b's.
//     Delivery holds back a batch of b's that holds an event of the new count until every other old
//     shard of b's class was delivered through its last event (its consumer's ack floor): Fence. The
//     cache followers read the whole stream in order, which has every old event of a guild before the
//     new shards' first (they publish after the old ones stopped).
//  7. Done. Once every new shard is live and every old shard's consumer delivered through its last
//     event, any process writes "shards" = N (and "resharded" = N, which a restarted process with another
//     gateway.total_shards follows) and deletes the record; every process then retires its old owner
//     (leases released), and the old count's sessions are deleted.
//
// A process that joins during a reshard follows it from the record. A process that dies during it: its
// held shards are taken over and RESUMEd from the KV's session, its old shards too (resumed until they
// stop, or only delivered once stopped), and every step waits for them. While held, a reshard that does
// not get every new shard ready in time is rolled back: the record is deleted, the new owners leave.

// Keys of the target bucket.
const (
	reshardKey   = "reshard"
	reshardedKey = "resharded"
)

// Reshard phases.
const (
	phaseHeld      = "held"
	phaseSwitching = "switching"
)

// How long a reshard keeps its bookkeeping (the one-machine values, gateway/sink.go).
const (
	reshardTailHold   = 20 * time.Second
	reshardTailMax    = 200_000
	reshardWindowKeep = 120 * time.Second
	reshardWindowMax  = 2_000_000
	reshardLateMatch  = 10 * time.Second
	// seqMargin: the stream sequence a read-back starts from is sampled at least this long before the
	// oldest held event arrived (an old shard may have published it a little before a new one got it).
	seqMargin = 2 * time.Second
)

// reshardRecord is the value of the "reshard" key.
type reshardRecord struct {
	ID      string    `json:"id"`
	From    int       `json:"from"`
	To      int       `json:"to"`
	Phase   string    `json:"phase"`
	Seq     uint64    `json:"seq"` // the stream's last sequence when the reshard began
	Why     string    `json:"why,omitempty"`
	Started time.Time `json:"started"` // informational (the writer's clock)
	By      string    `json:"by,omitempty"`
}

func (r *reshardRecord) key(kind string, id int) string {
	return "reshard." + r.ID + "." + kind + "." + strconv.Itoa(id)
}

// ErrReshardBusy is returned when a reshard is already in progress in the deployment.
var ErrReshardBusy = errors.New("a reshard is already in progress")

// ErrNotStarted is returned before Run has started the shards.
var ErrNotStarted = errors.New("shards are not started yet")

// ReshardRefusal classifies a ReshardError (as gateway's does).
type ReshardRefusal int

const (
	// ReshardBadCount: the count cannot be run, or a fixed shard range forbids resharding.
	ReshardBadCount ReshardRefusal = iota
	// ReshardWouldHurt: the count could be run but not now (already there, too few for the guilds, the
	// identify budget).
	ReshardWouldHurt
	// ReshardUnreachable: Discord's /gateway/bot or NATS did not answer.
	ReshardUnreachable
)

// ReshardError says why Reshard did not start a reshard.
type ReshardError struct {
	Reason ReshardRefusal
	Err    error
}

func (e *ReshardError) Error() string { return e.Err.Error() }
func (e *ReshardError) Unwrap() error { return e.Err }

func refuse(r ReshardRefusal, err error) error { return &ReshardError{Reason: r, Err: err} }

// ReshardStatus is a reshard in progress as this process sees it (nil in GatewayStatus when none).
type ReshardStatus struct {
	ID      string `json:"id"`
	From    int    `json:"from"`
	To      int    `json:"to"`
	Phase   string `json:"phase"`
	Ready   int    `json:"ready"`   // new shards READY with their guilds
	Stopped int    `json:"stopped"` // old shards stopped for the switch
	Live    int    `json:"live"`    // new shards publishing
}

// Reshard starts a reshard of the whole deployment to total shards (0: Discord's recommendation for the
// guilds), after the checks one machine makes; every process follows it. It returns the counts from
// and to. Errors: ErrNotStarted, ErrReshardBusy, *ReshardError.
func (g *Gateway) Reshard(ctx context.Context, total int, why string) (from, to int, err error) {
	run := g.st.Load()
	if run == nil {
		return 0, 0, ErrNotStarted
	}
	from = run.total
	if g.cfg.Shards != nil {
		return from, 0, refuse(ReshardBadCount, errors.New("gateway.first_shard/last_shard fix this process's shards: "+
			"cluster mode reshards only when the processes share every shard (leave first_shard and last_shard unset)"))
	}
	if g.reshardView().rec != nil {
		return from, 0, ErrReshardBusy
	}
	info, ierr := g.cfg.GatewayBot(ctx)
	if ierr != nil || info == nil {
		return from, 0, refuse(ReshardUnreachable, fmt.Errorf("cannot ask Discord for /gateway/bot: %v", ierr))
	}
	guilds := g.deploymentGuilds(run)
	to = total
	if to == 0 {
		to = g.cfg.CountFor(info.Shards, guilds, info.SessionStartLimit.MaxConcurrency)
	}
	if err := g.cfg.CheckTarget(to, info.SessionStartLimit.MaxConcurrency); err != nil {
		return from, to, refuse(ReshardBadCount, err)
	}
	if need := (guilds + discord.MaxGuildsPerShard - 1) / discord.MaxGuildsPerShard; to < need {
		return from, to, refuse(ReshardWouldHurt, fmt.Errorf("%d shards cannot hold %d guilds (2500 a shard at most): at least %d", to, guilds, need))
	}
	if to == from {
		return from, to, refuse(ReshardWouldHurt, fmt.Errorf("already at %d shards", to))
	}
	if rem, need := info.SessionStartLimit.Remaining, to+g.cfg.IdentifyReserve; rem < need {
		return from, to, refuse(ReshardWouldHurt, fmt.Errorf("the identify budget has %d left today; %d new shards plus the reserve of %d (gateway.reshard_identify_reserve) need %d",
			rem, to, g.cfg.IdentifyReserve, need))
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	seq, err := lastStreamSeq(rctx, g.conn)
	if err != nil {
		return from, to, refuse(ReshardUnreachable, fmt.Errorf("reading the event stream: %w", err))
	}
	idb := make([]byte, 6)
	_, _ = rand.Read(idb)
	rec := reshardRecord{ID: hex.EncodeToString(idb), From: from, To: to, Phase: phaseHeld, Seq: seq, Why: why,
		Started: time.Now().UTC(), By: g.conn.Instance()}
	v, _ := json.Marshal(rec)
	if _, err := g.conn.KV(BucketTarget).Create(rctx, reshardKey, v); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return from, to, ErrReshardBusy
		}
		return from, to, refuse(ReshardUnreachable, fmt.Errorf("writing the reshard to %s: %w", g.conn.BucketName(BucketTarget), err))
	}
	g.log.Info("reshard requested for the deployment", zap.Int("from", from), zap.Int("to", to), zap.String("id", rec.ID), zap.String("why", why))
	g.pokeReshard()
	return from, to, nil
}

// deploymentGuilds is the deployment's guilds as this process can tell: its shards' guilds scaled to
// every shard (guilds spread evenly over shards), as a split deployment judges them on one machine.
func (g *Gateway) deploymentGuilds(run *gatewayRun) int {
	guilds := run.filter.TotalGuilds()
	if own := len(run.runner.Running()); own > 0 && own < run.total {
		guilds = guilds * run.total / own
	}
	return guilds
}

func lastStreamSeq(ctx context.Context, c *Conn) (uint64, error) {
	str, err := c.js.Stream(ctx, StreamName(c.name))
	if err != nil {
		return 0, err
	}
	info, err := str.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// lastShardSeq is the stream sequence of the last event on shard id's subjects (0: none).
func lastShardSeq(ctx context.Context, c *Conn, id int) (uint64, error) {
	str, err := c.js.Stream(ctx, StreamName(c.name))
	if err != nil {
		return 0, err
	}
	m, err := str.GetLastMsgForSubject(ctx, c.name+".events."+strconv.Itoa(id)+".>")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// reshardState is what this process knows of the reshard in progress, from a watch of the target
// bucket.
type reshardState struct {
	rec     *reshardRecord
	rev     uint64
	ready   map[int]bool
	marks   map[int]map[int]uint64 // new shard -> old shard -> marker key
	stopped map[int]uint64         // old shard -> stream sequence of its last event
	live    map[int]bool
}

func (s *reshardState) clone() reshardState {
	out := reshardState{rec: s.rec, rev: s.rev, ready: map[int]bool{}, marks: map[int]map[int]uint64{},
		stopped: map[int]uint64{}, live: map[int]bool{}}
	for k, v := range s.ready {
		out.ready[k] = v
	}
	for k, v := range s.marks {
		out.marks[k] = v
	}
	for k, v := range s.stopped {
		out.stopped[k] = v
	}
	for k, v := range s.live {
		out.live[k] = v
	}
	return out
}

// reshardView is a copy of the state.
func (g *Gateway) reshardView() reshardState {
	g.rsMu.Lock()
	defer g.rsMu.Unlock()
	return g.rs.clone()
}

func (g *Gateway) pokeReshard() {
	select {
	case g.rsWake <- struct{}{}:
	default:
	}
}

// watchReshard follows the target bucket's reshard keys into g.rs; initial tells when the values present
// at the start are in.
func (g *Gateway) watchReshard(ctx context.Context, initial chan<- struct{}) {
	once := sync.Once{}
	for ctx.Err() == nil {
		w, err := g.conn.KV(BucketTarget).WatchFiltered(ctx, []string{reshardKey, reshardKey + ".>"})
		if err != nil {
			g.log.Debug("reshard watch not started; retrying", zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		for e := range w.Updates() {
			if e == nil {
				once.Do(func() { close(initial) })
				continue
			}
			g.applyReshard(e)
		}
		_ = w.Stop()
	}
}

func (g *Gateway) applyReshard(e jetstream.KeyValueEntry) {
	put := e.Operation() == jetstream.KeyValuePut
	key := e.Key()
	g.rsMu.Lock()
	defer g.pokeReshard()
	defer g.rsMu.Unlock()
	if key == reshardKey {
		if !put {
			g.rs = reshardState{}
			return
		}
		var rec reshardRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.ID == "" || rec.From < 1 || rec.To < 1 {
			g.log.Error("the reshard record in the target bucket is corrupt; ignored", zap.ByteString("value", e.Value()))
			return
		}
		if g.rs.rec == nil || g.rs.rec.ID != rec.ID {
			g.rs = reshardState{ready: map[int]bool{}, marks: map[int]map[int]uint64{}, stopped: map[int]uint64{}, live: map[int]bool{}}
		}
		g.rs.rec, g.rs.rev = &rec, e.Revision()
		return
	}
	// reshard.<id>.<kind>.<n>
	parts := strings.Split(key, ".")
	if len(parts) != 4 || g.rs.rec == nil || parts[1] != g.rs.rec.ID || !put {
		return
	}
	n, err := strconv.Atoi(parts[3])
	if err != nil {
		return
	}
	switch parts[2] {
	case "ready":
		g.rs.ready[n] = true
	case "live":
		g.rs.live[n] = true
	case "stopped":
		seq, _ := strconv.ParseUint(string(e.Value()), 10, 64)
		g.rs.stopped[n] = seq
	case "mark":
		var m map[int]uint64
		if json.Unmarshal(e.Value(), &m) == nil {
			g.rs.marks[n] = m
		}
	}
}

// gcd of two positive counts.
func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// sharing lists the shards of count other that share guilds with shard id of count num: those congruent
// to id modulo gcd(num, other) (a guild g is on g>>22 mod num and mod other).
func sharing(id, num, other int) []int {
	k := gcd(num, other)
	var out []int
	for x := id % k; x < other; x += k {
		out = append(out, x)
	}
	return out
}

// guildShardOf is the shard of num that receives a payload: its guild's, or 0 without a guild.
func guildShardOf(payload []byte, num int) int {
	gid, ok := rawjson.Snowflake(rawjson.Field(rawjson.Field(payload, "d"), "guild_id"))
	if !ok {
		return 0
	}
	return discord.ShardForGuild(gid, num)
}

// putTarget writes a key of the target bucket, retrying briefly.
func (g *Gateway) putTarget(ctx context.Context, key string, value []byte) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = g.conn.KV(BucketTarget).Put(rctx, key, value)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
	return err
}

// sortedKeys of a set.
func sortedKeys[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

// seqSampler samples the stream's last sequence every second while a reshard runs, so that a new shard
// can tell from which sequence the old shards' copies of its held events may be in the stream without
// comparing its clock with the server's: the sample taken at least seqMargin before the event arrived.
type seqSampler struct {
	mu      sync.Mutex
	samples []seqSample
}

type seqSample struct {
	at  time.Time // when the request left (this process's clock)
	seq uint64
}

func (s *seqSampler) run(ctx context.Context, c *Conn, first uint64) {
	s.mu.Lock()
	s.samples = append(s.samples, seqSample{time.Now(), first})
	s.mu.Unlock()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		seq, err := lastStreamSeq(rctx, c)
		cancel()
		if err != nil {
			continue
		}
		s.mu.Lock()
		s.samples = append(s.samples, seqSample{at, seq})
		// Keep the first (the floor) and the last five minutes.
		drop := 1
		for drop < len(s.samples)-1 && at.Sub(s.samples[drop].at) > 5*time.Minute {
			drop++
		}
		if drop > 1 {
			s.samples = append(s.samples[:1], s.samples[drop:]...)
		}
		s.mu.Unlock()
	}
}

// before is the newest sample taken at least seqMargin before t (the first one otherwise).
func (s *seqSampler) before(t time.Time) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return 0
	}
	best := s.samples[0].seq
	for _, sm := range s.samples {
		if !sm.at.After(t.Add(-seqMargin)) {
			best = sm.seq
		}
	}
	return best
}

// readBack builds the matcher of new shard b: the events of the old shards in olds (stream sequence of
// each one's last event in last) from stream sequence from on, read back from the stream.
func readBack(ctx context.Context, c *Conn, olds []int, last map[int]uint64, from uint64) (*eventmatch.Matcher, int, error) {
	m := eventmatch.NewMatcher()
	var subjects []string
	var upTo uint64
	for _, a := range olds {
		if last[a] >= max(from, 1) {
			subjects = append(subjects, c.name+".events."+strconv.Itoa(a)+".>")
			upTo = max(upTo, last[a])
		}
	}
	if len(subjects) == 0 {
		return m, 0, nil
	}
	str, err := c.js.Stream(ctx, StreamName(c.name))
	if err != nil {
		return nil, 0, err
	}
	cons, err := str.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: subjects,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: max(from, 1)})
	if err != nil {
		return nil, 0, err
	}
	prefix := c.name + ".events."
	it, err := cons.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, 0, err
	}
	defer it.Stop()
	n := 0
	for {
		msg, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if err != nil {
			return nil, n, fmt.Errorf("reading back old shards %v after %d events, below sequence %d: %w", olds, n, upTo, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			continue
		}
		seq := md.Sequence.Stream
		rest := strings.TrimPrefix(msg.Subject(), prefix)
		a, _ := strconv.Atoi(rest[:max(strings.IndexByte(rest, '.'), 0)])
		if seq <= last[a] {
			m.Add(rawjson.Field(msg.Data(), "payload"))
			n++
		}
		if seq >= upTo || md.NumPending == 0 {
			return m, n, nil
		}
		if ctx.Err() != nil {
			return nil, n, ctx.Err()
		}
	}
}
