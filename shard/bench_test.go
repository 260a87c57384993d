package shard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/internal/rawjson"
	"github.com/ddhq/dd/sim/discordsim"
)

// countSink counts events and keeps nothing: the baseline cost of receiving.
type countSink struct{ n atomic.Int64 }

func (c *countSink) Dispatch(ctx context.Context, evs []Event, sess Session) error {
	c.n.Add(int64(len(evs)))
	return nil
}

// simProcess runs the simulator as its own process, so that its memory is not counted as dd's.
func simProcess(b *testing.B, args ...string) string {
	b.Helper()
	dir := b.TempDir()
	bin := filepath.Join(dir, "discordsim")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/discordsim").CombinedOutput(); err != nil {
		b.Fatalf("building the simulator: %v\n%s", err, out)
	}
	urlFile := filepath.Join(dir, "url")
	cmd := exec.Command(bin, append([]string{"-url-file", urlFile}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 200; i++ {
		if data, err := os.ReadFile(urlFile); err == nil && len(data) > 0 {
			return strings.TrimSpace(string(data))
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatal("simulator did not start")
	return ""
}

// stackInuse is the goroutine stacks' memory, after heapAndStacks's collections (which shrink them).
func stackInuse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.StackInuse
}

func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// BenchmarkIdleShardMemory connects b.N shards (one op = one shard) to a simulator in another process,
// sends each about 80 messages (about 50 KB, more than the compressor's 32 KiB window, as a shard that has
// run a while has seen), and reports dd's memory per idle connected shard. Run with -benchtime=1000x for
// the figure:
//
//	go test -run '^$' -bench IdleShardMemory -benchtime 1000x ./shard/
func BenchmarkIdleShardMemory(b *testing.B) {
	if os.Getenv("DD_HEAPPROFILE") != "" {
		runtime.MemProfileRate = 256 // a finer profile than the default 512 KiB sample: shards are small
	}
	for _, compress := range []string{CompressZstd, CompressZlib} {
		b.Run(compress, func(b *testing.B) {
			n := b.N
			base := simProcess(b, "-tokens", "bench", "-guilds", fmt.Sprint(n), "-max-concurrency", "16",
				"-identify-window", "20ms")
			sink := &countSink{}
			before := heapAndStacks()
			stacksBefore := stackInuse()
			m, err := NewManager(ManagerConfig{TotalShards: n, ShardIDs: seq(n), Template: Config{
				Token: "bench", Intents: discord.IntentGuilds | discord.IntentGuildMessages, GatewayURL: "ws" + strings.TrimPrefix(base, "http") + "/gateway",
				Compress: compress, Sink: sink,
				Identify: identify.NewLocal(identify.SessionStartLimit{Total: 100000, Remaining: 100000, ResetAfter: time.Hour,
					MaxConcurrency: 16}, 20*time.Millisecond, 5*time.Millisecond, nil),
			}})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			deadline := time.Now().Add(5 * time.Minute)
			for ready := 0; ready < n; {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d shards ready", ready, n)
				}
				time.Sleep(50 * time.Millisecond)
				ready = 0
				for _, s := range m.Shards() {
					if s.State() == StateReady {
						ready++
					}
				}
			}
			// Traffic enough to fill every shard's decompression window, then idle.
			seen := sink.n.Load()
			traffic := int64(80 * n)
			resp, err := http.Post(base+"/_sim/gateway/firehose", "application/json",
				strings.NewReader(fmt.Sprintf(`{"max_speed":true,"total":%d,"message_create":1}`, traffic)))
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			for sink.n.Load() < seen+traffic {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d firehose events received", sink.n.Load()-seen, traffic)
				}
				time.Sleep(50 * time.Millisecond)
			}
			// Let the bursts' buffers go, and zlib-stream's decoders pack their histories (1 s idle).
			time.Sleep(2500 * time.Millisecond)
			after := heapAndStacks()
			stacks := stackInuse()
			if p := os.Getenv("DD_HEAPPROFILE"); p != "" {
				f, _ := os.Create(p + "." + compress)
				pprof.WriteHeapProfile(f)
				f.Close()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				sm := []metrics.Sample{{Name: "/gc/scan/stack:bytes"}}
				metrics.Read(sm)
				b.Logf("heap inuse %d, stack inuse %d, goroutines %d, stack used at the last collection %d",
					ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine(), sm[0].Value.Uint64())
			}
			b.ReportMetric(float64(after-before)/float64(n), "B/shard")
			b.ReportMetric(float64(stacks-stacksBefore)/float64(n), "stack-B/shard")
			b.ReportMetric(0, "ns/op")
			cancel()
			<-done
		})
	}
}

