package discordsim

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ddhq/dd/internal/zstdstream"
)

// klauspostZstd is the zstd-stream encoder the simulator used before its own (gateway_zstd.go): one
// klauspost encoder for the connection's life, each message Flush()ed. The benchmarks' baseline.
type klauspostZstd struct {
	enc *zstd.Encoder
	buf bytes.Buffer
}

func newKlauspostZstd() *klauspostZstd {
	z := &klauspostZstd{}
	enc, err := zstd.NewWriter(&z.buf, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(1<<15))
	if err != nil {
		panic(err)
	}
	z.enc = enc
	return z
}

func (z *klauspostZstd) compress(msg []byte) []byte {
	z.buf.Reset()
	_, _ = z.enc.Write(msg)
	_ = z.enc.Flush()
	return z.buf.Bytes()
}

func (z *klauspostZstd) close() { _ = z.enc.Close() }

// firehoseDispatches returns n firehose dispatches as a session without MESSAGE_CONTENT receives them
// (ddload's dd), rendered as the writer renders them.
func firehoseDispatches(tb testing.TB, n int) [][]byte {
	tb.Helper()
	s := New(Config{Guilds: 64})
	f := &firehose{g: s.gw, opts: FirehoseOptions{MessageCreate: 60, MessageUpdate: 15, MemberAdd: 5, TypingStart: 10,
		ReactionAdd: 10}, rnd: 42}
	sess := &session{g: s.gw, botID: BotUserID(0), intents: IntentGuilds | IntentGuildMessages}
	out := make([][]byte, n)
	for i := range out {
		e := f.next()
		if e == nil {
			tb.Fatal("the firehose made no event")
		}
		out[i] = renderDispatch(nil, outItem{ev: e, seq: int64(i + 1), sess: sess})
	}
	return out
}

// chunkReader hands out the chunks added to it, blocking when it has none, as a socket would.
type chunkReader struct {
	mu   sync.Mutex
	cond *sync.Cond
	buf  []byte
}

func newChunkReader() *chunkReader {
	r := &chunkReader{}
	r.cond = sync.NewCond(&r.mu)
	return r
}

func (r *chunkReader) add(p []byte) {
	r.mu.Lock()
	r.buf = append(r.buf, p...)
	r.mu.Unlock()
	r.cond.Broadcast()
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.buf) == 0 {
		r.cond.Wait()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// zstdTestMessages: firehose dispatches, then what stresses the encoder: messages over one block
// (32 KiB) and over 128 KiB, incompressible bytes, long runs (overlapping matches), one byte, nothing,
// and repeats of earlier messages (matches into the window).
func zstdTestMessages(t *testing.T) [][]byte {
	msgs := firehoseDispatches(t, 300)
	rnd := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	var big strings.Builder
	for i := 0; big.Len() < 200<<10; i++ {
		fmt.Fprintf(&big, `{"id":"%d","name":"member-%d","roles":[%d]},`, 1e17+i*7919, rnd.IntN(1e6), i%13)
	}
	msgs = append(msgs, []byte(big.String()[:40<<10]), []byte(big.String()), random(100), random(70<<10),
		bytes.Repeat([]byte("a"), 100<<10), []byte("x"), nil, bytes.Repeat([]byte(`{"op":11}`), 3))
	msgs = append(msgs, msgs[5], msgs[17], random(3), msgs[0])
	msgs = append(msgs, firehoseDispatches(t, 300)...)
	for i := 0; i < 50; i++ { // a mix of text and binary, short and long
		m := append(random(rnd.IntN(200)), msgs[rnd.IntN(300)]...)
		msgs = append(msgs, append(m, random(rnd.IntN(50))...))
	}
	return msgs
}

// Every message compressed by the simulator's zstd-stream encoder is decoded, whole, from its own bytes
// and those before it (the stream is never ended; no message needs the next one's bytes), by
// klauspost's decoder and by dd's own (internal/zstdstream).
func TestZstdStreamDecodesMessageByMessage(t *testing.T) {
	msgs := zstdTestMessages(t)
	decoders := map[string]func(io.Reader) (io.Reader, func()){
		"klauspost": func(r io.Reader) (io.Reader, func()) {
			d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
			if err != nil {
				t.Fatal(err)
			}
			return d, d.Close
		},
		"zstdstream": func(r io.Reader) (io.Reader, func()) {
			d := zstdstream.NewReader(r, 0)
			return d, d.Close
		},
	}
	for name, newDec := range decoders {
		t.Run(name, func(t *testing.T) {
			enc := &zstdEncoder{}
			src := newChunkReader()
			dec, closeDec := newDec(src)
			defer src.add(make([]byte, 16)) // unblock a decoder left waiting
			defer closeDec()
			total, wire := 0, 0
			for i, m := range msgs {
				c := enc.compress(m)
				wire += len(c)
				total += len(m)
				src.add(c)
				got := make([]byte, len(m))
				done := make(chan error, 1)
				go func() {
					_, err := io.ReadFull(dec, got)
					done <- err
				}()
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("message %d (%d bytes): %v", i, len(m), err)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("message %d (%d bytes) is not decodable without the next message's bytes", i, len(m))
				}
				if !bytes.Equal(got, m) {
					t.Fatalf("message %d (%d bytes) decoded differently:\n got %.200q\nwant %.200q", i, len(m), got, m)
				}
			}
			t.Logf("%d messages, %d bytes compressed to %d (%.1f%%)", len(msgs), total, wire, 100*float64(wire)/float64(total))
		})
	}
}

