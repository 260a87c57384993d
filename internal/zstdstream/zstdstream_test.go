package zstdstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// ---- payload generators ----

var words = strings.Fields("the quick brown fox jumps over a lazy dog hello world discord gateway guild " +
	"channel message member role presence update typing voice state emoji reaction thread")

func genJSON(rng *rand.Rand, size int) []byte {
	var b bytes.Buffer
	for b.Len() < size {
		fmt.Fprintf(&b, `{"t":"MESSAGE_CREATE","s":%d,"op":0,"d":{"id":"%d","channel_id":"%d","guild_id":"%d",`+
			`"author":{"id":"%d","username":"user%d","avatar":"%x","discriminator":"0","public_flags":%d},`+
			`"content":"`, rng.Intn(1e6), rng.Int63(), rng.Int63n(1e6)+1e17, rng.Int63n(100)+1e17,
			rng.Int63(), rng.Intn(5000), rng.Int63(), rng.Intn(3))
		for i := rng.Intn(30); i >= 0; i-- {
			b.WriteString(words[rng.Intn(len(words))])
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, `","timestamp":"2024-%02d-%02dT%02d:%02d:%02d.%06d+00:00","tts":false,"mentions":[],"embeds":[]}}`,
			rng.Intn(12)+1, rng.Intn(28)+1, rng.Intn(24), rng.Intn(60), rng.Intn(60), rng.Intn(1e6))
	}
	return b.Bytes()[:size]
}

func genRandom(rng *rand.Rand, size int) []byte {
	b := make([]byte, size)
	rng.Read(b)
	return b
}

// genRepetitive: runs of one byte, short periodic patterns and copies of earlier parts (long matches,
// overlapping matches, repeat offsets).
func genRepetitive(rng *rand.Rand, size int) []byte {
	b := make([]byte, 0, size)
	for len(b) < size {
		switch rng.Intn(4) {
		case 0:
			c := byte(rng.Intn(256))
			for i := rng.Intn(2000); i >= 0; i-- {
				b = append(b, c)
			}
		case 1:
			p := genRandom(rng, rng.Intn(7)+1)
			for i := rng.Intn(500); i >= 0; i-- {
				b = append(b, p...)
			}
		case 2:
			if len(b) > 0 {
				start := rng.Intn(len(b))
				n := rng.Intn(len(b)-start) + 1
				b = append(b, b[start:start+n]...)
			}
		default:
			b = append(b, genRandom(rng, rng.Intn(100))...)
		}
	}
	return b[:size]
}

func genMixed(rng *rand.Rand, size int) []byte {
	switch rng.Intn(3) {
	case 0:
		return genJSON(rng, size)
	case 1:
		return genRepetitive(rng, size)
	}
	return genRandom(rng, size)
}

// genMessages returns a message sequence of about total bytes: mostly small messages, some empty, a few
// large.
func genMessages(rng *rand.Rand, total int, gen func(*rand.Rand, int) []byte) [][]byte {
	var msgs [][]byte
	n := 0
	for n < total {
		var size int
		switch r := rng.Intn(20); {
		case r == 0:
			size = 0
		case r < 15:
			size = rng.Intn(5000) + 1
		case r < 19:
			size = rng.Intn(40000)
		default:
			size = rng.Intn(300 << 10)
		}
		msgs = append(msgs, gen(rng, size))
		n += size
	}
	return msgs
}

// ---- sources ----

// pieceReader delivers the pieces one per Read call (a short Read within a piece if p is small).
type pieceReader struct {
	pieces [][]byte
}

func (p *pieceReader) Read(b []byte) (int, error) {
	for len(p.pieces) > 0 && len(p.pieces[0]) == 0 {
		p.pieces = p.pieces[1:]
	}
	if len(p.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.pieces[0])
	p.pieces[0] = p.pieces[0][n:]
	return n, nil
}

type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	return o.r.Read(b[:1])
}

var errWouldBlock = errors.New("source would block: decoder asked for input beyond the flushed message")

// gatedReader serves data[:limit] and fails when asked for more: a websocket that has no next message yet.
type gatedReader struct {
	data  []byte
	pos   int
	limit int
}

func (g *gatedReader) Read(b []byte) (int, error) {
	if g.pos >= len(g.data) {
		return 0, io.EOF
	}
	if g.pos >= g.limit {
		return 0, errWouldBlock
	}
	n := copy(b, g.data[g.pos:g.limit])
	g.pos += n
	return n, nil
}

