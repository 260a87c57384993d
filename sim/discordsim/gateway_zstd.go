package discordsim

import (
	"encoding/binary"
	"math/bits"
)

// zstd-stream with the simulator's own small encoder, as zlib-stream has deflateStream: one Zstandard
// frame for the connection's life (32 KiB window, no checksum, no content size, never ended), each
// message in its own blocks, whose matches reach back into earlier messages as Discord's stream's do.
//
// The klauspost encoder it replaces spent most of its time building new entropy tables for every block,
// which on one small message per block (a dispatch is flushed as it is sent) cost about 7 µs a message:
// a whole core at 50,000 events/s. This one emits, like deflateStream's fixed Huffman codes, the
// format's predefined FSE tables for the sequences (Predefined_Mode, RFC 8878 §3.1.1.3.2.1) and raw
// literals, so it builds no table at all; a block that would not shrink is sent raw. A decoder needs
// the same features either way: the frame header, raw and compressed blocks, the sequence execution
// with offsets into the window.

const (
	zWindowLog = 15
	zWindow    = 1 << zWindowLog // Window_Size; also Block_Maximum_Size (min(window, 128 KiB))
	zHashBits  = 14
	// Matches are found by a hash of 6 bytes (fewer, longer matches than with 4 on the firehose's JSON:
	// 8.6% of its size rather than 9.9%, and no slower) and are at least zMinMatch long (the format
	// allows 3).
	zMinMatch = 4
	// zInsertStep: every this many positions of a match go into the hash table.
	zInsertStep = 16
)

type zstdEncoder struct {
	hist    []byte                 // the last ≥32 KiB of input, then the message being encoded
	table   [1 << zHashBits]uint32 // hash of 6 bytes -> stream position + 1 (0: empty)
	base    uint32                 // stream position of hist[0] (wraps after 4 GiB; matches are verified)
	out     []byte
	lits    []byte
	seqs    []zSeq
	started bool
}

type zSeq struct {
	litLen, matchLen, offset uint32
}

func (z *zstdEncoder) close() {}

func (z *zstdEncoder) compress(msg []byte) []byte {
	z.out = z.out[:0]
	if !z.started {
		// Magic, Frame_Header_Descriptor 0 (no single segment, checksum, dictionary or content size),
		// Window_Descriptor: exponent 15-10, mantissa 0.
		z.out = append(z.out, 0x28, 0xb5, 0x2f, 0xfd, 0x00, (zWindowLog-10)<<3)
		z.started = true
	}
	if over := len(z.hist) - zWindow; over > 0 && len(z.hist)+len(msg) > 2*zWindow {
		// Slide the window only when the buffer would pass 64 KiB, so the copy is amortised.
		copy(z.hist, z.hist[over:])
		z.hist = z.hist[:zWindow]
		z.base += uint32(over)
	}
	start := len(z.hist)
	z.hist = append(z.hist, msg...)
	if len(msg) == 0 {
		z.out = appendBlockHeader(z.out, 0, 0) // an empty raw block
	}
	for s := start; s < len(z.hist); s += zWindow {
		z.block(s, min(s+zWindow, len(z.hist)))
	}
	if cap(z.hist) > 4*zWindow {
		// A huge message (a large GUILD_CREATE) grew the window buffer: give the memory back.
		keep := z.hist[len(z.hist)-min(len(z.hist), zWindow):]
		z.base += uint32(len(z.hist) - len(keep))
		z.hist = append(make([]byte, 0, 2*zWindow), keep...)
	}
	out := z.out
	if cap(z.out) > 4*zWindow {
		z.out = nil
	}
	return out
}

// appendBlockHeader appends Block_Header: Last_Block 0, Block_Type (0 raw, 2 compressed), Block_Size.
func appendBlockHeader(b []byte, typ, size int) []byte {
	v := uint32(typ)<<1 | uint32(size)<<3
	return append(b, byte(v), byte(v>>8), byte(v>>16))
}

