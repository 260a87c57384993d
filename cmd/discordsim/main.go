// Command discordsim runs dd's Discord simulator as a process: Discord's REST API under /api, the
// gateway websocket, and the admin API under /_sim/. It is for local runs (the demo) and for tests that
// start real processes; Go tests embed the discordsim package directly.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ddhq/dd/sim/discordsim"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("discordsim", flag.ContinueOnError)
	var (
		addr        = fs.String("addr", "127.0.0.1:0", "listen address (port 0 picks a free port)")
		tokens      = fs.String("tokens", "sim-token", "comma-separated bot tokens the simulator accepts")
		guilds      = fs.Int("guilds", 10, "guilds the bot is in")
		channels    = fs.Int("channels", 3, "text channels per guild")
		members     = fs.Int("members", 5, "members per guild")
		maxConc     = fs.Int("max-concurrency", 1, "session_start_limit.max_concurrency")
		identifyWin = fs.Duration("identify-window", 5*time.Second, "one identify per bucket per this")
		sessions    = fs.Int("session-start-total", 1000, "identifies per day")
		heartbeat   = fs.Duration("heartbeat-interval", 41250*time.Millisecond, "HELLO heartbeat_interval")
		resumeWin   = fs.Duration("resume-window", 3*time.Minute, "how long a dropped session stays resumable")
		global      = fs.Int("global-rate-limit", 50, "REST requests per second per token")
		latency     = fs.Duration("rest-latency", 0, "added to every REST response")
		privileged  = fs.Int("privileged-intents", 0, "privileged intent bits the application has enabled")
		rate        = fs.Float64("firehose-rate", 0, "events per second to generate (0: none)")
		urlFile     = fs.String("url-file", "", "write the simulator's base URL to this file once listening")
		guildsFile  = fs.String("guilds-file", "", "write the guilds' IDs and member counts to this file (JSON) once listening, before -url-file")
		cpuProfile  = fs.String("cpuprofile", "", "write the simulator's CPU profile, from its start until SIGINT or SIGTERM, to this file (read it with `go tool pprof -top FILE`)")
	)
	type routeLimit struct {
		key    string
		limit  int
		window time.Duration
	}
	var routeLimits []routeLimit
	fs.Func("route-limit", "`ROUTE=LIMIT/WINDOW`: a bucket's limit per window, e.g. \"GET /channels/{channel_id}=1000000/1s\" (a route key, bucket name or hash; repeatable)",
		func(v string) error {
			key, spec, ok := strings.Cut(v, "=")
			lim, win, ok2 := strings.Cut(spec, "/")
			n, err := strconv.Atoi(lim)
			d, err2 := time.ParseDuration(win)
			if !ok || !ok2 || err != nil || err2 != nil || n < 1 || d <= 0 {
				return fmt.Errorf("want ROUTE=LIMIT/WINDOW (e.g. \"GET /channels/{channel_id}=5/5s\"), got %q", v)
			}
			routeLimits = append(routeLimits, routeLimit{key, n, d})
			return nil
		})
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: discordsim [flags]\n\nRuns dd's strict Discord simulator.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	stopProfile := func() {}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "discordsim: -cpuprofile:", err)
			return 1
		}
		// Stopped (the file written) on every return; on a signal before the server shuts down, so that a
		// slow shutdown cannot lose it.
		defer stop()
		stopProfile = stop
	}
	sim := discordsim.New(discordsim.Config{
		Tokens: strings.Split(*tokens, ","), Guilds: *guilds, ChannelsPerGuild: *channels, MembersPerGuild: *members,
		MaxConcurrency: *maxConc, IdentifyWindow: *identifyWin, SessionStartTotal: *sessions,
		HeartbeatInterval: *heartbeat, ResumeWindow: *resumeWin, GlobalRateLimit: *global,
		RESTLatency: *latency, PrivilegedIntents: *privileged,
	})
	for _, r := range routeLimits {
		if err := sim.SetRouteLimit(r.key, r.limit, r.window); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	if err := sim.Start(*addr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("discordsim listening: api_url = %q, gateway = %q\n", sim.APIURL(), sim.GatewayURL())
	if *guildsFile != "" {
		if err := writeGuilds(*guildsFile, sim.Guilds()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if *urlFile != "" {
		if err := os.WriteFile(*urlFile, []byte(sim.URL()+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if *rate > 0 {
		stop := sim.StartFirehose(discordsim.FirehoseOptions{Rate: *rate})
		defer stop()
		fmt.Printf("firehose: %.0f events/s across %d guilds\n", *rate, *guilds)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	<-ctx.Done()
	stopProfile()
	_ = sim.Close()
	return 0
}

// startCPUProfile starts profiling this process into path; stop ends it and closes the file (once;
// later calls do nothing; errors go to stderr, the process is exiting).
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "discordsim: -cpuprofile:", err)
			}
		})
	}, nil
}

// writeGuilds writes [{"id":"…","member_count":N}, …] (IDs as strings, as Discord writes them), through
// a temporary file so that a reader never sees half of it.
func writeGuilds(path string, guilds []discordsim.Guild) error {
	type entry struct {
		ID          uint64 `json:"id,string"`
		MemberCount int    `json:"member_count"`
	}
	list := make([]entry, len(guilds))
	for i, g := range guilds {
		list[i] = entry{g.ID, g.MemberCount}
	}
	b, err := json.Marshal(list)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}
