package store

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/diskspace"
	"github.com/ddhq/dd/internal/tmpfstest"
)

// fillStore writes queue-like batches (1.2 KB events and an overwritten summary key) from key n on until
// the store refuses with ErrDiskFull, and returns the next key.
func fillStore(t *testing.T, s *Store, n int) int {
	t.Helper()
	rnd := rand.New(rand.NewPCG(1, uint64(n)))
	for {
		err := s.Update(func(w Writer) error {
			for j := 0; j < 50; j++ {
				val := make([]byte, 1200)
				for i := range val {
					val[i] = byte(rnd.Uint32()) // incompressible: the worst case for the disk
				}
				if err := w.Set(seqKey(n+j), val); err != nil {
					return err
				}
			}
			return w.Set([]byte("meta"), seqKey(n+50))
		})
		if errors.Is(err, ErrDiskFull) {
			return n
		}
		if err != nil {
			t.Fatalf("write %d: %v", n, err)
		}
		n += 50
	}
}

func seqKey(i int) []byte { return binary.BigEndian.AppendUint32([]byte("e/"), uint32(i)) }

// A store on a 20 MB filesystem takes events until its reserve, then refuses them with ErrDiskFull
// (which says what to free) instead of letting Badger fault; Badger's own work after that (flushes,
// compactions, close) fits in the reserve; once space is freed it takes writes again by itself;
// deletions go through while low; it reopens on the low disk; it refuses to open on a disk filled to the
// last byte, saying how much to free; and every event is still there at the end.
func TestFullDiskRefusesWritesAndResumesBySelf(t *testing.T) {
	mnt := tmpfstest.Mount(t, 20<<20)
	dir := filepath.Join(mnt, "data")
	filler := filepath.Join(mnt, "filler")
	tmpfstest.Fill(t, filler, 5<<20)
	s, err := Open(Options{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	n := fillStore(t, s, 0)
	full, changed := s.DiskFull()
	msg := s.DiskErr()
	if !full || msg == nil || !strings.Contains(msg.Error(), "store.path") || !strings.Contains(msg.Error(), "free") {
		t.Fatalf("after ErrDiskFull: DiskFull %v, DiskErr %v; want full, naming store.path and what to free", full, msg)
	}
	free, total, _ := diskspace.Stat(dir)
	t.Logf("%d events of 1.2 KB stored on %s (5 MB taken by a filler), then refused with %s free (reserve %s): %v",
		n, diskspace.MB(total), diskspace.MB(free), diskspace.MB(s.disk.Reserve()), msg)
	if n < 2000 {
		t.Errorf("only %d events fit: the reserve leaves too little for data", n)
	}
	// Badger goes on with its own work: it must stay inside the reserve (or the process dies here).
	minFree := free
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		f, _, _ := diskspace.Stat(dir)
		minFree = min(minFree, f)
	}
	t.Logf("lowest free space while Badger settled: %s", diskspace.MB(minFree))

	// Space freed by someone: the store notices by itself within its check interval.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(3 * time.Second):
		t.Fatalf("5 MB freed: the store did not resume within 3 s (free %s)", diskspace.MB(s.disk.Free()))
	}
	if full, _ := s.DiskFull(); full || s.DiskErr() != nil {
		t.Fatalf("after freeing space: DiskFull %v, DiskErr %v", full, s.DiskErr())
	}
	n = fillStore(t, s, n)
	// Deletions go on while low (a bot that is back empties the queue).
	if err := s.Reclaim(func(w Writer) error { return w.Delete(seqKey(0)) }); err != nil {
		t.Fatalf("a deletion while low: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopens on the low disk: consistent about refusing (close flushed the memtables, which may have
	// freed their logs' space).
	s, err = Open(Options{Path: dir})
	if err != nil {
		t.Fatalf("reopen on the low disk: %v", err)
	}
	full, _ = s.DiskFull()
	if err := s.Update(func(w Writer) error { return w.Set([]byte("x"), []byte("y")) }); errors.Is(err, ErrDiskFull) != full {
		t.Fatalf("after reopening: DiskFull %v but a write returned %v", full, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Filled to the last byte by someone else: Open refuses, saying what to free.
	tmpfstest.Fill(t, filler, 1<<30)
	if _, err := Open(Options{Path: dir}); !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "free at least") {
		t.Fatalf("open on a full disk: %v, want ErrDiskFull saying what to free", err)
	} else {
		t.Logf("open on a full disk: %v", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Path: dir})
	if err != nil {
		t.Fatalf("open once space was freed: %v", err)
	}
	defer s.Close()
	for i := 1; i < n; i++ {
		if _, err := s.Get(seqKey(i)); err != nil {
			t.Fatalf("event %d of %d lost: %v", i, n, err)
		}
	}
}

// A store that filled its disk frees the space by itself once its data is deleted, as a bot that is
// back empties the queue: no one frees a file, and nothing else is written, yet the store takes new
// writes again. Deleted events' space comes back through compactions and the value log's garbage
// collection, which must not wait for writes that a full disk refuses.
func TestDeletingTheDataOfAFullStoreFreesItsSpace(t *testing.T) {
	mnt := tmpfstest.Mount(t, 20<<20)
	dir := filepath.Join(mnt, "data")
	tmpfstest.Fill(t, filepath.Join(mnt, "filler"), 5<<20)
	s, err := Open(Options{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := fillStore(t, s, 0)
	full, changed := s.DiskFull()
	if !full {
		t.Fatal("the store is not full after ErrDiskFull")
	}
	free, _, _ := diskspace.Stat(dir)
	for i := 0; i < n; i += 500 {
		err := s.Reclaim(func(w Writer) error {
			for j := i; j < min(i+500, n); j++ {
				if err := w.Delete(seqKey(j)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("deleting events %d..: %v", i, err)
		}
	}
	start := time.Now()
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		now, _, _ := diskspace.Stat(dir)
		t.Fatalf("%d events deleted from a full store: still refusing writes after 30 s (free %s, then %s)",
			n, diskspace.MB(free), diskspace.MB(now))
	}
	now, _, _ := diskspace.Stat(dir)
	t.Logf("%d events deleted: writes taken again after %v, free %s -> %s", n, time.Since(start).Round(time.Millisecond),
		diskspace.MB(free), diskspace.MB(now))
	if err := s.Update(func(w Writer) error { return w.Set([]byte("x"), []byte("y")) }); err != nil {
		t.Fatalf("a write after the space came back: %v", err)
	}
	// What was not deleted is still there.
	if v, err := s.Get([]byte("meta")); err != nil || string(v) != string(seqKey(n)) {
		t.Fatalf("meta after the space came back: %x, %v; want %x", v, err, seqKey(n))
	}
}
