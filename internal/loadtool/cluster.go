package loadtool

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ddhq/dd/internal/natsproc"
)

// ClusterOptions configures RunCluster. Zero values take the defaults in brackets.
type ClusterOptions struct {
	Binaries Binaries
	// Self is the executable that serves as the run's NATS server when started again as a NATS child
	// [os.Executable()]: cmd/ddload, or a test binary whose TestMain calls natsproc.RunChild.
	Self      string
	Processes int           // dd --role=gateway processes in cluster mode [3]
	Shards    int           // total shards, split among them [12]
	Rate      float64       // events per second the simulator generates [600]
	Duration  time.Duration // how long it generates them [20s]
	LeaseTTL  time.Duration // cluster.lease_ttl [3s]
	BatchMax  int           // events.batch_max [1]
	Guilds    int           // guilds in the simulator [4 per shard]
	// KillAfter is the time from the firehose's start to the SIGKILL of one process [3s]; RestartAfter
	// the time from its shards being READY on the others to its restart [1s]. With one process nothing
	// is killed.
	KillAfter, RestartAfter time.Duration
	// DrainTimeout bounds the wait, after the firehose ends, for every event to reach the receiver [2m].
	DrainTimeout time.Duration
	Env          []string // more DD_* variables for every dd process
	Dir          string   // parent of the run's directory (logs, stores) [the system temp directory]
	Keep         bool     // keep the run's directory
	Logf         func(format string, args ...any)
}

func (o *ClusterOptions) defaults() error {
	if o.Self == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("cluster: finding this executable to start NATS with: %w", err)
		}
		o.Self = self
	}
	if o.Processes <= 0 {
		o.Processes = 3
	}
	if o.Shards <= 0 {
		o.Shards = 12
	}
	if o.Rate <= 0 {
		o.Rate = 600
	}
	if o.Duration <= 0 {
		o.Duration = 20 * time.Second
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 3 * time.Second
	}
	if o.BatchMax <= 0 {
		o.BatchMax = 1
	}
	if o.Guilds <= 0 {
		o.Guilds = 4 * o.Shards
	}
	if o.KillAfter <= 0 {
		o.KillAfter = 3 * time.Second
	}
	if o.RestartAfter <= 0 {
		o.RestartAfter = time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 2 * time.Minute
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Shards < o.Processes {
		return fmt.Errorf("cluster: %d shards for %d processes: want at least one shard each", o.Shards, o.Processes)
	}
	return nil
}

// ClusterProcFigures are one dd instance's memory and CPU over the firehose: a killed and restarted
// instance counts both of its processes (the first's CPU until the kill, the second's from its start).
type ClusterProcFigures struct {
	Instance      string  `json:"instance"`
	PIDs          []int   `json:"pids"`
	PeakRSS       int64   `json:"peak_rss_bytes"`        // the highest VmHWM of its processes
	MaxSampledRSS int64   `json:"max_sampled_rss_bytes"` // the highest VmRSS of the samples during the firehose
	CPUSeconds    float64 `json:"cpu_seconds"`           // user + system from the firehose's start to the last delivery
	CPUPer1000    float64 `json:"cpu_seconds_per_1000"`  // CPUSeconds per 1,000 events the receiver got meanwhile
}

// ClusterKill is what the SIGKILL of one process and its restart did.
type ClusterKill struct {
	Instance string  `json:"instance"`
	Shards   int     `json:"shards"` // shards it ran READY when it was killed
	AtS      float64 `json:"at_s"`   // seconds after the firehose's start
	// Its shards READY on the others: seconds after the kill, the same ÷ lease_ttl, the split then, and
	// what the simulator saw meanwhile (identifies must be 0: the shards are resumed).
	TakeoverSeconds    float64 `json:"takeover_s"`
	TakeoverTTLs       float64 `json:"takeover_lease_ttls"`
	TakeoverSplit      []int   `json:"takeover_split"`
	TakeoverIdentifies int     `json:"takeover_identifies"`
	TakeoverResumes    int     `json:"takeover_resumes"`
	// Restarted under its name: seconds from its start to an even split of every shard READY.
	RestartSeconds    float64 `json:"restart_s"`
	RestartSplit      []int   `json:"restart_split"`
	RestartIdentifies int     `json:"restart_identifies"`
	RestartResumes    int     `json:"restart_resumes"`
}

