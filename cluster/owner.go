package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// How the gateway processes of one deployment share the shards. Each shard of a shard count is a lease
// in the leases bucket, key "shard.<num_shards>.<id>": its holder runs the shard, nobody else does. Each
// process also holds a presence lease, key "member.<instance>", while it runs: the live processes are
// the holders of member keys, and a dead process's member key expires with its shard keys, a TTL after
// its last renewal.
//
// Every process follows the bucket (a KV watch on both kinds of keys, and a poll every TTL/4) and decides
// for itself, by the same rule, from what it sees:
//
//   - target = ceil(shards / live processes): the share each aims for.
//   - Below target, it takes free shards (in an order that starts at a point given by its name's hash,
//     so that processes starting together rarely race for the same key; the lease's compare-and-set
//     settles a race) up to target.
//   - Above target, it hands over as many shards as the live processes below target lack between them
//     (and no more than it has over target): for each, the shard closes resumably and its session is
//     written, and only then is the lease released, so the process that takes it RESUMEs. A process
//     gives nothing away while nobody is below target (a process that joined but cannot take shards, or
//     a dead one whose member key has not expired yet).
//   - A shard that stays free longer than a TTL is taken by any process whatever its share: a view that
//     is wrong (a member key that outlives its process) never leaves a shard without an owner.
//
// A process that joins first waits Settle, so that processes starting together see each other before
// they take shards (else the first would take them all and hand them back, identifying them first).
// With a fixed set (first_shard/last_shard) a process takes exactly those shards, each as soon as it is
// free, and hands none over.

// ShardHost runs the shards a ShardOwner holds (ShardRunner is the one dd uses).
type ShardHost interface {
	// StartShard runs shard id under lease until StopShard, or until the lease ends (Done), when it must
	// stop at once: another process may take the shard a Margin later. An error gives the lease back.
	StartShard(id int, lease *Lease) error
	// StopShard stops shard id for a handover: it returns once the shard closed resumably and its
	// session is written. The owner releases the lease after it returns.
	StopShard(id int)
}

// OwnerConfig configures a ShardOwner. TotalShards is required.
type OwnerConfig struct {
	// TotalShards is the shard count.
	TotalShards int
	// ShardIDs, when set, is a fixed set (gateway.first_shard..last_shard): the process holds exactly
	// these. Empty: the live processes share every shard evenly.
	ShardIDs []int
	// TTL is the leases' TTL (cluster.lease_ttl). Default 10 s.
	TTL time.Duration
	// Settle is how long a process waits after joining before it takes shards. Default TTL/4.
	Settle time.Duration
	// SharedPresence: the process's presence key is held by its other owner (a reshard's second owner
	// runs beside the first): this one counts itself joined while it sees that key, and holds none.
	SharedPresence bool
	// Log: default the Conn's.
	Log *zap.Logger
}

// ShardOwner holds this process's share of the shards through leases and tells a ShardHost which shards
// to start and stop.
type ShardOwner struct {
	c      *Conn
	cfg    OwnerConfig
	leaser *Leaser
	log    *zap.Logger
	me     string
	prefix string // "shard.<num>."
	start  int    // where this process starts looking for free shards

	mu        sync.Mutex
	owned     map[int]*Lease
	members   map[string]string // member key -> instance (held member keys only)
	owners    map[int]string    // shard -> holder per the watch ("" free)
	freeSince map[int]time.Time
	wake      chan struct{}
}

// NewShardOwner builds an owner; Run starts it.
func NewShardOwner(c *Conn, cfg OwnerConfig) (*ShardOwner, error) {
	if cfg.TotalShards < 1 {
		return nil, fmt.Errorf("cluster: total shards %d: at least 1", cfg.TotalShards)
	}
	for _, id := range cfg.ShardIDs {
		if id < 0 || id >= cfg.TotalShards {
			return nil, fmt.Errorf("cluster: shard %d is not below total shards %d", id, cfg.TotalShards)
		}
	}
	if cfg.TTL == 0 {
		cfg.TTL = 10 * time.Second
	}
	if cfg.Settle == 0 {
		cfg.Settle = cfg.TTL / 4
	}
	if cfg.Log == nil {
		cfg.Log = c.log
	}
	leaser, err := NewLeaser(c, BucketLeases, LeaseConfig{TTL: cfg.TTL, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	h := fnv.New32a()
	h.Write([]byte(c.instance))
	o := &ShardOwner{c: c, cfg: cfg, leaser: leaser, log: cfg.Log, me: c.instance,
		prefix: "shard." + strconv.Itoa(cfg.TotalShards) + ".", start: int(h.Sum32() % uint32(cfg.TotalShards)),
		owned: map[int]*Lease{}, members: map[string]string{}, owners: map[int]string{}, freeSince: map[int]time.Time{},
		wake: make(chan struct{}, 1)}
	return o, nil
}

// ShardLeaseKey is the lease key of shard id of num: "shard.<num>.<id>".
func ShardLeaseKey(id, num int) string { return "shard." + strconv.Itoa(num) + "." + strconv.Itoa(id) }

var keyUnsafe = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// MemberKey is the presence key of a process: "member.<instance>" (characters a key cannot hold as '_').
func MemberKey(instance string) string { return "member." + keyUnsafe.ReplaceAllString(instance, "_") }

// Owned lists the shards this process holds, in order.
func (o *ShardOwner) Owned() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]int, 0, len(o.owned))
	for id := range o.owned {
		out = append(out, id)
	}
	sort.Ints(out)
	return out
}

