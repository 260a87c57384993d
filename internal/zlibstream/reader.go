package zlibstream

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ddhq/dd/internal/idlepack"
)

// Source gives the compressed bytes of one message after another.
type Source interface {
	io.Reader
	// ReadByte returns the next byte, waiting for the next message when the current one is used up.
	io.ByteReader
	// MessageDone reports, without waiting, whether every byte of the messages received so far has been
	// read and the last of them is complete.
	MessageDone() bool
}

// tailMax bounds the output kept raw beside the packed history: an idle connection whose only traffic
// is a heartbeat ACK now and then adds a few dozen bytes a time, and repacking 32 KiB for each would
// cost more CPU than the bytes are worth.
const tailMax = 1 << 10

// Reader decodes a zlib stream from a Source. Read is for one goroutine; the packing runs on a timer
// and takes the Reader's lock, which Read takes only when it parks and resumes.
type Reader struct {
	src    Source
	idle   time.Duration
	header bool // the zlib header was read
	out    int  // bytes output since the decoder was made or unpacked
	err    error

	p       idlepack.Parking // p.Mu guards what follows; p.Parked: the read goroutine is outside d
	d       *decompressor    // nil before the first message and while packed
	packed  []byte           // while packed (and after, until repacked): the history was last32K(unpacked packed + tail)
	tail    []byte
	b       uint32 // bits left over at the park
	nb      uint
	roffset int64
}

// NewReader returns a Reader of the zlib stream in src, which packs its history after idle without a
// message (0: never).
func NewReader(src Source, idle time.Duration) *Reader {
	z := &Reader{src: src, idle: idle}
	z.p.Check = z.idleCheck
	return z
}

// Read returns decompressed bytes. Between messages it waits for the next one outside the decoder.
func (z *Reader) Read(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !z.header {
		if err := z.readHeader(); err != nil {
			z.err = err
			return 0, err
		}
	}
	for {
		if z.p.Parked {
			// An idle connection waits here, with its history packed once idle has passed.
			c, err := z.src.ReadByte()
			if err != nil {
				z.err = err
				return 0, err
			}
			z.resume(c)
		}
		n, err := z.d.Read(p)
		z.out += n
		if n > 0 {
			return n, nil
		}
		if err != nil {
			z.err = err
			return 0, err
		}
		if z.d.parked {
			z.park()
		}
	}
}

// WaitMessage returns once Read has bytes to give without waiting for a message, so that a caller can
// wait without holding a buffer to read into (rawjson.ObjectReader gives its own back meanwhile).
func (z *Reader) WaitMessage() error {
	if z.err != nil || !z.header {
		return nil // Read reports the error, or reads the header
	}
	for !z.p.Parked {
		if len(z.d.toRead) > 0 {
			return nil
		}
		if _, err := z.d.Read(nil); err != nil {
			return nil // kept by the decoder for Read
		}
		if z.d.parked {
			z.park()
		}
	}
	c, err := z.src.ReadByte()
	if err != nil {
		z.err = err
		return err
	}
	z.resume(c)
	return nil
}

func (z *Reader) readHeader() error {
	cmf, err := z.src.ReadByte()
	if err != nil {
		return err
	}
	flg, err := z.src.ReadByte()
	if err != nil {
		return err
	}
	if cmf&0x0f != 8 || cmf>>4 > 7 || (uint(cmf)<<8|uint(flg))%31 != 0 {
		return fmt.Errorf("zlibstream: invalid zlib header %02x %02x", cmf, flg)
	}
	if flg&0x20 != 0 {
		return errors.New("zlibstream: preset dictionaries are not supported")
	}
	z.p.Mu.Lock() // Packed reads header from another goroutine
	z.header = true
	z.d = decoders.get()
	z.d.reset(z.src, nil, 0, 0, 2)
	z.p.Mu.Unlock()
	return nil
}

// park notes that the decoder stopped at the end of a message, and arms the packing timer.
func (z *Reader) park() {
	z.p.Mu.Lock()
	z.p.Park(z.idle)
	z.p.Mu.Unlock()
}

// resume gives the decoder back its state, if it was packed, and the next message's first byte.
func (z *Reader) resume(c byte) {
	z.p.Mu.Lock()
	z.p.Parked = false
	if z.d == nil {
		// On a goroutine of its own: the Zstandard decoder needs about 6 KiB of stack, and the read
		// goroutine's stack, grown once, would stay grown until a collection shrinks it (an idle
		// gateway collects every two minutes).
		done := make(chan struct{})
		go func() {
			z.unpack()
			close(done)
		}()
		<-done
	}
	d := z.d
	z.p.Mu.Unlock()
	d.parked = false
	d.b |= uint32(c) << d.nb
	d.nb += 8
	d.roffset++
}

