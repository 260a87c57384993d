// Command ddload measures dd from outside: it starts the simulator and dd as separate processes, with
// the bot's event receiver in its own process, and prints what they did under load (rates, queue depth,
// memory and CPU read from /proc, identify pacing). Everything listens on 127.0.0.1 and every run is
// bounded in time; the processes it started are ended on any exit.
//
//	go run ./cmd/ddload -scenario firehose -shards 4 -rate 20000 -duration 10s -batch-max 100
//	go run ./cmd/ddload -scenario shards -shards 1000 -max-concurrency 250 -guilds-per-shard 4 -heartbeat 10s -baseline-shards 200
//	go run ./cmd/ddload -scenario shards -shards 1000 -baseline-shards 100 -compress zlib-stream -fill-events 80 -settle 30s -settle-collections 2
//	go run ./cmd/ddload -scenario members -shards 2 -guilds 100 -members-per-guild 1000 -large-guilds 1 -large-members 100000
//	go run ./cmd/ddload -scenario rest -callers 64 -fast 2s -slow 5s -latency 50ms
//	go run ./cmd/ddload -scenario cluster -processes 3 -shards 12 -rate 600 -lease-ttl 3s -duration 20s
//
// The scenarios live in internal/loadtool, so a Go test can run them too.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ddhq/dd/internal/loadtool"
	"github.com/ddhq/dd/internal/natsproc"
)

func main() {
	// The cluster scenario starts this program again as its NATS server.
	if code, ok := natsproc.RunChild(); ok {
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:]))
}

type envList []string

func (e *envList) String() string { return strings.Join(*e, ",") }
func (e *envList) Set(v string) error {
	// Go's runtime variables too: GODEBUG=gctrace=1 puts the live heap after each collection in dd's log.
	ok := strings.HasPrefix(v, "DD_") || strings.HasPrefix(v, "GODEBUG=") || strings.HasPrefix(v, "GOGC=") ||
		strings.HasPrefix(v, "GOMEMLIMIT=")
	if !ok || !strings.Contains(v, "=") {
		return fmt.Errorf("want DD_KEY=value (or GODEBUG, GOGC, GOMEMLIMIT), got %q", v)
	}
	*e = append(*e, v)
	return nil
}

