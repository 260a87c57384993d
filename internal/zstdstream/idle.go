package zstdstream

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// An idle Reader packs its history: between messages, a Reader whose caller waits through WaitMessage
// (rawjson.ObjectReader does) and gets no message for the idle period (SetIdle) keeps its window
// compressed (JSON packs about 4 times over) and gives the buffer back to the garbage collector; the
// next message unpacks it. Output that came since the last pack, up to tailMax bytes, is kept raw beside
// the packed bytes instead of repacking the whole window: an idle connection's only traffic is a heartbeat
// ACK now and then.
const tailMax = 1 << 10

// wokenIdle is how long a Reader woken from its packed state by one message waits before packing
// again; a message within that time makes it a busy Reader, which waits the whole idle period.
const wokenIdle = 50 * time.Millisecond

type idleState struct {
	after   time.Duration // 0: never pack
	pre     byte          // the next block header's first byte, read while waiting
	havePre bool
	out     int // bytes of output since the history was last packed or unpacked

	mu     sync.Mutex
	parked bool // waiting for a message in WaitMessage: the history is not in use
	parks  uint64
	seen   uint64
	woken  bool
	armed  bool
	closed bool
	timer  *time.Timer
	// While packed (hist == nil): the history is the last Window_Size bytes of packed (unpacked) + tail.
	packed   []byte
	tail     []byte
	isPacked bool
}

// SetIdle makes r pack its history after d without a message (0, the default: never). Call it before the
// first Read.
func (r *Reader) SetIdle(d time.Duration) { r.idle.after = d }

// WaitMessage returns once Read has bytes to give without waiting for the source, so that a caller can
// wait without holding a buffer to read into. Between messages it is where an idle connection waits, and
// where its history is packed after the idle period.
func (r *Reader) WaitMessage() error {
	if r.err != nil || r.pending > 0 || r.state != stBlock || r.idle.havePre {
		return nil // Read has bytes, or an error to report, or a frame header to read
	}
	z := &r.idle
	z.mu.Lock()
	z.parked = true
	z.parks++
	if z.after > 0 && !z.armed && !z.closed {
		z.armed, z.seen = true, z.parks
		wait := z.after
		if z.woken {
			wait = min(wait, wokenIdle)
		}
		if z.timer == nil {
			z.timer = time.AfterFunc(wait, func() { r.idleCheck() })
		} else {
			z.timer.Reset(wait)
		}
	}
	z.mu.Unlock()
	_, err := io.ReadFull(r.src, r.hdr[:1])
	z.mu.Lock()
	z.parked = false
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
	z.mu.Unlock()
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
	z.mu.Lock()
	defer z.mu.Unlock()
	z.armed = false
	if z.closed || !z.parked || z.isPacked {
		return
	}
	if z.parks != z.seen {
		z.woken = false
		z.armed, z.seen = true, z.parks
		z.timer.Reset(z.after)
		return
	}
	r.pack()
}

// pack keeps the history packed and drops the window. Under idle.mu, parked.
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
	r.hist, r.wpos, z.out, z.woken, z.isPacked = nil, 0, 0, false, true
}

// unpack gives the Reader its window back. Under idle.mu.
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
	z.out, z.woken, z.isPacked = 0, true, false
}

// newFrame forgets a packed history: a frame starts with none.
func (z *idleState) newFrame() {
	z.mu.Lock()
	z.packed, z.tail, z.out = nil, nil, 0
	z.mu.Unlock()
}

func (z *idleState) close() {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.closed = true
	if z.timer != nil {
		z.timer.Stop()
	}
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
