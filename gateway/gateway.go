package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/internal/filter"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/store"
)

// Queue is where the shards' events go: a durable log (queue.Queue) whose consumers honour fences.
type Queue interface {
	// Append stores events with other keys (a shard's session, its guild list) in one commit.
	Append(ctx context.Context, recs []queue.Record, also ...queue.KV) error
	// SetFence makes every consumer take everything appended so far, on every shard, before anything
	// appended after (a reshard's switch moves guilds between shards).
	SetFence(ctx context.Context) (uint64, error)
}

// Store keeps the pipeline's own keys: the shard count of the last reshard, each shard's guild list,
// and the sessions a switch ends. A *store.Store is one.
type Store interface {
	Get(key []byte) ([]byte, error)
	Update(fn func(w store.Writer) error) error
}

// Config configures a Gateway. Queue, Store and GatewayBot are required.
type Config struct {
	// Shard is what every shard shares: token, intents, API version, compression, large_threshold,
	// hooks. GatewayURL defaults to /gateway/bot's. The Gateway sets Identify and Sink, and wraps
	// Hooks.OnDispatch (which runs first; false drops the event) and Hooks.OnClose.
	Shard shard.Config
	// TotalShards is the shard count; 0 takes Discord's recommendation (a multiple of Processes). The
	// count a reshard moved to wins while TotalShards stays what it was then.
	TotalShards int
	// Shards returns which shards of total this process runs; nil runs them all.
	Shards func(total int) []int
	// Processes is how many processes share the shards (dd's gateway.clusters; 0 or 1: this one alone).
	// Above 1, a reshard moves only to a multiple of the current count, so that every guild stays in its
	// process when shards are split by shard_id % Processes.
	Processes int

	Queue Queue
	Store Store
	// Sessions loads stored sessions so that shards resume (shard.NewSessionStore); nil identifies
	// every shard. A reshard's new set always identifies.
	Sessions shard.SessionLoader
	// GatewayBot fetches Discord's /gateway/bot: the URL, the recommended count, the identify limits. It
	// retries what may pass and returns nil, nil when ctx ends first.
	GatewayBot func(ctx context.Context) (*shard.GatewayBot, error)
	// Identify paces identifies, shared by both sets of a reshard. Nil: an identify.Local from
	// /gateway/bot's limits and IdentifyWindow.
	Identify identify.Limiter
	// IdentifyWindow is Discord's identify window (0: 5 s); a reshard's deadlines are counted in it.
	IdentifyWindow time.Duration
	// Filter is what the pipeline drops or renames before the queue.
	Filter Filter
	// Reshard configures resharding beyond POST-style requests (Gateway.Reshard).
	Reshard ReshardConfig

	// Observe, when set, sees each dispatch after the filter: kept says whether it goes to the queue,
	// live whether its set is the running one (not a reshard's new set before the switch). ev.Raw is
	// the payload as received.
	Observe func(s *shard.Shard, ev *shard.Event, kept, live bool)
	// Appended, when set, hears how each append of events to the queue went (readiness).
	Appended func(err error)
	// Registerer, when set, gets the dd_gateway_* metrics.
	Registerer prometheus.Registerer
	Logger     *zap.Logger
}

// Filter is what a shard set drops or renames before the queue: events.drop and the gateway's dedup keys.
type Filter = filter.Rules

// ReshardConfig configures automatic and coordinated resharding.
type ReshardConfig struct {
	// Auto checks every CheckInterval (0: 8 h) whether the guilds fill Percentage (0: 80) of the shards'
	// capacity (2500 a shard), and reshards (or, with a Coordinator, proposes) to Discord's
	// recommendation when they do.
	Auto          bool
	CheckInterval time.Duration
	Percentage    int
	// IdentifyReserve is how many of the day's identifies a reshard must leave unspent.
	IdentifyReserve int
	// Coordinator, when set, makes this process one of a split deployment (Processes above 1): a
	// reshard raises the deployment's target, and every process (this one too) follows it, polling it
	// every CoordinatorPoll (0: 2 s).
	Coordinator     Coordinator
	CoordinatorPoll time.Duration
}

// FatalError is an error after which running again cannot help (Discord refused the token, no shard
// to run); Hint says what to change.
type FatalError struct {
	Err  error
	Hint string
}

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// Gateway runs a bot's shards into a queue and reshards them without downtime. Normally one shard set
// runs; during a reshard a new one connects beside it, held, until the switch hands delivery over.
type Gateway struct {
	cfg Config
	log *zap.Logger
	sw  *switcher
	m   metrics

	// The running set (cur), and during a reshard the one taking over (next).
	cur, next atomic.Pointer[Set]
	info      atomic.Pointer[shard.GatewayBot] // set by Run before the first set starts
	limiter   identify.Limiter                 // set by Run before the first set starts
	changed   chan struct{}                    // a reshard switched cur
	starts    chan reshardStart                // reshards for Run to start on its context
	runDone   chan struct{}                    // closed when Run stops taking reshards

	resharding atomic.Bool
	statusMu   sync.Mutex
	status     ReshardStatus
	// ignoredTarget is the last coordinator target this process refused to follow (logged once each).
	ignoredTarget int
}