func run(args []string) int {
	fs := flag.NewFlagSet("ddload", flag.ContinueOnError)
	var (
		scenario = fs.String("scenario", "", "firehose | shards | members | rest | cluster")
		ddBin    = fs.String("dd", "", "dd binary (default: built from -repo into a temporary directory)")
		simBin   = fs.String("sim", "", "discordsim binary (default: built from -repo into a temporary directory)")
		repo     = fs.String("repo", ".", "the dd module to build when -dd or -sim is not given")
		asJSON   = fs.Bool("json", false, "print the result as JSON on stdout (the lines for people go to stderr)")
		timeout  = fs.Duration("timeout", 20*time.Minute, "bound on the whole invocation")
		dir      = fs.String("dir", "", "parent directory of the runs' logs and stores (default: the system temp directory)")
		keep     = fs.Bool("keep", false, "keep the runs' directories (a failed run's are always kept)")
		shards   = fs.Int("shards", 0, "dd's shards (default 4 for firehose, 1000 for shards, 2 for members, 12 for cluster)")

		rate     = fs.Float64("rate", 0, "firehose, cluster: events per second the simulator generates (default 20000 for firehose, 600 for cluster)")
		duration = fs.Duration("duration", 0, "firehose, cluster: how long it generates them (default 10s for firehose, 20s for cluster)")
		batchMax = fs.Int("batch-max", 1, "firehose, cluster: events.batch_max")
		guilds   = fs.Int("guilds", 0, "firehose: guilds in the simulator (default 64); members: guilds of -members-per-guild (default 100); cluster: (default 4 per shard)")
		drain    = fs.Duration("drain-timeout", 2*time.Minute, "firehose, cluster: bound on the delivery of the backlog after the firehose")
		heapProf = fs.String("heapprofile", "", "firehose: write dd's heap profile at the deepest queue to this file, with <file>.txt (MemStats) and <file>.smaps (smaps_rollup); read it with `go tool pprof -sample_index=inuse_space -top <file>`")
		simProf  = fs.String("sim-cpuprofile", "", "firehose: write the simulator's CPU profile to `FILE` (the simulator's -cpuprofile: over its whole life, startup and drain included, written when it is stopped at the end of the run); read it with: go tool pprof -top FILE")
		cpuProf  = fs.String("cpuprofile", "", "firehose: write dd's CPU profile from the firehose's start to the last delivery to this file (fetched from dd's /debug/pprof/profile a second at a time, merged by `go tool pprof`, which must be on PATH), and the receiver's (this process) to <file>.ddload; read them with `go tool pprof -top -cum <file>`")

		maxConc   = fs.Int("max-concurrency", 250, "shards: the simulator's max_concurrency")
		perShard  = fs.Int("guilds-per-shard", 4, "shards: guilds per shard")
		heartbeat = fs.Duration("heartbeat", 10*time.Second, "shards: the simulator's heartbeat_interval")
		window    = fs.Duration("identify-window", 5*time.Second, "shards: the simulator's identify window (dd's is Discord's 5s)")
		settle    = fs.Duration("settle", 30*time.Second, "shards: idle time after startup before RSS and idle CPU are read")
		baseline  = fs.Int("baseline-shards", 0, "shards: also run with this many shards and report the RSS slope per shard")
		compress  = fs.String("compress", "", "shards: dd's gateway.compress, zstd-stream | zlib-stream | none (default: dd's)")
		fill      = fs.Int("fill-events", 0, "shards: MESSAGE_CREATEs per shard after startup, before the settle (80 fill a 32 KiB window)")
		settleGCs = fs.Int("settle-collections", 0, "shards: after -settle, wait on until dd has collected its heap this many times since going idle, plus 20s (2: RSS not at the collector's phase)")

		perGuild     = fs.Int("members-per-guild", 1000, "members: members of each of -guilds (the bot included)")
		largeGuilds  = fs.Int("large-guilds", 1, "members: more guilds, of -large-members each (-1: none)")
		largeMembers = fs.Int("large-members", 100000, "members: members of each large guild (the bot included)")
		clients      = fs.String("clients", "1,16", "members: reader counts, measured in turns while the chunks are applied")
		slice        = fs.Duration("slice", 500*time.Millisecond, "members: how long each turn of readers lasts")
		completeTO   = fs.Duration("complete-timeout", 0, "members: bound on the wait for every list (default: the pace's minimum + 3m)")
		env          envList

		processes    = fs.Int("processes", 3, "cluster: dd --role=gateway processes sharing the shards through NATS (1: no kill)")
		leaseTTL     = fs.Duration("lease-ttl", 3*time.Second, "cluster: cluster.lease_ttl")
		killAfter    = fs.Duration("kill-after", 3*time.Second, "cluster: time from the firehose's start to the SIGKILL of one process")
		restartAfter = fs.Duration("restart-after", time.Second, "cluster: time from its shards being READY on the others to its restart")

		rest restFlags
	)
	rest.register(fs)
	fs.Var(&env, "env", "an extra DD_KEY=value (or GODEBUG=, GOGC=, GOMEMLIMIT=) for dd (repeatable)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: ddload -scenario firehose|shards|members|rest|cluster [flags]\n\n"+
			"Starts the Discord simulator and dd as separate processes, with a bot receiver in this one, and\n"+
			"prints dd's figures under load. See README \"Measuring from outside the process\".\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *scenario != "firehose" && *scenario != "shards" && *scenario != "members" && *scenario != "rest" && *scenario != "cluster" {
		fmt.Fprintf(os.Stderr, "ddload: -scenario must be firehose, shards, members, rest or cluster, got %q\n", *scenario)
		return 2
	}
	var clientCounts []int
	for _, c := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "ddload: -clients wants positive counts separated by commas, got %q\n", *clients)
			return 2
		}
		clientCounts = append(clientCounts, n)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, *timeout)
	defer cancelTimeout()
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s ddload: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
	}

	bins := loadtool.Binaries{DD: *ddBin, Sim: *simBin}
	if bins.DD == "" || bins.Sim == "" {
		tmp, err := os.MkdirTemp("", "ddload-bin-")
		if err != nil {
			return fail(err)
		}
		defer os.RemoveAll(tmp)
		logf("building dd and discordsim from %s", *repo)
		built, err := loadtool.Build(ctx, *repo, tmp)
		if err != nil {
			return fail(err)
		}
		if bins.DD == "" {
			bins.DD = built.DD
		}
		if bins.Sim == "" {
			bins.Sim = built.Sim
		}
	}

	var (
		out   any
		err   error
		human = os.Stdout
	)
	if *asJSON {
		human = os.Stderr
	}
	switch *scenario {
	case "firehose":
		var r loadtool.FirehoseResult
		r, err = loadtool.RunFirehose(ctx, loadtool.FirehoseOptions{Binaries: bins, Shards: *shards, Rate: *rate,
			Duration: *duration, BatchMax: *batchMax, Guilds: *guilds, DrainTimeout: *drain, CPUProfile: *cpuProf, HeapProfile: *heapProf, SimCPUProfile: *simProf, Env: env,
			Dir: *dir, Keep: *keep, Logf: logf})
		out = r
		if err == nil || r.Delivered > 0 {
			r.Print(human)
		}
	case "shards":
		var r loadtool.ShardsResult
		r, err = loadtool.RunShards(ctx, loadtool.ShardsOptions{Binaries: bins, Shards: *shards, MaxConcurrency: *maxConc,
			GuildsPerShard: *perShard, Heartbeat: *heartbeat, IdentifyWindow: *window, Settle: *settle,
			BaselineShards: *baseline, Compress: *compress, FillEvents: *fill, SettleCollections: *settleGCs, Env: env, Dir: *dir, Keep: *keep, Logf: logf})
		out = r
		if err == nil {
			r.Print(human)
		}
	case "members":
		var r loadtool.MembersResult
		r, err = loadtool.RunMembers(ctx, loadtool.MembersOptions{Binaries: bins, Shards: *shards, Guilds: *guilds,
			MembersPerGuild: *perGuild, LargeGuilds: *largeGuilds, LargeMembers: *largeMembers, Clients: clientCounts,
			Slice: *slice, CompleteTimeout: *completeTO, Env: env, Dir: *dir, Keep: *keep, Logf: logf})
		out = r
		if err == nil {
			r.Print(human)
		}
	case "cluster":
		var r loadtool.ClusterResult
		r, err = loadtool.RunCluster(ctx, loadtool.ClusterOptions{Binaries: bins, Processes: *processes, Shards: *shards,
			Rate: *rate, Duration: *duration, LeaseTTL: *leaseTTL, BatchMax: *batchMax, Guilds: *guilds,
			KillAfter: *killAfter, RestartAfter: *restartAfter, DrainTimeout: *drain, Env: env, Dir: *dir, Keep: *keep, Logf: logf})
		out = r
		if err == nil || r.Delivered > 0 {
			r.Print(human)
		}
	case "rest":
		var r loadtool.RESTResult
		r, err = loadtool.RunREST(ctx, rest.options(bins, env, *dir, *keep, logf))
		out = r
		if err == nil {
			r.Print(human)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "ddload:", err)
	return 1
}