// zHash6 hashes the low 6 bytes of v.
func zHash6(v uint64) uint32 { return uint32(((v << 16) * 227718039650203) >> (64 - zHashBits)) }

// block encodes hist[from:to] (at most zWindow bytes) as one block.
func (z *zstdEncoder) block(from, to int) {
	h := z.hist
	z.lits, z.seqs = z.lits[:0], z.seqs[:0]
	lit := from // first byte not yet covered by a sequence
	for i := from; i+8 <= to; {
		v := binary.LittleEndian.Uint64(h[i:])
		slot := &z.table[zHash6(v)]
		cand := *slot
		pos := z.base + uint32(i)
		*slot = pos + 1
		dist := pos - (cand - 1)
		if cand == 0 || dist < 1 || dist >= zWindow || int(dist) > i || binary.LittleEndian.Uint32(h[i-int(dist):]) != uint32(v) {
			i++
			continue
		}
		l := zMinMatch
		for i+l+8 <= to {
			if x := binary.LittleEndian.Uint64(h[i+l:]) ^ binary.LittleEndian.Uint64(h[i+l-int(dist):]); x != 0 {
				l += bits.TrailingZeros64(x) >> 3
				goto matched
			}
			l += 8
		}
		for i+l < to && h[i+l-int(dist)] == h[i+l] {
			l++
		}
	matched:
		// Extend backwards over literals that match too.
		for i > lit && int(dist) < i && h[i-1] == h[i-1-int(dist)] {
			i--
			l++
		}
		z.lits = append(z.lits, h[lit:i]...)
		z.seqs = append(z.seqs, zSeq{litLen: uint32(i - lit), matchLen: uint32(l), offset: dist})
		// Positions inside the match go into the table sparsely: every one would cost more than it finds.
		for j := i + 1; j < i+l && j+8 <= to; j += zInsertStep {
			z.table[zHash6(binary.LittleEndian.Uint64(h[j:]))] = z.base + uint32(j) + 1
		}
		if j := i + l - 2; j > i && j+8 <= to {
			z.table[zHash6(binary.LittleEndian.Uint64(h[j:]))] = z.base + uint32(j) + 1
		}
		i += l
		lit = i
	}
	z.lits = append(z.lits, h[lit:to]...)

	hdr := len(z.out)
	z.out = append(z.out, 0, 0, 0) // Block_Header, set below
	z.out = appendRawLiteralsHeader(z.out, len(z.lits))
	z.out = append(z.out, z.lits...)
	z.out = z.appendSequences(z.out)
	if size := len(z.out) - hdr - 3; size < to-from {
		appendBlockHeader(z.out[hdr:hdr], 2, size)
		return
	}
	// It did not shrink: send it raw (the hash table keeps what it learnt).
	z.out = appendBlockHeader(z.out[:hdr], 0, to-from)
	z.out = append(z.out, h[from:to]...)
}

// appendRawLiteralsHeader: Literals_Block_Type 0 (raw), Size_Format by size (RFC 8878 §3.1.1.3.1.1).
func appendRawLiteralsHeader(b []byte, n int) []byte {
	switch {
	case n < 32:
		return append(b, byte(n<<3))
	case n < 4096:
		return append(b, byte(1<<2|(n&15)<<4), byte(n>>4))
	default:
		return append(b, byte(3<<2|(n&15)<<4), byte(n>>4), byte(n>>12))
	}
}

