package loadtool

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ddhq/dd/sim/discordsim"
)

// MembersOptions configures RunMembers. Zero values take the defaults in brackets. A guild's member
// count includes the bot, as Discord's member_count does.
type MembersOptions struct {
	Binaries        Binaries
	Shards          int // dd's shards, --role=all [2]
	Guilds          int // guilds of MembersPerGuild members [100]
	MembersPerGuild int // [1000]
	LargeGuilds     int // more guilds, of LargeMembers members each [1]
	LargeMembers    int // [100000]
	// Clients are the reader counts measured, in turns of Slice each while the chunks are applied
	// [1 and 16, 500ms].
	Clients []int
	Slice   time.Duration
	// CompleteTimeout bounds the wait for every guild's list [the minimum the pace allows + 3 minutes].
	CompleteTimeout time.Duration
	Env             []string // more DD_* variables for dd (DD_CACHE__REQUEST_MEMBERS_PER_MINUTE, ...)
	Dir             string   // parent of the run's directory [the system temp directory]
	Keep            bool
	Logf            func(format string, args ...any)
}

func (o *MembersOptions) defaults() {
	if o.Shards <= 0 {
		o.Shards = 2
	}
	if o.Guilds <= 0 {
		o.Guilds = 100
	}
	if o.MembersPerGuild <= 1 {
		o.MembersPerGuild = 1000
	}
	if o.LargeGuilds < 0 {
		o.LargeGuilds = 0
	} else if o.LargeGuilds == 0 {
		o.LargeGuilds = 1
	}
	if o.LargeMembers <= 1 {
		o.LargeMembers = 100000
	}
	if len(o.Clients) == 0 {
		o.Clients = []int{1, 16}
	}
	if o.Slice <= 0 {
		o.Slice = 500 * time.Millisecond
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// ReadFigures are the cache reads of one client count while the chunks were applied.
type ReadFigures struct {
	Clients   int     `json:"clients"`
	Requests  int64   `json:"requests"`
	Found     int64   `json:"found"`     // 200
	NotFound  int64   `json:"not_found"` // 404: the member (or its guild) not applied yet
	Other     int64   `json:"other"`     // any other status, or a transport error
	Seconds   float64 `json:"seconds"`   // time spent at this client count
	PerSecond float64 `json:"requests_per_s"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	P999Ms    float64 `json:"p999_ms"`
	MaxMs     float64 `json:"max_ms"`
}

// MembersResult is what RunMembers measured.
type MembersResult struct {
	Shards        int   `json:"shards"`
	Guilds        int   `json:"guilds"`
	Members       int64 `json:"members"`         // every guild's member_count, the bot included
	LargePerShard []int `json:"large_per_shard"` // guilds above large_threshold (the ones dd asks for), per shard
	PacePerMinute int   `json:"pace_per_minute"` // cache.request_members_per_minute

	// CompleteSeconds is dd's start until every guild answered X-DD-Members-Complete: true (polled
	// every 100 ms); MinimumSeconds what the pace allows at best ((ceil(busiest shard's guilds ÷ pace) − 1)
	// minutes; 0: no wait forced) and Ratio their quotient (0 when the minimum is 0).
	CompleteSeconds float64 `json:"complete_s"`
	MinimumSeconds  float64 `json:"minimum_s"`
	Ratio           float64 `json:"ratio,omitempty"`
	// FirstChunkSeconds is dd's start until dd_gateway_member_chunks_total first read above 0 (polled
	// with the lists).
	FirstChunkSeconds float64 `json:"first_chunk_s"`
	AppliedPerSecond  float64 `json:"members_applied_per_s"`    // members ÷ (complete − first chunk)
	EndToEndPerSecond float64 `json:"members_end_to_end_per_s"` // members ÷ CompleteSeconds
	CacheMembers      int64   `json:"cache_members"`            // GET /stats once every list is complete

	Reads []ReadFigures `json:"reads"`

	// dd's counters and the simulator's.
	Requests       int64       `json:"member_requests"`
	Chunks         int64       `json:"member_chunks"`
	RateLimited    int64       `json:"member_rate_limited"`
	TimedOut       int64       `json:"member_timed_out"`
	SimRequests    int64       `json:"sim_member_requests"`
	SimChunks      int64       `json:"sim_member_chunks"`
	SimIgnored     int64       `json:"sim_member_requests_ignored"`
	Identifies     int         `json:"identifies"`
	CloseCodes     map[int]int `json:"close_codes,omitempty"`
	PeakRSS        int64       `json:"peak_rss_bytes"` // dd's VmHWM at completion
	EndRSS         int64       `json:"end_rss_bytes"`
	DDCPUSeconds   float64     `json:"dd_cpu_s"`
	CleanStop      bool        `json:"clean_stop"`
	StoreBytes     int64       `json:"store_bytes"` // allocated on disk after the stop (du)
	StoreApparent  int64       `json:"store_apparent_bytes"`
	StorePerMember float64     `json:"store_bytes_per_member"`

	DDPID  int `json:"dd_pid"`
	SimPID int `json:"sim_pid"`
}

// RunMembers starts the simulator and dd --role=all with cache.request_members = "all", reads random
// members from the cache with each client count in turn while the chunks are applied, and measures how
// long until every guild's member list is complete against the minimum the pace allows, the apply rate,
// dd's memory and the store's size per member after a clean stop.
func RunMembers(ctx context.Context, o MembersOptions) (res MembersResult, err error) {
	o.defaults()
	res.Shards, res.Guilds = o.Shards, o.Guilds+o.LargeGuilds
	res.PacePerMinute = envInt(o.Env, "DD_CACHE__REQUEST_MEMBERS_PER_MINUTE", 60)
	threshold := envInt(o.Env, "DD_GATEWAY__LARGE_THRESHOLD", 50)
	dir, end, err := beginRun(ctx, &o.Binaries, o.Dir, "members", o.Keep)
	if err != nil {
		return res, err
	}
	defer end(&err)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sim, err := startSim(ctx, dir, o.Binaries.Sim, simOptions{Guilds: res.Guilds, MaxConcurrency: o.Shards,
		IdentifyWindow: 5 * time.Second, SessionStartTotal: 1000, PrivilegedIntents: 1 << 1,
		MembersPerGuild: o.MembersPerGuild - 1, GuildsFile: true})
	if err != nil {
		return res, err
	}
	defer sim.stop(10 * time.Second)
	res.SimPID = sim.pid()
	guilds, err := sim.guilds()
	if err != nil {
		return res, err
	}
	if len(guilds) != res.Guilds {
		return res, fmt.Errorf("the simulator has %d guilds, want %d", len(guilds), res.Guilds)
	}
	for i := o.Guilds; i < len(guilds); i++ {
		if err := sim.setGuildMembers(guilds[i].ID, o.LargeMembers-1); err != nil {
			return res, err
		}
		guilds[i].MemberCount = o.LargeMembers - 1
	}
	res.LargePerShard = make([]int, o.Shards)
	for _, g := range guilds {
		res.Members += int64(g.MemberCount + 1)
		if g.MemberCount+1 > threshold {
			res.LargePerShard[discordsim.ShardFor(g.ID, o.Shards)]++
		}
	}
	minimum := memberRequestMinimum(res.LargePerShard, res.PacePerMinute)
	res.MinimumSeconds = minimum.Seconds()
	timeout := o.CompleteTimeout
	if timeout <= 0 {
		timeout = minimum + 3*time.Minute
	}

	recv, err := StartReceiver(eventsSecret)
	if err != nil {
		return res, err
	}
	defer recv.Close()
	env := ddEnv(sim, recv, filepath.Join(dir, "store"), o.Shards, "Guilds,GuildMembers",
		append([]string{"DD_CACHE__REQUEST_MEMBERS=all", "DD_EVENTS__BATCH_MAX=100"}, o.Env...))
	start := time.Now()
	dd, err := startDD(ctx, dir, o.Binaries.DD, "all", env, "rest", "gateway", "cache")
	if err != nil {
		return res, err
	}
	defer dd.stop(30 * time.Second)
	res.DDPID = dd.pid()
	procs := []*process{sim.process, dd.process}
	cacheURL := dd.url("cache")
	o.Logf("members: dd pid %d, simulator pid %d, %d shards, %d guilds, %d members (large guilds per shard %v, pace %d/min: minimum %v); cache up %.2fs after start",
		dd.pid(), sim.pid(), o.Shards, res.Guilds, res.Members, res.LargePerShard, res.PacePerMinute, minimum, time.Since(start).Seconds())

	// The readers, until every list is complete.
	pick := newMemberPicker(guilds)
	complete := make(chan struct{})
	readDone := make(chan []ReadFigures, 1)
	go func() { readDone <- readWhile(ctx, cacheURL, pick, o.Clients, o.Slice, complete) }()
	stopReaders := func() []ReadFigures {
		select {
		case <-complete:
		default:
			close(complete)
		}
		return <-readDone
	}
	defer func() {
		if res.Reads == nil {
			stopReaders()
		}
	}()

	// Poll the lists every 100 ms: GET /stats, and X-DD-Members-Complete of each guild not complete yet.
	pending := map[uint64]bool{}
	for _, g := range guilds {
		pending[g.ID] = true
	}
	lastLog := time.Now()
	err = waitFor(ctx, "every guild's member list complete", timeout, 100*time.Millisecond, procs, func() (bool, error) {
		var st struct {
			Members int64 `json:"members"`
		}
		if err := getJSON(cacheURL+"/stats", ddSecret, &st); err != nil {
			return false, err
		}
		if res.FirstChunkSeconds == 0 {
			m, err := dd.metrics()
			if err != nil {
				return false, err
			}
			if m.Value("dd_gateway_member_chunks_total") > 0 {
				res.FirstChunkSeconds = time.Since(start).Seconds()
			}
		}
		for id := range pending {
			ok, err := membersComplete(cacheURL, id)
			if err != nil {
				return false, err
			}
			if ok {
				delete(pending, id)
			}
		}
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			o.Logf("members: %.0fs: %d of %d guilds complete, %d members cached", time.Since(start).Seconds(), len(guilds)-len(pending), len(guilds), st.Members)
		}
		if len(pending) == 0 {
			res.CompleteSeconds = time.Since(start).Seconds()
			return true, nil
		}
		return false, nil
	})
	res.Reads = stopReaders()
	if err != nil {
		return res, err
	}
	var cst struct {
		Members int64 `json:"members"`
	}
	if err := getJSON(cacheURL+"/stats", ddSecret, &cst); err != nil {
		return res, err
	}
	res.CacheMembers = cst.Members
	res.Ratio = ratio(res.CompleteSeconds, res.MinimumSeconds)
	res.EndToEndPerSecond = ratio(float64(res.Members), res.CompleteSeconds)
	res.AppliedPerSecond = ratio(float64(res.Members), res.CompleteSeconds-res.FirstChunkSeconds)

	m, err := dd.metrics()
	if err != nil {
		return res, err
	}
	res.Requests = int64(m.Value("dd_gateway_member_requests_total"))
	res.Chunks = int64(m.Value("dd_gateway_member_chunks_total"))
	res.RateLimited = int64(m.Value("dd_gateway_member_requests_rate_limited_total"))
	res.TimedOut = int64(m.Value("dd_gateway_member_requests_timed_out_total"))
	st, err := sim.stats()
	if err != nil {
		return res, err
	}
	res.SimRequests, res.SimChunks, res.SimIgnored = st.MemberRequests, st.MemberChunks, st.MemberIgnored
	res.Identifies, res.CloseCodes = len(st.Identifies), st.CloseCodesSent
	p, err := ReadProc(dd.pid())
	if err != nil {
		return res, err
	}
	res.PeakRSS, res.EndRSS, res.DDCPUSeconds = p.HWM, p.RSS, p.CPUSeconds

	// A clean stop, then the store's size.
	dd.stop(30 * time.Second)
	res.CleanStop = dd.err == nil
	if !res.CleanStop {
		return res, fmt.Errorf("dd did not stop cleanly on SIGTERM: %w", dd.exitError())
	}
	res.StoreBytes, res.StoreApparent, err = dirSize(filepath.Join(dir, "store"))
	if err != nil {
		return res, err
	}
	res.StorePerMember = ratio(float64(res.StoreBytes), float64(res.Members))
	return res, nil
}

// memberRequestMinimum is the least time dd's requests for every member can take at pace requests per
// shard per sliding minute, with large[i] guilds to ask for on shard i: the busiest shard sends pace at
// once and the next pace a minute later, so (ceil(n ÷ pace) − 1) minutes; 0 when no shard has more than
// pace guilds (the limits force no wait).
func memberRequestMinimum(large []int, pace int) time.Duration {
	if pace <= 0 {
		return 0
	}
	busiest := 0
	for _, n := range large {
		busiest = max(busiest, n)
	}
	if busiest == 0 {
		return 0
	}
	return time.Duration((busiest+pace-1)/pace-1) * time.Minute
}

// percentile is the q-quantile (0..1) of sorted by the nearest rank; 0 when sorted is empty.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted))+0.999999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// memberPicker draws a member uniformly from every guild's members (the bot left out).
type memberPicker struct {
	guilds []simGuild
	cum    []int // cum[i]: members of guilds[0..i]
}

func newMemberPicker(guilds []simGuild) *memberPicker {
	p := &memberPicker{guilds: guilds}
	total := 0
	for _, g := range guilds {
		total += g.MemberCount
		p.cum = append(p.cum, total)
	}
	return p
}

// at returns the guild and user of member r, 0 <= r < the total.
func (p *memberPicker) at(r int) (guild, user uint64) {
	i := sort.SearchInts(p.cum, r+1)
	before := 0
	if i > 0 {
		before = p.cum[i-1]
	}
	g := p.guilds[i].ID
	return g, discordsim.MemberUserID(g, r-before)
}

func (p *memberPicker) random(rng *rand.Rand) (guild, user uint64) {
	return p.at(rng.IntN(p.cum[len(p.cum)-1]))
}

// readWhile reads random members with each of clients concurrent readers in turn, slice each, until
// stop is closed or ctx ends.
func readWhile(ctx context.Context, base string, pick *memberPicker, clients []int, slice time.Duration, stop <-chan struct{}) []ReadFigures {
	maxClients := slices.Max(clients)
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: maxClients + 4}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	figs := make([]ReadFigures, len(clients))
	lat := make([][]time.Duration, len(clients))
	for k, n := range clients {
		figs[k].Clients = n
	}
	rngs := make([]*rand.Rand, maxClients)
	for i := range rngs {
		rngs[i] = rand.New(rand.NewPCG(uint64(i)+1, 0x5eed))
	}
	for turn := 0; ; turn++ {
		select {
		case <-stop:
		case <-ctx.Done():
		default:
			k := turn % len(clients)
			n := clients[k]
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				counted [3]int64
			)
			t0 := time.Now()
			end := t0.Add(slice)
			for w := 0; w < n; w++ {
				wg.Add(1)
				go func(rng *rand.Rand, end time.Time) {
					defer wg.Done()
					var mine []time.Duration
					var c [3]int64
					for time.Now().Before(end) {
						select {
						case <-stop:
							end = time.Time{} // this worker's copy
							continue
						default:
						}
						g, u := pick.random(rng)
						req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
							base+"/guilds/"+strconv.FormatUint(g, 10)+"/members/"+strconv.FormatUint(u, 10), nil)
						req.Header.Set("Authorization", ddSecret)
						a := time.Now()
						resp, err := client.Do(req)
						if err == nil {
							_, _ = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
						}
						took := time.Since(a)
						if ctx.Err() != nil {
							return
						}
						mine = append(mine, took)
						switch {
						case err != nil:
							c[2]++
						case resp.StatusCode == http.StatusOK:
							c[0]++
						case resp.StatusCode == http.StatusNotFound:
							c[1]++
						default:
							c[2]++
						}
					}
					mu.Lock()
					lat[k] = append(lat[k], mine...)
					for i := range c {
						counted[i] += c[i]
					}
					mu.Unlock()
				}(rngs[w], end)
			}
			wg.Wait()
			figs[k].Seconds += time.Since(t0).Seconds()
			figs[k].Found += counted[0]
			figs[k].NotFound += counted[1]
			figs[k].Other += counted[2]
			continue
		}
		break
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for k := range figs {
		l := lat[k]
		slices.Sort(l)
		f := &figs[k]
		f.Requests = f.Found + f.NotFound + f.Other
		f.PerSecond = ratio(float64(f.Requests), f.Seconds)
		f.P50Ms, f.P99Ms, f.P999Ms = ms(percentile(l, 0.50)), ms(percentile(l, 0.99)), ms(percentile(l, 0.999))
		if len(l) > 0 {
			f.MaxMs = ms(l[len(l)-1])
		}
	}
	return figs
}

// membersComplete asks the cache whether it holds every member of the guild.
func membersComplete(base string, guild uint64) (bool, error) {
	req, _ := http.NewRequest(http.MethodGet, base+"/guilds/"+strconv.FormatUint(guild, 10)+"/members?limit=1", nil)
	req.Header.Set("Authorization", ddSecret)
	resp, err := localClient.Do(req)
	if err != nil {
		return false, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Header.Get("X-DD-Members-Complete") == "true", nil
	case http.StatusNotFound: // the guild is not there yet
		return false, nil
	}
	return false, fmt.Errorf("GET /guilds/%d/members: %s", guild, resp.Status)
}

// envInt is the integer value of key in env (KEY=value entries), or def.
func envInt(env []string, key string, def int) int {
	for _, kv := range slices.Backward(env) {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
	}
	return def
}

// dirSize is the space the files under dir take on disk (allocated blocks, as du counts) and their
// apparent size.
func dirSize(dir string) (allocated, apparent int64, err error) {
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		apparent += info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			allocated += st.Blocks * 512
		} else {
			allocated += info.Size()
		}
		return nil
	})
	return allocated, apparent, err
}