// idleCheck packs the history of a Reader that stayed parked since the timer was armed.
func (z *Reader) idleCheck() {
	z.p.Mu.Lock()
	defer z.p.Mu.Unlock()
	if z.p.Due(z.idle, z.d != nil) {
		z.pack()
	}
}

// pack keeps the history in packed form and gives the decoder back to the pool. Under p.Mu, parked.
func (z *Reader) pack() {
	d := z.d
	buf := scratch.get()
	h := d.dict.history((*buf)[:0])
	if z.out <= len(h) && len(z.tail)+z.out <= tailMax {
		// Only a little came since the last pack: the old packed bytes stay, the new output joins the tail.
		t := make([]byte, 0, len(z.tail)+z.out)
		z.tail = append(append(t, z.tail...), h[len(h)-z.out:]...)
	} else {
		enc := packer().EncodeAll(h, (*buf)[len(h):len(h)])
		z.packed, z.tail = append([]byte(nil), enc...), nil
	}
	*buf = h[:0]
	scratch.put(buf)
	z.b, z.nb, z.roffset = d.b, d.nb, d.roffset
	d.r, d.toRead = nil, nil
	decoders.put(d)
	z.d, z.out, z.p.Woken = nil, 0, false
}

// unpack makes a decoder with the packed history. Under p.Mu.
func (z *Reader) unpack() {
	buf := scratch.get()
	h := (*buf)[:0]
	if z.packed != nil {
		var err error
		if h, err = unpacker().DecodeAll(z.packed, h); err != nil {
			// Packed by pack from a valid history: a failure here is a bug, not bad input.
			panic(fmt.Sprintf("zlibstream: unpacking the history: %v", err))
		}
	}
	h = append(h, z.tail...)
	d := decoders.get()
	d.reset(z.src, h, z.b, z.nb, z.roffset)
	*buf = h[:0]
	scratch.put(buf)
	z.d, z.out, z.p.Woken = d, 0, true
}

// Close gives the decoder back to the pool and stops the timer. Only once Read has returned for good.
func (z *Reader) Close() {
	z.p.Mu.Lock()
	defer z.p.Mu.Unlock()
	z.p.Close()
	if z.d != nil {
		z.d.r, z.d.toRead = nil, nil
		decoders.put(z.d)
		z.d = nil
	}
	z.packed, z.tail = nil, nil
}

// Packed reports the bytes an idle Reader holds for its history (packed and raw), and whether it is
// packed now.
func (z *Reader) Packed() (bytes int, packed bool) {
	z.p.Mu.Lock()
	defer z.p.Mu.Unlock()
	return len(z.packed) + len(z.tail), z.d == nil && z.header
}

// freeList keeps a few spare values for reuse. Not a sync.Pool: a pool keeps everything put into it
// until the next collections, and an idle gateway collects rarely, so a thousand connections going
// idle together would leave a thousand 40 KiB decoders in it for minutes.
type freeList[T any] struct {
	mu    sync.Mutex
	items []T
	make  func() T
}

const spares = 8

func (l *freeList[T]) get() T {
	l.mu.Lock()
	if n := len(l.items); n > 0 {
		v := l.items[n-1]
		var zero T
		l.items[n-1] = zero
		l.items = l.items[:n-1]
		l.mu.Unlock()
		return v
	}
	l.mu.Unlock()
	return l.make()
}

func (l *freeList[T]) put(v T) {
	l.mu.Lock()
	if len(l.items) < spares {
		l.items = append(l.items, v)
	}
	l.mu.Unlock()
}

var (
	decoders = &freeList[*decompressor]{make: newDecompressor}
	// scratch holds a history with its tail, and the packed form of a history after it.
	scratch = &freeList[*[]byte]{make: func() *[]byte {
		b := make([]byte, 0, 2*maxMatchOffset+tailMax+1024)
		return &b
	}}
	// The history is packed with Zstandard: about 4.5 times smaller than JSON's 32 KiB in 0.2 ms (s2, tried
	// first: 3.1 times in 0.14 ms), which a connection pays once per idle period. One encoder and one
	// decoder serve every Reader (EncodeAll and DecodeAll may be called concurrently).
	packer = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(maxMatchOffset), zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(false))
		if err != nil {
			panic(err)
		}
		return e
	})
	unpacker = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(maxMatchOffset),
			zstd.WithDecoderLowmem(true), zstd.IgnoreChecksum(true))
		if err != nil {
			panic(err)
		}
		return d
	})
)
