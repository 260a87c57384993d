package loadtool

import (
	"fmt"
	"io"
	"strings"
)

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

// Print writes the figures of a firehose run as lines a person reads.
func (r FirehoseResult) Print(w io.Writer) {
	fmt.Fprintf(w, "firehose: %d shards, --role=all, %.0f events/s asked for %.0fs, events.batch_max %d\n",
		r.Shards, r.Rate, r.Duration, r.BatchMax)
	fmt.Fprintf(w, "  firehose rate   %8.0f events/s  (%d generated in %.2fs, %d dispatched to dd's sessions)\n",
		r.FirehoseRate, r.Created, r.FirehoseSeconds, r.Dispatched)
	fmt.Fprintf(w, "  ingest rate     %8.0f events/s  (dd_gateway_events_received_total +%d, all in by %.2fs)\n",
		r.IngestRate, r.Received, r.IngestSeconds)
	fmt.Fprintf(w, "  delivery rate   %8.0f events/s  (%d at the receiver, the last at %.2fs)\n",
		r.DeliveryRate, r.Delivered, r.DeliverySeconds)
	var depths []string
	for _, s := range r.Series {
		depths = append(depths, fmt.Sprintf("%.1fs:%d", s.T, s.QueueDepth))
	}
	fmt.Fprintf(w, "  queue depth     max %d; per second: %s\n", r.MaxQueueDepth, strings.Join(depths, " "))
	fmt.Fprintf(w, "  dd              idle RSS %s, RSS peak (VmHWM) %s, max sampled %s (anonymous %s, mapped files %s), at the end %s\n",
		mib(r.DD.IdleRSS), mib(r.DD.PeakRSS), mib(r.DD.MaxSampledRSS), mib(r.DD.MaxAnonRSS), mib(r.DD.MaxFileRSS), mib(r.DD.EndRSS))
	fmt.Fprintf(w, "                  CPU %.2fs = %.3f s per 1,000 events\n", r.DD.CPUSeconds, r.DD.CPUPer1000)
	fmt.Fprintf(w, "  simulator       idle RSS %s, VmHWM %s, max sampled %s; CPU %.2fs = %.3f s per 1,000 events\n",
		mib(r.Sim.IdleRSS), mib(r.Sim.PeakRSS), mib(r.Sim.MaxSampledRSS), r.Sim.CPUSeconds, r.Sim.CPUPer1000)
	fmt.Fprintf(w, "  receiver (load tool process) CPU %.2fs = %.3f s per 1,000 events\n", r.Receiver.CPUSeconds, r.Receiver.CPUPer1000)
	if m := r.Machine; m.Cores > 0 {
		fmt.Fprintf(w, "  machine         %d cores, %.2f busy on average over the %.1fs from the firehose's start; other processes %.2f of them\n",
			m.Cores, m.BusyCores, m.Seconds, m.OtherCores)
	}
	verdict := "every event exactly once"
	if r.Lost != 0 || r.Duplicates != 0 || r.DuplicateIDs != 0 || r.Unexpected != 0 || r.OutOfOrder != 0 || !r.Complete {
		verdict = "NOT exactly once"
	}
	fmt.Fprintf(w, "  check           %s: lost %d, duplicates %d (by X-DD-Event-Id %d), unexpected %d, out of order %d, bad auth %d, invalid %d\n",
		verdict, r.Lost, r.Duplicates, r.DuplicateIDs, r.Unexpected, r.OutOfOrder, r.BadAuth, r.Invalid)
	fmt.Fprintf(w, "                  (per shard against the simulator's sequence, READY and GUILD_CREATEs included; %d identifies, %d resumes, filtered %d, dropped %d)\n",
		r.Identifies, r.Resumes, r.Filtered, r.Dropped)
}

// Print writes the figures of a shards run as lines a person reads.
func (r ShardsResult) Print(w io.Writer) {
	r.Run.print(w)
	if r.Baseline != nil {
		r.Baseline.print(w)
		fmt.Fprintf(w, "  RSS per shard, slope (RSS(%d) - RSS(%d)) / %d: %s (RssAnon alone: %s)\n", r.Run.Shards, r.Baseline.Shards,
			r.Run.Shards-r.Baseline.Shards, kib(r.SlopePerShard), kib(r.AnonSlopePerShard))
	}
}