// ClusterResult is what RunCluster measured.
type ClusterResult struct {
	Processes int     `json:"processes"`
	Shards    int     `json:"shards"`
	Rate      float64 `json:"rate"` // asked
	Duration  float64 `json:"duration_s"`
	LeaseTTL  float64 `json:"lease_ttl_s"`
	BatchMax  int     `json:"batch_max"`
	NATS      string  `json:"nats"` // how the NATS server ran

	// From the first dd process's start: every shard READY exactly once, then the split even.
	StartupReadySeconds float64 `json:"startup_ready_s"`
	StartupReadySplit   []int   `json:"startup_ready_split"`
	StartupEvenSeconds  float64 `json:"startup_even_s"`
	StartupSplit        []int   `json:"startup_split"`
	StartupIdentifies   int     `json:"startup_identifies"`

	Kill *ClusterKill `json:"kill,omitempty"` // nil with one process

	Created         int64   `json:"created"` // events the simulator's firehose generated
	FirehoseSeconds float64 `json:"firehose_s"`
	Delivered       int64   `json:"delivered"` // events at the receiver from the firehose's start, copies included
	DeliverySeconds float64 `json:"delivery_s"`
	DeliveryRate    float64 `json:"delivery_rate"`
	Complete        bool    `json:"complete"` // every event of every session at the receiver within DrainTimeout

	// Over the whole run (READY and GUILD_CREATEs included), per shard against the simulator's sequence.
	Lost         int64 `json:"lost"`
	Duplicates   int64 `json:"duplicates"`    // (shard, seq) that arrived more than once
	DuplicateIDs int64 `json:"duplicate_ids"` // X-DD-Event-Id that arrived more than once
	Unexpected   int64 `json:"unexpected"`
	OutOfOrder   int64 `json:"out_of_order"`
	BadAuth      int64 `json:"bad_auth"`
	Invalid      int64 `json:"invalid"`
	// Sessions the simulator has for the run's shards: one per shard unless a shard identified again
	// (then a shard's sequences restart and the per-shard checks above count them as duplicates).
	Sessions   int `json:"sessions"`
	Identifies int `json:"identifies"`
	Resumes    int `json:"resumes"`

	DD       []ClusterProcFigures `json:"dd"`
	NATSProc ProcFigures          `json:"nats_process"`
	Sim      ProcFigures          `json:"sim"`
	Receiver ProcFigures          `json:"receiver"`
	Machine  MachineFigures       `json:"machine"`

	PIDs []int `json:"pids"` // every process the run started
}

// clusterMember is one dd instance: its process now, and what its earlier processes did.
type clusterMember struct {
	name, dir, store string
	env              []string
	cur              *ddProcess // nil once killed, until restarted
	cpuBase          float64    // cur's CPU when the firehose started (0 for a process started later)
	cpuDone          float64    // CPU of its earlier processes over the firehose
	lastCPU          float64
	fig              ClusterProcFigures
}

// clusterSampler reads /proc of the run's processes every 250 ms during the firehose.
type clusterSampler struct {
	mu      sync.Mutex
	members []*clusterMember
	stop    chan struct{}
	done    chan struct{}
}

func (s *clusterSampler) sampleLocked() {
	for _, m := range s.members {
		if m.cur == nil || m.cur.exited() {
			continue
		}
		if p, err := ReadProc(m.cur.pid()); err == nil {
			m.lastCPU = p.CPUSeconds
			m.fig.MaxSampledRSS = max(m.fig.MaxSampledRSS, p.RSS)
			m.fig.PeakRSS = max(m.fig.PeakRSS, p.HWM)
		}
	}
}

func (s *clusterSampler) run() {
	defer close(s.done)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			s.mu.Lock()
			s.sampleLocked()
			s.mu.Unlock()
		}
	}
}

// live is the members' current processes.
func (s *clusterSampler) live() (ps []*ddProcess) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.members {
		if m.cur != nil {
			ps = append(ps, m.cur)
		}
	}
	return ps
}

func procsOf(ds []*ddProcess, more ...*process) []*process {
	for _, d := range ds {
		more = append(more, d.process)
	}
	return more
}

