package loadtool

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"time"
)

// ShardsOptions configures RunShards. Zero values take the defaults in brackets.
type ShardsOptions struct {
	Binaries       Binaries
	Shards         int           // dd's shards, --role=gateway [1000]
	MaxConcurrency int           // the simulator's session_start_limit.max_concurrency [250]
	GuildsPerShard int           // guilds = Shards × this [4]
	Heartbeat      time.Duration // the simulator's heartbeat_interval [10s]
	// IdentifyWindow is the simulator's identify window [5s]. dd paces identifies by Discord's 5 s
	// whatever the simulator says, so anything shorter only hides violations.
	IdentifyWindow time.Duration
	// Settle is how long dd sits idle after startup before its RSS and idle CPU are read [30s].
	Settle time.Duration
	// SettleCollections, if above 0, makes the settle go on past Settle until dd has collected its heap
	// this many times since going idle, plus 20 s (see settle; 2 for a figure that does not depend on the
	// collector's phase).
	SettleCollections int
	// BaselineShards, if above 0, runs the whole scenario a second time with this many shards, so that
	// RSS per shard can be taken as a slope that removes dd's fixed costs.
	BaselineShards int
	// Compress is dd's gateway.compress [dd's default, zstd-stream].
	Compress string
	// FillEvents, if above 0, has the simulator send this many MESSAGE_CREATEs per shard (spread over the
	// guilds at random) once every shard is ready, before the settle: a shard that has run a while has
	// seen more than its decompressor's window (32 KiB for zlib-stream), and an idle shard's memory
	// depends on it. 80 a shard is about 50 KB. dd drops them (events.drop) after the shard has read
	// them, so that the queue's and delivery's garbage from the burst does not hide the shards' memory,
	// and does not remember them for MESSAGE_UPDATE dedup (gateway.dedup_message_updates = false).
	FillEvents int
	// ReadyTimeout bounds the wait for every shard and guild [3 × the identify minimum + 1 min].
	ReadyTimeout   time.Duration
	StatusRequests int      // GET /status requests timed after the settle [5]
	Env            []string // more DD_* variables for dd
	Dir            string   // parent of the runs' directories [the system temp directory]
	Keep           bool
	Logf           func(format string, args ...any)
}

