package zlibstream

import (
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// messages is a Source over whole messages, as a websocket connection gives them: ReadByte and Read
// move on to the next message when one is used up, and io.EOF follows the last.
type messages struct {
	msgs [][]byte
	i    int // current message
	pos  int // read position in it
	// chunk, if above 0, bounds what one Read returns, as a websocket frame would.
	chunk int
	// wait, if set, is called where a socket would wait for the next message.
	wait func()
}

func (m *messages) next() bool {
	if m.wait != nil && m.i < len(m.msgs) && m.pos == len(m.msgs[m.i]) {
		m.wait()
	}
	for m.i < len(m.msgs) && m.pos == len(m.msgs[m.i]) {
		m.i++
		m.pos = 0
	}
	return m.i < len(m.msgs)
}

func (m *messages) ReadByte() (byte, error) {
	if !m.next() {
		return 0, io.EOF
	}
	c := m.msgs[m.i][m.pos]
	m.pos++
	return c, nil
}

func (m *messages) Read(p []byte) (int, error) {
	if !m.next() {
		return 0, io.EOF
	}
	rest := m.msgs[m.i][m.pos:]
	if m.chunk > 0 && len(rest) > m.chunk {
		rest = rest[:m.chunk]
	}
	n := copy(p, rest)
	m.pos += n
	return n, nil
}

func (m *messages) MessageDone() bool { return m.i >= len(m.msgs) || m.pos == len(m.msgs[m.i]) }

// discordStream compresses plain as Discord's zlib-stream does: one zlib stream, sync-flushed after
// every message. It returns the compressed messages.
func discordStream(t testing.TB, plain [][]byte, level int) [][]byte {
	var buf bytes.Buffer
	w, err := zlib.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, p := range plain {
		w.Write(p)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(buf.Bytes(), []byte{0, 0, 0xff, 0xff}) {
			t.Fatal("a sync flush does not end with 00 00 ff ff")
		}
		out = append(out, bytes.Clone(buf.Bytes()))
		buf.Reset()
	}
	return out
}

// gatewayPayload is a JSON payload shaped like a dispatch, of about size bytes.
func gatewayPayload(r *rand.Rand, seq, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"t":"MESSAGE_CREATE","s":%d,"op":0,"d":{"id":"%d","channel_id":"%d","guild_id":"%d","author":{"id":"%d","username":"user%d","avatar":"%x","discriminator":"0","public_flags":0},"content":"`,
		seq, r.Uint64()>>1, 1e17+r.IntN(50), 1e17+r.IntN(8), r.Uint64()>>1, r.IntN(1000), r.Uint64())
	words := []string{"the", "shard", "gateway", "hello", "discord", "bot", "event", "guild", "member", "role", "message", "lol", "ok"}
	for b.Len() < size {
		if r.IntN(8) == 0 {
			fmt.Fprintf(&b, "%x ", r.Uint32())
		} else {
			b.WriteString(words[r.IntN(len(words))])
			b.WriteByte(' ')
		}
	}
	fmt.Fprintf(&b, `","timestamp":"2026-12-01T20:%02d:%02d.000000+00:00","tts":false,"mentions":[],"attachments":[],"embeds":[]}}`, r.IntN(60), r.IntN(60))
	return b.Bytes()
}

var packsWithBits int

// packNow packs a parked Reader as its timer would.
func packNow(z *Reader) bool {
	z.p.Mu.Lock()
	defer z.p.Mu.Unlock()
	if !z.p.Parked || z.d == nil {
		return false
	}
	if z.d.nb > 0 {
		packsWithBits++
	}
	z.pack()
	return true
}

// decodeAll reads src through a Reader with reads of random sizes, packing at random where the source
// waits for the next message, and returns the output and how many times it packed.
func decodeAll(t testing.TB, r *rand.Rand, src *messages, packOdds int) ([]byte, int) {
	z := NewReader(src, 0)
	defer z.Close()
	var out []byte
	packs := 0
	src.wait = func() {
		if packOdds > 0 && r.IntN(packOdds) == 0 && packNow(z) {
			packs++
		}
	}
	buf := make([]byte, 64<<10)
	for {
		if r.IntN(2) == 0 {
			// As rawjson.ObjectReader does between objects.
			if err := z.WaitMessage(); err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("WaitMessage after %d bytes: %v", len(out), err)
			}
		}
		n, err := z.Read(buf[:1+r.IntN(len(buf)-1)])
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return out, packs
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(out), err)
		}
	}
}

