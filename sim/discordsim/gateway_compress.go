package discordsim

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"math/bits"
	"sync"
)

// Transport compression: one compression context for the connection's life, each gateway payload
// flushed into its own websocket message (binary frame).
//
// zstd-stream uses the simulator's own encoder too (gateway_zstd.go), for its CPU: a general encoder
// builds entropy tables for every flushed message.
//
// zlib-stream uses the small encoder below instead of compress/zlib: a standard zlib writer holds about
// 800 KB of tables per connection, which would dominate a 1,000-shard memory benchmark. This encoder
// keeps a 32–64 KiB window buffer and an 8K-entry hash table (~100 KB) and emits fixed-Huffman deflate blocks whose
// back-references reach into earlier messages, as Discord's stream does: a client that inflates each
// message with a fresh context fails here as it would on Discord.
type streamEncoder interface {
	// compress returns the bytes of one websocket message; valid until the next call.
	compress(msg []byte) []byte
	close()
}

func newStreamEncoder(kind compressKind) streamEncoder {
	switch kind {
	case compressZlib:
		return &deflateStream{}
	case compressZstd:
		return &zstdEncoder{}
	}
	return nil
}

// ---- zlib-stream ----

const (
	deflateWindow    = 1 << 15
	deflateHashBits  = 13
	deflateMinMatch  = 4
	deflateMaxMatch  = 258
	deflateMaxOffset = deflateWindow
)

type deflateStream struct {
	hist    []byte                       // the last ≤32 KiB of input, then the message being encoded
	table   [1 << deflateHashBits]uint32 // hash of 4 bytes -> stream position + 1 (0: empty)
	base    uint32                       // stream position of hist[0] (wraps after 4 GiB; matches are verified)
	out     []byte
	bits    uint64
	nbits   uint
	started bool
}

var (
	fixedLitCode [288]uint16 // bit-reversed fixed Huffman codes of RFC 1951 §3.2.6
	fixedLitLen  [288]uint8
	lengthCode   [deflateMaxMatch + 1]uint8
	lengthBase   = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
		115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint32{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
		1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
)

func init() {
	for i := 0; i < 288; i++ {
		var code, n uint
		switch {
		case i < 144:
			code, n = 0x30+uint(i), 8
		case i < 256:
			code, n = 0x190+uint(i-144), 9
		case i < 280:
			code, n = uint(i-256), 7
		default:
			code, n = 0xc0+uint(i-280), 8
		}
		fixedLitCode[i] = uint16(bits.Reverse16(uint16(code)) >> (16 - n))
		fixedLitLen[i] = uint8(n)
	}
	for c := 0; c < 28; c++ {
		for l := int(lengthBase[c]); l < int(lengthBase[c])+1<<lengthExtra[c] && l <= deflateMaxMatch; l++ {
			lengthCode[l] = uint8(c)
		}
	}
	lengthCode[deflateMaxMatch] = 28
}

func (d *deflateStream) writeBits(v uint64, n uint) {
	d.bits |= v << d.nbits
	d.nbits += n
	for d.nbits >= 8 {
		d.out = append(d.out, byte(d.bits))
		d.bits >>= 8
		d.nbits -= 8
	}
}

func (d *deflateStream) literal(sym int) {
	d.writeBits(uint64(fixedLitCode[sym]), uint(fixedLitLen[sym]))
}

func (d *deflateStream) match(length int, dist uint32) {
	lc := lengthCode[length]
	d.literal(257 + int(lc))
	if e := lengthExtra[lc]; e > 0 {
		d.writeBits(uint64(length-int(lengthBase[lc])), uint(e))
	}
	dc := distCode(dist)
	d.writeBits(uint64(bits.Reverse8(uint8(dc))>>3), 5)
	if dc >= 4 {
		d.writeBits(uint64(dist-distBase[dc]), uint(dc/2-1))
	}
}

func distCode(dist uint32) uint32 {
	v := dist - 1
	if v < 4 {
		return v
	}
	nb := uint32(bits.Len32(v)) - 1
	return 2*nb + (v>>(nb-1))&1
}

func hash4(v uint32) uint32 { return (v * 2654435761) >> (32 - deflateHashBits) }

func (d *deflateStream) compress(msg []byte) []byte {
	d.out = d.out[:0]
	if !d.started {
		d.out = append(d.out, 0x78, 0x01) // zlib header: deflate, 32 KiB window, no dictionary
		d.started = true
	}
	if over := len(d.hist) - deflateWindow; over > 0 && len(d.hist)+len(msg) > 2*deflateWindow {
		// Slide the window only when the buffer would pass 64 KiB, so the copy is amortised.
		copy(d.hist, d.hist[over:])
		d.hist = d.hist[:deflateWindow]
		d.base += uint32(over)
	}
	start := len(d.hist)
	d.hist = append(d.hist, msg...)
	h := d.hist
	n := len(h)
	d.writeBits(1<<1, 3) // BFINAL 0, BTYPE 01 (fixed Huffman)
	for i := start; i < n; {
		if i+deflateMinMatch <= n {
			v := binary.LittleEndian.Uint32(h[i:])
			slot := &d.table[hash4(v)]
			cand := *slot
			pos := d.base + uint32(i)
			*slot = pos + 1
			dist := pos - (cand - 1)
			if cand != 0 && dist >= 1 && dist <= deflateMaxOffset && int(dist) <= i &&
				binary.LittleEndian.Uint32(h[i-int(dist):]) == v {
				l := deflateMinMatch
				for i+l < n && l < deflateMaxMatch && h[i+l-int(dist)] == h[i+l] {
					l++
				}
				d.match(l, dist)
				for j := i + 1; j < i+l && j+deflateMinMatch <= n; j++ {
					d.table[hash4(binary.LittleEndian.Uint32(h[j:]))] = d.base + uint32(j) + 1
				}
				i += l
				continue
			}
		}
		d.literal(int(h[i]))
		i++
	}
	d.literal(256) // end of block
	// Sync flush: an empty stored block, byte-aligned, so the message ends with 00 00 ff ff.
	d.writeBits(0, 3)
	if d.nbits > 0 {
		d.writeBits(0, 8-d.nbits)
	}
	d.out = append(d.out, 0, 0, 0xff, 0xff)
	if cap(d.hist) > 4*deflateWindow {
		// A huge message (a large GUILD_CREATE) grew the window buffer: give the memory back.
		keep := d.hist[len(d.hist)-min(len(d.hist), deflateWindow):]
		d.base += uint32(len(d.hist) - len(keep))
		d.hist = append(make([]byte, 0, 2*deflateWindow), keep...)
	}
	if cap(d.out) > 4*deflateWindow {
		defer func() { d.out = nil }()
	}
	return d.out
}

func (d *deflateStream) close() {}

// ---- zstd-stream: see gateway_zstd.go ----

// ---- payload compression (IDENTIFY compress: true) ----

// payloadCompressMin: payloads at least this long are sent zlib-compressed (a complete zlib stream in a
// binary frame) to a session that asked for payload compression; shorter ones stay text.
const payloadCompressMin = 1024

var zlibPool = sync.Pool{New: func() any { return zlib.NewWriter(nil) }}

func zlibOnce(msg []byte) []byte {
	var b bytes.Buffer
	w := zlibPool.Get().(*zlib.Writer)
	w.Reset(&b)
	_, _ = w.Write(msg)
	_ = w.Close()
	zlibPool.Put(w)
	return b.Bytes()
}
