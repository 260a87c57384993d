package zstdstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// waitSource serves pieces (one message each) and calls wait where a socket would wait for the next one.
type waitSource struct {
	pieces [][]byte
	wait   func()
}

func (w *waitSource) Read(b []byte) (int, error) {
	if len(w.pieces) > 0 && len(w.pieces[0]) == 0 {
		if w.wait != nil {
			w.wait()
		}
		for len(w.pieces) > 0 && len(w.pieces[0]) == 0 {
			w.pieces = w.pieces[1:]
		}
	}
	if len(w.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(b, w.pieces[0])
	w.pieces[0] = w.pieces[0][n:]
	return n, nil
}

// packNow packs a Reader waiting in WaitMessage, as its timer would.
func packNow(r *Reader) bool {
	z := &r.idle
	z.p.Mu.Lock()
	defer z.p.Mu.Unlock()
	if !z.p.Parked || z.isPacked {
		return false
	}
	r.pack()
	return true
}

// A Reader whose caller waits through WaitMessage decodes flushed streams exactly, whether its history
// was packed between messages or not, with windows smaller and larger than the output.
func TestPackedBetweenMessagesDecodesTheSame(t *testing.T) {
	rng := rand.New(rand.NewSource(21))
	packs := 0
	for i := range 24 {
		msgs := genMessages(rng, 20000+rng.Intn(300000), []func(*rand.Rand, int) []byte{genJSON, genMixed, genRepetitive}[i%3])
		window := []int{1 << 10, 32 << 10, 1 << 20}[i%3]
		e := encodeFlushed(t, msgs, zstd.WithWindowSize(window), zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderLevel([]zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression}[i%3]))
		src := &waitSource{pieces: e.pieces()}
		r := NewReader(src, 0)
		odds := 1 + i%3
		src.wait = func() {
			if rng.Intn(odds) == 0 && packNow(r) {
				packs++
			}
		}
		var got []byte
		buf := make([]byte, 1+rng.Intn(70000))
		for {
			if err := r.WaitMessage(); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("case %d: WaitMessage: %v", i, err)
			}
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				t.Fatalf("case %d after %d bytes: %v", i, len(got), err)
			}
		}
		r.Close()
		checkEqual(t, fmt.Sprintf("case %d, window %d", i, window), got, bytes.Join(msgs, nil))
	}
	if packs == 0 {
		t.Fatal("never packed")
	}
	t.Logf("%d packs", packs)
}

// An idle Reader packs on its own, holds far less than its window, and decodes on afterwards.
func TestIdleReaderPacksItsWindow(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	msgs, e := gatewayStream(t, rng, 200, 32<<10)
	pieces := e.pieces()
	allow := make(chan struct{})
	waiting := make(chan struct{}, 1)
	src := &waitSource{pieces: pieces}
	src.wait = func() {
		if len(src.pieces) == len(pieces)-120 {
			waiting <- struct{}{}
			<-allow
		}
	}
	r := NewReader(src, 0)
	r.SetIdle(20 * time.Millisecond)
	out := make(chan []byte)
	go func() {
		var got []byte
		buf := make([]byte, 8192)
		for {
			if r.WaitMessage() != nil {
				break
			}
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		out <- got
	}()
	<-waiting
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.idle.p.Mu.Lock()
		packed, size := r.idle.isPacked, len(r.idle.packed)+len(r.idle.tail)
		r.idle.p.Mu.Unlock()
		if packed {
			t.Logf("packed history: %d bytes for a %d-byte window", size, 32<<10)
			if size > 16<<10 {
				t.Errorf("packed history of %d bytes; want well under the window", size)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an idle Reader did not pack its history")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(allow)
	got := <-out
	r.Close()
	checkEqual(t, "after the pack", got, bytes.Join(msgs, nil))
}