// A Reader decodes Discord's stream (sync-flushed messages of any size, in frames of any size) exactly
// as the plain inflater does, whether its history was packed between messages or not.
func TestReaderDecodesSyncFlushedMessagesAsTheInflaterDoes(t *testing.T) {
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 7))
		var plain [][]byte
		for i := range 1 + r.IntN(60) {
			size := r.IntN(400)
			switch r.IntN(10) {
			case 0:
				size = r.IntN(100 << 10) // past the window, past the decoder's output buffer
			case 1:
				size = 0
			}
			plain = append(plain, gatewayPayload(r, i, size))
		}
		level := []int{zlib.BestSpeed, zlib.DefaultCompression, zlib.BestCompression, zlib.HuffmanOnly, zlib.NoCompression}[r.IntN(5)]
		msgs := discordStream(t, plain, level)
		want := bytes.Join(plain, nil)

		ref, err := zlib.NewReader(&messages{msgs: msgs})
		if err != nil {
			t.Fatal(err)
		}
		refOut, err := io.ReadAll(ref)
		if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(refOut, want) {
			t.Fatalf("seed %d: the reference inflater disagrees with the input (%v)", seed, err)
		}
		for _, odds := range []int{0, 1, 3} {
			got, packs := decodeAll(t, r, &messages{msgs: msgs, chunk: 1 + r.IntN(2000)}, odds)
			if !bytes.Equal(got, want) {
				t.Fatalf("seed %d, level %d, pack odds %d (%d packs): %d bytes decoded, want %d; first difference at %d",
					seed, level, odds, packs, len(got), len(want), firstDiff(got, want))
			}
			if odds == 1 && len(msgs) > 1 && packs == 0 {
				t.Fatalf("seed %d: never parked between %d messages", seed, len(msgs))
			}
		}
	}
}

// A sender that does not flush at message ends (a deflate block spanning messages, bits of a byte left
// over) is decoded across the boundary; the Reader parks only at block boundaries.
func TestReaderDecodesBlocksSpanningMessages(t *testing.T) {
	leftover, total := 0, 0
	defer func() {
		t.Logf("%d packs, %d with bits of a byte left over", total, leftover)
		if !t.Failed() && leftover == 0 {
			t.Error("never packed with bits of a byte left over")
		}
	}()
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 11))
		var plain bytes.Buffer
		var buf bytes.Buffer
		w, _ := zlib.NewWriterLevel(&buf, []int{1, 6, 9, -2}[r.IntN(4)])
		for i := range 1 + r.IntN(200) {
			p := gatewayPayload(r, i, r.IntN(3000))
			plain.Write(p)
			w.Write(p)
			if r.IntN(20) == 0 {
				w.Flush()
			}
		}
		if r.IntN(2) == 0 {
			w.Close() // a final block and the trailer
		} else {
			w.Flush()
		}
		// Cut the stream anywhere, byte boundaries inside blocks included. Messages of a few bytes end
		// at most block boundaries, where the decoder parks with the bits of a byte left over.
		stream := buf.Bytes()
		cut := []int{3, 300}[r.IntN(2)]
		var msgs [][]byte
		for len(stream) > 0 {
			n := min(len(stream), 1+r.IntN(cut))
			msgs = append(msgs, stream[:n])
			stream = stream[n:]
		}
		got, packs := decodeAll(t, r, &messages{msgs: msgs}, 2)
		leftover += packsWithBits
		packsWithBits = 0
		total += packs
		if !bytes.Equal(got, plain.Bytes()) {
			t.Fatalf("seed %d: %d bytes decoded, want %d; first difference at %d", seed, len(got), plain.Len(), firstDiff(got, plain.Bytes()))
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

// An idle Reader packs its history on its own after the idle period, and a message after that decodes
// as if it had not.
func TestIdleReaderPacksItsHistoryAndResumes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var plain [][]byte
	for i := range 120 {
		plain = append(plain, gatewayPayload(r, i, 300+r.IntN(600)))
	}
	msgs := discordStream(t, plain, zlib.DefaultCompression)
	src := &gated{msgs: msgs, allow: make(chan int), blocked: make(chan int, 1)}
	z := NewReader(src, 20*time.Millisecond)
	defer z.Close()
	got := make(chan []byte)
	go func() {
		var out []byte
		buf := make([]byte, 4096)
		for {
			n, err := z.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				got <- out
				return
			}
		}
	}()
	src.allow <- 100 // most messages at once: more than the window
	<-src.blocked
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n, packed := z.Packed(); packed {
			full := len(bytes.Join(plain[:100], nil))
			t.Logf("packed history: %d bytes for a %d-byte window (%d bytes of output)", n, min(full, maxMatchOffset), full)
			if n >= maxMatchOffset/2 {
				t.Errorf("packed history of %d bytes; want well under the 32 KiB window", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an idle Reader did not pack its history")
		}
		time.Sleep(5 * time.Millisecond)
	}
	src.allow <- len(msgs)
	out := <-got
	if want := bytes.Join(plain, nil); !bytes.Equal(out, want) {
		t.Fatalf("%d bytes decoded, want %d; first difference at %d", len(out), len(want), firstDiff(out, want))
	}
}

