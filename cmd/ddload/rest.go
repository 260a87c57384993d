package main

import (
	"flag"
	"time"

	"github.com/ddhq/dd/internal/loadtool"
)

// restFlags are the rest scenario's flags (issue #9's REST sequence).
type restFlags struct {
	callers, channels, global int
	clientIdle, fastCallers   int
	fast, slow, latency       time.Duration
	window, firstSlow         time.Duration
	hotUsed, omitRemaining    bool
}

func (r *restFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&r.callers, "callers", 64, "rest: concurrent callers")
	fs.IntVar(&r.channels, "channels", 0, "rest: channels of the fast phase (default: one per caller)")
	fs.IntVar(&r.global, "global", 1000000, "rest: the global limit per second, dd's rest.global_rate_limit and the simulator's")
	fs.DurationVar(&r.fast, "fast", 2*time.Second, "rest: the fast phase (callers over many channels, upstream answering at once)")
	fs.DurationVar(&r.slow, "slow", 5*time.Second, "rest: the slow phase (every caller on one channel, upstream answering in -latency)")
	fs.DurationVar(&r.latency, "latency", 50*time.Millisecond, "rest: the upstream's latency in the slow phase")
	fs.DurationVar(&r.window, "window", time.Second, "rest: the bucket's window (X-RateLimit-Reset-After); its limit is 1,000,000")
	fs.IntVar(&r.fastCallers, "fast-callers", 0, "rest: callers of the fast phase (default -callers)")
	fs.IntVar(&r.clientIdle, "client-idle", 0, "rest: the callers' idle connections to dd (MaxIdleConnsPerHost; default 2 × callers, Go's default is 2)")
	fs.DurationVar(&r.firstSlow, "first-slow", 0, "rest: added to the slow phase's first answer only (one slow answer upstream)")
	fs.BoolVar(&r.hotUsed, "hot-used", false, "rest: the slow phase's channel is one the fast phase used (default: a new one)")
	fs.BoolVar(&r.omitRemaining, "omit-remaining", false, "rest: the upstream leaves X-RateLimit-Remaining out")
}

func (r *restFlags) options(bins loadtool.Binaries, env []string, dir string, keep bool, logf func(string, ...any)) loadtool.RESTOptions {
	return loadtool.RESTOptions{Binaries: bins, Callers: r.callers, FastChannels: r.channels, Global: r.global,
		Fast: r.fast, Slow: r.slow, Latency: r.latency, Window: r.window, HotUsed: r.hotUsed,
		OmitRemaining: r.omitRemaining, ClientIdle: r.clientIdle, FastCallers: r.fastCallers, FirstSlow: r.firstSlow, Env: env, Dir: dir, Keep: keep, Logf: logf}
}