// ---- encoding ----

type encoded struct {
	stream []byte
	bounds []int // end of each message's compressed bytes (after its Flush)
}

func encodeFlushed(t testing.TB, msgs [][]byte, opts ...zstd.EOption) encoded {
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, opts...)
	if err != nil {
		t.Fatal(err)
	}
	var e encoded
	for _, m := range msgs {
		if _, err := enc.Write(m); err != nil {
			t.Fatal(err)
		}
		if err := enc.Flush(); err != nil {
			t.Fatal(err)
		}
		e.bounds = append(e.bounds, buf.Len())
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	e.stream = buf.Bytes()
	return e
}

func (e encoded) pieces() [][]byte {
	var ps [][]byte
	prev := 0
	for _, b := range e.bounds {
		ps = append(ps, e.stream[prev:b])
		prev = b
	}
	return append(ps, e.stream[prev:])
}

func decodeAll(src io.Reader, maxWindow int) ([]byte, error) {
	r := NewReader(src, maxWindow)
	defer r.Close()
	var out bytes.Buffer
	buf := make([]byte, 7919)
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func checkEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: decoded %d bytes, want %d; first difference at %d", what, len(got), len(want), firstDiff(got, want))
	}
}

// checkMessages decodes e message by message from a source that has only the bytes flushed so far and
// fails when more is asked for: every flushed message must be readable without further input.
func checkMessages(t *testing.T, e encoded, msgs [][]byte, maxWindow int) {
	t.Helper()
	g := &gatedReader{data: e.stream}
	r := NewReader(g, maxWindow)
	defer r.Close()
	for i, m := range msgs {
		g.limit = e.bounds[i]
		got := make([]byte, len(m))
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("message %d (%d bytes): %v", i, len(m), err)
		}
		if !bytes.Equal(got, m) {
			t.Fatalf("message %d differs at %d", i, firstDiff(got, m))
		}
	}
	g.limit = len(e.stream)
	n, err := io.Copy(io.Discard, r)
	if err != nil || n != 0 {
		t.Fatalf("stream end: %d extra bytes, %v", n, err)
	}
}

var levels = []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression}

func TestFlushedStreams(t *testing.T) {
	windows := []int{1 << 10, 4 << 10, 32 << 10, 256 << 10, 8 << 20}
	gens := []struct {
		name string
		f    func(*rand.Rand, int) []byte
	}{{"json", genJSON}, {"mixed", genMixed}, {"repetitive", genRepetitive}, {"random", genRandom}}
	seed := int64(1)
	for _, w := range windows {
		for li, lvl := range levels {
			for _, crc := range []bool{false, true} {
				seed++
				g := gens[(int(seed)+li)%len(gens)]
				name := fmt.Sprintf("w%d/%s/crc=%v/%s", w, lvl, crc, g.name)
				rng := rand.New(rand.NewSource(seed))
				total := 150 << 10
				if lvl == zstd.SpeedBestCompression {
					total = 60 << 10
				}
				msgs := genMessages(rng, total, g.f)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					e := encodeFlushed(t, msgs, zstd.WithWindowSize(w), zstd.WithEncoderLevel(lvl),
						zstd.WithEncoderCRC(crc), zstd.WithEncoderConcurrency(1))
					want := bytes.Join(msgs, nil)
					got, err := decodeAll(&pieceReader{pieces: e.pieces()}, 8<<20)
					if err != nil {
						t.Fatalf("pieces: %v", err)
					}
					checkEqual(t, "pieces", got, want)
					checkMessages(t, e, msgs, 8<<20)
					if w <= 32<<10 || len(e.stream) < 64<<10 {
						got, err = decodeAll(oneByteReader{bytes.NewReader(e.stream)}, 8<<20)
						if err != nil {
							t.Fatalf("one byte at a time: %v", err)
						}
						checkEqual(t, "one byte at a time", got, want)
					}
				})
			}
		}
	}
}