// BenchmarkStartupVersusIdentifyLimit starts N shards under max_concurrency and reports the time until
// all are READY divided by ceil(N / max_concurrency) × the identify window (the figure, ≤ 1.02).
func BenchmarkStartupVersusIdentifyLimit(b *testing.B) {
	const n, conc, window = 64, 16, 250 * time.Millisecond
	var ratios []float64
	for i := 0; i < b.N; i++ {
		sim := discordsim.New(discordsim.Config{Guilds: 128, MaxConcurrency: conc, IdentifyWindow: window})
		if err := sim.Start("127.0.0.1:0"); err != nil {
			b.Fatal(err)
		}
		m, err := NewManager(ManagerConfig{TotalShards: n, ShardIDs: seq(n), Template: Config{
			Token: sim.Config().Tokens[0], Intents: discord.IntentGuilds, GatewayURL: sim.GatewayURL(), Sink: &countSink{},
			Identify: identify.NewLocal(identify.SessionStartLimit{Total: 1000, Remaining: 1000, ResetAfter: time.Hour,
				MaxConcurrency: conc}, window, 50*time.Millisecond, nil), // the margin absorbs receipt jitter, as in production
		}})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		for {
			ready := 0
			for _, s := range m.Shards() {
				if s.State() == StateReady {
					ready++
				}
			}
			if ready == n {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		elapsed := time.Since(start)
		if v := sim.GatewayStats().IdentifyViolations; v != 0 {
			b.Fatalf("%d identify violations", v)
		}
		ratios = append(ratios, float64(elapsed)/float64(time.Duration(math.Ceil(float64(n)/conc))*window))
		cancel()
		<-done
		sim.Close()
	}
	sum := 0.0
	for _, r := range ratios {
		sum += r
	}
	b.ReportMetric(sum/float64(len(ratios)), "startup/limit")
}

// BenchmarkShardIngest is the receiving baseline: the simulator's firehose into one shard whose sink only
// counts (per event: websocket read, zstd, JSON header parse).
func BenchmarkShardIngest(b *testing.B) {
	sim := discordsim.New(discordsim.Config{Guilds: 16, MaxConcurrency: 16, IdentifyWindow: 10 * time.Millisecond})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer sim.Close()
	sink := &countSink{}
	m, _ := NewManager(ManagerConfig{TotalShards: 1, ShardIDs: []int{0}, Template: Config{Compress: os.Getenv("DD_BENCH_COMPRESS"),
		Token: sim.Config().Tokens[0], Intents: discord.IntentGuilds | discord.IntentGuildMessages, GatewayURL: sim.GatewayURL(), Sink: sink,
		Identify: identify.NewLocal(identify.SessionStartLimit{Total: 1000, Remaining: 1000, ResetAfter: time.Hour, MaxConcurrency: 16}, 10*time.Millisecond, 0, nil),
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx)
	for m.Shard(0).State() != StateReady || sink.n.Load() < 17 {
		time.Sleep(5 * time.Millisecond)
	}
	start := sink.n.Load()
	b.ResetTimer()
	t0 := time.Now()
	done := make(chan struct{})
	stop := sim.StartFirehose(discordsim.FirehoseOptions{MaxSpeed: true, Total: int64(b.N), MessageCreate: 1, Done: done})
	defer stop()
	for sink.n.Load() < start+int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "events/s")
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// gatewayMessage is a MESSAGE_CREATE as Discord sends it (t, s and op before d).
var gatewayMessage = []byte(`{"t":"MESSAGE_CREATE","s":1234,"op":0,"d":{"type":0,"tts":false,"timestamp":"2026-11-24T03:00:00.000000+00:00","pinned":false,"nonce":"evt-1","mentions":[],"mention_roles":[],"mention_everyone":false,"member":{"roles":[],"premium_since":null,"pending":false,"nick":null,"mute":false,"joined_at":"2026-01-01T00:00:00.000000+00:00","flags":0,"deaf":false,"communication_disabled_until":null,"avatar":null},"id":"1574627755297865729","flags":0,"embeds":[],"edited_timestamp":null,"content":"hello there, this is a message of typical length for a bot","components":[],"channel_id":"754679441002594320","author":{"username":"someone","public_flags":0,"id":"80351110224678912","global_name":"Someone","discriminator":"0","avatar":"a_d5efa99b3eeaa7dd43acca82f5692432"},"attachments":[],"guild_id":"754679441002594304"}}`)

// parseHeaderWhole is parseHeader before it stopped at its three fields: it scanned every field, d
// included. Kept for BenchmarkParseHeader's comparison in the same run.
func parseHeaderWhole(raw []byte) (header, error) {
	h := header{op: -1}
	err := rawjson.EachField(raw, func(k, v []byte) bool {
		switch string(k) {
		case "op":
			if n, ok := rawjson.Int(v); ok {
				h.op = int(n)
			}
		case "s":
			h.seq, _ = rawjson.Int(v)
		case "t":
			h.name, _ = rawjson.String(v)
		}
		return true
	})
	if err == nil && h.op < 0 {
		err = errors.New("no op")
	}
	return h, err
}

// BenchmarkParseHeader reads op, s and t of a gateway MESSAGE_CREATE, stopping once it has them (now)
// and scanning the whole payload (before).
func BenchmarkParseHeader(b *testing.B) {
	for _, impl := range []struct {
		name  string
		parse func([]byte) (header, error)
	}{{"whole", parseHeaderWhole}, {"stops", parseHeader}} {
		b.Run(impl.name, func(b *testing.B) {
			b.SetBytes(int64(len(gatewayMessage)))
			b.ReportAllocs()
			for range b.N {
				if h, err := impl.parse(gatewayMessage); err != nil || h.seq != 1234 {
					b.Fatal(h, err)
				}
			}
		})
	}
}

// frameSource hands out server frames as a socket does when each message arrives on its own: a Read
// returns at most what is left of the current frame. It counts the Reads (the system calls a socket
// would take).
type frameSource struct {
	frames [][]byte
	cur    []byte
	reads  int
}

func (f *frameSource) Read(p []byte) (int, error) {
	f.reads++
	if len(f.cur) == 0 {
		if len(f.frames) == 0 {
			return 0, io.EOF
		}
		f.cur, f.frames = f.frames[0], f.frames[1:]
	}
	n := copy(p, f.cur)
	f.cur = f.cur[n:]
	return n, nil
}

// gatewayFrames are n text frames of payloads of about size bytes each.
func gatewayFrames(tb testing.TB, n, size int) (frames [][]byte, payloads []string) {
	for i := range n {
		p := fmt.Sprintf(`{"t":"TYPING_START","s":%d,"op":0,"d":{"x":"%s"}}`, i+1, strings.Repeat("y", max(0, size-50)))
		var b bytes.Buffer
		if err := ws.WriteFrame(&b, ws.NewTextFrame([]byte(p))); err != nil {
			tb.Fatal(err)
		}
		frames, payloads = append(frames, b.Bytes()), append(payloads, p)
	}
	return frames, payloads
}

// readPayloads reads every payload of src as a connection without compression does, through the peek
// reader as dial sets it up, or (peek false) straight from src.
func readPayloads(tb testing.TB, src io.Reader, peek bool, want []string) {
	c := newConn(nil, src, CompressNone)
	if !peek {
		c.rd.Source = src
	}
	for i, w := range want {
		got, err := c.next()
		if err != nil || string(got) != w {
			tb.Fatalf("payload %d: %.60q, %v; want %.60q", i, got, err, w)
		}
	}
}

// BenchmarkFrameReads reads gateway messages that arrive one at a time (without compression, as
// zstd-stream's small compressed messages would), straight from the socket and through the peek reader,
// and reports the socket reads each message takes.
func BenchmarkFrameReads(b *testing.B) {
	for _, size := range []int{100, 220, 900} {
		for _, peek := range []bool{false, true} {
			b.Run(fmt.Sprintf("size=%d/peek=%v", size, peek), func(b *testing.B) {
				frames, payloads := gatewayFrames(b, 1000, size)
				b.ReportAllocs()
				reads := 0
				for range b.N {
					src := &frameSource{frames: frames}
					readPayloads(b, src, peek, payloads)
					reads += src.reads
				}
				b.ReportMetric(float64(reads)/float64(b.N*len(frames)), "reads/msg")
			})
		}
	}
}
