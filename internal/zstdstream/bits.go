package zstdstream

import (
	"encoding/binary"
	"math/bits"
)

// backReader reads a zstd backward bit stream: the stream is consumed from its last byte towards its
// first, each byte from its most significant bit, and the last byte holds a 1 bit marking where the
// stream's bits start (the zeros above it are padding).
//
// value holds the 8 bytes in[off:off+8] (little endian, so in[off+7] is the most significant byte, the
// one consumed first) and consumed counts how many of its bits, from the top, are used. A stream shorter
// than 8 bytes is loaded once as if zero bytes preceded it.
type backReader struct {
	in       []byte
	off      int
	value    uint64
	consumed uint
}

func (b *backReader) init(in []byte) error {
	if len(in) == 0 {
		return errCorrupt("empty bit stream")
	}
	last := in[len(in)-1]
	if last == 0 {
		return errCorrupt("bit stream without end mark")
	}
	b.in = in
	if len(in) >= 8 {
		b.off = len(in) - 8
		b.value = binary.LittleEndian.Uint64(in[b.off:])
		b.consumed = 0
	} else {
		var v uint64
		for i := len(in) - 1; i >= 0; i-- {
			v = v<<8 | uint64(in[i])
		}
		pad := uint(8 * (8 - len(in)))
		b.value = v
		b.off = 0
		b.consumed = pad
	}
	b.consumed += uint(bits.LeadingZeros8(last)) + 1
	return nil
}

// fill loads the bytes fully consumed so far; afterwards at least 57 bits are available unless the
// stream's start was reached.
func (b *backReader) fill() {
	k := int(b.consumed >> 3)
	if k > b.off {
		k = b.off
	}
	if k == 0 {
		return
	}
	b.off -= k
	b.consumed -= uint(k) << 3
	b.value = binary.LittleEndian.Uint64(b.in[b.off:])
}

// get returns the next n bits (n <= 32, at most the bits available since the last fill); past the stream's
// start it reads zeros, which overflowed reports later.
func (b *backReader) get(n uint8) uint32 {
	v := (b.value << b.consumed) >> (64 - uint(n))
	b.consumed += uint(n)
	return uint32(v)
}

// finished reports whether every bit of the stream was consumed, exactly.
func (b *backReader) finished() bool { return b.off == 0 && b.consumed == 64 }

func (b *backReader) overflowed() bool { return b.consumed > 64 }

// highBit returns the index of the highest set bit of v (v > 0).
func highBit(v uint32) uint { return uint(31 - bits.LeadingZeros32(v)) }