// TestFrames: single-segment frames (EncodeAll, with content size), streamed frames without content size,
// skippable frames and several frames back to back.
func TestFrames(t *testing.T) {
	rng := rand.New(rand.NewSource(42))
	var stream, want []byte
	sizes := []int{0, 1, 5, 100, 1000, 4096, 70000, 131072, 131073, 300 << 10}
	for i, size := range sizes {
		for li, lvl := range levels {
			p := genMixed(rng, size)
			crc := (i+li)%2 == 0
			enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderCRC(crc),
				zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(size < 200000))
			if err != nil {
				t.Fatal(err)
			}
			frame := enc.EncodeAll(p, nil)
			got, err := decodeAll(bytes.NewReader(frame), 8<<20)
			if err != nil {
				t.Fatalf("size %d %s: %v", size, lvl, err)
			}
			checkEqual(t, fmt.Sprintf("EncodeAll size %d %s", size, lvl), got, p)
			stream = append(stream, frame...)
			want = append(want, p...)
			if li == 1 {
				// A skippable frame, then a streamed frame (no content size).
				stream = append(stream, 0x5A, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 1, 2, 3)
				var buf bytes.Buffer
				enc.Reset(&buf)
				enc.Write(p)
				enc.Close()
				stream = append(stream, buf.Bytes()...)
				want = append(want, p...)
			}
		}
	}
	got, err := decodeAll(bytes.NewReader(stream), 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	checkEqual(t, "concatenated frames", got, want)
	got, err = decodeAll(oneByteReader{bytes.NewReader(stream)}, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	checkEqual(t, "concatenated frames, one byte at a time", got, want)
}

func TestZstdCLI(t *testing.T) {
	bin, err := exec.LookPath("zstd")
	if err != nil {
		t.Skip("no zstd command")
	}
	rng := rand.New(rand.NewSource(7))
	var input []byte
	for _, m := range genMessages(rng, 400<<10, genMixed) {
		input = append(input, m...)
	}
	for _, args := range [][]string{{"-1"}, {"-3"}, {"-9"}, {"-19"}, {"--fast=5"}, {"-3", "--no-check"},
		{"-12", "-B4096"}, {"--ultra", "-20", "--long=23"}} {
		// From stdin: no content size, streamed frame.
		cmd := exec.Command(bin, append([]string{"-c", "-q"}, args...)...)
		cmd.Stdin = bytes.NewReader(input)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("zstd %v: %v", args, err)
		}
		got, err := decodeAll(&pieceReader{pieces: [][]byte{out}}, 8<<20)
		if err != nil {
			t.Fatalf("zstd %v: %v", args, err)
		}
		checkEqual(t, fmt.Sprint("zstd ", args), got, input)
	}
	// From a file: content size in the header.
	f := t.TempDir() + "/in"
	if err := os.WriteFile(f, input[:100000], 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-c", "-q", "-19", f).Output()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeAll(bytes.NewReader(out), 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	checkEqual(t, "zstd -19 file", got, input[:100000])
}

func TestErrors(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	p := genJSON(rng, 50000)
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderCRC(true), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(64<<10))
	var buf bytes.Buffer
	enc.Reset(&buf)
	enc.Write(p)
	enc.Close()
	frame := buf.Bytes()

	expect := func(name string, data []byte, maxWindow int, want string) {
		t.Helper()
		_, err := decodeAll(bytes.NewReader(data), maxWindow)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, want)
		}
	}
	expect("bad magic", []byte{1, 2, 3, 4, 5, 6, 7, 8}, 0, "not a zstd frame")
	expect("window", frame, 32<<10, "larger than the maximum")
	mod := bytes.Clone(frame)
	mod[4] |= 0x08
	expect("reserved bit", mod, 0, "reserved bit")
	// Dictionary ID flag 1 with a one-byte dictionary ID.
	dict := append([]byte{0x28, 0xB5, 0x2F, 0xFD, 0x01, 0x58, 0x07}, 1, 0, 0)
	expect("dictionary", dict, 0, "dictionaries are not supported")
	expect("truncated", frame[:len(frame)-10], 0, "unexpected EOF")
	mod = bytes.Clone(frame)
	mod[len(mod)-1] ^= 0xFF
	expect("checksum", mod, 0, "checksum mismatch")
	// Reserved block type.
	expect("block type", []byte{0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x58, 0x07, 0, 0}, 0, "reserved block type")
	// Corrupt compressed data somewhere in the middle: must fail (or, rarely, decode differently), never panic.
	for i := 0; i < 200; i++ {
		mod = bytes.Clone(frame)
		mod[6+rng.Intn(len(mod)-10)] ^= byte(1 << rng.Intn(8))
		got, err := decodeAll(bytes.NewReader(mod), 0)
		if err == nil && !bytes.Equal(got, p) {
			t.Errorf("corruption %d decoded without error and without the checksum noticing", i)
		}
	}
	r := NewReader(bytes.NewReader(frame), 0)
	r.Close()
	if _, err := r.Read(make([]byte, 10)); err != ErrClosed {
		t.Errorf("read after close: %v", err)
	}
}

