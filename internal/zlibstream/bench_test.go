package zlibstream

import (
	"bytes"
	"compress/zlib"
	"io"
	"math/rand/v2"
	"testing"

	kzlib "github.com/klauspost/compress/zlib"
)

// benchStream is a gateway-shaped stream: 2,000 dispatches of 200-1,500 bytes, sync-flushed each.
func benchStream(b *testing.B) (msgs [][]byte, plain int) {
	r := rand.New(rand.NewPCG(5, 6))
	var p [][]byte
	for i := range 2000 {
		m := gatewayPayload(r, i, 200+r.IntN(1300))
		p = append(p, m)
		plain += len(m)
	}
	return discordStream(b, p, zlib.DefaultCompression), plain
}

// BenchmarkDecode decodes the stream with zlibstream and, as the baseline, with klauspost's zlib reader
// (dd's decoder before zlibstream), both pulling from the same message source; one op is the whole
// stream. The idle packing never runs here (idle 0): this is the busy connection's cost.
//
//	go test -run '^$' -bench Decode -benchtime 20x ./internal/zlibstream/
func BenchmarkDecode(b *testing.B) {
	msgs, plain := benchStream(b)
	buf := make([]byte, 4096)
	drain := func(r io.Reader) {
		for {
			_, err := r.Read(buf)
			if err != nil {
				return
			}
		}
	}
	b.Run("zlibstream", func(b *testing.B) {
		b.SetBytes(int64(plain))
		for range b.N {
			z := NewReader(&messages{msgs: msgs, chunk: 4096}, 0)
			drain(z)
			z.Close()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/message")
	})
	b.Run("klauspost", func(b *testing.B) {
		b.SetBytes(int64(plain))
		for range b.N {
			zr, err := kzlib.NewReader(&messages{msgs: msgs, chunk: 4096})
			if err != nil {
				b.Fatal(err)
			}
			drain(zr)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/message")
	})
}

// BenchmarkIdleWake is what an idle connection pays for one small message (a heartbeat ACK): unpack
// the history, decode the message, pack again (tail only, or the whole history once the tail is full).
// It reports the packed history's size against the 32 KiB window.
//
//	go test -run '^$' -bench IdleWake ./internal/zlibstream/
func BenchmarkIdleWake(b *testing.B) {
	r := rand.New(rand.NewPCG(8, 9))
	var plain [][]byte
	for i := range 100 {
		plain = append(plain, gatewayPayload(r, i, 300+r.IntN(600)))
	}
	ack := []byte(`{"t":null,"s":null,"op":11,"d":null}`)
	for range b.N + 1 {
		plain = append(plain, ack)
	}
	msgs := discordStream(b, plain, zlib.DefaultCompression)
	src := &messages{msgs: msgs}
	z := NewReader(src, 0)
	defer z.Close()
	src.wait = func() { packNow(z) }
	buf := make([]byte, 64<<10)
	read := func() {
		if _, err := z.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
	for range 100 {
		read()
	}
	read() // the first ACK
	size, _ := z.Packed()
	b.ResetTimer()
	for range b.N {
		read()
	}
	b.StopTimer()
	b.ReportMetric(float64(size), "packed-bytes")
	b.ReportMetric(float64(maxMatchOffset)/float64(size), "window/packed")
	_ = bytes.MinRead
}
