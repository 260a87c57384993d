package loadtool

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ddhq/dd/internal/ctxsleep"
)

// FirehoseOptions configures RunFirehose. Zero values take the defaults in brackets.
type FirehoseOptions struct {
	Binaries Binaries
	Shards   int           // dd's shards, --role=all [4]
	Rate     float64       // events per second the simulator generates [20000]
	Duration time.Duration // how long it generates them [10s]
	BatchMax int           // events.batch_max [1]
	Guilds   int           // guilds in the simulator, spread over the shards [64]
	// Settle is how long dd sits idle after every shard is ready and every GUILD_CREATE delivered,
	// before its idle RSS is read [2s].
	Settle time.Duration
	// DrainTimeout bounds the wait, after the firehose ends, for dd to deliver everything [2m].
	DrainTimeout time.Duration
	Env          []string // more DD_* variables for dd (e.g. DD_GATEWAY__COMPRESS=zlib-stream)
	Dir          string   // parent of the run's directory (logs, store) [the system temp directory]
	Keep         bool     // keep the run's directory
	Logf         func(format string, args ...any)
	// CPUProfile, if set, is the file that gets dd's CPU profile from the firehose's start until the last
	// event is delivered (the drain included), for `go tool pprof`; CPUProfile + ".ddload" gets this
	// process's (the receiver's) over the same time. Merging dd's needs `go` on PATH.
	CPUProfile string
	// HeapProfile, if set, gets dd's heap profile at the deepest queue (heapprofile.go says what else).
	HeapProfile string
	// SimCPUProfile, if set, is the file that gets the simulator's CPU profile (its -cpuprofile), over the
	// simulator's whole life: startup, the firehose and the drain. It is written when the simulator is
	// stopped, at the end of the run.
	SimCPUProfile string
}