func FuzzDecoder(f *testing.F) {
	rng := rand.New(rand.NewSource(11))
	for i, lvl := range levels {
		msgs := genMessages(rng, 20000, genMixed)
		e := encodeFlushed(f, msgs, zstd.WithEncoderLevel(lvl), zstd.WithWindowSize(1<<10<<i), zstd.WithEncoderCRC(i%2 == 0))
		f.Add(e.stream)
		enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl))
		f.Add(enc.EncodeAll(genJSON(rng, 3000), nil))
		f.Add(enc.EncodeAll(genRepetitive(rng, 3000), nil))
	}
	f.Add([]byte{})
	f.Add([]byte{0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x58, 0x01, 0, 0})
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<20))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeAll(bytes.NewReader(data), 1<<20)
		if err != nil {
			return
		}
		// Where both decoders accept the input, they agree.
		want, err := dec.DecodeAll(data, nil)
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("decoded %d bytes, klauspost %d; first difference at %d", len(got), len(want), firstDiff(got, want))
		}
	})
}

// ---- memory ----

func gatewayStream(t testing.TB, rng *rand.Rand, n, window int) ([][]byte, encoded) {
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = genJSON(rng, 1000+rng.Intn(4000))
	}
	return msgs, encodeFlushed(t, msgs, zstd.WithWindowSize(window), zstd.WithEncoderConcurrency(1))
}

func heapAlloc() uint64 {
	var ms runtime.MemStats
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// idleHeap returns the retained heap per Reader of 1,000 Readers, each having decoded the first n
// messages of the stream (32 KiB window).
func idleHeap(t testing.TB, n int) (perReader float64, decoded int) {
	rng := rand.New(rand.NewSource(5))
	msgs, e := gatewayStream(t, rng, n, 32<<10)
	for _, m := range msgs {
		decoded += len(m)
	}
	const count = 1000
	readers := make([]*Reader, count)
	srcs := make([]*pieceReader, count)
	buf := make([]byte, 8<<10)
	before := heapAlloc()
	for i := range readers {
		srcs[i] = &pieceReader{pieces: e.pieces()[:n]}
		readers[i] = NewReader(srcs[i], 32<<10)
		for _, m := range msgs {
			if _, err := io.ReadFull(readers[i], buf[:len(m)]); err != nil {
				t.Fatal(err)
			}
		}
	}
	after := heapAlloc()
	runtime.KeepAlive(readers)
	runtime.KeepAlive(srcs)
	// The sources' piece slices are counted too; they are small (n slice headers each).
	return float64(int64(after)-int64(before)) / count, decoded
}

func TestIdleMemory(t *testing.T) {
	for _, n := range []int{3, 12} {
		per, decoded := idleHeap(t, n)
		t.Logf("1,000 idle Readers after %d messages (%d bytes) each, 32 KiB window: %.0f bytes retained per Reader", n, decoded, per)
		if per > 40<<10 {
			t.Errorf("%.0f bytes retained per idle Reader, want <= 40 KiB", per)
		}
	}
}

// ---- throughput ----

func BenchmarkDecodeGatewayLike(b *testing.B) {
	rng := rand.New(rand.NewSource(9))
	msgs, e := gatewayStream(b, rng, 300, 32<<10)
	total := 0
	for _, m := range msgs {
		total += len(m)
	}
	buf := make([]byte, 8<<10)
	ours := NewReader(nil, 32<<20)
	theirs, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(32<<20))
	if err != nil {
		b.Fatal(err)
	}
	defer theirs.Close()
	run := func(r io.Reader, reset func(io.Reader)) time.Duration {
		start := time.Now()
		reset(&pieceReader{pieces: e.pieces()})
		for _, m := range msgs {
			if _, err := io.ReadFull(r, buf[:len(m)]); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	var tOurs, tTheirs time.Duration
	b.SetBytes(int64(2 * total))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tOurs += run(ours, ours.Reset)
		tTheirs += run(theirs, func(src io.Reader) { theirs.Reset(src) })
	}
	mb := float64(total) * float64(b.N) / 1e6
	b.ReportMetric(mb/tOurs.Seconds(), "zstdstream_MB/s")
	b.ReportMetric(mb/tTheirs.Seconds(), "klauspost_MB/s")
	b.ReportMetric(tTheirs.Seconds()/tOurs.Seconds(), "speed_ratio")
}
