package zstdstream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cespare/xxhash/v2"
)

const (
	frameMagic        = 0xFD2FB528
	skippableMagic    = 0x184D2A50
	skippableMask     = 0xFFFFFFF0
	maxBlockSize      = 128 << 10
	DefaultMaxWindow  = 8 << 20
	absoluteMaxWindow = 1 << 31
)

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("zstdstream: reader closed")

// CorruptError reports invalid zstd data.
type CorruptError struct{ Reason string }

func (e *CorruptError) Error() string { return "zstdstream: corrupt input: " + e.Reason }

func errCorrupt(reason string) error { return &CorruptError{Reason: reason} }

type readerState uint8

const (
	stFrame    readerState = iota // expecting a frame's magic number
	stBlock                       // expecting a block header
	stChecksum                    // expecting the content checksum
)

// scratch holds everything a block needs while it is decoded. It comes from a pool shared by all
// Readers and goes back as soon as the block is decoded.
type scratch struct {
	in      []byte
	out     []byte
	lits    []byte
	huf     [1 << maxHufLog]uint16
	ll      [1 << maxLLLog]seqEntry
	ml      [1 << maxMLLog]seqEntry
	of      [1 << maxOFLog]seqEntry
	wTable  [1 << 6]fseEntry
	symbols [1 << maxLLLog]uint8
	next    [1 << maxLLLog]uint16
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	c := 4 << 10
	for c < n {
		c <<= 1
	}
	return make([]byte, n, c)
}

func (s *scratch) litsBuf(n int) []byte {
	s.lits = grow(s.lits, n)
	return s.lits
}

// Reader decodes a stream of zstd frames.
type Reader struct {
	src       io.Reader
	maxWindow uint64
	err       error
	state     readerState
	hdr       [16]byte

	// Frame.
	window      int // Window_Size
	blockMax    int // Block_Maximum_Size
	contentSize int64
	produced    int64
	checksum    bool
	digest      *xxhash.Digest

	// History: the last min(window, produced) bytes of the frame's output. hist grows with the output up to
	// window bytes, then is used as a ring; wpos is where the next byte goes. The last pending bytes
	// before wpos are not yet read.
	hist    []byte
	wpos    int
	pending int

	// State carried from block to block.
	rep                    [3]int
	huf                    hufTree
	llPrev, ofPrev, mlPrev seqTableState

	idle idleState
}

// NewReader returns a Reader decoding the zstd frames read from src. Frames whose window is larger than
// maxWindow bytes are refused (maxWindow <= 0: DefaultMaxWindow).
func NewReader(src io.Reader, maxWindow int) *Reader {
	r := &Reader{}
	r.init(src, maxWindow)
	return r
}

func (r *Reader) init(src io.Reader, maxWindow int) {
	if maxWindow <= 0 {
		maxWindow = DefaultMaxWindow
	}
	if uint64(maxWindow) > absoluteMaxWindow {
		maxWindow = absoluteMaxWindow
	}
	r.src, r.maxWindow, r.err, r.state = src, uint64(maxWindow), nil, stFrame
	r.wpos, r.pending, r.hist = 0, 0, r.hist[:0]
}

// Reset makes r decode a new stream from src, keeping its history buffer.
func (r *Reader) Reset(src io.Reader) { r.init(src, int(r.maxWindow)) }

// Close releases the history; Read then fails with ErrClosed. Per-block buffers are never held between
// Read calls.
func (r *Reader) Close() {
	r.idle.close()
	r.hist, r.wpos, r.pending = nil, 0, 0
	r.digest = nil
	r.src = nil
	r.err = ErrClosed
}