// The firehose's dispatches shrink with back-references into earlier messages, as with klauspost.
func TestZstdStreamCompressesFirehose(t *testing.T) {
	msgs := firehoseDispatches(t, 2000)
	ours, theirs := &zstdEncoder{}, newKlauspostZstd()
	defer theirs.close()
	var raw, a, b int
	for _, m := range msgs {
		raw += len(m)
		a += len(ours.compress(m))
		b += len(theirs.compress(m))
	}
	t.Logf("2000 dispatches: %d bytes; simulator's encoder %d (%.1f%%), klauspost's %d (%.1f%%)",
		raw, a, 100*float64(a)/float64(raw), b, 100*float64(b)/float64(raw))
	if a > raw/2 {
		t.Errorf("the firehose compressed to %d of %d bytes: matches into earlier messages are not found", a, raw)
	}
}

// The length codes agree with a search of the format's baseline tables.
func TestZstdLengthCodes(t *testing.T) {
	for l := uint32(0); l < 131072; l++ { // past every length a 32 KiB block can hold
		c, x, nb := llCodeOf(l)
		want := 0
		for k := range llBase {
			if llBase[k] <= l {
				want = k
			}
		}
		if int(c) != want || x != l-llBase[want] || nb != uint(llBits[want]) || x >= 1<<nb {
			t.Fatalf("literal length %d: code %d extra %d/%d bits, want code %d", l, c, x, nb, want)
		}
		if l < 3 {
			continue
		}
		c, x, nb = mlCodeOf(l)
		want = 0
		for k := range mlBase {
			if mlBase[k] <= l {
				want = k
			}
		}
		if int(c) != want || x != l-mlBase[want] || nb != uint(mlBits[want]) || x >= 1<<nb {
			t.Fatalf("match length %d: code %d extra %d/%d bits, want code %d", l, c, x, nb, want)
		}
	}
}

// BenchmarkZstdStream compresses firehose dispatches (batch of 100 or not, each is its own message) with
// the simulator's encoder and, for the baseline, the klauspost encoder it replaced.
func BenchmarkZstdStream(b *testing.B) {
	msgs := firehoseDispatches(b, 1000)
	raw := 0
	for _, m := range msgs {
		raw += len(m)
	}
	for _, c := range []struct {
		name string
		enc  func() streamEncoder
	}{
		{"klauspost", func() streamEncoder { return newKlauspostZstd() }},
		{"sim", func() streamEncoder { return &zstdEncoder{} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			enc := c.enc()
			defer enc.close()
			wire, n := 0, 0
			for i := 0; b.Loop(); i++ {
				wire += len(enc.compress(msgs[i%len(msgs)]))
				n++
			}
			b.ReportMetric(float64(wire)/float64(n), "wire-bytes/msg")
			b.ReportMetric(float64(raw)/float64(len(msgs)), "json-bytes/msg")
		})
	}
}

// BenchmarkZstdStreamDecode is the client's side: dd's decoder (internal/zstdstream) reading the stream
// of firehose dispatches as klauspost's encoder wrote it and as the simulator's does, message by message.
func BenchmarkZstdStreamDecode(b *testing.B) {
	msgs := firehoseDispatches(b, 1000)
	for _, c := range []struct {
		name string
		enc  streamEncoder
	}{
		{"klauspost", newKlauspostZstd()},
		{"sim", &zstdEncoder{}},
	} {
		// Enough of the stream for any b.N: the messages over and over.
		var stream []byte
		var sizes []int
		for i := 0; i < 20000; i++ {
			m := msgs[i%len(msgs)]
			stream = append(stream, c.enc.compress(m)...)
			sizes = append(sizes, len(m))
		}
		c.enc.close()
		b.Run(c.name, func(b *testing.B) {
			var dec *zstdstream.Reader
			buf := make([]byte, 64<<10)
			i := len(sizes)
			for b.Loop() {
				if i == len(sizes) {
					dec, i = zstdstream.NewReader(bytes.NewReader(stream), 0), 0
				}
				if _, err := io.ReadFull(dec, buf[:sizes[i]]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
