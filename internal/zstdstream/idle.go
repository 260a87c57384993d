package zstdstream

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ddhq/dd/internal/idlepack"
)

// An idle Reader packs its history: between messages, a Reader whose caller waits through WaitMessage
// (rawjson.ObjectReader does) and gets no message for the idle period (SetIdle) keeps its window
// compressed (JSON packs about 4 times over) and gives the buffer back to the garbage collector; the
// next message unpacks it. Output that came since the last pack, up to tailMax bytes, is kept raw beside
// the packed bytes instead of repacking the whole window: an idle connection's only traffic is a heartbeat
// ACK now and then.
const tailMax = 1 << 10

type idleState struct {
	after   time.Duration // 0: never pack
	pre     byte          // the next block header's first byte, read while waiting
	havePre bool
	out     int // bytes of output since the history was last packed or unpacked

	p idlepack.Parking // p.Mu guards what follows; p.Parked: waiting for a message in WaitMessage
	// While packed (hist == nil): the history is the last Window_Size bytes of packed (unpacked) + tail.
	packed   []byte
	tail     []byte
	isPacked bool
}

// SetIdle makes r pack its history after d without a message (0, the default: never). Call it before the
// first Read.
func (r *Reader) SetIdle(d time.Duration) {
	r.idle.after = d
	r.idle.p.Check = r.idleCheck
}

// WaitMessage returns once Read has bytes to give without waiting for the source, so that a caller can
// wait without holding a buffer to read into. Between messages it is where an idle connection waits, and
// where its history is packed after the idle period.
func (r *Reader) WaitMessage() error {
	if r.err != nil || r.pending > 0 || r.state != stBlock || r.idle.havePre {
		return nil // Read has bytes, or an error to report, or a frame header to read
	}
	z := &r.idle
	z.p.Mu.Lock()
	z.p.Park(z.after)
	z.p.Mu.Unlock()
	_, err := io.ReadFull(r.src, r.hdr[:1])
	z.p.Mu.Lock()
	z.p.Parked = false
	if z.isPacked {
		// On a goroutine of its own: the Zstandard decoder needs about 6 KiB of stack, which the read
		// goroutine would keep until a collection shrinks it.
		done := make(chan struct{})
		go func() {
			r.unpack()
			close(done)
		}()
		<-done
	}
	z.p.Mu.Unlock()
	if err != nil {
		r.err = unexpected(err)
		if err == io.EOF {
			r.err = io.ErrUnexpectedEOF
		}
		return r.err
	}
	z.pre, z.havePre = r.hdr[0], true
	return nil
}

func (r *Reader) idleCheck() {
	z := &r.idle
	z.p.Mu.Lock()
	defer z.p.Mu.Unlock()
	if z.p.Due(z.after, !z.isPacked) {
		r.pack()
	}
}

// pack keeps the history packed and drops the window. Under idle.p.Mu, parked.
func (r *Reader) pack() {
	z := &r.idle
	h := r.hist // not wrapped yet: wpos is its length
	if len(r.hist) == r.window {
		h = append(append(make([]byte, 0, r.window), r.hist[r.wpos:]...), r.hist[:r.wpos]...)
	}
	if z.packed != nil && z.out <= len(h) && len(z.tail)+z.out <= tailMax {
		t := make([]byte, 0, len(z.tail)+z.out)
		z.tail = append(append(t, z.tail...), h[len(h)-z.out:]...)
	} else {
		z.packed, z.tail = packer().EncodeAll(h, nil), nil
	}
	r.hist, r.wpos, z.out, z.p.Woken, z.isPacked = nil, 0, 0, false, true
}

// unpack gives the Reader its window back. Under idle.p.Mu.
func (r *Reader) unpack() {
	z := &r.idle
	h, err := unpacker().DecodeAll(z.packed, make([]byte, 0, min(r.window, 2*len(z.packed)+len(z.tail)+(4<<10))))
	if err != nil {
		panic(fmt.Sprintf("zstdstream: unpacking the history: %v", err)) // packed by pack: a bug, not bad input
	}
	h = append(h, z.tail...)
	if len(h) > r.window {
		h = h[len(h)-r.window:]
	}
	hist := make([]byte, len(h), max(len(h), min(r.window, 2*len(h))))
	copy(hist, h)
	r.hist, r.wpos = hist, len(hist)
	if r.wpos == r.window {
		r.wpos = 0
	}
	z.out, z.p.Woken, z.isPacked = 0, true, false
}

// newFrame forgets a packed history: a frame starts with none.
func (z *idleState) newFrame() {
	z.p.Mu.Lock()
	z.packed, z.tail, z.out = nil, nil, 0
	z.p.Mu.Unlock()
}

func (z *idleState) close() {
	z.p.Mu.Lock()
	defer z.p.Mu.Unlock()
	z.p.Close()
	z.packed, z.tail, z.isPacked = nil, nil, false
}

var (
	packer = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1),
			zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(false))
		if err != nil {
			panic(err)
		}
		return e
	})
	unpacker = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(2), zstd.WithDecoderLowmem(true), zstd.IgnoreChecksum(true))
		if err != nil {
			panic(err)
		}
		return d
	})
)