// gated is a Source that waits for allow before giving messages past the allowed count.
type gated struct {
	msgs    [][]byte
	i, pos  int
	allowed int
	allow   chan int
	blocked chan int
}

func (g *gated) wait() bool {
	for g.i < len(g.msgs) && g.pos == len(g.msgs[g.i]) {
		g.i++
		g.pos = 0
	}
	if g.i >= len(g.msgs) {
		return false
	}
	for g.i >= g.allowed {
		select {
		case g.blocked <- g.i:
		default:
		}
		g.allowed = <-g.allow
	}
	return true
}

func (g *gated) ReadByte() (byte, error) {
	if !g.wait() {
		return 0, io.EOF
	}
	c := g.msgs[g.i][g.pos]
	g.pos++
	return c, nil
}

func (g *gated) Read(p []byte) (int, error) {
	if !g.wait() {
		return 0, io.EOF
	}
	n := copy(p, g.msgs[g.i][g.pos:])
	g.pos += n
	return n, nil
}

func (g *gated) MessageDone() bool { return g.i >= len(g.msgs) || g.pos == len(g.msgs[g.i]) }

// FuzzReader checks any input against the plain inflater: the same output up to the first error.
func FuzzReader(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 4 {
		plain := [][]byte{gatewayPayload(r, i, 100), gatewayPayload(r, i+1, 2000)}
		f.Add(bytes.Join(discordStream(f, plain, zlib.DefaultCompression), nil), uint64(i))
	}
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64) {
		r := rand.New(rand.NewPCG(seed, seed>>1))
		var msgs [][]byte
		for rest := stream; len(rest) > 0; {
			n := min(len(rest), 1+r.IntN(64))
			msgs = append(msgs, rest[:n])
			rest = rest[n:]
		}
		var want []byte
		if ref, err := zlib.NewReader(bytes.NewReader(stream)); err == nil {
			want, _ = io.ReadAll(ref)
		}
		src := &messages{msgs: msgs}
		z := NewReader(src, 0)
		defer z.Close()
		src.wait = func() {
			if r.IntN(2) == 0 {
				packNow(z)
			}
		}
		var got []byte
		buf := make([]byte, 1+r.IntN(5000))
		for len(got) <= len(want) {
			n, err := z.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if !bytes.HasPrefix(want, got) && !bytes.HasPrefix(got, want) {
			t.Fatalf("output differs from the inflater's at byte %d", firstDiff(got, want))
		}
		if len(got) < len(want) {
			t.Fatalf("%d bytes decoded, the inflater decoded %d", len(got), len(want))
		}
	})
}