// Read reads decoded bytes. It returns as soon as some are available: once a block is decoded, its
// bytes are served without reading further input.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		if r.pending == 0 && r.err != nil {
			return 0, r.err
		}
		return 0, nil
	}
	for r.pending == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.step()
	}
	n := 0
	for n < len(p) && r.pending > 0 {
		start := r.wpos - r.pending
		if start < 0 {
			start += len(r.hist)
		}
		end := len(r.hist)
		if start < r.wpos {
			end = r.wpos
		}
		c := copy(p[n:], r.hist[start:end])
		n += c
		r.pending -= c
	}
	return n, nil
}

// step reads and decodes the next unit of input: a frame header, a block or a checksum.
func (r *Reader) step() error {
	switch r.state {
	case stFrame:
		return r.readFrameHeader()
	case stBlock:
		return r.readBlock()
	default:
		if _, err := io.ReadFull(r.src, r.hdr[:4]); err != nil {
			return unexpected(err)
		}
		if r.digest != nil {
			if got := uint32(r.digest.Sum64()); got != binary.LittleEndian.Uint32(r.hdr[:4]) {
				return errCorrupt("content checksum mismatch")
			}
		}
		r.state = stFrame
		return nil
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (r *Reader) readFrameHeader() error {
	if _, err := io.ReadFull(r.src, r.hdr[:4]); err != nil {
		return err // io.EOF between frames is the stream's end
	}
	magic := binary.LittleEndian.Uint32(r.hdr[:4])
	if magic&skippableMask == skippableMagic {
		if _, err := io.ReadFull(r.src, r.hdr[:4]); err != nil {
			return unexpected(err)
		}
		n := int64(binary.LittleEndian.Uint32(r.hdr[:4]))
		if c, err := io.CopyN(io.Discard, r.src, n); err != nil {
			if c < n && err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		return nil
	}
	if magic != frameMagic {
		return fmt.Errorf("zstdstream: not a zstd frame (magic number %#08x)", magic)
	}
	if _, err := io.ReadFull(r.src, r.hdr[:1]); err != nil {
		return unexpected(err)
	}
	fhd := r.hdr[0]
	fcsFlag := fhd >> 6
	single := fhd&0x20 != 0
	if fhd&0x08 != 0 {
		return errCorrupt("reserved bit set in frame header")
	}
	checksum := fhd&0x04 != 0
	dictSize := [4]int{0, 1, 2, 4}[fhd&3]
	fcsSize := [4]int{0, 2, 4, 8}[fcsFlag]
	if fcsFlag == 0 && single {
		fcsSize = 1
	}
	wdSize := 1
	if single {
		wdSize = 0
	}
	h := r.hdr[:wdSize+dictSize+fcsSize]
	if _, err := io.ReadFull(r.src, h); err != nil {
		return unexpected(err)
	}
	var window uint64
	if !single {
		wd := h[0]
		wlog := 10 + uint(wd>>3)
		base := uint64(1) << wlog
		window = base + (base>>3)*uint64(wd&7)
		h = h[1:]
	}
	var dictID uint32
	for i := dictSize - 1; i >= 0; i-- {
		dictID = dictID<<8 | uint32(h[i])
	}
	h = h[dictSize:]
	if dictID != 0 {
		return fmt.Errorf("zstdstream: dictionaries are not supported (frame needs dictionary %d)", dictID)
	}
	contentSize := int64(-1)
	if fcsSize > 0 {
		var v uint64
		for i := fcsSize - 1; i >= 0; i-- {
			v = v<<8 | uint64(h[i])
		}
		if fcsSize == 2 {
			v += 256
		}
		if v > 1<<62 {
			return errCorrupt("frame content size too large")
		}
		contentSize = int64(v)
	}
	if single {
		window = uint64(contentSize)
	}
	if window > r.maxWindow {
		return fmt.Errorf("zstdstream: frame window of %d bytes is larger than the maximum %d", window, r.maxWindow)
	}
	r.window = int(window)
	r.blockMax = min(r.window, maxBlockSize)
	r.contentSize, r.produced = contentSize, 0
	r.checksum = checksum
	if checksum {
		if r.digest == nil {
			r.digest = xxhash.New()
		} else {
			r.digest.Reset()
		}
	} else {
		r.digest = nil
	}
	r.hist, r.wpos, r.pending = r.hist[:0], 0, 0
	r.idle.newFrame()
	if cap(r.hist) > r.window {
		r.hist = nil
	}
	r.rep = [3]int{1, 4, 8}
	r.huf.n = 0
	r.llPrev.mode, r.ofPrev.mode, r.mlPrev.mode = 0, 0, 0
	r.state = stBlock
	return nil
}

func (r *Reader) readBlock() error {
	from := 0
	if r.idle.havePre {
		// The header's first byte, read by WaitMessage.
		r.hdr[0], from, r.idle.havePre = r.idle.pre, 1, false
	}
	if _, err := io.ReadFull(r.src, r.hdr[from:3]); err != nil {
		return unexpected(err)
	}
	bh := uint32(r.hdr[0]) | uint32(r.hdr[1])<<8 | uint32(r.hdr[2])<<16
	last := bh&1 != 0
	typ := (bh >> 1) & 3
	size := int(bh >> 3)
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	var out []byte
	switch typ {
	case 0: // raw
		if size > r.blockMax {
			return errCorrupt("block larger than its maximum size")
		}
		s.in = grow(s.in, size)
		if _, err := io.ReadFull(r.src, s.in); err != nil {
			return unexpected(err)
		}
		out = s.in
	case 1: // RLE
		if size > r.blockMax {
			return errCorrupt("block larger than its maximum size")
		}
		if _, err := io.ReadFull(r.src, r.hdr[:1]); err != nil {
			return unexpected(err)
		}
		s.out = grow(s.out, size)
		out = s.out
		c := r.hdr[0]
		for i := range out {
			out[i] = c
		}
	case 2: // compressed
		if size > maxBlockSize {
			return errCorrupt("compressed block larger than 128 KiB")
		}
		s.in = grow(s.in, size)
		if _, err := io.ReadFull(r.src, s.in); err != nil {
			return unexpected(err)
		}
		s.out = grow(s.out, r.blockMax)
		lits, rest, err := r.decodeLiterals(s.in, s)
		if err != nil {
			return err
		}
		n, err := r.decodeSequences(rest, lits, s)
		if err != nil {
			return err
		}
		out = s.out[:n]
	default:
		return errCorrupt("reserved block type")
	}
	r.produced += int64(len(out))
	if r.contentSize >= 0 && r.produced > r.contentSize {
		return errCorrupt("frame larger than its content size")
	}
	if r.digest != nil {
		_, _ = r.digest.Write(out)
	}
	r.appendHist(out)
	if last {
		if r.contentSize >= 0 && r.produced != r.contentSize {
			return errCorrupt("frame smaller than its content size")
		}
		if r.checksum {
			r.state = stChecksum
		} else {
			r.state = stFrame
		}
	}
	return nil
}

// appendHist adds a decoded block (at most one window) to the history and makes it pending.
func (r *Reader) appendHist(b []byte) {
	r.pending += len(b)
	r.idle.out += len(b)
	w := r.window
	for len(b) > 0 {
		if len(r.hist) < w {
			n := min(len(b), w-len(r.hist))
			if need := len(r.hist) + n; need > cap(r.hist) {
				c := max(2*cap(r.hist), need, 1<<10)
				if c > w {
					c = w
				}
				h := make([]byte, len(r.hist), c)
				copy(h, r.hist)
				r.hist = h
			}
			r.hist = append(r.hist, b[:n]...)
			r.wpos = len(r.hist)
			if r.wpos == w {
				r.wpos = 0
			}
			b = b[n:]
			continue
		}
		n := copy(r.hist[r.wpos:], b)
		r.wpos += n
		if r.wpos == w {
			r.wpos = 0
		}
		b = b[n:]
	}
}