// lease is the lease of shard id while this process holds it, else nil.
func (o *ShardOwner) lease(id int) *Lease {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.owned[id]
}

// Members lists the live processes as this one sees them.
func (o *ShardOwner) Members() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.memberList()
}

func (o *ShardOwner) memberList() []string {
	set := map[string]bool{o.me: true}
	for _, inst := range o.members {
		set[inst] = true
	}
	out := make([]string, 0, len(set))
	for inst := range set {
		out = append(out, inst)
	}
	sort.Strings(out)
	return out
}

// Owners maps each shard to its holder as this process sees it ("" for a free shard).
func (o *ShardOwner) Owners() map[int]string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[int]string, o.cfg.TotalShards)
	for id := 0; id < o.cfg.TotalShards; id++ {
		out[id] = o.owners[id]
	}
	for id := range o.owned {
		out[id] = o.me
	}
	return out
}

func (o *ShardOwner) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Run joins the deployment and keeps this process's share until ctx ends; then it hands every shard
// over (stopped resumably, sessions written, leases released) and leaves. It returns ctx's error.
func (o *ShardOwner) Run(ctx context.Context, host ShardHost) error {
	var member *Lease
	join := func() {
		if o.cfg.SharedPresence || (member != nil && member.Err() == nil) {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, o.cfg.TTL/3)
		le, err := o.leaser.TryAcquire(rctx, MemberKey(o.me), nil)
		cancel()
		if err != nil {
			o.log.Debug("shard owner: presence key not taken; retrying", zap.Error(err))
			return
		}
		member = le
	}
	defer func() {
		if member != nil {
			rctx, cancel := context.WithTimeout(context.Background(), o.cfg.TTL/3)
			_ = member.Release(rctx)
			cancel()
		}
	}()
	defer o.leave(host) // before the presence key goes: the shards are handed over by a member
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go o.watch(wctx)

	join()
	settle := time.NewTimer(o.cfg.Settle)
	select {
	case <-ctx.Done():
		settle.Stop()
		return ctx.Err()
	case <-settle.C:
	}
	tick := time.NewTicker(o.cfg.TTL / 4)
	defer tick.Stop()
	for {
		join()
		joined := member != nil && member.Err() == nil
		if o.cfg.SharedPresence {
			o.mu.Lock()
			joined = o.members[MemberKey(o.me)] != ""
			o.mu.Unlock()
		}
		o.balance(ctx, host, joined)
		var memberDone <-chan struct{}
		if member != nil {
			memberDone = member.Done()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-o.wake:
		case <-tick.C:
		case <-memberDone:
		}
	}
}

// watch follows the member and shard keys into the owner's view, and wakes the loop on every change.
func (o *ShardOwner) watch(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := o.c.KV(BucketLeases).WatchFiltered(ctx, []string{"member.*", o.prefix + "*"})
		if err != nil {
			o.log.Debug("shard owner: watch not started; retrying", zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(o.cfg.TTL / 4):
			}
			continue
		}
		for e := range w.Updates() {
			if e == nil {
				continue // the initial values are in
			}
			o.apply(e)
		}
		_ = w.Stop()
	}
}

func (o *ShardOwner) apply(e jetstream.KeyValueEntry) {
	held := e.Operation() == jetstream.KeyValuePut
	var v leaseValue
	if held {
		if err := json.Unmarshal(e.Value(), &v); err != nil || v.Owner == "" {
			held = false
		}
	}
	key := e.Key()
	o.mu.Lock()
	switch {
	case strings.HasPrefix(key, "member."):
		if held {
			o.members[key] = v.Owner
		} else {
			delete(o.members, key)
		}
	case strings.HasPrefix(key, o.prefix):
		id, err := strconv.Atoi(key[len(o.prefix):])
		if err != nil || id < 0 || id >= o.cfg.TotalShards {
			break
		}
		if held {
			o.owners[id] = v.Owner
			delete(o.freeSince, id)
		} else {
			delete(o.owners, id)
			if _, ok := o.freeSince[id]; !ok {
				o.freeSince[id] = time.Now()
			}
		}
	}
	o.mu.Unlock()
	o.poke()
}