// readySplit asks each process for its shards: how many each runs READY, and whether every shard of
// total runs READY in exactly one of them. A process that does not answer has none.
func readySplit(ps []*ddProcess, total int) (counts []int, all bool) {
	seen := map[int]int{}
	for _, p := range ps {
		st, _, _, err := p.status()
		n := 0
		if err == nil {
			for _, s := range st.Shards {
				if s.State == "ready" {
					n++
					seen[s.ID]++
				}
			}
		}
		counts = append(counts, n)
	}
	if len(seen) != total {
		return counts, false
	}
	for id, n := range seen {
		if n != 1 || id < 0 || id >= total {
			return counts, false
		}
	}
	return counts, true
}

// even says whether counts split total as evenly as it goes (no two differ by more than one).
func even(counts []int, total int) bool {
	if len(counts) == 0 {
		return false
	}
	lo, hi, sum := counts[0], counts[0], 0
	for _, c := range counts {
		lo, hi, sum = min(lo, c), max(hi, c), sum+c
	}
	return sum == total && hi-lo <= 1
}

// clusterSession is the part of the simulator's session list (GET /_sim/gateway/sessions) a cluster run reads.
type clusterSession struct {
	ID        string `json:"id"`
	Shard     int    `json:"shard"`
	NumShards int    `json:"num_shards"`
	Seq       int64  `json:"seq"`
}

// lastSeqs is each shard's highest sequence over the simulator's sessions of the run's shard count, and
// how many sessions there are.
func lastSeqs(sim *simProcess, shards int) (map[int]int64, int, error) {
	var list []clusterSession
	if err := getJSON(sim.url+"/_sim/gateway/sessions", "", &list); err != nil {
		return nil, 0, err
	}
	last, ids := map[int]int64{}, map[string]bool{}
	for _, s := range list {
		if s.NumShards == shards {
			last[s.Shard] = max(last[s.Shard], s.Seq)
			ids[s.ID] = true
		}
	}
	return last, len(ids), nil
}