// New checks cfg and builds a Gateway; Run starts it.
func New(cfg Config) (*Gateway, error) {
	if cfg.Queue == nil || cfg.Store == nil || cfg.GatewayBot == nil {
		return nil, errors.New("gateway: Config.Queue, Store and GatewayBot are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.IdentifyWindow == 0 {
		cfg.IdentifyWindow = identify.Window
	}
	if cfg.Reshard.CoordinatorPoll == 0 {
		cfg.Reshard.CoordinatorPoll = 2 * time.Second
	}
	if cfg.Reshard.CheckInterval == 0 {
		cfg.Reshard.CheckInterval = 8 * time.Hour
	}
	if cfg.Reshard.Percentage == 0 {
		cfg.Reshard.Percentage = 80
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, changed: make(chan struct{}, 1), starts: make(chan reshardStart),
		runDone: make(chan struct{})}
	g.sw = &switcher{q: cfg.Queue, appended: cfg.Appended, log: g.log}
	g.m = newMetrics(g)
	if cfg.Registerer != nil {
		if err := g.m.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Run fetches /gateway/bot, runs the shards until ctx ends, and returns once they have closed
// resumably (their last events queued). A reshard runs on Run's context. A *FatalError means no shard
// can run. A Gateway runs once.
func (g *Gateway) Run(ctx context.Context) error {
	info, err := g.cfg.GatewayBot(ctx)
	if err != nil || info == nil {
		return err // nil when ctx ended
	}
	total := g.cfg.TotalShards
	if total == 0 {
		// Every process of a split deployment rounds Discord's recommendation the same way.
		total = MultipleOf(max(info.Shards, 1), max(g.cfg.Processes, 1))
	}
	if stored, ok := g.storedTotal(); ok && stored != total {
		g.log.Info("using the shard count of the last reshard", zap.Int("total_shards", stored))
		total = stored
	}
	if err := CheckCount(total, 0); err != nil {
		return &FatalError{Err: err, Hint: "set gateway.total_shards to a count dd can run (0 takes Discord's recommendation)"}
	}
	ids := g.shardIDs(total)
	if len(ids) == 0 {
		return &FatalError{Err: fmt.Errorf("no shard to run of %d", total),
			Hint: "check gateway.first_shard, last_shard, cluster_id, clusters and total_shards"}
	}
	g.info.Store(info)
	g.limiter = g.cfg.Identify
	if g.limiter == nil {
		g.limiter = identify.NewLocal(info.SessionStartLimit, g.cfg.IdentifyWindow, identify.Margin(g.cfg.IdentifyWindow), g.log)
	}
	set, err := g.startSet(ctx, total, ids, false)
	if err != nil {
		return err
	}
	g.cur.Store(set)
	g.log.Info("starting shards", zap.Int("total_shards", total), zap.Int("first", ids[0]), zap.Int("last", ids[len(ids)-1]),
		zap.Int("max_concurrency", info.SessionStartLimit.MaxConcurrency), zap.Int("identifies_remaining", info.SessionStartLimit.Remaining))

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Stop taking reshards, then stop the periodic checks and any reshard before returning: on a fatal
	// error nothing else cancels ctx.
	defer func() { close(g.runDone); cancel(); wg.Wait() }()
	if g.cfg.Reshard.Auto {
		wg.Go(func() { g.everyWhileSettled(ctx, g.cfg.Reshard.CheckInterval, g.checkReshardDue) })
	}
	if g.cfg.Reshard.Coordinator != nil {
		wg.Go(func() { g.everyWhileSettled(ctx, g.cfg.Reshard.CoordinatorPoll, g.followCoordinator) })
	}
	for {
		cur := g.cur.Load()
		select {
		case <-g.changed:
			continue
		case r := <-g.starts:
			wg.Go(func() {
				defer g.resharding.Store(false)
				g.reshardTo(ctx, r.old, r.total, r.ids, r.why)
			})
			continue
		case <-cur.stopped:
		}
		if g.cur.Load() != cur {
			continue // a reshard retired it
		}
		if cur.err != nil {
			var fe *shard.FatalError
			hint := "see the log lines of each shard"
			if errors.As(cur.err, &fe) {
				hint = fe.Hint
			}
			return &FatalError{Err: fmt.Errorf("no shard can run: %w", cur.err), Hint: hint}
		}
		return nil
	}
}

func (g *Gateway) shardIDs(total int) []int {
	if total > MaxShards {
		return nil // never sized by an unchecked number
	}
	if g.cfg.Shards != nil {
		return g.cfg.Shards(total)
	}
	ids := make([]int, total)
	for i := range ids {
		ids[i] = i
	}
	return ids
}

// Current is the running shard set, nil before Run has started one.
func (g *Gateway) Current() *Set { return g.cur.Load() }

// Next is a reshard's new set while it connects, nil otherwise.
func (g *Gateway) Next() *Set { return g.next.Load() }

// ReshardStatus is the running reshard, or the last one's result.
func (g *Gateway) ReshardStatus() ReshardStatus {
	g.statusMu.Lock()
	defer g.statusMu.Unlock()
	return g.status
}

// ReshardStatus is what GET /status shows of a reshard.
type ReshardStatus struct {
	InProgress bool      `json:"in_progress"`
	From       int       `json:"from,omitempty"`
	To         int       `json:"to,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	Result     string    `json:"result,omitempty"` // of the last one: switched, rolled back: why
	Took       string    `json:"took,omitempty"`
}

func (g *Gateway) setStatus(s ReshardStatus) {
	g.statusMu.Lock()
	g.status = s
	g.statusMu.Unlock()
}
