package cluster

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/ddhq/dd/internal/shardstatus"
	"github.com/ddhq/dd/shard"
)

// GatewayStatus is a gateway process's view of the deployment (its processes, each shard's holder) and
// of the shards it runs. Before the shards start only Cluster, Instance and NATSConnected are set, and
// the lists are empty.
type GatewayStatus struct {
	Cluster       string
	Instance      string
	NATSConnected bool
	Started       bool
	TotalShards   int
	Processes     []Process     // the live processes, by instance
	Owners        []string      // each shard's holder ("" free)
	Free          []int         // the shards nobody holds
	Shards        []ShardStatus // the shards this process runs
	// Summary sums Shards (its Queued: the events of this process's shards that wait for the bot). Its
	// own Shards, their count, is hidden by the list.
	shardstatus.Summary
	Filtered   int64 // events the filter dropped
	Published  int64 // events the stream acknowledged as new
	Duplicates int64 // events the stream acknowledged as copies
	// Reshard is the deployment's reshard in progress (nil: none).
	Reshard *ReshardStatus
}

// Process is one gateway process of the deployment and the shards it holds.
type Process struct {
	Instance string `json:"instance"`
	Shards   []int  `json:"shards"`
}

// ShardStatus is one shard this process runs (its Queued: in the stream, not yet delivered to the bot).
type ShardStatus = shardstatus.Line

// Status is the deployment as this process sees it and the shards it runs.
func (g *Gateway) Status() GatewayStatus {
	out := GatewayStatus{Cluster: g.conn.Name(), Instance: g.conn.Instance(), NATSConnected: g.conn.Connected(),
		Processes: []Process{}, Owners: []string{}, Free: []int{}, Shards: []ShardStatus{},
		Summary: shardstatus.Summarize(nil)}
	if v := g.reshardView(); v.rec != nil {
		out.Reshard = &ReshardStatus{ID: v.rec.ID, From: v.rec.From, To: v.rec.To, Phase: v.rec.Phase,
			Ready: len(v.ready), Stopped: len(v.stopped), Live: len(v.live)}
	}
	run := g.st.Load()
	if run == nil {
		return out
	}
	out.Started, out.TotalShards = true, run.total
	owners := run.owner.Owners()
	byProcess := map[string][]int{}
	for _, m := range run.owner.Members() {
		byProcess[m] = []int{}
	}
	out.Owners = make([]string, run.total)
	for id := 0; id < run.total; id++ {
		o := owners[id]
		out.Owners[id] = o
		if o == "" {
			out.Free = append(out.Free, id)
			continue
		}
		byProcess[o] = append(byProcess[o], id)
	}
	for inst, ids := range byProcess {
		out.Processes = append(out.Processes, Process{Instance: inst, Shards: ids})
	}
	sort.Slice(out.Processes, func(i, j int) bool { return out.Processes[i].Instance < out.Processes[j].Instance })
	for _, s := range run.runner.Shards() {
		queued := 0
		if run.deliv != nil {
			queued = run.deliv.Backlog(s.ID())
		}
		st := shardstatus.Of(s, run.filter.GuildCount(s.ID()), run.filter.Loading(s.ID()), queued)
		out.Shards = append(out.Shards, st)
		out.Add(st)
	}
	out.Filtered = run.filter.Dropped()
	out.Published, out.Duplicates = run.sink.Published(), run.sink.Duplicates()
	return out
}

// Running is the runner of the shards this process holds (what the command endpoints send to), nil
// before the shards start.
func (g *Gateway) Running() *ShardRunner {
	if r := g.st.Load(); r != nil {
		return r.runner
	}
	return nil
}

func (g *Gateway) countReady() int {
	r := g.st.Load()
	if r == nil {
		return 0
	}
	n := 0
	for _, s := range r.runner.Shards() {
		if s.State() == shard.StateReady {
			n++
		}
	}
	return n
}

// Ready says why this process is not ready: NATS is unreachable (its shards stop reading rather than
// lose events), the shards are not started, it holds no shard, or one it holds is neither connected nor
// resuming its session.
func (g *Gateway) Ready() error {
	if !g.conn.Connected() {
		return errors.New("NATS is unreachable: this process's shards stop reading until it is back (events wait at Discord)")
	}
	r := g.st.Load()
	if r == nil {
		return errors.New("shards are not started yet (waiting for Discord's /gateway/bot)")
	}
	owned := r.owner.Owned()
	if len(owned) == 0 {
		return fmt.Errorf("this process holds no shard (yet) of %d; processes: %s", r.total, strings.Join(r.owner.Members(), ", "))
	}
	down, first := 0, -1
	var firstState shard.State
	for _, id := range owned {
		s := r.runner.Shard(id)
		st := shard.StateDisconnected
		if s != nil {
			st = s.State()
		}
		switch st {
		case shard.StateReady, shard.StateResuming:
			continue
		case shard.StateDisconnected, shard.StateConnecting:
			if s != nil && s.Session().Resumable() {
				continue // between two attempts to resume
			}
		}
		if down == 0 {
			first, firstState = id, st
		}
		down++
	}
	if down > 0 {
		return fmt.Errorf("%d of the %d shards this process holds are not connected (shard %d is %s)", down, len(owned), first, firstState)
	}
	return nil
}