// RunCluster runs cluster mode from outside: a NATS server with JetStream (a child process, natsproc),
// the simulator, and Processes `dd --role=gateway` sharing Shards through NATS, all delivering to the
// receiver in this process. It measures the time until every shard is READY and evenly split, then under
// a firehose SIGKILLs one process (the time until its shards are READY on the others, and the identifies
// that cost), restarts it (the time back to an even split), and checks every event: lost, copies, order.
func RunCluster(ctx context.Context, o ClusterOptions) (res ClusterResult, err error) {
	if err := o.defaults(); err != nil {
		return res, err
	}
	res = ClusterResult{Processes: o.Processes, Shards: o.Shards, Rate: o.Rate, Duration: o.Duration.Seconds(),
		LeaseTTL: o.LeaseTTL.Seconds(), BatchMax: o.BatchMax,
		NATS: "nats-server " + natsproc.Version + " (Go module), a child process: " + filepath.Base(o.Self) + " started again with " + natsproc.EnvName + " set"}
	dir, end, err := beginRun(ctx, &o.Binaries, o.Dir, "cluster", o.Keep)
	if err != nil {
		return res, err
	}
	defer end(&err)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	nats, err := startNATS(ctx, dir, o.Self)
	if err != nil {
		return res, err
	}
	defer nats.stop(10 * time.Second)
	sim, err := startSim(ctx, dir, o.Binaries.Sim, simOptions{Guilds: o.Guilds, MaxConcurrency: o.Shards,
		IdentifyWindow: 5 * time.Second, SessionStartTotal: 1000, PrivilegedIntents: 1 << 1})
	if err != nil {
		return res, err
	}
	defer sim.stop(10 * time.Second)
	res.PIDs = append(res.PIDs, nats.pid(), sim.pid())
	recv, err := StartReceiver(eventsSecret)
	if err != nil {
		return res, err
	}
	defer recv.Close()

	smp := &clusterSampler{stop: make(chan struct{}), done: make(chan struct{})}
	var started []*ddProcess // every dd process, stopped at the end
	// Stopped together: one at a time, each would hand its shards to the next to stop.
	defer func() {
		var wg sync.WaitGroup
		for _, d := range started {
			wg.Go(func() { d.stop(30 * time.Second) })
		}
		wg.Wait()
	}()
	startMember := func(m *clusterMember, logDir string) error {
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			return err
		}
		d, err := startDD(ctx, logDir, o.Binaries.DD, "gateway", m.env, "gateway")
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		started = append(started, d)
		res.PIDs = append(res.PIDs, d.pid())
		smp.mu.Lock()
		m.cur, m.cpuBase, m.lastCPU = d, 0, 0
		m.fig.PIDs = append(m.fig.PIDs, d.pid())
		smp.mu.Unlock()
		return nil
	}
	intents := "Guilds,GuildMembers,GuildMessages,GuildMessageReactions,GuildMessageTyping"
	startAt := time.Now()
	for i := range o.Processes {
		name := fmt.Sprintf("gw-%d", i+1)
		m := &clusterMember{name: name, dir: filepath.Join(dir, name), store: filepath.Join(dir, name, "store"), fig: ClusterProcFigures{Instance: name}}
		m.env = ddEnv(sim, recv, m.store, o.Shards, intents, append([]string{
			"DD_CLUSTER__NATS_URL=" + nats.url, "DD_CLUSTER__INSTANCE=" + name, "DD_CLUSTER__LEASE_TTL=" + o.LeaseTTL.String(),
			"DD_EVENTS__BATCH_MAX=" + strconv.Itoa(o.BatchMax),
			"DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false", "DD_GATEWAY__DROP_KNOWN_GUILD_CREATES=false"}, o.Env...))
		smp.members = append(smp.members, m)
		if err := startMember(m, m.dir); err != nil {
			return res, err
		}
	}
	o.Logf("cluster: NATS pid %d at %s, simulator pid %d, %d dd gateway processes on %d shards (lease_ttl %s); waiting for every shard READY",
		nats.pid(), nats.url, sim.pid(), o.Processes, o.Shards, o.LeaseTTL)
	always := []*process{nats.process, sim.process}

	// Startup: every shard READY exactly once, then evenly split.
	var counts []int
	err = waitFor(ctx, "every shard READY in exactly one process", 90*time.Second, 50*time.Millisecond, procsOf(smp.live(), always...), func() (bool, error) {
		var all bool
		counts, all = readySplit(smp.live(), o.Shards)
		return all, nil
	})
	if err != nil {
		return res, err
	}
	res.StartupReadySeconds, res.StartupReadySplit = round2(time.Since(startAt).Seconds()), counts
	err = waitFor(ctx, "the shards split evenly", 60*time.Second, 50*time.Millisecond, procsOf(smp.live(), always...), func() (bool, error) {
		var all bool
		counts, all = readySplit(smp.live(), o.Shards)
		return all && even(counts, o.Shards), nil
	})
	if err != nil {
		return res, err
	}
	res.StartupEvenSeconds, res.StartupSplit = round2(time.Since(startAt).Seconds()), counts
	delivered := func() (bool, error) {
		last, _, err := lastSeqs(sim, o.Shards)
		if err != nil {
			return false, err
		}
		missing, _ := recv.Missing(last)
		return len(last) == o.Shards && missing == 0, nil
	}
	err = waitFor(ctx, "every startup event delivered", time.Minute, 100*time.Millisecond, procsOf(smp.live(), always...), func() (bool, error) {
		if recv.GuildCreates() < o.Guilds {
			return false, nil
		}
		return delivered()
	})
	if err != nil {
		return res, err
	}
	st0, err := sim.stats()
	if err != nil {
		return res, err
	}
	res.StartupIdentifies = len(st0.Identifies)
	o.Logf("cluster: every shard READY %.2fs after the first start (split %v), evenly split %s at %.2fs; %d identifies",
		res.StartupReadySeconds, res.StartupReadySplit, splitString(res.StartupSplit), res.StartupEvenSeconds, res.StartupIdentifies)

	// The firehose, and the readings it is measured against.
	natsP0, err := ReadProc(nats.pid())
	if err != nil {
		return res, err
	}
	simP0, err := ReadProc(sim.pid())
	if err != nil {
		return res, err
	}
	self0, _ := ReadProc(procSelfPID)
	smp.mu.Lock()
	for _, m := range smp.members {
		p, err := ReadProc(m.cur.pid())
		if err != nil {
			smp.mu.Unlock()
			return res, err
		}
		m.cpuBase, m.lastCPU = p.CPUSeconds, p.CPUSeconds
	}
	smp.mu.Unlock()
	mach0, machErr := ReadMachine()
	recv0 := recv.Events()
	total := int64(o.Rate * o.Duration.Seconds())
	t0 := time.Now()
	if err := sim.startFirehose(o.Rate, total); err != nil {
		return res, err
	}
	go smp.run()
	stopSampler := sync.OnceFunc(func() { close(smp.stop); <-smp.done })
	defer stopSampler()
	o.Logf("cluster: firehose of %d events at %.0f/s", total, o.Rate)

	if o.Processes > 1 {
		if err := sleepCtx(ctx, o.KillAfter); err != nil {
			return res, err
		}
		if res.Kill, err = killAndRestart(ctx, o, smp, sim, always, t0, startMember); err != nil {
			return res, err
		}
	}

	// The end of the firehose, then of the delivery.
	err = waitFor(ctx, "the firehose's end", o.Duration+30*time.Second, 50*time.Millisecond, procsOf(smp.live(), always...), func() (bool, error) {
		st, err := sim.stats()
		if err != nil {
			return false, err
		}
		res.Created = st.EventsCreated - st0.EventsCreated
		return res.Created >= total, nil
	})
	if err != nil {
		return res, err
	}
	res.FirehoseSeconds = round2(time.Since(t0).Seconds())
	err = waitFor(ctx, "every event delivered", o.DrainTimeout, 100*time.Millisecond, procsOf(smp.live(), always...), delivered)
	res.Complete = err == nil
	if err != nil && ctx.Err() != nil {
		return res, err
	}
	if err != nil {
		o.Logf("cluster: %v", err)
	}
	smp.mu.Lock()
	smp.sampleLocked()
	smp.mu.Unlock()
	stopSampler()
	natsP1, _ := ReadProc(nats.pid())
	simP1, _ := ReadProc(sim.pid())
	self1, _ := ReadProc(procSelfPID)
	mach1, machErr1 := ReadMachine()
	secs := time.Since(t0).Seconds()
	res.Delivered = recv.Events() - recv0
	res.DeliverySeconds = round2(recv.LastEventAt().Sub(t0).Seconds())
	res.DeliveryRate = ratio(float64(res.Delivered), res.DeliverySeconds)

	// Late copies would come within moments; give them a chance to be counted.
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		return res, err
	}
	perK := func(cpu float64) float64 { return ratio(cpu, float64(res.Delivered)/1000) }
	ours := (natsP1.CPUSeconds - natsP0.CPUSeconds) + (simP1.CPUSeconds - simP0.CPUSeconds) + (self1.CPUSeconds - self0.CPUSeconds)
	for _, m := range smp.members {
		if m.cur != nil && !m.cur.exited() {
			if p, err := ReadProc(m.cur.pid()); err == nil {
				m.fig.PeakRSS = max(m.fig.PeakRSS, p.HWM)
			}
		}
		m.fig.CPUSeconds = round2(m.cpuDone + m.lastCPU - m.cpuBase)
		m.fig.CPUPer1000 = perK(m.fig.CPUSeconds)
		ours += m.fig.CPUSeconds
		res.DD = append(res.DD, m.fig)
	}
	figs := func(p0, p1 ProcSample) ProcFigures {
		cpu := p1.CPUSeconds - p0.CPUSeconds
		return ProcFigures{IdleRSS: p0.RSS, PeakRSS: p1.HWM, EndRSS: p1.RSS, CPUSeconds: round2(cpu), CPUPer1000: perK(cpu)}
	}
	if nEnd, err := ReadProc(nats.pid()); err == nil {
		natsP1.HWM = nEnd.HWM
	}
	res.NATSProc, res.Sim, res.Receiver = figs(natsP0, natsP1), figs(simP0, simP1), figs(self0, self1)
	if machErr == nil && machErr1 == nil {
		busy := mach1.BusySeconds - mach0.BusySeconds
		res.Machine = MachineFigures{Cores: mach1.Cores, Seconds: round2(secs), BusyCores: round2(ratio(busy, secs)),
			OtherCores: round2(max(0, ratio(busy-ours, secs)))}
	}

	// Every event, per shard against the simulator's sequence.
	last, sessions, err := lastSeqs(sim, o.Shards)
	if err != nil {
		return res, err
	}
	st, err := sim.stats()
	if err != nil {
		return res, err
	}
	rs := recv.Stats()
	res.Sessions, res.Identifies, res.Resumes = sessions, len(st.Identifies), len(st.Resumes)
	res.Lost, res.Unexpected = recv.Missing(last)
	res.Duplicates, res.DuplicateIDs, res.OutOfOrder = rs.DuplicateSeq, rs.DuplicateIDs, rs.OutOfOrder
	res.BadAuth, res.Invalid = rs.BadAuth, rs.Invalid
	if !res.Complete {
		return res, fmt.Errorf("cluster: %d events never delivered within %v after the firehose", res.Lost, o.DrainTimeout)
	}
	return res, nil
}