// appendSequences appends the Sequences_Section: the count, then (if any) the modes (all predefined)
// and the FSE bitstream, written backwards from the last sequence as the decoder reads it forwards.
func (z *zstdEncoder) appendSequences(b []byte) []byte {
	n := len(z.seqs)
	switch {
	case n < 128:
		b = append(b, byte(n))
	case n < 0x7f00:
		b = append(b, byte(n>>8)+128, byte(n))
	default:
		b = append(b, 0xff, byte(n-0x7f00), byte((n-0x7f00)>>8))
	}
	if n == 0 {
		return b
	}
	b = append(b, 0) // Literals_Lengths_Mode, Offsets_Mode, Match_Lengths_Mode: Predefined_Mode
	w := zBitWriter{out: b}
	last := z.seqs[n-1]
	llc, llx, llb := llCodeOf(last.litLen)
	mlc, mlx, mlb := mlCodeOf(last.matchLen)
	ofc, ofx := ofCodeOf(last.offset)
	var llS, mlS, ofS uint32
	llS = zPredefLL.initState(llc)
	mlS = zPredefML.initState(mlc)
	ofS = zPredefOF.initState(ofc)
	w.add(llx, llb)
	w.add(mlx, mlb)
	w.add(ofx, uint(ofc))
	for k := n - 2; k >= 0; k-- {
		s := z.seqs[k]
		llc, llx, llb := llCodeOf(s.litLen)
		mlc, mlx, mlb := mlCodeOf(s.matchLen)
		ofc, ofx := ofCodeOf(s.offset)
		ofS = zPredefOF.encode(&w, ofS, ofc)
		mlS = zPredefML.encode(&w, mlS, mlc)
		llS = zPredefLL.encode(&w, llS, llc)
		w.add(llx, llb)
		w.add(mlx, mlb)
		w.add(ofx, uint(ofc))
	}
	w.add(mlS, zPredefML.tableLog)
	w.add(ofS, zPredefOF.tableLog)
	w.add(llS, zPredefLL.tableLog)
	return w.close()
}

// zBitWriter is the forward bit stream of the format: bits fill each byte from the lowest; it closes
// with a 1 bit, which the decoder, reading from the end, finds first.
type zBitWriter struct {
	acc uint64
	n   uint
	out []byte
}

func (w *zBitWriter) add(v uint32, nb uint) {
	w.acc |= uint64(v&(1<<nb-1)) << w.n
	w.n += nb
	if w.n >= 32 {
		w.out = binary.LittleEndian.AppendUint32(w.out, uint32(w.acc))
		w.acc >>= 32
		w.n -= 32
	}
}

func (w *zBitWriter) close() []byte {
	w.add(1, 1)
	for ; w.n > 0; w.n -= min(w.n, 8) {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
	}
	return w.out
}

// ---- the codes of literal lengths, match lengths and offsets (RFC 8878 §3.1.1.3.2.1.1) ----

var (
	llBase = [36]uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 22, 24, 28, 32, 40, 48, 64,
		128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536}
	llBits = [36]uint8{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11,
		12, 13, 14, 15, 16}
	mlBase [53]uint32 // match lengths 3–34 are codes 0–31
	mlBits = [53]uint8{32: 1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	// Codes of the small values (the common case), by value.
	llSmall [64]uint8
	mlSmall [128]uint8 // by match length - 3
)

func init() {
	for c := range 32 {
		mlBase[c] = uint32(c) + 3
	}
	copy(mlBase[32:], []uint32{35, 37, 39, 41, 43, 47, 51, 59, 67, 83, 99, 131, 259, 515, 1027, 2051, 4099, 8195,
		16387, 32771, 65539})
	for v := range llSmall {
		for c := range llBase {
			if llBase[c] <= uint32(v) {
				llSmall[v] = uint8(c)
			}
		}
	}
	for v := range mlSmall {
		for c := range mlBase {
			if mlBase[c] <= uint32(v)+3 {
				mlSmall[v] = uint8(c)
			}
		}
	}
}

// llCodeOf returns the code of a literal length, its extra bits and their count.
func llCodeOf(l uint32) (code, extra uint32, nb uint) {
	var c uint32
	if l < 64 {
		c = uint32(llSmall[l])
	} else {
		c = uint32(bits.Len32(l)) - 1 + 19
	}
	return c, l - llBase[c], uint(llBits[c])
}