func (r ShardsRun) print(w io.Writer) {
	fmt.Fprintf(w, "shards: %d shards, --role=gateway, max_concurrency %d, %d guilds, heartbeat %.0fs\n",
		r.Shards, r.MaxConcurrency, r.Guilds, r.HeartbeatS)
	fmt.Fprintf(w, "  ready           every shard ready and %d GUILD_CREATEs delivered %.1fs after dd started\n",
		r.GuildCreates, r.ReadySeconds)
	fmt.Fprintf(w, "  identifies      %d accepted, %d refused (op 9), %d other; %d connections opened; %d resumes; %d heartbeat timeouts\n",
		r.IdentifiesAccepted, r.IdentifiesRefused, r.IdentifiesOther, r.Connections, r.Resumes, r.HeartbeatTimeouts)
	if r.IdentifyMinimum > 0 {
		fmt.Fprintf(w, "  identify span   %.2fs first to last accepted ÷ %.0fs minimum = %.3f\n", r.IdentifySpan, r.IdentifyMinimum, r.SpanRatio)
	} else {
		fmt.Fprintf(w, "  identify span   %.2fs first to last accepted (one bucket round: the minimum is 0)\n", r.IdentifySpan)
	}
	fmt.Fprintf(w, "  dd RSS          %s after startup, %s after %.0fs idle (anonymous %s; VmHWM %s): %s per shard\n",
		mib(r.RSSStartup), mib(r.RSSSettled), r.SettleSeconds, mib(r.AnonSettled), mib(r.PeakRSS), kib(r.RSSPerShard))
	if r.FillEvents > 0 {
		fmt.Fprintf(w, "  traffic         %d MESSAGE_CREATEs delivered before the settle (%s)\n", r.FillEvents, r.Compress)
	}
	fmt.Fprintf(w, "  dd memory       %d goroutines, heap in use %s, stacks %s (after the settle, %s); %d collections during the settle\n",
		r.Goroutines, mib(r.HeapInuse), mib(r.StackInuse), r.Compress, r.SettleGCs)
	fmt.Fprintf(w, "  dd CPU          %.2fs until ready; idle %.3f cores over the settle\n", r.StartupCPU, r.IdleCores)
	fmt.Fprintf(w, "  simulator       RSS %s, idle %.3f cores\n", mib(r.SimRSS), r.SimIdleCores)
	fmt.Fprintf(w, "  GET /status     median %.2f ms (%v ms), %d bytes, %d shards ready\n",
		r.StatusMedianMs, r.StatusMillis, r.StatusBytes, r.StatusReady)
}

// Print writes the figures of a members run as lines a person reads.
func (r MembersResult) Print(w io.Writer) {
	fmt.Fprintf(w, "members: %d shards, --role=all, cache.request_members = \"all\" at %d per shard per minute; %d guilds, %d members (guilds to ask for per shard: %v)\n",
		r.Shards, r.PacePerMinute, r.Guilds, r.Members, r.LargePerShard)
	if r.MinimumSeconds > 0 {
		fmt.Fprintf(w, "  complete        every list complete %.2fs after dd started ÷ %.0fs minimum = %.3f\n", r.CompleteSeconds, r.MinimumSeconds, r.Ratio)
	} else {
		fmt.Fprintf(w, "  complete        every list complete %.2fs after dd started; the limits force no wait (no shard has more guilds than the pace): no minimum to divide by\n", r.CompleteSeconds)
	}
	fmt.Fprintf(w, "  applied         first chunk received %.2fs after dd started: %.0f members/s from then, %.0f members/s from dd's start; GET /stats %d members\n",
		r.FirstChunkSeconds, r.AppliedPerSecond, r.EndToEndPerSecond, r.CacheMembers)
	fmt.Fprintf(w, "  requests        dd %d requests, %d chunks, %d RATE_LIMITED, %d timed out; simulator %d requests (%d ignored), %d chunks; %d identifies, close codes %v\n",
		r.Requests, r.Chunks, r.RateLimited, r.TimedOut, r.SimRequests, r.SimIgnored, r.SimChunks, r.Identifies, r.CloseCodes)
	for _, f := range r.Reads {
		fmt.Fprintf(w, "  reads, %2d client(s) p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.1f ms; %.0f req/s over %.1fs: %d 200, %d 404, %d other\n",
			f.Clients, f.P50Ms, f.P99Ms, f.P999Ms, f.MaxMs, f.PerSecond, f.Seconds, f.Found, f.NotFound, f.Other)
	}
	fmt.Fprintf(w, "  dd              RSS peak (VmHWM) %s, at completion %s; CPU %.2fs\n", mib(r.PeakRSS), mib(r.EndRSS), r.DDCPUSeconds)
	fmt.Fprintf(w, "  store           after a clean stop: %.1f MB on disk (apparent %.1f MB) = %.0f bytes per member\n",
		float64(r.StoreBytes)/1e6, float64(r.StoreApparent)/1e6, r.StorePerMember)
}