// killAndRestart SIGKILLs the first process, times its shards' takeover by the others, restarts it under
// its name and store, and times the rebalance back to an even split.
func killAndRestart(ctx context.Context, o ClusterOptions, smp *clusterSampler, sim *simProcess, always []*process, t0 time.Time,
	start func(m *clusterMember, logDir string) error) (*ClusterKill, error) {
	victim := smp.members[0]
	k := &ClusterKill{Instance: victim.name}
	vst, _, _, err := victim.cur.status()
	if err != nil {
		return nil, err
	}
	for _, s := range vst.Shards {
		if s.State == "ready" {
			k.Shards++
		}
	}
	stK, err := sim.stats()
	if err != nil {
		return nil, err
	}
	// Its last reading, then the kill; the sampler no longer sees it.
	smp.mu.Lock()
	smp.sampleLocked()
	d := victim.cur
	victim.cpuDone += victim.lastCPU - victim.cpuBase
	victim.cur = nil
	killAt := time.Now()
	d.kill()
	smp.mu.Unlock()
	k.AtS = round2(killAt.Sub(t0).Seconds())
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("%s (pid %d) still there 10s after SIGKILL", victim.name, d.pid())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	o.Logf("cluster: SIGKILLed %s (pid %d), which ran %d shards READY, %.2fs into the firehose", victim.name, d.pid(), k.Shards, k.AtS)

	var counts []int
	err = waitFor(ctx, "the killed process's shards READY on the others", 10*o.LeaseTTL, 50*time.Millisecond, procsOf(smp.live(), always...), func() (bool, error) {
		var all bool
		counts, all = readySplit(smp.live(), o.Shards)
		return all, nil
	})
	if err != nil {
		return nil, err
	}
	took := time.Since(killAt)
	st1, err := sim.stats()
	if err != nil {
		return nil, err
	}
	k.TakeoverSeconds, k.TakeoverTTLs, k.TakeoverSplit = round2(took.Seconds()), round2(took.Seconds()/o.LeaseTTL.Seconds()), counts
	k.TakeoverIdentifies, k.TakeoverResumes = len(st1.Identifies)-len(stK.Identifies), len(st1.Resumes)-len(stK.Resumes)
	o.Logf("cluster: its shards READY on the others %.2fs after the kill (%.2f × lease_ttl), split %s; %d identifies, %d resumes",
		k.TakeoverSeconds, k.TakeoverTTLs, splitString(counts), k.TakeoverIdentifies, k.TakeoverResumes)

	if err := sleepCtx(ctx, o.RestartAfter); err != nil {
		return nil, err
	}
	stR, err := sim.stats()
	if err != nil {
		return nil, err
	}
	restartAt := time.Now()
	// Same name and store, its own log folder (the first process's log stays).
	if err := start(victim, victim.dir+"-restarted"); err != nil {
		return nil, fmt.Errorf("restarting: %w", err)
	}
	nd := victim.cur
	err = waitFor(ctx, "the shards split evenly again", 20*o.LeaseTTL+30*time.Second, 50*time.Millisecond, procsOf(smp.live(), always...), func() (bool, error) {
		var all bool
		counts, all = readySplit(smp.live(), o.Shards)
		return all && even(counts, o.Shards), nil
	})
	if err != nil {
		return nil, err
	}
	took = time.Since(restartAt)
	st2, err := sim.stats()
	if err != nil {
		return nil, err
	}
	k.RestartSeconds, k.RestartSplit = round2(took.Seconds()), counts
	k.RestartIdentifies, k.RestartResumes = len(st2.Identifies)-len(stR.Identifies), len(st2.Resumes)-len(stR.Resumes)
	o.Logf("cluster: %s restarted (pid %d): evenly split %s %.2fs after its start; %d identifies, %d resumes",
		victim.name, nd.pid(), splitString(counts), k.RestartSeconds, k.RestartIdentifies, k.RestartResumes)
	return k, nil
}