// mlCodeOf returns the code of a match length (≥3), its extra bits and their count.
func mlCodeOf(l uint32) (code, extra uint32, nb uint) {
	v := l - 3
	var c uint32
	if v < 128 {
		c = uint32(mlSmall[v])
	} else {
		c = uint32(bits.Len32(v)) - 1 + 36
	}
	return c, l - mlBase[c], uint(mlBits[c])
}

// ofCodeOf returns the code of an offset and its extra bits (as many as the code): Offset_Value is the
// offset + 3, which never means a repeat offset.
func ofCodeOf(offset uint32) (code, extra uint32) {
	v := offset + 3
	c := uint32(bits.Len32(v)) - 1
	return c, v - 1<<c
}

// ---- FSE encoding with the predefined distributions ----

type zFSE struct {
	tableLog   uint
	stateTable []uint16
	symbolTT   []zSymbolTT
}

type zSymbolTT struct {
	deltaNbBits    uint32
	deltaFindState int32
}

var (
	zPredefLL = newZFSE(6, []int16{4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1,
		1, 1, 1, -1, -1, -1, -1})
	zPredefML = newZFSE(6, []int16{1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1})
	zPredefOF = newZFSE(5, []int16{1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1,
		-1})
)

// newZFSE builds the encoding table of a normalized distribution, spreading the symbols as the decoder
// does (RFC 8878 §4.1.1), as zstd's FSE_buildCTable.
func newZFSE(tableLog uint, norm []int16) *zFSE {
	size := 1 << tableLog
	f := &zFSE{tableLog: tableLog, stateTable: make([]uint16, size), symbolTT: make([]zSymbolTT, len(norm))}
	symbols := make([]uint16, size)
	cumul := make([]int, len(norm)+1)
	high := size - 1
	for s, c := range norm {
		if c == -1 {
			cumul[s+1] = cumul[s] + 1
			symbols[high] = uint16(s)
			high--
		} else {
			cumul[s+1] = cumul[s] + int(c)
		}
	}
	if cumul[len(norm)] != size {
		panic("discordsim: bad FSE distribution")
	}
	step := size>>1 + size>>3 + 3
	pos := 0
	for s, c := range norm {
		for range max(c, 0) {
			symbols[pos] = uint16(s)
			pos = (pos + step) & (size - 1)
			for pos > high {
				pos = (pos + step) & (size - 1)
			}
		}
	}
	if pos != 0 {
		panic("discordsim: bad FSE spread")
	}
	next := append([]int(nil), cumul...)
	for u, s := range symbols {
		f.stateTable[next[s]] = uint16(size + u)
		next[s]++
	}
	total := 0
	for s, c := range norm {
		switch c {
		case 0:
			f.symbolTT[s].deltaNbBits = uint32(tableLog+1)<<16 - uint32(size)
		case -1, 1:
			f.symbolTT[s] = zSymbolTT{deltaNbBits: uint32(tableLog)<<16 - uint32(size), deltaFindState: int32(total - 1)}
			total++
		default:
			maxBitsOut := uint32(tableLog) - uint32(bits.Len32(uint32(c-1))-1)
			minStatePlus := uint32(c) << maxBitsOut
			f.symbolTT[s] = zSymbolTT{deltaNbBits: maxBitsOut<<16 - minStatePlus, deltaFindState: int32(total - int(c))}
			total += int(c)
		}
	}
	return f
}

// initState is the state after the first symbol (the last sequence's), which writes no bits.
func (f *zFSE) initState(sym uint32) uint32 {
	tt := f.symbolTT[sym]
	nb := (tt.deltaNbBits + 1<<15) >> 16
	v := nb<<16 - tt.deltaNbBits
	return uint32(f.stateTable[int32(v>>nb)+tt.deltaFindState])
}

// encode writes the bits of state that lead the decoder to sym and returns the next state.
func (f *zFSE) encode(w *zBitWriter, state, sym uint32) uint32 {
	tt := f.symbolTT[sym]
	nb := (state + tt.deltaNbBits) >> 16
	w.add(state, uint(nb))
	return uint32(f.stateTable[int32(state>>nb)+tt.deltaFindState])
}