func (o *ShardsOptions) defaults() {
	if o.Shards <= 0 {
		o.Shards = 1000
	}
	if o.MaxConcurrency <= 0 {
		o.MaxConcurrency = 250
	}
	if o.GuildsPerShard <= 0 {
		o.GuildsPerShard = 4
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 10 * time.Second
	}
	if o.IdentifyWindow <= 0 {
		o.IdentifyWindow = 5 * time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 30 * time.Second
	}
	if o.StatusRequests <= 0 {
		o.StatusRequests = 5
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// ShardsRun is one startup of dd with a number of shards.
type ShardsRun struct {
	Shards         int     `json:"shards"`
	MaxConcurrency int     `json:"max_concurrency"`
	Guilds         int     `json:"guilds"`
	HeartbeatS     float64 `json:"heartbeat_s"`

	ReadySeconds float64 `json:"ready_s"` // dd's start until every shard ready and every GUILD_CREATE delivered
	// From the simulator.
	IdentifiesAccepted int     `json:"identifies_accepted"`
	IdentifiesRefused  int     `json:"identifies_refused"` // pacing violations, answered with op 9
	IdentifiesOther    int     `json:"identifies_other"`   // rejected, past the budget
	Connections        int64   `json:"connections"`
	Resumes            int     `json:"resumes"`
	HeartbeatTimeouts  int     `json:"heartbeat_timeouts"`
	SlowConsumerDrops  int     `json:"slow_consumer_drops"`
	IdentifySpan       float64 `json:"identify_span_s"` // first to last accepted IDENTIFY
	IdentifyMinimum    float64 `json:"identify_min_s"`  // (ceil(N/C) - 1) × the window
	SpanRatio          float64 `json:"span_ratio"`
	GuildCreates       int     `json:"guild_creates"` // distinct guilds delivered

	RSSStartup    int64   `json:"rss_startup_bytes"`  // when every shard was ready
	RSSSettled    int64   `json:"rss_settled_bytes"`  // after Settle
	AnonSettled   int64   `json:"anon_settled_bytes"` // RssAnon after Settle (RSS less mapped files)
	PeakRSS       int64   `json:"peak_rss_bytes"`     // VmHWM
	RSSPerShard   float64 `json:"rss_per_shard_bytes"`
	SettleSeconds float64 `json:"settle_s"`
	IdleCores     float64 `json:"idle_cpu_cores"` // dd's CPU seconds per second over the settle
	StartupCPU    float64 `json:"startup_cpu_s"`  // dd's CPU seconds until ready
	SimRSS        int64   `json:"sim_rss_bytes"`
	Compress      string  `json:"compress"`
	FillEvents    int64   `json:"fill_events"` // MESSAGE_CREATEs delivered before the settle (FillEvents × shards)
	// From dd's /metrics after the settle.
	Goroutines int64 `json:"goroutines"`
	HeapInuse  int64 `json:"heap_inuse_bytes"`
	StackInuse int64 `json:"stack_inuse_bytes"`
	// SettleGCs is how many collections dd ran during the settle. Until one has run after the traffic,
	// RSS holds the burst's garbage; an idle Go process collects every two minutes.
	SettleGCs    int     `json:"settle_gcs"`
	SimIdleCores float64 `json:"sim_idle_cpu_cores"`

	StatusMillis    []float64 `json:"status_ms"` // each GET /status, in order
	StatusMedianMs  float64   `json:"status_median_ms"`
	StatusBytes     int       `json:"status_bytes"`
	StatusReady     int       `json:"status_ready"` // shards /status shows ready
	ReceivedEvents  int64     `json:"received_events"`
	ReceiverInvalid int64     `json:"receiver_invalid"`
}

// ShardsResult is what RunShards measured.
type ShardsResult struct {
	Run      ShardsRun  `json:"run"`
	Baseline *ShardsRun `json:"baseline,omitempty"`
	// SlopePerShard is (RSS(N) − RSS(M)) ÷ (N − M) after the settle, with M the baseline's shards.
	SlopePerShard float64 `json:"rss_slope_per_shard_bytes,omitempty"`
	// AnonSlopePerShard is the same slope of RssAnon.
	AnonSlopePerShard float64 `json:"anon_slope_per_shard_bytes,omitempty"`
}

// RunShards starts dd --role=gateway with many shards against the simulator and measures the startup
// (identify pacing against the limit, connections), the memory per shard and the idle cost.
func RunShards(ctx context.Context, o ShardsOptions) (ShardsResult, error) {
	o.defaults()
	var res ShardsResult
	if err := o.Binaries.resolve(); err != nil {
		return res, err
	}
	run, err := runShardsOnce(ctx, o, o.Shards)
	res.Run = run
	if err != nil {
		return res, err
	}
	if o.BaselineShards > 0 && o.BaselineShards != o.Shards {
		base, err := runShardsOnce(ctx, o, o.BaselineShards)
		res.Baseline = &base
		if err != nil {
			return res, err
		}
		res.SlopePerShard = float64(run.RSSSettled-base.RSSSettled) / float64(run.Shards-base.Shards)
		res.AnonSlopePerShard = float64(run.AnonSettled-base.AnonSettled) / float64(run.Shards-base.Shards)
	}
	return res, nil
}

func runShardsOnce(ctx context.Context, o ShardsOptions, n int) (run ShardsRun, err error) {
	guilds := n * o.GuildsPerShard
	buckets := (n + o.MaxConcurrency - 1) / o.MaxConcurrency
	minimum := time.Duration(buckets-1) * 5 * time.Second
	if o.IdentifyWindow > 5*time.Second {
		minimum = time.Duration(buckets-1) * o.IdentifyWindow
	}
	run = ShardsRun{Shards: n, MaxConcurrency: o.MaxConcurrency, Guilds: guilds, HeartbeatS: o.Heartbeat.Seconds(),
		IdentifyMinimum: minimum.Seconds(), Compress: cmp.Or(o.Compress, "dd's default")}
	timeout := o.ReadyTimeout
	if timeout <= 0 {
		timeout = 3*time.Duration(buckets)*max(o.IdentifyWindow, 5*time.Second) + time.Minute
	}
	dir, cleanup, err := runDir(o.Dir, fmt.Sprintf("shards%d", n))
	if err != nil {
		return run, err
	}
	parent := ctx
	defer func() {
		if err != nil && parent.Err() != nil {
			// Ended from outside: the processes were killed, and whatever failed next says less.
			err = parent.Err()
		}
		if err != nil {
			err = fmt.Errorf("%d shards: %w (logs in %s)", n, err, dir)
		}
		cleanup(o.Keep || err != nil)
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sim, err := startSim(ctx, dir, o.Binaries.Sim, simOptions{Guilds: guilds, MaxConcurrency: o.MaxConcurrency,
		IdentifyWindow: o.IdentifyWindow, Heartbeat: o.Heartbeat, SessionStartTotal: 10*n + 1000})
	if err != nil {
		return run, err
	}
	defer sim.stop(10 * time.Second)
	recv, err := StartReceiver(eventsSecret)
	if err != nil {
		return run, err
	}
	defer recv.Close()
	extra := o.Env
	if o.Compress != "" {
		extra = append([]string{"DD_GATEWAY__COMPRESS=" + o.Compress}, extra...)
	}
	if o.FillEvents > 0 {
		// The filter's MESSAGE_UPDATE dedup remembers every MESSAGE_CREATE up to gateway limits that are
		// the process's, not a shard's: the fill's events, proportional to the shards, would count it
		// as memory per shard.
		extra = append([]string{"DD_EVENTS__DROP=MESSAGE_CREATE", "DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false"}, extra...)
	}
	env := ddEnv(sim, recv, filepath.Join(dir, "store"), n, "Guilds,GuildMessages", extra)
	start := time.Now()
	dd, err := startDD(ctx, dir, o.Binaries.DD, "gateway", env, "gateway")
	if err != nil {
		return run, err
	}
	defer dd.stop(30 * time.Second)
	procs := []*process{sim.process, dd.process}
	o.Logf("shards: %d shards, max_concurrency %d, %d guilds, heartbeat %v; dd pid %d, simulator pid %d; waiting up to %v",
		n, o.MaxConcurrency, guilds, o.Heartbeat, dd.pid(), sim.pid(), timeout)

	lastLog := time.Now()
	err = waitFor(ctx, fmt.Sprintf("%d shards ready and %d GUILD_CREATEs delivered", n, guilds), timeout, 250*time.Millisecond, procs,
		func() (bool, error) {
			m, err := dd.metrics()
			if err != nil {
				return false, err
			}
			ready := int(m.Value("dd_gateway_shards_ready"))
			if time.Since(lastLog) > 5*time.Second {
				lastLog = time.Now()
				o.Logf("shards: %.0fs: %d of %d ready, %d of %d guilds delivered", time.Since(start).Seconds(), ready, n, recv.GuildCreates(), guilds)
			}
			return ready >= n && recv.GuildCreates() >= guilds, nil
		})
	if err != nil {
		return run, err
	}
	run.ReadySeconds = time.Since(start).Seconds()
	atReady, err := ReadProc(dd.pid())
	if err != nil {
		return run, err
	}
	simAtReady, err := ReadProc(sim.pid())
	if err != nil {
		return run, err
	}
	run.RSSStartup, run.StartupCPU = atReady.RSS, atReady.CPUSeconds
	o.Logf("shards: every shard ready in %.1fs, dd RSS %s", run.ReadySeconds, mib(atReady.RSS))
	if o.FillEvents > 0 {
		if err := fillShards(ctx, sim, dd, procs, int64(o.FillEvents*n)); err != nil {
			return run, err
		}
		run.FillEvents = int64(o.FillEvents * n)
		if atReady, err = ReadProc(dd.pid()); err != nil {
			return run, err
		}
		if simAtReady, err = ReadProc(sim.pid()); err != nil {
			return run, err
		}
		o.Logf("shards: %d MESSAGE_CREATEs delivered, dd RSS %s", run.FillEvents, mib(atReady.RSS))
	}
	o.Logf("shards: settling %v", o.Settle)

	settleStart := time.Now()
	gcsBefore, err := dd.metrics()
	if err != nil {
		return run, err
	}
	if err := settle(ctx, dd, o.Settle, o.SettleCollections, o.Logf); err != nil {
		return run, err
	}
	for _, p := range procs {
		if p.exited() {
			return run, p.exitError()
		}
	}
	settled, err := ReadProc(dd.pid())
	if err != nil {
		return run, err
	}
	simSettled, err := ReadProc(sim.pid())
	if err != nil {
		return run, err
	}
	run.SettleSeconds = time.Since(settleStart).Seconds()
	run.RSSSettled, run.AnonSettled, run.PeakRSS = settled.RSS, settled.Anon, settled.HWM
	run.RSSPerShard = float64(settled.RSS) / float64(n)
	run.IdleCores = (settled.CPUSeconds - atReady.CPUSeconds) / run.SettleSeconds
	run.SimRSS = simSettled.RSS
	m, err := dd.metrics()
	if err != nil {
		return run, err
	}
	run.Goroutines = int64(m.Value("go_goroutines"))
	run.SettleGCs = int(m.Value("go_gc_duration_seconds_count") - gcsBefore.Value("go_gc_duration_seconds_count"))
	run.HeapInuse = int64(m.Value("go_memstats_heap_inuse_bytes"))
	run.StackInuse = int64(m.Value("go_memstats_stack_inuse_bytes"))
	run.SimIdleCores = (simSettled.CPUSeconds - simAtReady.CPUSeconds) / run.SettleSeconds

	for i := 0; i < o.StatusRequests; i++ {
		st, took, size, err := dd.status()
		if err != nil {
			return run, err
		}
		run.StatusMillis = append(run.StatusMillis, round2(float64(took.Microseconds())/1000))
		run.StatusBytes = size
		run.StatusReady = 0
		for _, s := range st.Shards {
			if s.State == "ready" {
				run.StatusReady++
			}
		}
	}
	sorted := slices.Clone(run.StatusMillis)
	slices.Sort(sorted)
	run.StatusMedianMs = sorted[len(sorted)/2]

	st, err := sim.stats()
	if err != nil {
		return run, err
	}
	var first, last time.Time
	for _, id := range st.Identifies {
		switch id.Outcome {
		case "accepted":
			run.IdentifiesAccepted++
			if first.IsZero() || id.At.Before(first) {
				first = id.At
			}
			if id.At.After(last) {
				last = id.At
			}
		case "rate_limited":
			run.IdentifiesRefused++
		default:
			run.IdentifiesOther++
		}
	}
	run.IdentifySpan = last.Sub(first).Seconds()
	run.SpanRatio = ratio(run.IdentifySpan, run.IdentifyMinimum)
	run.Connections, run.Resumes = st.Connections, len(st.Resumes)
	run.HeartbeatTimeouts, run.SlowConsumerDrops = st.HeartbeatTimeouts, st.SlowConsumerDrops
	rs := recv.Stats()
	run.GuildCreates, run.ReceivedEvents, run.ReceiverInvalid = rs.Guilds, rs.Events, rs.Invalid+rs.BadAuth
	return run, nil
}

// fillShards has the simulator send total MESSAGE_CREATEs at a pace the machine keeps up with, and waits
// until dd has read (and dropped) them all.
func fillShards(ctx context.Context, sim *simProcess, dd *ddProcess, procs []*process, total int64) error {
	filtered := func() (float64, error) {
		m, err := dd.metrics()
		return m.Value("dd_gateway_events_filtered_total"), err
	}
	before, err := filtered()
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{"rate": 5000, "total": total, "message_create": 1})
	if err := postJSON(sim.url+"/_sim/gateway/firehose", body); err != nil {
		return err
	}
	timeout := time.Duration(total/1000)*time.Second + time.Minute
	return waitFor(ctx, fmt.Sprintf("%d MESSAGE_CREATEs read", total), timeout, 250*time.Millisecond, procs,
		func() (bool, error) {
			f, err := filtered()
			return f-before >= float64(total), err
		})
}

// settle waits at least d, and then until dd's heap has been collected want times since it went idle and the
// runtime had time to give the garbage's pages back. An idle Go process collects every two minutes, or
// sooner as it allocates, and its scavenger returns pages against the heap in use at the end of the
// previous collection's mark, which still counts the burst's unswept spans: RSS falls at the second
// collection after a burst (175 MiB against 83 MiB a few seconds after it, in one run of 1,000 shards),
// so RSS read at a fixed time measures the collector's phase, not the shards. Bounded: d plus five
// minutes. Once idle, it asks dd for a collection every few seconds until it has its count, instead of
// waiting minutes for the runtime to collect by itself.
func settle(ctx context.Context, dd *ddProcess, d time.Duration, want int, logf func(string, ...any)) error {
	if want <= 0 {
		return sleepCtx(ctx, d)
	}
	const (
		idleAfter = 10 * time.Second // the traffic's buffers and the decompressors' histories are packed by then
		release   = 20 * time.Second // for the scavenger after the collection
		poll      = time.Second
		// An idle process would collect by itself within two minutes; asking for the collection (the
		// gateway's /debug/pprof/heap?gc=1) gives the same heap minutes sooner.
		askAfter = 5 * time.Second
	)
	start := time.Now()
	gcs := func() (float64, error) {
		m, err := dd.metrics()
		return m.Value("go_gc_duration_seconds_count"), err
	}
	last, err := gcs()
	if err != nil {
		return err
	}
	var collectedAt time.Time // last time the count was seen to move, once idleAfter has passed
	collections := 0
	for {
		if err := sleepCtx(ctx, poll); err != nil {
			return err
		}
		n, err := gcs()
		if err != nil {
			return err
		}
		if n != last && time.Since(start) >= idleAfter {
			collectedAt = time.Now()
			collections += int(n - last)
		}
		last = n
		if idle := time.Since(start) - idleAfter; collections < want && idle >= 0 &&
			(collectedAt.IsZero() || time.Since(collectedAt) >= askAfter) && idle%askAfter < poll {
			if err := dd.collect(); err != nil {
				return err
			}
		}
		waited := time.Since(start)
		if waited >= d && collections >= want && time.Since(collectedAt) >= release {
			return nil
		}
		if waited >= d+5*time.Minute {
			logf("shards: no collection in %v of idle; reading RSS anyway", waited.Round(time.Second))
			return nil
		}
	}
}