func splitString(counts []int) string {
	var parts []string
	for _, c := range counts {
		parts = append(parts, strconv.Itoa(c))
	}
	return strings.Join(parts, "/")
}

// Print writes the figures of a cluster run as lines a person reads.
func (r ClusterResult) Print(w io.Writer) {
	fmt.Fprintf(w, "cluster: %d dd --role=gateway processes, %d shards, lease_ttl %.0fs, %.0f events/s for %.0fs, events.batch_max %d\n",
		r.Processes, r.Shards, r.LeaseTTL, r.Rate, r.Duration, r.BatchMax)
	fmt.Fprintf(w, "  NATS            %s\n", r.NATS)
	fmt.Fprintf(w, "  startup         every shard READY %.2fs after the first process started (split %s), evenly split %s at %.2fs; %d identifies\n",
		r.StartupReadySeconds, splitString(r.StartupReadySplit), splitString(r.StartupSplit), r.StartupEvenSeconds, r.StartupIdentifies)
	if k := r.Kill; k != nil {
		fmt.Fprintf(w, "  SIGKILL         %s (%d shards READY) %.2fs into the firehose: its shards READY on the others %.2fs later = %.2f × lease_ttl, split %s; %d identifies, %d resumes\n",
			k.Instance, k.Shards, k.AtS, k.TakeoverSeconds, k.TakeoverTTLs, splitString(k.TakeoverSplit), k.TakeoverIdentifies, k.TakeoverResumes)
		fmt.Fprintf(w, "  restart         %s under its name and store: evenly split %s %.2fs after its start; %d identifies, %d resumes\n",
			k.Instance, splitString(k.RestartSplit), k.RestartSeconds, k.RestartIdentifies, k.RestartResumes)
	}
	fmt.Fprintf(w, "  delivery rate   %8.0f events/s  (%d at the receiver from the firehose's start, the last at %.2fs; %d generated in %.2fs)\n",
		r.DeliveryRate, r.Delivered, r.DeliverySeconds, r.Created, r.FirehoseSeconds)
	for _, d := range r.DD {
		fmt.Fprintf(w, "  dd %-12s RSS peak (VmHWM) %s, max sampled %s; CPU %.2fs = %.3f s per 1,000 events (pids %v)\n",
			d.Instance, mib(d.PeakRSS), mib(d.MaxSampledRSS), d.CPUSeconds, d.CPUPer1000, d.PIDs)
	}
	fmt.Fprintf(w, "  NATS process    RSS at the firehose's start %s, peak (VmHWM) %s; CPU %.2fs = %.3f s per 1,000 events\n",
		mib(r.NATSProc.IdleRSS), mib(r.NATSProc.PeakRSS), r.NATSProc.CPUSeconds, r.NATSProc.CPUPer1000)
	fmt.Fprintf(w, "  simulator       VmHWM %s; CPU %.2fs = %.3f s per 1,000 events\n", mib(r.Sim.PeakRSS), r.Sim.CPUSeconds, r.Sim.CPUPer1000)
	fmt.Fprintf(w, "  receiver (load tool process) CPU %.2fs = %.3f s per 1,000 events\n", r.Receiver.CPUSeconds, r.Receiver.CPUPer1000)
	if m := r.Machine; m.Cores > 0 {
		fmt.Fprintf(w, "  machine         %d cores, %.2f busy on average over the %.1fs from the firehose's start; other processes %.2f of them\n",
			m.Cores, m.BusyCores, m.Seconds, m.OtherCores)
	}
	verdict := "every event delivered, copies only under their own id, in order"
	if r.Lost != 0 || r.Unexpected != 0 || r.OutOfOrder != 0 || r.Duplicates != r.DuplicateIDs || !r.Complete || r.Sessions != r.Shards {
		verdict = "NOT every event once under its own id"
	}
	fmt.Fprintf(w, "  check           %s: lost %d, copies %d (by X-DD-Event-Id %d), unexpected %d, out of order %d, bad auth %d, invalid %d\n",
		verdict, r.Lost, r.Duplicates, r.DuplicateIDs, r.Unexpected, r.OutOfOrder, r.BadAuth, r.Invalid)
	fmt.Fprintf(w, "                  (per shard against the simulator's sequence over the whole run; %d sessions for %d shards, %d identifies, %d resumes in all)\n",
		r.Sessions, r.Shards, r.Identifies, r.Resumes)
}