// balance applies the rule once.
func (o *ShardOwner) balance(ctx context.Context, host ShardHost, joined bool) {
	o.mu.Lock()
	for id, le := range o.owned {
		if le.Err() != nil {
			// The host stopped it when Done closed; it may be taken again once free.
			delete(o.owned, id)
			o.log.Warn("shard lease lost; the shard stopped", zap.Int("shard", id), zap.Error(le.Err()))
		}
	}
	candidates := o.cfg.ShardIDs
	if len(candidates) == 0 {
		candidates = make([]int, o.cfg.TotalShards)
		for i := range candidates {
			candidates[i] = (o.start + i) % o.cfg.TotalShards
		}
	}
	members := o.memberList()
	target := len(candidates)
	fixed := len(o.cfg.ShardIDs) > 0
	if !fixed {
		target = (o.cfg.TotalShards + len(members) - 1) / len(members)
	}
	counts := map[string]int{}
	for id, owner := range o.owners {
		if _, mine := o.owned[id]; !mine && owner != o.me {
			counts[owner]++
		}
	}
	deficit := 0
	for _, m := range members {
		if m != o.me {
			deficit += max(0, target-counts[m])
		}
	}
	var take []int
	for _, id := range candidates {
		if _, mine := o.owned[id]; mine || o.owners[id] != "" {
			continue
		}
		long := !o.freeSince[id].IsZero() && time.Since(o.freeSince[id]) > o.cfg.TTL
		if len(o.owned)+len(take) < target || long {
			take = append(take, id)
		}
	}
	var give []int
	if n := min(len(o.owned)-target, deficit); !fixed && n > 0 {
		ids := make([]int, 0, len(o.owned))
		for id := range o.owned {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		give = ids[len(ids)-n:]
	}
	o.mu.Unlock()

	if !joined {
		// Cut off from NATS, or not yet a member: others cannot count this process, so it takes nothing.
		take = nil
	}
	for _, id := range take {
		o.mu.Lock()
		over := len(o.owned) >= target
		long := !o.freeSince[id].IsZero() && time.Since(o.freeSince[id]) > o.cfg.TTL
		o.mu.Unlock()
		if over && !long {
			break
		}
		o.takeShard(ctx, host, id)
	}
	if len(give) > 0 {
		o.log.Info("handing shards over", zap.Ints("shards", give), zap.Int("target", target), zap.Strings("members", members))
	}
	for _, id := range give {
		o.handOver(host, id)
	}
}

func (o *ShardOwner) takeShard(ctx context.Context, host ShardHost, id int) {
	rctx, cancel := context.WithTimeout(ctx, o.cfg.TTL/3)
	le, err := o.leaser.TryAcquire(rctx, ShardLeaseKey(id, o.cfg.TotalShards), nil)
	cancel()
	if err != nil {
		if !errors.Is(err, ErrLeaseHeld) {
			o.log.Debug("shard lease not taken", zap.Int("shard", id), zap.Error(err))
		}
		return
	}
	o.mu.Lock()
	o.owned[id] = le
	o.owners[id] = o.me
	delete(o.freeSince, id)
	o.mu.Unlock()
	prior := le.Prior()
	o.log.Info("took shard", zap.Int("shard", id), zap.Bool("previous_owner_expired", prior.Expired))
	if err := host.StartShard(id, le); err != nil {
		o.log.Warn("shard not started; its lease is given back", zap.Int("shard", id), zap.Error(err))
		o.release(id, le)
	}
}

// handOver stops a shard resumably and then releases its lease.
func (o *ShardOwner) handOver(host ShardHost, id int) {
	o.mu.Lock()
	le := o.owned[id]
	o.mu.Unlock()
	if le == nil {
		return
	}
	host.StopShard(id)
	o.release(id, le)
}

func (o *ShardOwner) release(id int, le *Lease) {
	o.mu.Lock()
	delete(o.owned, id)
	o.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), o.cfg.TTL/3)
	defer cancel()
	if err := le.Release(ctx); err != nil {
		o.log.Warn("shard lease not released; another process takes the shard after the TTL", zap.Int("shard", id), zap.Error(err))
	}
}

// leave hands every shard over at once.
func (o *ShardOwner) leave(host ShardHost) {
	o.mu.Lock()
	ids := make([]int, 0, len(o.owned))
	for id := range o.owned {
		ids = append(ids, id)
	}
	o.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.handOver(host, id)
		}()
	}
	wg.Wait()
}