func (o *FirehoseOptions) defaults() {
	if o.Shards <= 0 {
		o.Shards = 4
	}
	if o.Rate <= 0 {
		o.Rate = 20000
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.BatchMax <= 0 {
		o.BatchMax = 1
	}
	if o.Guilds <= 0 {
		o.Guilds = 64
	}
	if o.Settle <= 0 {
		o.Settle = 2 * time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 2 * time.Minute
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// ProcFigures are one process's memory and CPU over a run.
type ProcFigures struct {
	IdleRSS       int64   `json:"idle_rss_bytes,omitempty"` // before the load
	PeakRSS       int64   `json:"peak_rss_bytes"`           // VmHWM at the end (since the process started)
	MaxSampledRSS int64   `json:"max_sampled_rss_bytes"`    // highest VmRSS of the samples during the load
	MaxAnonRSS    int64   `json:"max_anon_rss_bytes"`       // highest RssAnon (own memory, not mapped files)
	MaxFileRSS    int64   `json:"max_file_rss_bytes"`       // highest RssFile (Badger's mapped files)
	EndRSS        int64   `json:"end_rss_bytes"`
	CPUSeconds    float64 `json:"cpu_seconds"`          // user + system during the load
	CPUPer1000    float64 `json:"cpu_seconds_per_1000"` // CPUSeconds per 1,000 events delivered
}

// MachineFigures say how busy the machine was from the firehose's start to the run's end: dd, the
// simulator and the receiver share its cores with whatever else runs there, which slows every rate.
type MachineFigures struct {
	Cores      int     `json:"cores"`
	Seconds    float64 `json:"seconds"`
	BusyCores  float64 `json:"busy_cores"`  // CPU time of the whole machine ÷ Seconds
	OtherCores float64 `json:"other_cores"` // the same, less dd's, the simulator's and this process's
}

// DepthSample is one second of a firehose run.
type DepthSample struct {
	T          float64 `json:"t"`           // seconds since the firehose started
	Created    int64   `json:"created"`     // events the simulator generated so far
	Received   int64   `json:"received"`    // dd_gateway_events_received_total so far
	Delivered  int64   `json:"delivered"`   // events at the receiver so far
	QueueDepth int64   `json:"queue_depth"` // dd_queue_depth_events{consumer="bot"}
	Stored     int64   `json:"stored"`      // dd_queue_stored_events (not yet acknowledged by every consumer)
	DDRSS      int64   `json:"dd_rss_bytes"`
}

// FirehoseResult is what RunFirehose measured. Rates are events per second, each over the time from
// the firehose's start until its own stage had handled every event.
type FirehoseResult struct {
	Shards   int     `json:"shards"`
	Rate     float64 `json:"rate"` // asked
	Duration float64 `json:"duration_s"`
	BatchMax int     `json:"batch_max"`

	Created         int64         `json:"created"`    // events the simulator generated
	Dispatched      int64         `json:"dispatched"` // events it sent to dd's sessions
	FirehoseSeconds float64       `json:"firehose_s"`
	FirehoseRate    float64       `json:"firehose_rate"`
	Received        int64         `json:"received"` // dd_gateway_events_received_total
	IngestSeconds   float64       `json:"ingest_s"`
	IngestRate      float64       `json:"ingest_rate"`
	Delivered       int64         `json:"delivered"` // events at the receiver
	DeliverySeconds float64       `json:"delivery_s"`
	DeliveryRate    float64       `json:"delivery_rate"`
	MaxQueueDepth   int64         `json:"max_queue_depth"`
	Series          []DepthSample `json:"series"`
	Complete        bool          `json:"complete"` // everything dispatched was delivered within DrainTimeout
	Filtered        int64         `json:"filtered"` // dd_gateway_events_filtered_total over the run
	Dropped         int64         `json:"dropped"`  // dd_queue_dropped_events_total over the run

	DD       ProcFigures    `json:"dd"`
	Sim      ProcFigures    `json:"sim"`
	Receiver ProcFigures    `json:"receiver"` // the load tool's process (the receiver's CPU, mostly)
	Machine  MachineFigures `json:"machine"`

	// Over the whole run (READY and GUILD_CREATEs included), per shard against the simulator's sequence.
	Lost         int64 `json:"lost"`          // sequences the simulator sent that never arrived
	Duplicates   int64 `json:"duplicates"`    // (shard, seq) that arrived more than once
	DuplicateIDs int64 `json:"duplicate_ids"` // X-DD-Event-Id that arrived more than once
	Unexpected   int64 `json:"unexpected"`    // sequences beyond what the simulator reports
	OutOfOrder   int64 `json:"out_of_order"`
	BadAuth      int64 `json:"bad_auth"`
	Invalid      int64 `json:"invalid"`
	Resumes      int   `json:"resumes"`
	Identifies   int   `json:"identifies"`

	DDPID  int `json:"dd_pid"`
	SimPID int `json:"sim_pid"`

	Receipt ReceiverStats `json:"-"`
}

// RunFirehose starts the simulator, a receiver and dd --role=all, waits until the shards are ready and
// the guilds delivered, then has the simulator generate Rate events/s for Duration and measures how dd
// keeps up: ingest, delivery, queue depth, memory, CPU, and whether every event arrived once.
func RunFirehose(ctx context.Context, o FirehoseOptions) (res FirehoseResult, err error) {
	o.defaults()
	res = FirehoseResult{Shards: o.Shards, Rate: o.Rate, Duration: o.Duration.Seconds(), BatchMax: o.BatchMax}
	dir, end, err := beginRun(ctx, &o.Binaries, o.Dir, "firehose", o.Keep)
	if err != nil {
		return res, err
	}
	defer end(&err)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	simProf := ""
	if o.SimCPUProfile != "" {
		// The simulator runs in the run's directory.
		if simProf, err = filepath.Abs(o.SimCPUProfile); err != nil {
			return res, err
		}
	}
	sim, err := startSim(ctx, dir, o.Binaries.Sim, simOptions{Guilds: o.Guilds, MaxConcurrency: o.Shards,
		IdentifyWindow: 5 * time.Second, SessionStartTotal: 1000, PrivilegedIntents: 1 << 1, CPUProfile: simProf})
	if err != nil {
		return res, err
	}
	defer func() {
		// SIGTERM: the simulator writes its profile as it exits.
		sim.stop(10 * time.Second)
		if simProf == "" {
			return
		}
		if st, serr := os.Stat(simProf); serr != nil || st.Size() == 0 {
			if err == nil {
				err = fmt.Errorf("the simulator's CPU profile was not written (its log is %s): %v", sim.logPath, serr)
			}
			return
		}
		o.Logf("firehose: the simulator's CPU profile in %s (go tool pprof -top %s)", simProf, simProf)
	}()
	res.SimPID = sim.pid()
	recv, err := StartReceiver(eventsSecret)
	if err != nil {
		return res, err
	}
	defer recv.Close()
	env := ddEnv(sim, recv, filepath.Join(dir, "store"), o.Shards,
		"Guilds,GuildMembers,GuildMessages,GuildMessageReactions,GuildMessageTyping",
		append([]string{"DD_EVENTS__BATCH_MAX=" + strconv.Itoa(o.BatchMax), "DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false"}, o.Env...))
	dd, err := startDD(ctx, dir, o.Binaries.DD, "all", env, "rest", "gateway", "cache")
	if err != nil {
		return res, err
	}
	defer dd.stop(30 * time.Second)
	res.DDPID = dd.pid()
	procs := []*process{sim.process, dd.process}
	o.Logf("firehose: dd pid %d, simulator pid %d, %d shards, batch_max %d; waiting for READY and %d guilds",
		dd.pid(), sim.pid(), o.Shards, o.BatchMax, o.Guilds)

	err = waitFor(ctx, "every shard ready and every startup event delivered", time.Minute, 100*time.Millisecond, procs, func() (bool, error) {
		m, err := dd.metrics()
		if err != nil {
			return false, err
		}
		if int(m.Value("dd_gateway_shards_ready")) < o.Shards || recv.GuildCreates() < o.Guilds {
			return false, nil
		}
		st, err := sim.stats()
		return err == nil && recv.Events() >= st.EventsDispatched, err
	})
	if err != nil {
		return res, err
	}
	if err := sleepCtx(ctx, o.Settle); err != nil {
		return res, err
	}

	// Before: counters and CPU at the firehose's start.
	st0, err := sim.stats()
	if err != nil {
		return res, err
	}
	m0, err := dd.metrics()
	if err != nil {
		return res, err
	}
	ddIdle, err := ReadProc(dd.pid())
	if err != nil {
		return res, err
	}
	simIdle, err := ReadProc(sim.pid())
	if err != nil {
		return res, err
	}
	self0, _ := ReadProc(procSelfPID)
	mach0, machErr := ReadMachine()
	mach0At := time.Now()
	res.DD.IdleRSS, res.Sim.IdleRSS = ddIdle.RSS, simIdle.RSS
	recv0 := recv.Events()
	total := int64(o.Rate * o.Duration.Seconds())
	o.Logf("firehose: dd idle RSS %s; %d events at %.0f/s", mib(ddIdle.RSS), total, o.Rate)

	var (
		prof     *cpuProfile
		stopSelf func() error
	)
	if o.CPUProfile != "" {
		prof = startCPUProfile(ctx, dd, dir)
		defer prof.cancel()
		if stopSelf, err = profileSelf(o.CPUProfile + ".ddload"); err != nil {
			return res, fmt.Errorf("profiling the receiver: %w", err)
		}
		defer func() {
			if stopSelf != nil {
				_ = stopSelf()
			}
		}()
	}
	heap := newHeapProfile(dd, o.HeapProfile, o.Logf)
	t0 := time.Now()
	if err := sim.startFirehose(o.Rate, total); err != nil {
		return res, err
	}
	// Every 50 ms the receiver's count (free) and, while each stage may be ending, the counter that
	// decides it (the simulator's until the firehose ends, dd's from the last tenth of the firehose until
	// it has ingested everything), so that the stages' ends are known to within about 50 ms; every 250 ms
	// a full sample (dd's metrics, /proc), and every second one of them goes in the series. A reading is
	// timed at the middle of its request.
	var (
		fireDone, ingestDone, deliverDone bool
		created, dispatched, received     int64
		prevCreated, prevReceived         [2]float64 // time and value of the previous reading
		prevDelivered                     [2]float64
		ddLast, simLast                   ProcSample
		depth                             int64
		nextSample                        = 1.0 // seconds: when the series takes its next sample
	)
	since := func(a time.Time) float64 { return (a.Sub(t0) + time.Since(a)/2).Seconds() }
	deadline := o.Duration + 10*time.Second + o.DrainTimeout
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for n := 1; !deliverDone; n++ {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
		now := time.Since(t0)
		full := n%5 == 0
		if full {
			for _, p := range procs {
				if p.exited() {
					return res, p.exitError()
				}
			}
		}
		if !fireDone || full {
			a := time.Now()
			st, err := sim.stats()
			if err != nil {
				return res, err
			}
			tRead := since(a)
			prevCreated0 := prevCreated
			created, dispatched = st.EventsCreated-st0.EventsCreated, st.EventsDispatched-st0.EventsDispatched
			prevCreated = [2]float64{tRead, float64(created)}
			if !fireDone && created >= total {
				fireDone = true
				res.FirehoseSeconds = crossing(prevCreated0, tRead, created, total)
			}
		}
		if !fireDone && now > o.Duration+10*time.Second {
			// The simulator could not generate the rate asked: stop it and measure what it made.
			if err := sim.stopFirehoses(); err != nil {
				return res, err
			}
			st, err := sim.stats()
			if err != nil {
				return res, err
			}
			fireDone, res.FirehoseSeconds = true, now.Seconds()
			created, dispatched = st.EventsCreated-st0.EventsCreated, st.EventsDispatched-st0.EventsDispatched
		}
		if full || (!ingestDone && created >= total*9/10) {
			a := time.Now()
			m, err := dd.metrics()
			if err != nil {
				return res, err
			}
			tRead := since(a)
			prevReceived0 := prevReceived
			received = int64(m.Value("dd_gateway_events_received_total") - m0.Value("dd_gateway_events_received_total"))
			prevReceived = [2]float64{tRead, float64(received)}
			if fireDone && !ingestDone && received >= dispatched {
				ingestDone = true
				res.IngestSeconds = crossing(prevReceived0, tRead, received, dispatched)
			}
			depth = int64(m.Value("dd_queue_depth_events", "consumer", "bot"))
			res.MaxQueueDepth = max(res.MaxQueueDepth, depth)
			if err := heap.sample(depth); err != nil {
				return res, err
			}
			if full {
				if ddLast, err = ReadProc(dd.pid()); err != nil {
					return res, err
				}
				if simLast, err = ReadProc(sim.pid()); err != nil {
					return res, err
				}
				res.DD.MaxSampledRSS = max(res.DD.MaxSampledRSS, ddLast.RSS)
				res.DD.MaxAnonRSS, res.DD.MaxFileRSS = max(res.DD.MaxAnonRSS, ddLast.Anon), max(res.DD.MaxFileRSS, ddLast.File)
				res.Sim.MaxSampledRSS = max(res.Sim.MaxSampledRSS, simLast.RSS)
				res.Sim.MaxAnonRSS, res.Sim.MaxFileRSS = max(res.Sim.MaxAnonRSS, simLast.Anon), max(res.Sim.MaxFileRSS, simLast.File)
				if tRead >= nextSample {
					nextSample = math.Floor(tRead) + 1
					res.Series = append(res.Series, DepthSample{T: round2(tRead), Created: created, Received: received,
						Delivered: recv.Events() - recv0, QueueDepth: depth, Stored: int64(m.Value("dd_queue_stored_events")), DDRSS: ddLast.RSS})
				}
			}
		}
		t := time.Since(t0).Seconds()
		delivered := recv.Events() - recv0
		if fireDone {
			res.Created, res.Dispatched = created, dispatched
			if ingestDone && delivered >= dispatched {
				deliverDone, res.Complete = true, true
				res.DeliverySeconds = recv.LastEventAt().Sub(t0).Seconds()
				if res.DeliverySeconds <= 0 || res.DeliverySeconds > t {
					res.DeliverySeconds = crossing(prevDelivered, t, delivered, dispatched)
				}
			}
		}
		if !deliverDone && now > deadline {
			o.Logf("firehose: not every event delivered within %v after the firehose: %d of %d", o.DrainTimeout, delivered, dispatched)
			res.DeliverySeconds = t
			break
		}
		prevDelivered = [2]float64{t, float64(delivered)}
	}
	if prof != nil {
		err := stopSelf()
		stopSelf = nil
		if err != nil {
			return res, fmt.Errorf("profiling the receiver: %w", err)
		}
		if err := prof.finish(ctx, o.CPUProfile); err != nil {
			return res, err
		}
		o.Logf("firehose: dd's CPU profile in %s, the receiver's (this process) in %s.ddload (go tool pprof -top <file>)",
			o.CPUProfile, o.CPUProfile)
	}
	// Late duplicates would come within moments; give them a chance to be counted.
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		return res, err
	}
	m, err := dd.metrics()
	if err != nil {
		return res, err
	}
	res.Received = int64(m.Value("dd_gateway_events_received_total") - m0.Value("dd_gateway_events_received_total"))
	res.Filtered = int64(m.Value("dd_gateway_events_filtered_total"))
	res.Dropped = int64(m.Value("dd_queue_dropped_events_total"))
	res.Delivered = recv.Events() - recv0
	if res.Complete && res.IngestSeconds > res.DeliverySeconds {
		// dd cannot deliver what it has not received: the delivery's exact end bounds the polled ingest's.
		res.IngestSeconds = res.DeliverySeconds
	}
	res.FirehoseRate = ratio(float64(res.Created), res.FirehoseSeconds)
	res.IngestRate = ratio(float64(res.Received), res.IngestSeconds)
	res.DeliveryRate = ratio(float64(res.Delivered), res.DeliverySeconds)

	ddEnd, err := ReadProc(dd.pid())
	if err != nil {
		return res, err
	}
	simEnd, err := ReadProc(sim.pid())
	if err != nil {
		return res, err
	}
	selfEnd, _ := ReadProc(procSelfPID)
	if mach1, err := ReadMachine(); err == nil && machErr == nil {
		secs := time.Since(mach0At).Seconds()
		ours := (ddEnd.CPUSeconds - ddIdle.CPUSeconds) + (simEnd.CPUSeconds - simIdle.CPUSeconds) + (selfEnd.CPUSeconds - self0.CPUSeconds)
		busy := mach1.BusySeconds - mach0.BusySeconds
		res.Machine = MachineFigures{Cores: mach1.Cores, Seconds: round2(secs), BusyCores: round2(ratio(busy, secs)),
			OtherCores: round2(max(0, ratio(busy-ours, secs)))}
	}
	perK := func(cpu float64) float64 { return ratio(cpu, float64(res.Delivered)/1000) }
	// CPU until the last event was delivered (the last sample), not the half second after it.
	res.DD.CPUSeconds = ddLast.CPUSeconds - ddIdle.CPUSeconds
	res.DD.CPUPer1000 = perK(res.DD.CPUSeconds)
	res.DD.PeakRSS, res.DD.EndRSS = ddEnd.HWM, ddEnd.RSS
	res.Sim.CPUSeconds = simLast.CPUSeconds - simIdle.CPUSeconds
	res.Sim.CPUPer1000 = perK(res.Sim.CPUSeconds)
	res.Sim.PeakRSS, res.Sim.EndRSS = simEnd.HWM, simEnd.RSS
	res.Receiver.CPUSeconds = selfEnd.CPUSeconds - self0.CPUSeconds
	res.Receiver.CPUPer1000 = perK(res.Receiver.CPUSeconds)
	res.Receiver.PeakRSS, res.Receiver.EndRSS = selfEnd.HWM, selfEnd.RSS

	if err := res.checkExactlyOnce(sim, recv, o.Shards); err != nil {
		return res, err
	}
	if !res.Complete {
		return res, fmt.Errorf("firehose: %d of %d events delivered within %v after the firehose", res.Delivered, res.Dispatched, o.DrainTimeout)
	}
	return res, nil
}

// checkExactlyOnce compares what the receiver got with each live session's sequence in the simulator.
func (res *FirehoseResult) checkExactlyOnce(sim *simProcess, recv *Receiver, shards int) error {
	sessions, err := sim.sessions()
	if err != nil {
		return err
	}
	last := map[int]int64{}
	for _, s := range sessions {
		if s.NumShards == shards && s.Connected {
			last[s.Shard] = max(last[s.Shard], s.Seq)
		}
	}
	st, err := sim.stats()
	if err != nil {
		return err
	}
	res.Identifies, res.Resumes = len(st.Identifies), len(st.Resumes)
	rs := recv.Stats()
	res.Receipt = rs
	res.Lost, res.Unexpected = recv.Missing(last)
	res.Duplicates, res.DuplicateIDs, res.OutOfOrder = rs.DuplicateSeq, rs.DuplicateIDs, rs.OutOfOrder
	res.BadAuth, res.Invalid = rs.BadAuth, rs.Invalid
	if len(last) != shards {
		return fmt.Errorf("the simulator has %d connected sessions of %d shards, want %d", len(last), shards, shards)
	}
	return nil
}

// crossing interpolates when a counter whose previous reading was prev (time, value) and which reads
// v1 at t1 passed target.
func crossing(prev [2]float64, t1 float64, v1, target int64) float64 {
	t0, v0 := prev[0], prev[1]
	if float64(v1) <= v0 || float64(target) <= v0 {
		return t1
	}
	return t0 + (t1-t0)*(float64(target)-v0)/(float64(v1)-v0)
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// sleepCtx is ctxsleep.Sleep, under the name the scenarios use.
func sleepCtx(ctx context.Context, d time.Duration) error { return ctxsleep.Sleep(ctx, d) }
